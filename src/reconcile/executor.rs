//! The executor: the one task that performs the plan's actions (spawn, signal,
//! mark, forget), watches each running group leader through a pidfd, and
//! feeds what it saw back through the pure transitions of `plan`. It owns the
//! `runtime` records: every change is written to the store and flushed once
//! per pass, and a spawn's intent is flushed before the child is spawned so that a daemon
//! killed at any instant never starts a process twice.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};

use super::plan::{self, Action};
use super::{Entry, Handle, Msg, Shared};
use crate::config::Home;
use crate::spec::{now_ms, Event, Observed, Phase, Spec, Subject};
use crate::store::Store;
use crate::supervise::{pidfd, proc, spawn};

mod handover;
use handover::{ReloadWait, Round};

/// How often processes with a memory limit are measured.
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A watched change restarts the process once the changes have been quiet
/// for its `watch_delay` (an editor's save, a build: one burst, one
/// restart), but no later than this after the first change of the burst,
/// so files that never stop changing still restart it now and then.
pub const WATCH_MAX_WAIT: Duration = Duration::from_secs(10);

/// The most spawns one reconcile pass makes.
pub const SPAWN_BATCH: usize = 64;

/// The environment variable that marks a child with the nonce of its spawn.
pub const SPAWN_MARKER: &str = "OPM_SPAWN";

/// A shell command line that exits 127 or 126 within this long of its start
/// could not run its command: that is a failed start, not a crash.
pub const SHELL_QUICK_EXIT: Duration = Duration::from_secs(1);

/// When a pass cannot write the store, the ids it touched look again after this.
pub const STORE_RETRY: Duration = Duration::from_millis(500);

/// How often a run whose pidfd could not be opened (no file descriptor
/// left) tries again; it stays supervised, never taken for ended.
pub const PIDFD_RETRY: Duration = Duration::from_millis(200);

struct Slot {
    spec: Arc<Spec>,
    obs: Observed,
    next_check_ms: Option<u64>,
    /// A reload request waiting for its answer (`handover`).
    reload: Option<ReloadWait>,
}

pub struct Executor {
    store: Arc<Store>,
    home: Home,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Msg>,
    tx: mpsc::UnboundedSender<Msg>,
    boot_id: String,
    slots: HashMap<u64, Slot>,
    sampler: proc::Sampler,
    next_memory_check_ms: u64,
    /// The running watch task of each process with `--watch`, with what it watches.
    watchers: HashMap<u64, (WatchPlan, tokio::task::AbortHandle)>,
    /// Restarts due to watched changes: when due, the first change's time, what changed.
    watch_due: HashMap<u64, WatchDue>,
    /// The next `cron_restart` match of each process with one, and its expression.
    cron_due: HashMap<u64, (u64, String)>,
    /// `NOTIFY_SOCKET` for children that `--wait-ready`.
    notify_address: Option<String>,
    /// When the runs waiting for their ready port are looked at next.
    next_port_poll_ms: Option<u64>,
    /// Processes handled in passes since the heap was last trimmed.
    untrimmed: usize,
    /// Reloads a previous daemon left under way, asked again after restore.
    pending_reloads: Vec<(u64, u64)>,
}

/// What one process's watcher watches and leaves aside.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchPlan {
    roots: Vec<PathBuf>,
    ignore: Vec<String>,
    opm_paths: Vec<PathBuf>,
}

/// A restart asked for by watched changes, waiting for them to be quiet.
struct WatchDue {
    at_ms: u64,
    first_ms: u64,
    path: PathBuf,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A value no earlier spawn of any daemon used: time, pid and a counter.
fn fresh_nonce() -> u64 {
    let n = NONCE.fetch_add(1, Ordering::Relaxed);
    (now_ms() << 20) ^ ((std::process::id() as u64) << 8) ^ n
}

impl Executor {
    /// Builds the executor and the handle others use to reach it.
    pub fn new(store: Arc<Store>, home: Home) -> (Executor, Handle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new());
        let handle = Handle {
            tx: tx.clone(),
            shared: shared.clone(),
        };
        let exec = Executor {
            store,
            home,
            shared,
            rx,
            tx,
            boot_id: proc::boot_id(),
            slots: HashMap::new(),
            sampler: proc::Sampler::new(),
            next_memory_check_ms: 0,
            watchers: HashMap::new(),
            watch_due: HashMap::new(),
            cron_due: HashMap::new(),
            notify_address: None,
            next_port_poll_ms: None,
            pending_reloads: Vec::new(),
            untrimmed: 0,
        };
        (exec, handle)
    }

