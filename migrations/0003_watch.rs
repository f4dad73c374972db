//! Schema 3: a process spec carries the path it watches for changes
//! (`--watch`). Schema-2 specs watch nothing.

use serde::{Deserialize, Serialize};

use crate::spec::Desired;
use crate::store::migrate::rewrite_processes;
use crate::store::StoreError;

pub use super::m0002_restart_policy::{RestartPolicy, SpecV2};

pub const VERSION: u32 = 3;

/// A process spec as schema 3 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecV3 {
    pub id: u64,
    pub name: String,
    pub command: String,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub restart: RestartPolicy,
    pub kill_timeout_ms: u64,
    pub max_memory: Option<u64>,
    pub watch: Option<String>,
    pub desired: Desired,
    pub generation: u64,
    pub created_ms: u64,
}

pub fn convert(old: SpecV2) -> SpecV3 {
    SpecV3 {
        id: old.id,
        name: old.name,
        command: old.command,
        cwd: old.cwd,
        env: old.env,
        restart: old.restart,
        kill_timeout_ms: old.kill_timeout_ms,
        max_memory: old.max_memory,
        watch: None,
        desired: old.desired,
        generation: old.generation,
        created_ms: old.created_ms,
    }
}

/// Returns the rewritten `processes` entries; the runner writes them in the
/// same transaction as the new schema version.
pub fn up(db: &sled::Db) -> Result<crate::store::migrate::Rewritten, StoreError> {
    rewrite_processes(db, |old: SpecV2| convert(old))
}
