//! The executor's side of readiness and reload (`reconcile::handover`
//! decides): the notify socket's reader, the port poll, the deadlines, the
//! new run of a reload (spawned beside the live one, watched, promoted or
//! stopped), the answers to reload requests, and adopting both runs after
//! a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use super::{fresh_nonce, Executor, Msg, Slot, SPAWN_MARKER};
use crate::reconcile::handover::{self, ReloadOutcome, Step};
use crate::spec::{now_ms, Handover, Observed, Phase, Readiness, Spec};
use crate::supervise::{proc, ready, spawn};

/// How often a run waiting for its port is looked at, until `listen_timeout`.
pub const PORT_POLL: Duration = Duration::from_millis(100);
/// How often after `listen_timeout` (a late start is still noticed).
pub const LATE_PORT_POLL: Duration = Duration::from_secs(1);

/// A reload request waiting for its answer.
pub struct ReloadWait {
    /// The spec generation the reload asked for.
    pub generation: u64,
    pub waiters: Vec<oneshot::Sender<ReloadOutcome>>,
}

/// What the handover side of a reconcile round decided.
pub enum Round {
    /// The ordinary plan decides.
    Free,
    /// The ordinary plan waits (a new run is being started beside the live one).
    Hold,
    /// The new run's intent is recorded: spawn it with the pass's spawns.
    SpawnNext,
    /// Something changed: plan again.
    Again,
}

