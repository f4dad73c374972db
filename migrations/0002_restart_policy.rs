//! Schema 2: a process spec carries its restart policy, kill timeout and
//! memory limit. Schema-1 specs had only `autorestart`; they get the default
//! policy with their `autorestart` kept, the default kill timeout and no
//! memory limit.

use serde::{Deserialize, Serialize};

use crate::spec::{Desired, RestartPolicy, DEFAULT_KILL_TIMEOUT_MS};
use crate::store::migrate::rewrite_processes;
use crate::store::StoreError;

pub const VERSION: u32 = 2;

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
pub fn up(db: &sled::Db) -> Result<Vec<(sled::IVec, Vec<u8>)>, StoreError> {
    rewrite_processes(db, |old: SpecV1| convert(old))
}
