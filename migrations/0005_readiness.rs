//! Schema 5: a runtime record says whether the live run is ready
//! (`wait_ready`, `ready_port`), holds the other run of a reload under way,
//! and the last `STATUS=` text of the notify protocol. Schema-4 records
//! belong to runs that were online from their spawn: not asked, no reload.

use serde::{Deserialize, Serialize};

use crate::spec::{Exit, Observed, Phase, Readiness};
use crate::store::migrate::rewrite_tree;
use crate::store::{StoreError, RUNTIME};

pub const VERSION: u32 = 5;

/// A runtime record as schemas 1 to 4 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedV4 {
    pub phase: Phase,
    pub starts: u32,
    pub unstable: u32,
    pub generation: u64,
    pub last_exit: Option<Exit>,
    pub boot_id: String,
    pub last_error: Option<String>,
    pub restart_pending: Option<String>,
}

pub fn convert(old: ObservedV4) -> Observed {
    Observed {
        phase: old.phase,
        starts: old.starts,
        unstable: old.unstable,
        generation: old.generation,
        last_exit: old.last_exit,
        boot_id: old.boot_id,
        last_error: old.last_error,
        restart_pending: old.restart_pending,
        readiness: Readiness::NotAsked,
        handover: None,
        notify_status: None,
    }
}

/// Returns the rewritten `runtime` entries; the runner writes them in the
/// same transaction as the new schema version.
pub fn up(db: &sled::Db) -> Result<crate::store::migrate::Rewritten, StoreError> {
    rewrite_tree(db, RUNTIME, |old: ObservedV4| convert(old))
}