impl Executor {
    /// Binds the notify socket and starts its reader (inside the runtime).
    pub(super) fn start_notify(&mut self) {
        let path = self.home.root.join("notify.sock");
        match ready::NotifySocket::bind(&path) {
            Ok(sock) => {
                self.notify_address = Some(sock.address.clone());
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    loop {
                        match sock.recv().await {
                            Ok(notice) => {
                                // The sender's group is read at once: a
                                // helper that sends and exits is soon gone.
                                let Some(pgid) = proc::stat(notice.pid).map(|s| s.pgrp) else {
                                    continue;
                                };
                                if tx.send(Msg::Notice { pgid, notice }).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::error!("the notify socket failed: {e}");
                                return;
                            }
                        }
                    }
                });
            }
            Err(e) => tracing::error!(
                "cannot bind the notify socket {}: {e}; --wait-ready processes will not become online",
                path.display()
            ),
        }
    }

    /// A notify message from a member of group `pgid`.
    pub(super) fn on_notice(
        &mut self,
        pgid: u32,
        notice: ready::Notice,
        dirty: &mut BTreeSet<u64>,
    ) {
        let found = self.slots.iter().find_map(|(id, s)| {
            let live = matches!(s.obs.phase, Phase::Running { pid, .. } if pid == pgid);
            let next =
                matches!(s.obs.handover, Some(Handover::Starting { pid, .. }) if pid == pgid);
            (live || next).then_some((*id, live))
        });
        let Some((id, live)) = found else {
            tracing::debug!(
                pid = notice.pid,
                "a notify message from a process opm does not run"
            );
            return;
        };
        if let (true, Some(status)) = (live, &notice.status) {
            if let Some(slot) = self.slots.get_mut(&id) {
                if slot.obs.notify_status.as_ref() != Some(status) {
                    slot.obs.notify_status = Some(status.clone());
                    dirty.insert(id);
                }
            }
        }
        if notice.ready && self.slots.get(&id).is_some_and(|s| s.spec.def.wait_ready()) {
            self.mark_ready(id, pgid, "READY=1", dirty);
        }
    }

    /// The run leading `pgid` gave its sign: online, or (a reload's new
    /// run) made the live one, the old one told to stop.
    fn mark_ready(&mut self, id: u64, pgid: u32, sign: &str, dirty: &mut BTreeSet<u64>) {
        let now = now_ms();
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let before = slot.obs.clone();
        let (after, old) = handover::on_ready(&slot.spec, &slot.obs, pgid, now);
        if after == before {
            return;
        }
        slot.obs = after;
        dirty.insert(id);
        let spec = slot.spec.clone();
        let promoted =
            matches!(before.handover, Some(Handover::Starting { pid, .. }) if pid == pgid);
        let since = match before.handover {
            Some(Handover::Starting { since_ms, .. }) if promoted => since_ms,
            _ => match before.phase {
                Phase::Running { since_ms, .. } => since_ms,
                _ => now,
            },
        };
        let took = now.saturating_sub(since);
        if !promoted {
            let late = matches!(before.readiness, Readiness::TimedOut { .. });
            let detail = format!(
                "pid {pgid}: {sign} after {took} ms{}",
                if late { ", past listen_timeout" } else { "" }
            );
            self.event(&spec, "ready", detail);
            return;
        }
        // The new run is the live one from here: made durable before the
        // old one is told to stop, so a daemon killed now finishes the
        // reload instead of waiting on a sign that was already given.
        if let Some(slot) = self.slots.get(&id) {
            if let Err(e) = self
                .store
                .put_runtime(id, &slot.obs)
                .and_then(|()| self.store.flush_log())
            {
                tracing::error!(id, name = %spec.name, "cannot record the reload: {e}");
            }
        }
        let sig = spec.def.kill_signal().0;
        let detail = match old {
            Some(old) => {
                if let Err(e) = spawn::signal_group(old, sig) {
                    tracing::warn!(id, name = %spec.name, "cannot send {sig} to group {old}: {e}");
                }
                format!("pid {pgid} ready ({sign}) after {took} ms and live; {sig} to pid {old}")
            }
            None => format!("pid {pgid} ready ({sign}) after {took} ms and live"),
        };
        self.event(&spec, "reloaded", detail);
        self.answer(
            id,
            ReloadOutcome::Replaced {
                old_pid: old,
                new_pid: pgid,
            },
        );
    }

    /// Answers the reload request of `id`, if one waits.
    fn answer(&mut self, id: u64, outcome: ReloadOutcome) {
        if let Some(wait) = self.slots.get_mut(&id).and_then(|s| s.reload.take()) {
            for w in wait.waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    /// A reload request for `generation` of `id`.
    pub(super) fn on_reload(
        &mut self,
        id: u64,
        generation: u64,
        reply: oneshot::Sender<ReloadOutcome>,
        dirty: &mut BTreeSet<u64>,
    ) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let mut waiters = slot.reload.take().map(|w| w.waiters).unwrap_or_default();
        waiters.push(reply);
        slot.reload = Some(ReloadWait {
            generation,
            waiters,
        });
        dirty.insert(id);
    }

    /// The handover's part of one reconcile round for `id`.
    pub(super) fn handover_round(&mut self, id: u64, now: u64) -> Round {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Round::Free;
        };
        if handover::on_deadline(&mut slot.obs, now) {
            let spec = slot.spec.clone();
            let pid = slot.obs.pid().unwrap_or(0);
            let sign = if spec.def.wait_ready() {
                "no READY=1 on NOTIFY_SOCKET"
            } else {
                "nothing listening on the ready port"
            };
            self.event(
                &spec,
                "ready_timeout",
                format!(
                    "pid {pid}: not ready within {} (listen_timeout): {sign}; it keeps running, status starting",
                    crate::definition::Millis(spec.def.listen_timeout_ms())
                ),
            );
            return Round::Again;
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return Round::Free;
        };
        if let Some(Handover::Retiring {
            pid,
            leader_gone: true,
            killed: false,
            ..
        }) = slot.obs.handover
        {
            if !proc::group_alive(pid) {
                slot.obs = handover::on_retiring_group_gone(&slot.obs);
                return Round::Again;
            }
        }
        let reload = slot.reload.as_ref().map(|r| r.generation);
        match handover::step(&slot.spec, &slot.obs, reload, now) {
            Step::Free => Round::Free,
            Step::Hold => Round::Hold,
            Step::SpawnNext => {
                slot.obs = handover::on_spawn_next(&slot.obs, fresh_nonce(), now);
                Round::SpawnNext
            }
            Step::Fallback(reason) => {
                let spec = slot.spec.clone();
                self.event(&spec, "reload", reason.clone());
                self.answer(id, ReloadOutcome::Restarted { reason });
                Round::Free
            }
            Step::StopNext { pgid, reason } => {
                let sig = slot.spec.def.kill_signal().0;
                if let Err(e) = spawn::signal_group(pgid, sig) {
                    tracing::warn!(id, name = %slot.spec.name, "cannot send {sig} to group {pgid}: {e}");
                }
                slot.obs = handover::retire_next(&slot.spec, &slot.obs, now);
                let spec = slot.spec.clone();
                let live = slot.obs.pid();
                let detail = match live {
                    Some(p) => format!("{reason}; {sig} to pid {pgid}; pid {p} still serves"),
                    None => format!("{reason}; {sig} to pid {pgid}"),
                };
                self.event(&spec, "reload_failed", detail.clone());
                self.answer(id, ReloadOutcome::Failed { reason: detail });
                Round::Again
            }
            Step::KillRetiring { pgid } => {
                let _ = spawn::signal_group(pgid, Signal::SIGKILL);
                slot.obs = handover::on_retiring_killed(&slot.obs);
                let spec = slot.spec.clone();
                self.event(&spec, "killed", format!("SIGKILL to process group {pgid}"));
                Round::Again
            }
        }
    }

    /// The exit of the other run's leader; `false` when `pid` is not it.
    pub(super) fn other_exited(
        &mut self,
        id: u64,
        pid: u32,
        describe: String,
        dirty: &mut BTreeSet<u64>,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(&id) else {
            return false;
        };
        let starting =
            matches!(slot.obs.handover, Some(Handover::Starting { pid: p, .. }) if p == pid);
        let mut group_alive = proc::group_alive(pid);
        if starting && group_alive {
            // What the failed new run left in its group would hold the port.
            let _ = spawn::signal_group(pid, Signal::SIGKILL);
            group_alive = false;
        }
        let Some(after) = handover::on_other_exit(&slot.spec, &slot.obs, pid, group_alive) else {
            return false;
        };
        slot.obs = after;
        dirty.insert(id);
        let spec = slot.spec.clone();
        if starting {
            let live = slot.obs.pid();
            let mut reason =
                format!("the new run (pid {pid}) ended before it was ready: {describe}");
            if let Some(p) = live {
                reason.push_str(&format!("; pid {p} still serves"));
            }
            self.event(&spec, "reload_failed", reason.clone());
            self.answer(id, ReloadOutcome::Failed { reason });
        } else {
            self.event(
                &spec,
                "exited",
                format!("pid {pid} (replaced by a reload): {describe}"),
            );
        }
        true
    }

    /// Looks at the runs waiting for their port; returns when to look again.
    pub(super) fn poll_ports(&mut self, now: u64, dirty: &mut BTreeSet<u64>) {
        let waiting: Vec<(u64, u32, u16)> = self
            .slots
            .iter()
            .flat_map(|(id, s)| {
                port_waits(s)
                    .into_iter()
                    .map(move |(pgid, port)| (*id, pgid, port))
            })
            .collect();
        for (id, pgid, port) in waiting {
            if ready::group_listens(pgid, port) {
                self.mark_ready(id, pgid, &format!("listening on port {port}"), dirty);
            }
        }
        self.next_port_poll_ms = self.port_poll_due(now);
    }

    /// When the port poll is next due, if any run waits for its port.
    pub(super) fn port_poll_due(&self, now: u64) -> Option<u64> {
        let mut any = false;
        let mut urgent = false;
        for s in self.slots.values() {
            if port_waits(s).is_empty() {
                continue;
            }
            any = true;
            urgent |= !matches!(s.obs.readiness, Readiness::TimedOut { .. })
                || matches!(s.obs.handover, Some(Handover::Starting { .. }));
        }
        let every = if urgent { PORT_POLL } else { LATE_PORT_POLL };
        any.then(|| now + every.as_millis() as u64)
    }

    /// Adopts the other run of a reload a previous daemon left under way.
    pub(super) fn restore_handover(&mut self, spec: &Spec, obs: &mut Observed, same_boot: bool) {
        let id = spec.id;
        let (found, alive) = match obs.handover {
            Some(Handover::Spawning { nonce, .. }) => {
                let found = proc::find_by_env(SPAWN_MARKER, &nonce.to_string())
                    .and_then(|pid| Some((pid, proc::start_time(pid)?)));
                (found, false)
            }
            Some(Handover::Starting {
                pid, start_time, ..
            })
            | Some(Handover::Retiring {
                pid,
                start_time,
                leader_gone: false,
                ..
            }) => (None, same_boot && proc::start_time(pid) == Some(start_time)),
            Some(Handover::Retiring {
                pid,
                leader_gone: true,
                ..
            }) => (None, same_boot && proc::group_alive(pid)),
            None => return,
        };
        let (after, reload) = handover::on_restore(spec, obs, found, alive);
        *obs = after;
        match obs.handover {
            Some(Handover::Starting { pid, .. })
            | Some(Handover::Retiring {
                pid,
                leader_gone: false,
                ..
            }) => {
                self.watch(id, pid);
                self.event(
                    spec,
                    "adopted",
                    format!("pid {pid} (the other run of a reload)"),
                );
            }
            _ => {}
        }
        if reload {
            self.pending_reloads.push((id, spec.generation));
        }
    }

    /// Records what the spawn of a reload's new run did.
    pub(super) fn finish_next_spawn(
        &mut self,
        id: u64,
        spec: &Spec,
        result: std::io::Result<spawn::Spawned>,
    ) {
        let now = now_ms();
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        match result {
            Ok(child) => {
                fail::fail_point!("executor::after-spawn");
                slot.obs =
                    handover::on_next_spawned(spec, &slot.obs, child.pid, child.start_time, now);
                slot.next_check_ms = handover::next_check_ms(&slot.obs);
                let live = slot
                    .obs
                    .pid()
                    .map_or(String::new(), |p| format!(" beside pid {p}"));
                self.watch(id, child.pid);
                self.event(
                    spec,
                    "reloading",
                    format!("new run pid {}{live}, waiting until it is ready", child.pid),
                );
                if spec.def.ready_port.is_some() {
                    self.next_port_poll_ms = Some(now);
                }
            }
            Err(e) => {
                slot.obs = handover::on_next_failed(spec, &slot.obs, None);
                slot.next_check_ms = Some(now);
                let reason = format!("cannot start the new run: {e}");
                self.event(spec, "reload_failed", reason.clone());
                self.answer(id, ReloadOutcome::Failed { reason });
            }
        }
    }
}

/// The (group, port) pairs of a slot's runs that wait for their port.
fn port_waits(s: &Slot) -> Vec<(u32, u16)> {
    let Some(port) = s.spec.def.ready_port else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let (Phase::Running { pid, .. }, false) = (&s.obs.phase, s.obs.readiness.is_up()) {
        out.push((*pid, port));
    }
    if let Some(Handover::Starting { pid, .. }) = s.obs.handover {
        out.push((pid, port));
    }
    out
}
