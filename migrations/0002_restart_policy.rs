//! Schema 2: a process spec carries its restart policy, kill timeout and
//! memory limit. Schema-1 specs had only `autorestart`; they get the default
//! policy with their `autorestart` kept, the default kill timeout and no
//! memory limit.

use serde::{Deserialize, Serialize};

use crate::spec::Desired;
use crate::store::migrate::rewrite_processes;
use crate::store::StoreError;

pub const VERSION: u32 = 2;

/// The kill timeout of schema 2 and 3 records that had none.
pub const DEFAULT_KILL_TIMEOUT_MS: u64 = 3_000;

/// When and how often a process that exits is started again, as schemas
/// 2 and 3 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub autorestart: bool,
    pub max_restarts: u32,
    pub restart_delay_ms: u64,
    pub min_uptime_ms: u64,
}

impl Default for RestartPolicy {
    /// The defaults of schema 2, given to schema-1 records.
    fn default() -> Self {
        RestartPolicy {
            autorestart: true,
            max_restarts: 15,
            restart_delay_ms: 100,
            min_uptime_ms: 10_000,
        }
    }
}

/// A process spec as schema 1 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecV1 {
    pub id: u64,
    pub name: String,
    pub command: String,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub autorestart: bool,
    pub desired: Desired,
    pub generation: u64,
    pub created_ms: u64,
}

/// A process spec as schema 2 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecV2 {
    pub id: u64,
    pub name: String,
    pub command: String,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub restart: RestartPolicy,
    pub kill_timeout_ms: u64,
    pub max_memory: Option<u64>,
    pub desired: Desired,
    pub generation: u64,
    pub created_ms: u64,
}

pub fn convert(old: SpecV1) -> SpecV2 {
    SpecV2 {
        id: old.id,
        name: old.name,
        command: old.command,
        cwd: old.cwd,
        env: old.env,
        restart: RestartPolicy {
            autorestart: old.autorestart,
            ..RestartPolicy::default()
        },
        kill_timeout_ms: DEFAULT_KILL_TIMEOUT_MS,
        max_memory: None,
        desired: old.desired,
        generation: old.generation,
        created_ms: old.created_ms,
    }
}

/// Returns the rewritten `processes` entries; the runner writes them in the
/// same transaction as the new schema version.
pub fn up(db: &sled::Db) -> Result<crate::store::migrate::Rewritten, StoreError> {
    rewrite_processes(db, |old: SpecV1| convert(old))
}
