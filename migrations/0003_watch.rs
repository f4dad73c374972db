//! Schema 3: a process spec carries the path it watches for changes
//! (`--watch`). Schema-2 specs watch nothing.

use crate::spec::Spec;
use crate::store::{codec, StoreError, PROCESSES};

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
    let processes = db.open_tree(PROCESSES)?;
    let mut rewritten = Vec::new();
    for item in processes.iter() {
        let (key, value) = item?;
        let old: SpecV2 = codec::decode(PROCESSES, &key, &value)?;
        rewritten.push((key, codec::encode(&convert(old))?));
    }
    Ok(rewritten)
}