    /// Adopts what survived the previous daemon and makes the first pass, so
    /// the published state is whole before anyone reads it. Call inside the
    /// runtime (pidfds register with its reactor).
    pub fn start(&mut self) {
        self.start_notify();
        let ids = match self.restore() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot read the stored processes: {e}");
                Vec::new()
            }
        };
        for (id, generation) in std::mem::take(&mut self.pending_reloads) {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.reload = Some(ReloadWait {
                    generation,
                    waiters: Vec::new(),
                });
            }
        }
        self.pass(ids.into_iter().collect());
    }

    /// Serves wake-ups, exits and deadlines until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let mut dirty = BTreeSet::new();
            let next = self.next_deadline_ms();
            let sleep = async {
                match next {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.absorb(msg, &mut dirty);
                    while let Ok(msg) = self.rx.try_recv() {
                        self.absorb(msg, &mut dirty);
                    }
                }
                _ = sleep => {}
                _ = shutdown.changed() => break,
            }
            let now = now_ms();
            dirty.extend(
                self.slots
                    .iter()
                    .filter(|(_, s)| s.next_check_ms.is_some_and(|t| t <= now))
                    .map(|(id, _)| *id),
            );
            if self.next_memory_check_ms <= now {
                self.check_memory(now, &mut dirty);
            }
            self.due_watch_restarts(now, &mut dirty);
            self.due_cron_restarts(now, &mut dirty);
            if self.next_port_poll_ms.is_some_and(|t| t <= now) {
                self.poll_ports(now, &mut dirty);
            }
            self.pass(dirty);
        }
        if let Err(e) = self.store.flush() {
            tracing::error!("flush at shutdown failed: {e}");
        }
    }

    fn next_deadline_ms(&self) -> Option<u64> {
        let checks = self
            .slots
            .values()
            .filter_map(|s| s.next_check_ms)
            .chain(self.watch_due.values().map(|d| d.at_ms))
            .chain(self.cron_due.values().map(|(t, _)| *t))
            .chain(self.next_port_poll_ms)
            .min();
        let memory = self
            .slots
            .values()
            .any(|s| s.spec.def.max_memory.is_some() && s.obs.pid().is_some())
            .then_some(self.next_memory_check_ms);
        match (checks, memory) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Loads every stored process and adopts the runs that are still alive.
    fn restore(&mut self) -> Result<Vec<u64>, crate::store::StoreError> {
        let now = now_ms();
        let mut ids = Vec::new();
        for spec in self.store.specs()? {
            let id = spec.id;
            let mut obs = self.store.runtime(id)?.unwrap_or_default();
            let same_boot = obs.boot_id == self.boot_id;
            match obs.phase.clone() {
                Phase::Spawning { nonce, at_ms } => {
                    if let Some(pid) = proc::find_by_env(SPAWN_MARKER, &nonce.to_string()) {
                        if let Some(start_time) = proc::start_time(pid) {
                            obs = plan::on_spawned(
                                &spec,
                                &obs,
                                pid,
                                start_time,
                                &self.boot_id,
                                at_ms,
                            );
                            self.watch(id, pid);
                            self.event(
                                &spec,
                                "adopted",
                                format!("pid {pid}, found by its spawn marker"),
                            );
                        }
                    }
                }
                Phase::Running {
                    pid, start_time, ..
                }
                | Phase::Stopping {
                    pid,
                    start_time,
                    leader_gone: false,
                    ..
                } => {
                    let alive = same_boot && proc::start_time(pid) == Some(start_time);
                    obs = plan::on_restore(&spec, &obs, alive, now);
                    if alive {
                        self.watch(id, pid);
                        self.event(&spec, "adopted", format!("pid {pid}"));
                    } else {
                        self.event(
                            &spec,
                            "lost",
                            format!("pid {pid} ended while the daemon was down"),
                        );
                    }
                }
                Phase::Stopping {
                    pid,
                    leader_gone: true,
                    ..
                } => {
                    let alive = same_boot && proc::group_alive(pid);
                    obs = plan::on_restore(&spec, &obs, alive, now);
                }
                _ => {}
            }
            self.restore_handover(&spec, &mut obs, same_boot);
            self.store.put_runtime(id, &obs)?;
            self.slots.insert(
                id,
                Slot {
                    spec: Arc::new(spec),
                    obs,
                    next_check_ms: None,
                    reload: None,
                },
            );
            ids.push(id);
        }
        self.store.flush()?;
        Ok(ids)
    }

    fn absorb(&mut self, msg: Msg, dirty: &mut BTreeSet<u64>) {
        match msg {
            Msg::Wake(ids) => dirty.extend(ids),
            Msg::FileChanged { id, path } => {
                // A log file of its own (or one rotated from it) under the
                // watched folder would restart it at every line.
                if let Some(slot) = self.slots.get(&id) {
                    let (out, err) = self.home.process_logs(&slot.spec.name, id, &slot.spec.def);
                    if [out, err].iter().any(|l| {
                        path.as_os_str()
                            .as_encoded_bytes()
                            .starts_with(l.as_os_str().as_encoded_bytes())
                    }) {
                        return;
                    }
                }
                let now = now_ms();
                let delay = self
                    .slots
                    .get(&id)
                    .map_or(0, |s| s.spec.def.watch_delay_ms());
                let due = self.watch_due.entry(id).or_insert(WatchDue {
                    at_ms: now,
                    first_ms: now,
                    path: PathBuf::new(),
                });
                due.at_ms =
                    (now + delay).min(due.first_ms + delay + WATCH_MAX_WAIT.as_millis() as u64);
                due.path = path;
            }
            Msg::Notice { pgid, notice } => self.on_notice(pgid, notice, dirty),
            Msg::Reload {
                id,
                generation,
                reply,
            } => self.on_reload(id, generation, reply, dirty),
            Msg::Exited { id, pid, status } => {
                let now = now_ms();
                let (code, signal) = status.map_or((None, None), |s| (s.code, s.signal));
                let describe = crate::spec::Exit {
                    code,
                    signal,
                    at_ms: now,
                    uptime_ms: 0,
                }
                .describe();
                if self.other_exited(id, pid, describe, dirty) {
                    return;
                }
                let Some(slot) = self.slots.get_mut(&id) else {
                    return;
                };
                let mut group_alive = proc::group_alive(pid);
                if group_alive
                    && matches!(slot.obs.phase, Phase::Running { pid: p, .. } if p == pid)
                {
                    // The leader crashed; what it left in its group would keep
                    // ports and files busy for the next run.
                    let _ = spawn::signal_group(pid, Signal::SIGKILL);
                    group_alive = false;
                }
                let before = slot.obs.clone();
                slot.obs =
                    plan::on_exit(&slot.spec, &slot.obs, pid, code, signal, group_alive, now);
                if let (Some(code), Phase::Running { since_ms, .. }) = (code, &before.phase) {
                    let quick = now.saturating_sub(*since_ms) < SHELL_QUICK_EXIT.as_millis() as u64;
                    if quick && spawn::runs_in_shell(&slot.spec.command()) {
                        let (_, err_log) =
                            self.home.process_logs(&slot.spec.name, id, &slot.spec.def);
                        let last = crate::supervise::logs::tail_lines(&err_log, 1)
                            .ok()
                            .and_then(|mut l| l.pop());
                        if let Some(what) = spawn::shell_failure(code, last.as_deref()) {
                            slot.obs.last_error = Some(format!("cannot start: {what}"));
                        }
                    }
                }
                if slot.obs != before {
                    let mut detail = slot
                        .obs
                        .last_exit
                        .as_ref()
                        .map(|e| format!("pid {pid}: {}", e.describe()))
                        .unwrap_or_default();
                    if let Some(error) = &slot.obs.last_error {
                        detail = format!("{detail} ({error})");
                    }
                    let spec = slot.spec.clone();
                    self.event(&spec, "exited", detail);
                    dirty.insert(id);
                }
            }
            Msg::Reset(ids) => {
                for id in ids {
                    let Some(slot) = self.slots.get_mut(&id) else {
                        continue;
                    };
                    let before = slot.obs.restarts();
                    slot.obs = plan::on_reset(&slot.obs);
                    let spec = slot.spec.clone();
                    self.event(&spec, "reset", format!("{before} restarts counted before"));
                    dirty.insert(id);
                }
            }
        }
    }

    /// Sets `restart_pending` on every run whose group is over its memory limit.
    fn check_memory(&mut self, now: u64, dirty: &mut BTreeSet<u64>) {
        self.next_memory_check_ms = now + MEMORY_CHECK_INTERVAL.as_millis() as u64;
        let limited: Vec<(u64, u32, u64)> = self
            .slots
            .iter()
            .filter_map(|(id, s)| match (s.spec.def.max_memory(), &s.obs.phase) {
                (Some(limit), Phase::Running { pid, .. }) if s.obs.restart_pending.is_none() => {
                    Some((*id, *pid, limit))
                }
                _ => None,
            })
            .collect();
        if limited.is_empty() {
            return;
        }
        let pgids: Vec<u32> = limited.iter().map(|(_, pid, _)| *pid).collect();
        let usage = self.sampler.sample_groups(&pgids);
        for (id, pid, limit) in limited {
            let Some(u) = usage.get(&pid) else { continue };
            if u.memory_bytes > limit {
                let reason = format!("memory {} bytes over the limit of {limit}", u.memory_bytes);
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.obs.restart_pending = Some(reason.clone());
                    let spec = slot.spec.clone();
                    self.event(&spec, "memory_limit", reason);
                    dirty.insert(id);
                }
            }
        }
    }

    /// One reconcile pass over `dirty`: plan and act for each id, run the
    /// spawns after their intents are durable, persist and publish.
    fn pass(&mut self, dirty: BTreeSet<u64>) {
        if dirty.is_empty() {
            return;
        }
        let now = now_ms();
        let mut spawns = Vec::new();
        for &id in &dirty {
            match self.step(id, now, &mut spawns) {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(
                        id,
                        name = self.name_of(id),
                        "{e}; looking again in {STORE_RETRY:?}"
                    );
                    self.retry_later(id, now);
                }
            }
        }
        // A large batch is spawned a slice per pass, so exits, stops and
        // reads are served in between; the rest look again at once. Those
        // already recorded and published as they are wait without being
        // written and published again at every slice.
        let mut dirty = dirty;
        let more_to_spawn = spawns.len() > SPAWN_BATCH;
        if more_to_spawn {
            let published = self.shared.read();
            for id in spawns.split_off(SPAWN_BATCH) {
                let Some(slot) = self.slots.get_mut(&id) else {
                    continue;
                };
                slot.next_check_ms = Some(now);
                if published
                    .get(&id)
                    .is_some_and(|e| Arc::ptr_eq(&e.spec, &slot.spec) && e.obs == slot.obs)
                {
                    dirty.remove(&id);
                }
            }
        }
        if !spawns.is_empty() {
            for &id in &spawns {
                if let Some(slot) = self.slots.get_mut(&id) {
                    // A reload's new run has its intent in `handover` already.
                    if !matches!(
                        slot.obs.handover,
                        Some(crate::spec::Handover::Spawning { .. })
                    ) {
                        slot.obs.phase = Phase::Spawning {
                            nonce: fresh_nonce(),
                            at_ms: now,
                        };
                    }
                    if let Err(e) = self.store.put_runtime(id, &slot.obs) {
                        tracing::error!(id, name = %slot.spec.name, "cannot record the spawn: {e}");
                    }
                }
            }
            // The intent must be durable before any spawn: see the module doc.
            // In the log only: the pass's closing flush puts it (and the
            // pids) in the snapshot too, and a thousand starts then pay one
            // snapshot per batch instead of two.
            if let Err(e) = self.store.flush_log() {
                tracing::error!("cannot flush spawn intents, not starting anything yet: {e}");
                for id in std::mem::take(&mut spawns) {
                    self.retry_later(id, now);
                }
            }
            // Readers see the whole batch (as starting) while it is spawned,
            // which for a thousand processes takes a while.
            self.publish(&dirty);
            self.spawn_all(spawns);
        }
        for &id in &dirty {
            self.sync_watch(id);
            self.sync_cron(id, now);
            if let Some(slot) = self.slots.get(&id) {
                if let Err(e) = self.store.put_runtime(id, &slot.obs) {
                    tracing::error!(id, name = %slot.spec.name, "cannot record its state: {e}");
                }
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!("flush failed: {e}");
        }
        if self.next_port_poll_ms.is_none() {
            self.next_port_poll_ms = self.port_poll_due(now);
        }
        self.publish(&dirty);
        // A burst over many processes (a file of a thousand) leaves
        // megabytes of freed copies in the heap (decoded specs, each
        // commit's snapshot): at its end, hand them back.
        self.untrimmed += dirty.len();
        if !more_to_spawn && self.untrimmed > SPAWN_BATCH {
            self.untrimmed = 0;
            crate::supervise::heap::trim();
        }
    }

    /// Makes `id` look again after `STORE_RETRY` (a store error, e.g. no
    /// file descriptor left), so nothing stays half-done until a wake-up.
    fn retry_later(&mut self, id: u64, now: u64) {
        if let Some(slot) = self.slots.get_mut(&id) {
            let at = now + STORE_RETRY.as_millis() as u64;
            slot.next_check_ms = Some(slot.next_check_ms.map_or(at, |t| t.min(at)));
        }
    }

    /// Hands readers the current state of `ids` (removed ones disappear).
    fn publish(&self, ids: &BTreeSet<u64>) {
        let updates = ids
            .iter()
            .map(|&id| {
                let entry = self.slots.get(&id).map(|slot| Entry {
                    spec: slot.spec.clone(),
                    obs: slot.obs.clone(),
                });
                (id, entry)
            })
            .collect();
        self.shared.publish(updates);
    }

    /// Plans and performs the non-spawn actions for one id until it settles.
    fn step(
        &mut self,
        id: u64,
        now: u64,
        spawns: &mut Vec<u64>,
    ) -> Result<(), crate::store::StoreError> {
        let Some(spec) = self.store.get(id)? else {
            self.slots.remove(&id);
            return Ok(());
        };
        match self.slots.get_mut(&id) {
            // Unchanged: the copy readers share stays as it is.
            Some(slot) if *slot.spec == spec => {}
            Some(slot) => slot.spec = Arc::new(spec),
            None => {
                self.slots.insert(
                    id,
                    Slot {
                        spec: Arc::new(spec),
                        obs: Observed::new(),
                        next_check_ms: None,
                        reload: None,
                    },
                );
            }
        }
        // Each round moves the phase forward; a handful always suffices
        // (e.g. Exited → Stopped → Forget).
        for _ in 0..6 {
            let Some(slot) = self.slots.get_mut(&id) else {
                return Ok(());
            };
            if let Phase::Stopping {
                pid,
                leader_gone: true,
                killed: false,
                ..
            } = slot.obs.phase
            {
                if !proc::group_alive(pid) {
                    slot.obs = plan::on_group_gone(&slot.obs, now);
                }
            }
            match self.handover_round(id, now) {
                Round::Free => {}
                Round::Again => continue,
                Round::Hold | Round::SpawnNext => {
                    let Some(slot) = self.slots.get_mut(&id) else {
                        return Ok(());
                    };
                    slot.next_check_ms = super::handover::next_check_ms(&slot.obs);
                    if matches!(
                        slot.obs.handover,
                        Some(crate::spec::Handover::Spawning { .. })
                    ) {
                        spawns.push(id);
                    }
                    return Ok(());
                }
            }
            let Some(slot) = self.slots.get_mut(&id) else {
                return Ok(());
            };
            let p = plan::plan(&slot.spec, &slot.obs, now);
            slot.next_check_ms = match (p.next_check_ms, super::handover::next_check_ms(&slot.obs))
            {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(action) = p.actions.into_iter().next() else {
                return Ok(());
            };
            match action {
                Action::Spawn => {
                    spawns.push(id);
                    return Ok(());
                }
                Action::Forget => {
                    let spec = slot.spec.clone();
                    self.store.remove(id)?;
                    self.slots.remove(&id);
                    self.event(&spec, "removed", String::new());
                    return Ok(());
                }
                Action::Terminate { pgid } | Action::Kill { pgid } => {
                    let sig = if matches!(action, Action::Kill { .. }) {
                        Signal::SIGKILL
                    } else {
                        slot.spec.def.kill_signal().0
                    };
                    if let Err(e) = spawn::signal_group(pgid, sig) {
                        tracing::warn!(id, name = %slot.spec.name, "cannot send {sig} to group {pgid}: {e}");
                    }
                    slot.obs = plan::on_action(&slot.spec, &slot.obs, &action, now);
                    let spec = slot.spec.clone();
                    self.event(
                        &spec,
                        if sig == Signal::SIGKILL {
                            "killed"
                        } else {
                            "stopping"
                        },
                        format!("{sig} to process group {pgid}"),
                    );
                }
                Action::MarkStopped | Action::MarkErrored { .. } | Action::MarkFinished { .. } => {
                    slot.obs = plan::on_action(&slot.spec, &slot.obs, &action, now);
                    let spec = slot.spec.clone();
                    match action {
                        Action::MarkErrored { reason } => self.event(&spec, "errored", reason),
                        Action::MarkFinished { reason } => {
                            self.event(&spec, "finished", format!("not restarted: {reason}"))
                        }
                        _ => self.event(&spec, "stopped", String::new()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Spawns the runs of `ids` (their intents are durable), on a few
    /// threads when there are several: each spawn waits for its child's exec.
    fn spawn_all(&mut self, ids: Vec<u64>) {
        let jobs: Vec<(u64, Arc<Spec>, u64)> = ids
            .into_iter()
            .filter_map(|id| {
                let slot = self.slots.get(&id)?;
                match (&slot.obs.handover, &slot.obs.phase) {
                    (Some(crate::spec::Handover::Spawning { nonce, .. }), _)
                    | (_, Phase::Spawning { nonce, .. }) => Some((id, slot.spec.clone(), *nonce)),
                    _ => None,
                }
            })
            .collect();
        let home = &self.home;
        let notify = self.notify_address.as_deref();
        if jobs.len() > 1 {
            // Creating a file takes its folder's lock: two threads creating
            // a thousand logs in one folder wait on each other (ext4 spins
            // on that lock), and cost ten times one thread doing it all. So
            // the batch's new log files are made here, one after another,
            // and the spawning threads only open them.
            for (_, spec, _) in &jobs {
                for log in log_files(home, spec) {
                    create_log(&log);
                }
            }
        }
        let results: Vec<std::io::Result<spawn::Spawned>> = if jobs.len() < 2 {
            jobs.iter()
                .map(|(_, spec, nonce)| spawn_run(home, notify, spec, *nonce))
                .collect()
        } else {
            let threads = std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8);
            let per = jobs.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .chunks(per)
                    .map(|chunk| {
                        scope.spawn(move || {
                            chunk
                                .iter()
                                .map(|(_, spec, nonce)| spawn_run(home, notify, spec, *nonce))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| {
                        h.join().unwrap_or_else(|_| {
                            vec![Err(std::io::Error::other("the spawning thread panicked"))]
                        })
                    })
                    .collect()
            })
        };
        for ((id, spec, _), result) in jobs.into_iter().zip(results) {
            self.finish_spawn(id, &spec, result);
        }
    }

    /// Records what one spawn did.
    fn finish_spawn(&mut self, id: u64, spec: &Spec, result: std::io::Result<spawn::Spawned>) {
        let now = now_ms();
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if matches!(
            slot.obs.handover,
            Some(crate::spec::Handover::Spawning { .. })
        ) {
            return self.finish_next_spawn(id, spec, result);
        }
        let was_started = slot.obs.starts > 0;
        match result {
            Ok(child) => {
                // Spawned, its pid not yet recorded: the next daemon finds it
                // by its spawn marker.
                fail::fail_point!("executor::after-spawn");
                slot.obs = plan::on_spawned(
                    spec,
                    &slot.obs,
                    child.pid,
                    child.start_time,
                    &self.boot_id,
                    now,
                );
                // A run that must say it is ready is looked at again at its
                // `listen_timeout`.
                slot.next_check_ms = super::handover::next_check_ms(&slot.obs);
                self.watch(id, child.pid);
                let kind = if was_started { "restarted" } else { "started" };
                self.event(spec, kind, format!("pid {}", child.pid));
            }
            Err(e) => {
                let e = e.to_string();
                slot.obs = plan::on_spawn_failed(spec, &slot.obs, &e, now);
                // Look again at once: the plan decides between a retry after
                // backoff and `errored`.
                slot.next_check_ms = Some(now);
                self.event(spec, "spawn_failed", e);
            }
        }
    }

    /// Turns watched changes whose debounce has passed into restarts.
    fn due_watch_restarts(&mut self, now: u64, dirty: &mut BTreeSet<u64>) {
        let due: Vec<u64> = self
            .watch_due
            .iter()
            .filter(|(_, d)| d.at_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(WatchDue { path, .. }) = self.watch_due.remove(&id) else {
                continue;
            };
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            if slot.obs.pid().is_some() && slot.obs.restart_pending.is_none() {
                let reason = format!("{} changed", path.display());
                slot.obs.restart_pending = Some(reason.clone());
                let spec = slot.spec.clone();
                self.event(&spec, "watch", reason);
                dirty.insert(id);
            }
        }
    }

    /// Turns `cron_restart` matches that are due into restarts (or starts of
    /// an exited run), and schedules each one's next match.
    fn due_cron_restarts(&mut self, now: u64, dirty: &mut BTreeSet<u64>) {
        let due: Vec<(u64, String)> = self
            .cron_due
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(id, (_, expr))| (*id, expr.clone()))
            .collect();
        for (id, expr) in due {
            match plan::next_cron_ms(&expr, now) {
                Some(next) => self.cron_due.insert(id, (next, expr.clone())),
                None => self.cron_due.remove(&id),
            };
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            let reason = format!("cron_restart {expr:?} matched");
            let next = plan::on_cron(&slot.spec, &slot.obs, &reason);
            if next != slot.obs {
                slot.obs = next;
                let spec = slot.spec.clone();
                self.event(&spec, "cron_restart", reason);
                dirty.insert(id);
            }
        }
    }

    /// Keeps the next `cron_restart` match scheduled exactly while the
    /// process should run with one (a match missed while the daemon was
    /// down is not made up for, as cron does).
    fn sync_cron(&mut self, id: u64, now: u64) {
        let wanted = self.slots.get(&id).and_then(|s| {
            (s.spec.desired == crate::spec::Desired::Running)
                .then(|| s.spec.def.cron_restart.clone())
                .flatten()
        });
        match (wanted, self.cron_due.get(&id)) {
            (Some(expr), Some((_, current))) if *current == expr => {}
            (Some(expr), _) => match plan::next_cron_ms(&expr, now) {
                Some(next) => {
                    self.cron_due.insert(id, (next, expr));
                }
                None => {
                    self.cron_due.remove(&id);
                    tracing::warn!(id, "cron_restart {expr:?} has no next match");
                }
            },
            (None, _) => {
                self.cron_due.remove(&id);
            }
        }
    }

    /// Keeps a watch task running exactly while the process should run with
    /// `--watch`, on the paths its spec names.
    fn sync_watch(&mut self, id: u64) {
        let wanted = self.slots.get(&id).and_then(|s| {
            let def = &s.spec.def;
            if def.watch.is_empty() || s.spec.desired != crate::spec::Desired::Running {
                return None;
            }
            let cwd = PathBuf::from(s.spec.cwd());
            // Children write their logs there: watching them would restart forever.
            let mut opm_paths = vec![self.home.logs()];
            opm_paths.extend(log_files(&self.home, &s.spec));
            Some(WatchPlan {
                roots: def.watch.iter().map(|w| under(&cwd, w)).collect(),
                ignore: def.ignore_watch.clone(),
                opm_paths,
            })
        });
        if let Some((plan, task)) = self.watchers.get(&id) {
            if Some(plan) == wanted.as_ref() {
                return;
            }
            task.abort();
            self.watchers.remove(&id);
            self.watch_due.remove(&id);
        }
        let Some(plan) = wanted else { return };
        let watcher = crate::definition::ignore_globs(&plan.ignore)
            .map_err(std::io::Error::other)
            .and_then(|globs| {
                let ignore = crate::supervise::watch::Ignore {
                    globs,
                    paths: plan.opm_paths.clone(),
                };
                crate::supervise::watch::Watcher::new(&plan.roots, ignore)
            });
        match watcher {
            Ok(mut watcher) => {
                let tx = self.tx.clone();
                let task = tokio::spawn(async move {
                    while let Ok(changed) = watcher.changed().await {
                        if tx.send(Msg::FileChanged { id, path: changed }).is_err() {
                            return;
                        }
                    }
                });
                self.watchers.insert(id, (plan, task.abort_handle()));
            }
            Err(e) => tracing::warn!(
                id,
                name = self.name_of(id),
                "cannot watch {:?}: {e}",
                plan.roots
            ),
        }
    }

    /// Watches `pid` through a pidfd and reports its exit. When no pidfd
    /// can be opened (out of file descriptors), it tries again every
    /// `PIDFD_RETRY`: the run is still ours and must not be taken for ended.
    fn watch(&self, id: u64, pid: u32) {
        let tx = self.tx.clone();
        let report = move |tx: &mpsc::UnboundedSender<Msg>| {
            let status = pidfd::reap(pid);
            let _ = tx.send(Msg::Exited { id, pid, status });
        };
        match pidfd::open(pid) {
            Ok(fd) => {
                tokio::spawn(async move {
                    let _ = fd.exited().await;
                    report(&tx);
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => report(&tx),
            Err(e) => {
                tracing::warn!(
                    id,
                    name = self.name_of(id),
                    "cannot watch pid {pid} yet ({e}); trying again every {PIDFD_RETRY:?}"
                );
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(PIDFD_RETRY).await;
                        if tx.is_closed() {
                            return;
                        }
                        match pidfd::open(pid) {
                            Ok(fd) => {
                                let _ = fd.exited().await;
                                break;
                            }
                            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break,
                            Err(_) => {}
                        }
                    }
                    report(&tx);
                });
            }
        }
    }

    fn event(&self, spec: &Spec, kind: &str, detail: String) {
        let event = Event {
            at_ms: now_ms(),
            subject: Subject::Process {
                id: spec.id,
                name: spec.name.clone(),
            },
            kind: kind.to_string(),
            detail,
        };
        let (id, name) = (spec.id, spec.name.as_str());
        let text = match event.detail.as_str() {
            "" => event.kind.clone(),
            detail => format!("{kind}: {detail}"),
        };
        match kind {
            "lost" | "errored" | "spawn_failed" | "memory_limit" => {
                tracing::warn!(id, name, "{text}")
            }
            _ => tracing::info!(id, name, "{text}"),
        }
        if let Err(e) = self.store.push_event(&event) {
            tracing::error!(id, name, "cannot record an event: {e}");
        }
    }

    /// The name of process `id`, for the log.
    fn name_of(&self, id: u64) -> Option<&str> {
        self.slots.get(&id).map(|s| s.spec.name.as_str())
    }
}

/// `w` (a watched path) under `cwd`, without `.` segments (bare `--watch`
/// is `.`, the working directory itself).
fn under(cwd: &std::path::Path, w: &str) -> PathBuf {
    cwd.join(w)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// The files a run's output goes to.
fn log_files(home: &Home, spec: &Spec) -> [PathBuf; 2] {
    let (out, err) = home.process_logs(&spec.name, spec.id, &spec.def);
    [out, err]
}

/// Creates a log file that does not exist yet, as the spawn would (0640,
/// its folder made first). Whatever fails here fails again in the spawn,
/// which reports it.
fn create_log(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path);
}

/// Spawns one run of `spec`, marked with `nonce`.
fn spawn_run(
    home: &Home,
    notify: Option<&str>,
    spec: &Spec,
    nonce: u64,
) -> std::io::Result<spawn::Spawned> {
    let (program, args) = spawn::split_command(&spec.command())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut env = spec.def.env.clone();
    env.push(("OPM_ID".into(), spec.id.to_string()));
    env.push(("OPM_NAME".into(), spec.name.clone()));
    env.push((SPAWN_MARKER.into(), nonce.to_string()));
    for (k, v) in spec.def.instance_env(|k| std::env::var(k).ok()) {
        env.retain(|(e, _)| *e != k);
        env.push((k, v));
    }
    if let (true, Some(address)) = (spec.def.wait_ready(), notify) {
        env.push(("NOTIFY_SOCKET".into(), address.to_string()));
    }
    let cwd = PathBuf::from(spec.cwd());
    let [out_log, err_log] = log_files(home, spec);
    let run_as = match (&spec.def.user, &spec.def.group) {
        (None, None) => None,
        (user, group) => {
            let who = crate::supervise::user::resolve(user.as_deref(), group.as_deref())
                .and_then(|who| crate::supervise::user::permitted(&who).map(|()| who))
                .map_err(std::io::Error::other)?;
            for (k, v) in who.env() {
                if !spec.def.env.iter().any(|(ek, _)| ek == k) {
                    env.push((k.into(), v));
                }
            }
            Some(who)
        }
    };
    spawn::spawn(&spawn::SpawnSpec {
        program: &program,
        args: &args,
        cwd: &cwd,
        env: &env,
        base: spec.def.caller_env.as_deref(),
        out_log: &out_log,
        err_log: &err_log,
        run_as: run_as.as_ref(),
    })
}
