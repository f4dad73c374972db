//! The reconciler: drives real processes toward the desired state in the
//! store. `plan` decides (pure), `executor` acts (one task, so one pass per
//! process at a time and wake-ups for the same id merge), and `Handle` is how
//! the rest of the daemon wakes it and watches what it published.

pub mod executor;
pub mod handover;
pub mod plan;

use crate::sync::RwLockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::spec::{Observed, Spec};
use crate::supervise::pidfd::ExitStatus;

/// What the reconciler last published for one process.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Shared with the executor's own copy: a thousand processes are held
    /// once, not once per reader and once per pass.
    pub spec: Arc<Spec>,
    pub obs: Observed,
}

/// Messages into the executor.
#[derive(Debug)]
pub enum Msg {
    /// The store changed for these ids: look at them again.
    Wake(Vec<u64>),
    /// A watched group leader ended (status `None` when it was not our child).
    Exited {
        id: u64,
        pid: u32,
        status: Option<ExitStatus>,
    },
    /// A file under a watched path changed.
    FileChanged { id: u64, path: std::path::PathBuf },
    /// `opm reset`: zero these processes' restart counters.
    Reset(Vec<u64>),
    /// A message on the notify socket from a member of group `pgid`.
    Notice {
        pgid: u32,
        notice: crate::supervise::ready::Notice,
    },
    /// A reload of `generation` (stored next): answered when it is over.
    Reload {
        id: u64,
        generation: u64,
        reply: tokio::sync::oneshot::Sender<handover::ReloadOutcome>,
    },
}

/// State shared between the executor (the only writer) and readers.
///
/// The lock is a std `RwLock`, never held across an `.await`; a poisoned lock
/// means a panic while publishing, after which the published map is still a
/// whole map (entries are replaced, not edited), so readers take it as is.
pub struct Shared {
    procs: RwLock<BTreeMap<u64, Entry>>,
    changed: watch::Sender<u64>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            procs: RwLock::new(BTreeMap::new()),
            changed: watch::channel(0).0,
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Entry>> {
        self.procs.read_or_recover()
    }

    fn publish(&self, updates: Vec<(u64, Option<Entry>)>) {
        if updates.is_empty() {
            return;
        }
        {
            let mut procs = self.procs.write_or_recover();
            for (id, entry) in updates {
                match entry {
                    Some(e) => procs.insert(id, e),
                    None => procs.remove(&id),
                };
            }
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// How the API and the daemon talk to the reconciler.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    pub shared: Arc<Shared>,
}

impl Handle {
    pub fn wake(&self, ids: Vec<u64>) {
        if !ids.is_empty() {
            // The executor only stops at shutdown; a wake then has nothing to do.
            let _ = self.tx.send(Msg::Wake(ids));
        }
    }

    /// Zeroes the restart counters of `ids` (they live in `observed`,
    /// which only the executor writes).
    pub fn reset(&self, ids: Vec<u64>) {
        if !ids.is_empty() {
            let _ = self.tx.send(Msg::Reset(ids));
        }
    }

    /// Asks for a reload of `id` to `generation`, before that generation is
    /// stored (so no pass takes it for a restart); the answer says how it went.
    pub fn reload(
        &self,
        id: u64,
        generation: u64,
    ) -> tokio::sync::oneshot::Receiver<handover::ReloadOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Msg::Reload {
            id,
            generation,
            reply,
        });
        answer
    }

    /// Waits until `done` holds for the published state, or `timeout` passes.
    /// Returns whether it held.
    pub async fn wait_for<F>(&self, timeout: Duration, mut done: F) -> bool
    where
        F: FnMut(&BTreeMap<u64, Entry>) -> bool,
    {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.shared.read()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return done(&self.shared.read()),
            }
        }
    }
}
