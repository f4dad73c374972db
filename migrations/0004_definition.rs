//! Schema 4: a process record keeps its identity and desired state in
//! bincode and the user's definition as JSON inside it (the keys of the API
//! body), so that a new per-process option needs no migration: a record
//! without its key gets the default. Schema-3 records keep every setting,
//! written out explicitly.

use crate::definition::{Bytes, Millis, ProcessDef};
use crate::spec::Spec;
use crate::store::migrate::rewrite_processes;
use crate::store::StoreError;

pub use super::m0003_watch::SpecV3;

pub const VERSION: u32 = 4;

pub fn convert(old: SpecV3) -> Spec {
    Spec {
        id: old.id,
        name: old.name,
        desired: old.desired,
        generation: old.generation,
        created_ms: old.created_ms,
        def: ProcessDef {
            script: old.command,
            cwd: Some(old.cwd),
            env: old.env,
            autorestart: Some(old.restart.autorestart),
            max_restarts: Some(old.restart.max_restarts),
            restart_delay: Some(Millis(old.restart.restart_delay_ms)),
            min_uptime: Some(Millis(old.restart.min_uptime_ms)),
            kill_timeout: Some(Millis(old.kill_timeout_ms)),
            max_memory: old.max_memory.map(Bytes),
            watch: old.watch.into_iter().collect(),
            ..ProcessDef::default()
        },
    }
}

/// Returns the rewritten `processes` entries; the runner writes them in the
/// same transaction as the new schema version.
pub fn up(db: &sled::Db) -> Result<crate::store::migrate::Rewritten, StoreError> {
    rewrite_processes(db, |old: SpecV3| convert(old))
}
