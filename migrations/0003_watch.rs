//! Schema 3: a process spec carries the path it watches for changes
//! (`--watch`). Schema-2 specs watch nothing.

use crate::spec::Spec;
use crate::store::migrate::rewrite_processes;
use crate::store::StoreError;

pub use super::m0002_restart_policy::SpecV2;

pub const VERSION: u32 = 3;

pub fn convert(old: SpecV2) -> Spec {
    Spec {
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
pub fn up(db: &sled::Db) -> Result<Vec<(sled::IVec, Vec<u8>)>, StoreError> {
    rewrite_processes(db, |old: SpecV2| convert(old))
}
