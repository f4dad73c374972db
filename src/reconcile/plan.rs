//! The reconciler's decisions, as pure functions of (spec, observed, now).
//!
//! `plan` says what to do next and when to look again; the `on_*` functions
//! say how a fact (a spawn, an exit, a signal sent, a restore) changes what is
//! observed. Nothing here touches a process, a file or a clock: the executor
//! performs the actions and feeds the facts back. Every transition has a test
//! below that reads like a sentence.

use crate::definition::{ProcessDef, RestartPolicy};
use crate::model::ActionKind;
use crate::spec::{Desired, Exit, Observed, Phase, Spec};

/// The longest wait between two automatic restarts.
pub const BACKOFF_CAP_MS: u64 = 15_000;

/// How often a group whose leader has exited is looked at while it stops.
pub const GROUP_RECHECK_MS: u64 = 20;

/// Something the executor must do for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Record the intent, then spawn the command (`posix_spawn`).
    Spawn,
    /// The stop signal (`kill_signal`) to the process group; SIGKILL
    /// follows at the deadline.
    Terminate { pgid: u32 },
    /// SIGKILL to the process group.
    Kill { pgid: u32 },
    /// Nothing runs and nothing will until the user asks.
    MarkStopped,
    /// Too many unstable restarts: give up until the user asks.
    MarkErrored { reason: String },
    /// The run ended and its policy does not restart it (`restart`,
    /// `stop_exit_codes`): nothing runs until the user (or a cron match)
    /// asks. `reason` says which rule applied.
    MarkFinished { reason: String },
    /// Delete the process from the store.
    Forget,
}

/// What to do now, and when to look again if nothing else happens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub next_check_ms: Option<u64>,
}

impl Plan {
    fn act(action: Action) -> Plan {
        Plan {
            actions: vec![action],
            next_check_ms: None,
        }
    }
    fn wait_until(at_ms: u64) -> Plan {
        Plan {
            actions: Vec::new(),
            next_check_ms: Some(at_ms),
        }
    }
    fn idle() -> Plan {
        Plan::default()
    }
}

/// The delay before the restart that follows the `unstable`-th consecutive
/// unstable exit: none for the first, then `restart_delay` doubling up to
/// the cap.
pub fn backoff_ms(restart_delay_ms: u64, unstable: u32) -> u64 {
    if unstable <= 1 {
        return 0;
    }
    let doublings = (unstable - 2).min(32);
    restart_delay_ms
        .saturating_mul(1u64 << doublings)
        .min(BACKOFF_CAP_MS.max(restart_delay_ms))
}

/// The wait before the automatic restart that follows the `unstable`-th
/// consecutive unstable exit: the fixed `restart_delay` when one is asked
/// for, or the crash backoff when it is longer (in a crash loop).
pub fn restart_wait_ms(def: &ProcessDef, unstable: u32) -> u64 {
    def.fixed_restart_delay_ms()
        .max(backoff_ms(def.restart_delay_ms(), unstable))
}

/// Why the run that just ended is not restarted, if it is not: its policy
/// (`restart`, `stop_exit_codes`) applied to how it ended. A start that
/// failed (`last_error`) is a failure; an end nobody saw (the daemon was
/// down: no code, no signal) is not a clean exit either.
pub fn no_restart_reason(def: &ProcessDef, obs: &Observed) -> Option<String> {
    let policy = def.restart_policy();
    if policy == RestartPolicy::Never {
        return Some("restart = never".into());
    }
    if obs.last_error.is_some() {
        return None;
    }
    match obs.last_exit.as_ref().and_then(|e| e.code) {
        Some(code) if def.stop_exit_codes.contains(&code) => {
            Some(format!("exit code {code} is in stop_exit_codes"))
        }
        Some(0) if policy == RestartPolicy::OnFailure => {
            Some("exit code 0 with restart = on-failure".into())
        }
        _ => None,
    }
}

/// When the pending automatic restart is due, if one is. A start that
/// failed (`last_error`) is never retried at once: the same error would
/// most likely come back, so it waits at least the backoff's base.
pub fn restart_due_ms(spec: &Spec, obs: &Observed) -> Option<u64> {
    match obs.phase {
        Phase::Exited { at_ms }
            if spec.desired == Desired::Running
                && obs.generation >= spec.generation
                && no_restart_reason(&spec.def, obs).is_none()
                && obs.unstable <= spec.def.max_restarts() =>
        {
            let unstable = if obs.last_error.is_some() {
                obs.unstable.max(2)
            } else {
                obs.unstable
            };
            Some(at_ms + restart_wait_ms(&spec.def, unstable))
        }
        _ => None,
    }
}

/// The first match of a `cron_restart` expression after `after_ms`, in the
/// daemon's local time; `None` when it cannot be read or never matches.
pub fn next_cron_ms(expr: &str, after_ms: u64) -> Option<u64> {
    next_cron_in(expr, after_ms, &chrono::Local)
}

/// `next_cron_ms` in the time zone `tz` (the tests use UTC).
pub fn next_cron_in<Tz: chrono::TimeZone>(expr: &str, after_ms: u64, tz: &Tz) -> Option<u64> {
    let cron = crate::definition::parse_cron(expr).ok()?;
    let after = tz
        .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
        .single()?;
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

/// A cron match: a running process is restarted, and one that exited (or
/// errored) runs again, as a fresh run (its crash count cleared). Nothing
/// changes for a process the user stopped, nor while a start or a stop is
/// already under way.
pub fn on_cron(spec: &Spec, obs: &Observed, reason: &str) -> Observed {
    let mut next = obs.clone();
    if spec.desired != Desired::Running || obs.restart_pending.is_some() {
        return next;
    }
    match obs.phase {
        Phase::Running { .. } => next.restart_pending = Some(reason.to_string()),
        Phase::Stopped { .. } | Phase::Errored { .. } => {
            next.restart_pending = Some(reason.to_string());
            next.unstable = 0;
        }
        _ => {}
    }
    next
}

/// `opm reset`: the restart counters start again from zero (the current
/// run, if any, counts as the first start; the crash-loop count is cleared).
pub fn on_reset(obs: &Observed) -> Observed {
    Observed {
        starts: obs.starts.min(1),
        unstable: 0,
        ..obs.clone()
    }
}

/// Decides the next step for one process.
pub fn plan(spec: &Spec, obs: &Observed, now_ms: u64) -> Plan {
    // A start or restart the user asked for that no run has served yet.
    let requested = obs.generation < spec.generation;
    match (&obs.phase, spec.desired) {
        (Phase::Running { pid, .. }, Desired::Running) => {
            if requested || obs.restart_pending.is_some() {
                Plan::act(Action::Terminate { pgid: *pid })
            } else {
                Plan::idle()
            }
        }
        (Phase::Running { pid, .. }, Desired::Stopped | Desired::Removed) => {
            Plan::act(Action::Terminate { pgid: *pid })
        }
        (
            Phase::Stopping {
                pid,
                deadline_ms,
                killed,
                leader_gone,
                ..
            },
            _,
        ) => {
            if *killed {
                Plan::idle()
            } else if now_ms >= *deadline_ms {
                Plan::act(Action::Kill { pgid: *pid })
            } else if *leader_gone {
                // The rest of the group is usually a moment from exiting:
                // look again soon rather than only at the deadline.
                Plan::wait_until((*deadline_ms).min(now_ms + GROUP_RECHECK_MS))
            } else {
                Plan::wait_until(*deadline_ms)
            }
        }
        (Phase::Idle | Phase::Spawning { .. }, Desired::Running) => Plan::act(Action::Spawn),
        (Phase::Exited { .. }, Desired::Running) => {
            if requested {
                return Plan::act(Action::Spawn);
            }
            if let Some(reason) = no_restart_reason(&spec.def, obs) {
                // A start that failed and is not tried again is an error,
                // not a finished run.
                return Plan::act(match &obs.last_error {
                    Some(error) => Action::MarkErrored {
                        reason: format!("{error} (not tried again: {reason})"),
                    },
                    None => Action::MarkFinished { reason },
                });
            }
            if obs.unstable > spec.def.max_restarts() {
                return Plan::act(Action::MarkErrored {
                    reason: errored_reason(spec, obs),
                });
            }
            match restart_due_ms(spec, obs) {
                Some(due) if due > now_ms => Plan::wait_until(due),
                _ => Plan::act(Action::Spawn),
            }
        }
        (Phase::Stopped { .. } | Phase::Errored { .. }, Desired::Running) => {
            if requested || obs.restart_pending.is_some() {
                Plan::act(Action::Spawn)
            } else {
                Plan::idle()
            }
        }
        (Phase::Exited { .. } | Phase::Spawning { .. }, Desired::Stopped) => {
            Plan::act(Action::MarkStopped)
        }
        (Phase::Idle | Phase::Stopped { .. } | Phase::Errored { .. }, Desired::Stopped) => {
            Plan::idle()
        }
        (
            Phase::Idle
            | Phase::Spawning { .. }
            | Phase::Exited { .. }
            | Phase::Stopped { .. }
            | Phase::Errored { .. },
            Desired::Removed,
        ) => Plan::act(Action::Forget),
    }
}

fn errored_reason(spec: &Spec, obs: &Observed) -> String {
    let last = match (&obs.last_error, &obs.last_exit) {
        (Some(err), _) => err.clone(),
        (None, Some(exit)) => exit.describe(),
        (None, None) => "unknown".to_string(),
    };
    format!(
        "exited {} times in a row within {} ms of starting (limit {} restarts); last: {last}",
        obs.unstable,
        spec.def.min_uptime_ms(),
        spec.def.max_restarts()
    )
}

/// A run was started: it is online, belongs to the spec's generation, and a
/// start the user asked for clears the crash-loop count.
pub fn on_spawned(
    spec: &Spec,
    obs: &Observed,
    pid: u32,
    start_time: u64,
    boot_id: &str,
    now_ms: u64,
) -> Observed {
    let mut next = obs.clone();
    if obs.generation < spec.generation {
        next.unstable = 0;
    }
    next.phase = Phase::Running {
        pid,
        start_time,
        since_ms: now_ms,
    };
    next.generation = spec.generation;
    next.starts = obs.starts.saturating_add(1);
    next.boot_id = boot_id.to_string();
    next.last_error = None;
    next.restart_pending = None;
    next.readiness = super::handover::readiness_at_spawn(spec, now_ms);
    next.notify_status = None;
    next
}

/// The spawn failed before the program ran: it counts as an unstable exit.
pub fn on_spawn_failed(spec: &Spec, obs: &Observed, error: &str, now_ms: u64) -> Observed {
    let mut next = obs.clone();
    if obs.generation < spec.generation {
        next.unstable = 0;
    }
    next.generation = spec.generation;
    next.unstable = next.unstable.saturating_add(1);
    next.phase = Phase::Exited { at_ms: now_ms };
    next.last_error = Some(format!("cannot start: {error}"));
    next
}

/// The group leader `pid` ended with `code`/`signal` (both `None` when the
/// status is unknown). `group_alive` says whether other members of its group
/// remain. Stale reports (another pid) change nothing.
pub fn on_exit(
    spec: &Spec,
    obs: &Observed,
    pid: u32,
    code: Option<i32>,
    signal: Option<i32>,
    group_alive: bool,
    now_ms: u64,
) -> Observed {
    let mut next = obs.clone();
    match obs.phase {
        Phase::Running {
            pid: p, since_ms, ..
        } if p == pid => {
            let uptime_ms = now_ms.saturating_sub(since_ms);
            next.unstable = if uptime_ms >= spec.def.min_uptime_ms() {
                1
            } else {
                obs.unstable.saturating_add(1)
            };
            next.last_exit = Some(Exit {
                code,
                signal,
                at_ms: now_ms,
                uptime_ms,
            });
            next.last_error = None;
            next.phase = Phase::Exited { at_ms: now_ms };
        }
        Phase::Stopping {
            pid: p,
            since_ms,
            deadline_ms,
            killed,
            start_time,
            ..
        } if p == pid => {
            next.last_exit = Some(Exit {
                code,
                signal,
                at_ms: now_ms,
                uptime_ms: now_ms.saturating_sub(since_ms),
            });
            next.phase = if group_alive && !killed {
                Phase::Stopping {
                    pid,
                    start_time,
                    since_ms,
                    deadline_ms,
                    killed,
                    leader_gone: true,
                }
            } else {
                Phase::Stopped { at_ms: now_ms }
            };
        }
        _ => {}
    }
    next
}

/// The effect of a performed action on what is observed (spawns are
/// `on_spawned`/`on_spawn_failed`; `Forget` removes the record).
pub fn on_action(spec: &Spec, obs: &Observed, action: &Action, now_ms: u64) -> Observed {
    let mut next = obs.clone();
    match action {
        Action::Terminate { .. } => {
            if let Phase::Running {
                pid,
                start_time,
                since_ms,
            } = obs.phase
            {
                next.phase = Phase::Stopping {
                    pid,
                    start_time,
                    since_ms,
                    deadline_ms: now_ms + spec.def.kill_timeout_ms(),
                    killed: false,
                    leader_gone: false,
                };
            }
        }
        Action::Kill { .. } => {
            if let Phase::Stopping {
                leader_gone,
                ref mut killed,
                ..
            } = next.phase
            {
                *killed = true;
                if leader_gone {
                    next.phase = Phase::Stopped { at_ms: now_ms };
                }
            }
        }
        // A finished run is `Stopped` while it is meant to run: `status`
        // calls that `exited` (no new phase, so records stay readable by
        // an older opm).
        Action::MarkStopped | Action::MarkFinished { .. } => {
            next.phase = Phase::Stopped { at_ms: now_ms }
        }
        Action::MarkErrored { reason } => {
            next.phase = Phase::Errored {
                at_ms: now_ms,
                reason: reason.clone(),
            }
        }
        Action::Spawn | Action::Forget => {}
    }
    next
}

/// The rest of a stopping group has exited too (the leader went first).
pub fn on_group_gone(obs: &Observed, now_ms: u64) -> Observed {
    let mut next = obs.clone();
    if let Phase::Stopping {
        leader_gone: true, ..
    } = obs.phase
    {
        next.phase = Phase::Stopped { at_ms: now_ms };
    }
    next
}

/// After a daemon restart: a recorded run whose pid is still alive with the
/// same start time in the same boot is adopted as it is; one that is gone
/// ended while nobody watched. `alive` is that check's answer.
pub fn on_restore(spec: &Spec, obs: &Observed, alive: bool, now_ms: u64) -> Observed {
    match obs.phase {
        Phase::Running { pid, .. } | Phase::Stopping { pid, .. } if !alive => {
            on_exit(spec, obs, pid, None, None, false, now_ms)
        }
        _ => obs.clone(),
    }
}

/// What a user's action does to the stored definition: the desired state it
/// asks for, and a new generation when a (new) run is wanted. A start of a
/// process that runs and is meant to run changes nothing, so two
/// overlapping starts never spawn twice.
pub fn on_user_action(spec: &mut Spec, obs: &Observed, action: ActionKind) {
    match action {
        ActionKind::Start => {
            let live = obs.pid().is_some() && !matches!(obs.phase, Phase::Stopping { .. });
            if spec.desired != Desired::Running || !live {
                spec.desired = Desired::Running;
                spec.generation += 1;
            }
        }
        ActionKind::Stop => spec.desired = Desired::Stopped,
        ActionKind::Restart | ActionKind::Reload => {
            spec.desired = Desired::Running;
            spec.generation += 1;
        }
        ActionKind::Remove => spec.desired = Desired::Removed,
        // Neither asks for a run nor changes the desired state.
        ActionKind::Flush | ActionKind::Reset | ActionKind::Signal => {}
    }
}

/// Whether the reconciler has carried out a user's action on one process,
/// given what it publishes now (`None`: the process is gone), so the answer
/// can be given. `desired` and `generation` are what the action stored.
pub fn action_settled(
    action: ActionKind,
    now: Option<(&Spec, &Observed)>,
    desired: Desired,
    generation: u64,
) -> bool {
    match (action, now) {
        (ActionKind::Remove, now) => now.is_none(),
        (_, None) => true,
        (ActionKind::Stop, Some((spec, obs))) => {
            spec.desired == Desired::Stopped
                && obs.pid().is_none()
                && !matches!(obs.phase, Phase::Stopping { .. })
        }
        (_, Some((spec, obs))) => start_settled(spec, obs, desired, generation),
    }
}

/// Whether a start of `generation` has been carried out (spawned, failed or
/// given up on), so its answer can be given.
///
/// The published spec must be the one the request wrote (same desired
/// state, same generation), else the reconciler has not looked yet.
pub fn start_settled(spec: &Spec, obs: &Observed, desired: Desired, generation: u64) -> bool {
    if spec.desired != desired || spec.generation < generation {
        return false;
    }
    if desired != Desired::Running {
        return true;
    }
    obs.generation >= generation
        && !matches!(
            obs.phase,
            Phase::Spawning { .. } | Phase::Stopping { .. } | Phase::Idle
        )
}

/// The status users see for a process.
pub fn status(spec: &Spec, obs: &Observed) -> crate::model::Status {
    use crate::model::Status;
    match obs.phase {
        Phase::Running { .. } if obs.readiness.is_up() => Status::Online,
        Phase::Running { .. } => Status::Starting,
        Phase::Stopping { .. } => Status::Stopping,
        Phase::Spawning { .. } => Status::Starting,
        Phase::Errored { .. } => Status::Errored,
        Phase::Stopped { .. } => {
            if spec.desired != Desired::Running {
                Status::Stopped
            } else if obs.generation < spec.generation || obs.restart_pending.is_some() {
                // A start asked for (by the user, a cron match): it comes at once.
                Status::Starting
            } else {
                // Meant to run, nothing asked for: a run that ended and was
                // not restarted (a one-shot job, an exit its policy keeps).
                Status::Exited
            }
        }
        Phase::Idle => match spec.desired {
            Desired::Running => Status::Starting,
            _ => Status::Stopped,
        },
        Phase::Exited { .. } => {
            if spec.desired != Desired::Running {
                Status::Stopped
            } else if obs.generation < spec.generation {
                // A start the user asked for: the spawn comes at once.
                Status::Starting
            } else if no_restart_reason(&spec.def, obs).is_some() {
                if obs.last_error.is_some() {
                    Status::Errored
                } else {
                    Status::Exited
                }
            } else if obs.last_error.is_some() || restart_wait_ms(&spec.def, obs.unstable) > 0 {
                Status::Waiting
            } else {
                Status::Starting
            }
        }
    }
}

/// What applying a process file (`opm start FILE`, `opm update`) does to
/// each process: indexes are the file's entries, ids the stored processes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyPlan {
    /// Entries with no process of their name: created.
    pub create: Vec<usize>,
    /// (entry, id): the stored definition differs from the entry's.
    pub change: Vec<(usize, u64)>,
    /// (entry, id): the same definition; left running as it is.
    pub unchanged: Vec<(usize, u64)>,
    /// Processes that came from this file (`origin`) and are no longer in
    /// it; only when pruning.
    pub prune: Vec<u64>,
}

/// Compares the file's entries (`(name, resolved definition)`) with the
/// stored processes by name. A process being removed is not matched.
pub fn apply_plan(
    stored: &[Spec],
    wanted: &[(String, crate::definition::ProcessDef)],
    origin: Option<&str>,
    prune: bool,
) -> ApplyPlan {
    let live: Vec<&Spec> = stored
        .iter()
        .filter(|s| s.desired != Desired::Removed)
        .collect();
    let mut plan = ApplyPlan::default();
    for (i, (name, def)) in wanted.iter().enumerate() {
        match live.iter().find(|s| &s.name == name) {
            None => plan.create.push(i),
            Some(s) if same_definition(&s.def, def) => plan.unchanged.push((i, s.id)),
            Some(s) => plan.change.push((i, s.id)),
        }
    }
    if prune {
        if let Some(origin) = origin {
            plan.prune = live
                .iter()
                .filter(|s| s.def.origin.as_deref() == Some(origin))
                .filter(|s| !wanted.iter().any(|(n, _)| n == &s.name))
                .map(|s| s.id)
                .collect();
        }
    }
    plan
}

/// Whether two definitions run the same thing the same way: defaults
/// written out, and the captured caller environment and request flags left
/// aside (a deploy from another shell changes nothing by itself).
pub fn same_definition(
    a: &crate::definition::ProcessDef,
    b: &crate::definition::ProcessDef,
) -> bool {
    let plain = |d: &crate::definition::ProcessDef| crate::definition::ProcessDef {
        name: None,
        desired: None,
        unchecked: None,
        force: None,
        caller_env: None,
        instances: None,
        instance: None,
        ..d.filled()
    };
    plain(a) == plain(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Millis;

    const T0: u64 = 1_000_000;

    /// A process `api` that should run, generation 1, with a short policy
    /// (3 quick restarts, no fixed delay so the backoff starts from 100 ms,
    /// stable after 1 s, 2 s kill timeout).
    fn spec() -> Spec {
        Spec {
            id: 1,
            name: "api".into(),
            desired: Desired::Running,
            generation: 1,
            created_ms: T0,
            def: crate::definition::ProcessDef {
                script: "node app.js".into(),
                cwd: Some("/".into()),
                max_restarts: Some(3),
                min_uptime: Some(Millis(1_000)),
                kill_timeout: Some(Millis(2_000)),
                ..Default::default()
            },
        }
    }

    fn spec_desired(desired: Desired) -> Spec {
        Spec { desired, ..spec() }
    }

    fn spec_generation(generation: u64) -> Spec {
        Spec {
            generation,
            ..spec()
        }
    }

    fn running(pid: u32, since_ms: u64) -> Observed {
        Observed {
            phase: Phase::Running {
                pid,
                start_time: 77,
                since_ms,
            },
            starts: 1,
            generation: 1,
            ..Observed::new()
        }
    }

    fn stopping(pid: u32, deadline_ms: u64) -> Observed {
        Observed {
            phase: Phase::Stopping {
                pid,
                start_time: 77,
                since_ms: T0,
                deadline_ms,
                killed: false,
                leader_gone: false,
            },
            starts: 1,
            generation: 1,
            ..Observed::new()
        }
    }

    #[test]
    fn a_new_process_that_should_run_is_spawned() {
        assert_eq!(
            plan(&spec(), &Observed::new(), T0).actions,
            vec![Action::Spawn]
        );
    }

    #[test]
    fn a_new_process_created_stopped_stays_idle() {
        let s = spec_desired(Desired::Stopped);
        assert_eq!(plan(&s, &Observed::new(), T0), Plan::idle());
    }

    #[test]
    fn a_spawned_process_is_online_and_needs_nothing() {
        let obs = on_spawned(&spec(), &Observed::new(), 42, 77, "boot", T0);
        assert_eq!(
            obs.phase,
            Phase::Running {
                pid: 42,
                start_time: 77,
                since_ms: T0
            }
        );
        assert_eq!(obs.restarts(), 0);
        assert_eq!(status(&spec(), &obs), crate::model::Status::Online);
        assert_eq!(plan(&spec(), &obs, T0 + 5), Plan::idle());
    }

    #[test]
    fn the_first_crash_is_restarted_immediately() {
        let obs = on_exit(&spec(), &running(42, T0), 42, Some(1), None, false, T0 + 50);
        assert_eq!(obs.unstable, 1);
        assert_eq!(obs.last_exit.as_ref().map(|e| e.code), Some(Some(1)));
        assert_eq!(plan(&spec(), &obs, T0 + 50).actions, vec![Action::Spawn]);
    }

    #[test]
    fn consecutive_crashes_wait_longer_each_time() {
        let s = spec();
        let mut obs = running(42, T0);
        obs.unstable = 1;
        let obs = on_exit(&s, &obs, 42, Some(1), None, false, T0 + 10);
        assert_eq!(obs.unstable, 2);
        assert_eq!(plan(&s, &obs, T0 + 10), Plan::wait_until(T0 + 110));
        assert_eq!(plan(&s, &obs, T0 + 110).actions, vec![Action::Spawn]);
        let mut third = running(43, T0 + 200);
        third.unstable = 2;
        let third = on_exit(&s, &third, 43, Some(1), None, false, T0 + 210);
        assert_eq!(plan(&s, &third, T0 + 210), Plan::wait_until(T0 + 410));
    }

    #[test]
    fn the_backoff_doubles_and_stops_at_the_cap() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff_ms(100, n)).collect();
        assert_eq!(&delays[..6], &[0, 100, 200, 400, 800, 1600]);
        assert_eq!(delays[11], BACKOFF_CAP_MS);
        assert_eq!(backoff_ms(100, u32::MAX), BACKOFF_CAP_MS);
    }

    #[test]
    fn an_exit_after_a_stable_uptime_starts_the_count_again() {
        let mut obs = running(42, T0);
        obs.unstable = 3;
        let obs = on_exit(&spec(), &obs, 42, Some(0), None, false, T0 + 5_000);
        assert_eq!(obs.unstable, 1);
        assert_eq!(plan(&spec(), &obs, T0 + 5_000).actions, vec![Action::Spawn]);
    }

    #[test]
    fn too_many_unstable_restarts_mark_the_process_errored() {
        let mut obs = running(42, T0);
        obs.unstable = 3;
        let obs = on_exit(&spec(), &obs, 42, Some(2), None, false, T0 + 10);
        assert_eq!(obs.unstable, 4);
        let p = plan(&spec(), &obs, T0 + 10_000);
        let [Action::MarkErrored { reason }] = p.actions.as_slice() else {
            panic!("expected errored, got {p:?}");
        };
        assert!(reason.contains("exit code 2"), "{reason}");
        let errored = on_action(&spec(), &obs, &p.actions[0], T0 + 10_000);
        assert_eq!(status(&spec(), &errored), crate::model::Status::Errored);
        assert_eq!(plan(&spec(), &errored, T0 + 20_000), Plan::idle());
    }

    #[test]
    fn an_errored_process_starts_again_when_the_user_asks() {
        let obs = Observed {
            phase: Phase::Errored {
                at_ms: T0,
                reason: "x".into(),
            },
            unstable: 4,
            generation: 1,
            ..Observed::new()
        };
        let s = spec_generation(2);
        assert_eq!(plan(&s, &obs, T0).actions, vec![Action::Spawn]);
        let obs = on_spawned(&s, &obs, 50, 1, "b", T0);
        assert_eq!(obs.unstable, 0);
        assert_eq!(obs.generation, 2);
    }

    #[test]
    fn without_autorestart_an_exit_leaves_the_process_exited() {
        let mut s = spec();
        s.def.autorestart = Some(false);
        let obs = on_exit(&s, &running(42, T0), 42, Some(0), None, false, T0 + 10);
        let finished = Action::MarkFinished {
            reason: "restart = never".into(),
        };
        assert_eq!(plan(&s, &obs, T0 + 10).actions, vec![finished.clone()]);
        let exited = on_action(&s, &obs, &finished, T0 + 10);
        assert_eq!(status(&s, &exited), crate::model::Status::Exited);
        assert_eq!(plan(&s, &exited, T0 + 20), Plan::idle());
    }

    /// `spec()` with its definition changed by `f`.
    fn spec_with(f: impl FnOnce(&mut crate::definition::ProcessDef)) -> Spec {
        let mut s = spec();
        f(&mut s.def);
        s
    }

    /// A run of `s` that started at T0 and ended at T0 + 5 s (a stable
    /// uptime) with `code` or `signal`.
    fn ended(s: &Spec, code: Option<i32>, signal: Option<i32>) -> Observed {
        on_exit(s, &running(42, T0), 42, code, signal, false, T0 + 5_000)
    }

    #[test]
    fn an_exit_code_in_stop_exit_codes_is_not_restarted_and_shows_exited() {
        let s = spec_with(|d| d.stop_exit_codes = vec![0, 3]);
        let obs = ended(&s, Some(3), None);
        let p = plan(&s, &obs, T0 + 5_000);
        let [Action::MarkFinished { reason }] = p.actions.as_slice() else {
            panic!("finished, got {p:?}");
        };
        assert!(
            reason.contains("exit code 3 is in stop_exit_codes"),
            "{reason}"
        );
        assert_eq!(status(&s, &obs), crate::model::Status::Exited);
        assert_eq!(restart_due_ms(&s, &obs), None);
        let other = ended(&s, Some(4), None);
        assert_eq!(plan(&s, &other, T0 + 5_000).actions, vec![Action::Spawn]);
    }

    #[test]
    fn on_failure_keeps_a_clean_exit_and_restarts_a_failed_one() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::OnFailure));
        let clean = ended(&s, Some(0), None);
        assert!(matches!(
            plan(&s, &clean, T0 + 5_000).actions.as_slice(),
            [Action::MarkFinished { .. }]
        ));
        let failed = ended(&s, Some(1), None);
        assert_eq!(plan(&s, &failed, T0 + 5_000).actions, vec![Action::Spawn]);
    }

    #[test]
    fn on_failure_restarts_a_run_killed_by_a_signal_or_ended_while_nobody_watched() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::OnFailure));
        let killed = ended(&s, None, Some(9));
        assert_eq!(plan(&s, &killed, T0 + 5_000).actions, vec![Action::Spawn]);
        let lost = on_restore(&s, &running(42, T0), false, T0 + 60_000);
        assert_eq!(plan(&s, &lost, T0 + 60_000).actions, vec![Action::Spawn]);
    }

    #[test]
    fn never_restarts_no_exit_and_autorestart_false_is_never() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::Never));
        for (code, signal) in [(Some(0), None), (Some(1), None), (None, Some(9))] {
            let obs = ended(&s, code, signal);
            assert!(matches!(
                plan(&s, &obs, T0 + 5_000).actions.as_slice(),
                [Action::MarkFinished { .. }]
            ));
        }
        let old = spec_with(|d| d.autorestart = Some(false));
        assert_eq!(old.def.restart_policy(), RestartPolicy::Never);
        assert!(!old.def.autorestart());
    }

    #[test]
    fn a_start_that_failed_under_never_is_errored_not_exited() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::Never));
        let obs = on_spawn_failed(&s, &Observed::new(), "No such file", T0);
        assert_eq!(status(&s, &obs), crate::model::Status::Errored);
        let p = plan(&s, &obs, T0);
        let [Action::MarkErrored { reason }] = p.actions.as_slice() else {
            panic!("errored, got {p:?}");
        };
        assert!(reason.contains("No such file"), "{reason}");
    }

    #[test]
    fn a_fixed_restart_delay_waits_before_every_restart_even_the_first() {
        let s = spec_with(|d| d.restart_delay = Some(Millis(2_000)));
        let obs = ended(&s, Some(1), None);
        assert_eq!(obs.unstable, 1);
        assert_eq!(plan(&s, &obs, T0 + 5_000), Plan::wait_until(T0 + 7_000));
        assert_eq!(restart_due_ms(&s, &obs), Some(T0 + 7_000));
        assert_eq!(status(&s, &obs), crate::model::Status::Waiting);
        assert_eq!(plan(&s, &obs, T0 + 7_000).actions, vec![Action::Spawn]);
        // A clean exit waits the same.
        let clean = ended(&s, Some(0), None);
        assert_eq!(plan(&s, &clean, T0 + 5_000), Plan::wait_until(T0 + 7_000));
    }

    #[test]
    fn a_fixed_restart_delay_still_doubles_in_a_crash_loop() {
        let s = spec_with(|d| d.restart_delay = Some(Millis(500)));
        let waits: Vec<u64> = (1..=5).map(|n| restart_wait_ms(&s.def, n)).collect();
        assert_eq!(waits, [500, 500, 1_000, 2_000, 4_000]);
        assert_eq!(restart_wait_ms(&s.def, 40), BACKOFF_CAP_MS);
        let long = spec_with(|d| d.restart_delay = Some(Millis(60_000)));
        assert_eq!(
            restart_wait_ms(&long.def, 40),
            60_000,
            "the cap never shortens it"
        );
        assert_eq!(
            restart_wait_ms(&spec().def, 1),
            0,
            "no fixed delay: at once"
        );
    }

    #[test]
    fn an_exited_job_stays_exited_across_a_daemon_restore() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::Never));
        let finished = Action::MarkFinished {
            reason: "restart = never".into(),
        };
        let exited = on_action(&s, &ended(&s, Some(0), None), &finished, T0 + 5_000);
        let restored = on_restore(&s, &exited, false, T0 + 60_000);
        assert_eq!(restored, exited);
        assert_eq!(plan(&s, &restored, T0 + 60_000), Plan::idle());
        assert_eq!(status(&s, &restored), crate::model::Status::Exited);
    }

    #[test]
    fn a_one_shot_job_that_ended_while_the_daemon_was_down_is_not_run_again() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::Never));
        let lost = on_restore(&s, &running(42, T0), false, T0 + 60_000);
        assert!(matches!(
            plan(&s, &lost, T0 + 60_000).actions.as_slice(),
            [Action::MarkFinished { .. }]
        ));
    }

    #[test]
    fn a_start_runs_an_exited_job_again_and_a_stop_makes_it_stopped() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::Never));
        let finished = Action::MarkFinished {
            reason: "restart = never".into(),
        };
        let exited = on_action(&s, &ended(&s, Some(0), None), &finished, T0 + 5_000);
        let mut started = s.clone();
        on_user_action(&mut started, &exited, ActionKind::Start);
        assert_eq!(status(&started, &exited), crate::model::Status::Starting);
        assert_eq!(
            plan(&started, &exited, T0 + 6_000).actions,
            vec![Action::Spawn]
        );
        let mut stopped = s.clone();
        on_user_action(&mut stopped, &exited, ActionKind::Stop);
        assert_eq!(status(&stopped, &exited), crate::model::Status::Stopped);
    }

    #[test]
    fn a_cron_match_restarts_a_running_process() {
        let s = spec_with(|d| d.cron_restart = Some("0 3 * * *".into()));
        let obs = on_cron(&s, &running(42, T0), "cron");
        assert_eq!(obs.restart_pending.as_deref(), Some("cron"));
        assert_eq!(
            plan(&s, &obs, T0).actions,
            vec![Action::Terminate { pgid: 42 }]
        );
    }

    #[test]
    fn a_cron_match_runs_an_exited_or_errored_job_again_with_a_clean_crash_count() {
        let s = spec_with(|d| d.restart = Some(RestartPolicy::Never));
        for phase in [
            Phase::Stopped { at_ms: T0 },
            Phase::Errored {
                at_ms: T0,
                reason: "x".into(),
            },
        ] {
            let before = Observed {
                phase,
                unstable: 9,
                starts: 3,
                generation: 1,
                ..Observed::new()
            };
            let obs = on_cron(&s, &before, "cron");
            assert_eq!(obs.unstable, 0);
            assert_eq!(plan(&s, &obs, T0).actions, vec![Action::Spawn]);
            assert_eq!(on_spawned(&s, &obs, 50, 1, "b", T0).restart_pending, None);
        }
    }

    #[test]
    fn a_cron_match_leaves_a_stopped_process_stopped() {
        let s = spec_desired(Desired::Stopped);
        let stopped = Observed {
            phase: Phase::Stopped { at_ms: T0 },
            ..Observed::new()
        };
        assert_eq!(on_cron(&s, &stopped, "cron"), stopped);
    }

    #[test]
    fn the_next_cron_match_follows_the_expression_with_or_without_seconds() {
        use chrono::{TimeZone, Utc};
        let at = |y, mo, d, h, mi, s| {
            Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .map(|t| t.timestamp_millis() as u64)
                .expect("a valid time")
        };
        let now = at(2024, 5, 1, 12, 0, 30);
        assert_eq!(
            next_cron_in("0 3 * * *", now, &Utc),
            Some(at(2024, 5, 2, 3, 0, 0))
        );
        assert_eq!(
            next_cron_in("* * * * *", now, &Utc),
            Some(at(2024, 5, 1, 12, 1, 0))
        );
        assert_eq!(
            next_cron_in("*/2 * * * * *", now, &Utc),
            Some(at(2024, 5, 1, 12, 0, 32))
        );
        assert_eq!(next_cron_in("every day", now, &Utc), None);
    }

    #[test]
    fn a_reset_zeroes_the_restart_counters_and_the_crash_loop() {
        let mut obs = running(42, T0);
        obs.starts = 12;
        obs.unstable = 3;
        let reset = on_reset(&obs);
        assert_eq!((reset.restarts(), reset.unstable), (0, 0));
        assert_eq!(reset.phase, obs.phase);
        let again = on_spawned(
            &spec(),
            &on_exit(&spec(), &reset, 42, Some(1), None, false, T0 + 5_000),
            43,
            1,
            "b",
            T0 + 5_001,
        );
        assert_eq!(again.restarts(), 1);
    }

    #[test]
    fn a_spawn_failure_counts_as_an_unstable_exit_and_waits_before_the_retry() {
        let obs = on_spawn_failed(&spec(), &Observed::new(), "No such file", T0);
        assert_eq!(obs.unstable, 1);
        assert_eq!(obs.phase, Phase::Exited { at_ms: T0 });
        assert!(obs
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("No such file"));
        assert_eq!(status(&spec(), &obs), crate::model::Status::Waiting);
        assert_eq!(plan(&spec(), &obs, T0), Plan::wait_until(T0 + 100));
        assert_eq!(plan(&spec(), &obs, T0 + 100).actions, vec![Action::Spawn]);
    }

    #[test]
    fn failed_spawns_end_errored_with_the_error_never_starting() {
        let s = spec();
        let mut obs = Observed::new();
        let mut now = T0;
        for _ in 0..=s.def.max_restarts() {
            obs = on_spawn_failed(&s, &obs, "Too many open files (os error 24)", now);
            assert_ne!(status(&s, &obs), crate::model::Status::Starting);
            match plan(&s, &obs, now).next_check_ms {
                Some(due) => now = due,
                None => break,
            }
        }
        let p = plan(&s, &obs, now);
        let Some(Action::MarkErrored { reason }) = p.actions.first() else {
            panic!("errored after the limit: {p:?}");
        };
        assert!(reason.contains("Too many open files"), "{reason}");
        let errored = on_action(&s, &obs, &p.actions[0], now);
        assert_eq!(status(&s, &errored), crate::model::Status::Errored);
    }

    #[test]
    fn a_crash_waiting_out_its_backoff_is_waiting_and_a_first_crash_is_starting() {
        let s = spec();
        let first = on_exit(&s, &running(42, T0), 42, Some(1), None, false, T0 + 10);
        assert_eq!(status(&s, &first), crate::model::Status::Starting);
        let again = Observed {
            phase: Phase::Running {
                pid: 43,
                start_time: 1,
                since_ms: T0 + 20,
            },
            ..first
        };
        let second = on_exit(&s, &again, 43, Some(1), None, false, T0 + 30);
        assert_eq!(second.unstable, 2);
        assert_eq!(status(&s, &second), crate::model::Status::Waiting);
    }

    #[test]
    fn stopping_a_running_process_sends_sigterm_with_a_deadline() {
        let s = spec_desired(Desired::Stopped);
        let obs = running(42, T0);
        let p = plan(&s, &obs, T0 + 10);
        assert_eq!(p.actions, vec![Action::Terminate { pgid: 42 }]);
        let obs = on_action(&s, &obs, &p.actions[0], T0 + 10);
        assert!(
            matches!(obs.phase, Phase::Stopping { deadline_ms, .. } if deadline_ms == T0 + 2_010)
        );
        assert_eq!(status(&s, &obs), crate::model::Status::Stopping);
        assert_eq!(plan(&s, &obs, T0 + 20), Plan::wait_until(T0 + 2_010));
    }

    #[test]
    fn a_process_that_exits_on_sigterm_is_stopped() {
        let s = spec_desired(Desired::Stopped);
        let obs = on_exit(
            &s,
            &stopping(42, T0 + 2_000),
            42,
            None,
            Some(15),
            false,
            T0 + 30,
        );
        assert_eq!(obs.phase, Phase::Stopped { at_ms: T0 + 30 });
        assert_eq!(obs.unstable, 0, "a requested stop is not a crash");
        assert_eq!(plan(&s, &obs, T0 + 40), Plan::idle());
    }

    #[test]
    fn a_process_that_ignores_sigterm_is_killed_at_the_deadline() {
        let s = spec_desired(Desired::Stopped);
        let obs = stopping(42, T0 + 2_000);
        assert_eq!(
            plan(&s, &obs, T0 + 2_000).actions,
            vec![Action::Kill { pgid: 42 }]
        );
        let killed = on_action(&s, &obs, &Action::Kill { pgid: 42 }, T0 + 2_000);
        assert_eq!(plan(&s, &killed, T0 + 2_001), Plan::idle());
        let gone = on_exit(&s, &killed, 42, None, Some(9), false, T0 + 2_002);
        assert_eq!(gone.phase, Phase::Stopped { at_ms: T0 + 2_002 });
    }

    #[test]
    fn group_members_left_behind_by_the_leader_are_killed_at_the_deadline() {
        let s = spec_desired(Desired::Stopped);
        let obs = on_exit(
            &s,
            &stopping(42, T0 + 2_000),
            42,
            Some(0),
            None,
            true,
            T0 + 10,
        );
        assert!(matches!(
            obs.phase,
            Phase::Stopping {
                leader_gone: true,
                ..
            }
        ));
        assert_eq!(obs.pid(), None);
        assert_eq!(
            plan(&s, &obs, T0 + 10),
            Plan::wait_until(T0 + 10 + GROUP_RECHECK_MS)
        );
        assert_eq!(
            on_group_gone(&obs, T0 + 30).phase,
            Phase::Stopped { at_ms: T0 + 30 }
        );
        assert_eq!(
            plan(&s, &obs, T0 + 2_000).actions,
            vec![Action::Kill { pgid: 42 }]
        );
        let after = on_action(&s, &obs, &Action::Kill { pgid: 42 }, T0 + 2_000);
        assert_eq!(after.phase, Phase::Stopped { at_ms: T0 + 2_000 });
    }

    #[test]
    fn a_restart_stops_the_old_run_then_starts_a_new_one() {
        let s = spec_generation(2);
        let obs = running(42, T0);
        let p = plan(&s, &obs, T0);
        assert_eq!(p.actions, vec![Action::Terminate { pgid: 42 }]);
        let obs = on_action(&s, &obs, &p.actions[0], T0);
        let obs = on_exit(&s, &obs, 42, None, Some(15), false, T0 + 5);
        assert_eq!(plan(&s, &obs, T0 + 5).actions, vec![Action::Spawn]);
        let obs = on_spawned(&s, &obs, 43, 88, "b", T0 + 6);
        assert_eq!(obs.restarts(), 1);
        assert_eq!(plan(&s, &obs, T0 + 7), Plan::idle());
    }

    #[test]
    fn a_restart_during_backoff_starts_at_once() {
        let mut obs = running(42, T0);
        obs.unstable = 2;
        let obs = on_exit(&spec(), &obs, 42, Some(1), None, false, T0 + 10);
        let s = spec_generation(2);
        assert_eq!(plan(&s, &obs, T0 + 11).actions, vec![Action::Spawn]);
    }

    #[test]
    fn a_memory_restart_terminates_then_starts_again() {
        let mut obs = running(42, T0);
        obs.restart_pending = Some("memory".into());
        let p = plan(&spec(), &obs, T0);
        assert_eq!(p.actions, vec![Action::Terminate { pgid: 42 }]);
        let obs = on_action(&spec(), &obs, &p.actions[0], T0);
        let obs = on_exit(&spec(), &obs, 42, None, Some(15), false, T0 + 3);
        assert_eq!(plan(&spec(), &obs, T0 + 3).actions, vec![Action::Spawn]);
        let obs = on_spawned(&spec(), &obs, 43, 1, "b", T0 + 4);
        assert_eq!(obs.restart_pending, None);
    }

    #[test]
    fn a_stale_exit_report_changes_nothing() {
        let obs = running(42, T0);
        assert_eq!(on_exit(&spec(), &obs, 41, Some(1), None, false, T0), obs);
    }

    #[test]
    fn a_removed_process_is_stopped_then_forgotten() {
        let s = spec_desired(Desired::Removed);
        assert_eq!(
            plan(&s, &running(42, T0), T0).actions,
            vec![Action::Terminate { pgid: 42 }]
        );
        let stopped = Observed {
            phase: Phase::Stopped { at_ms: T0 },
            ..Observed::new()
        };
        assert_eq!(plan(&s, &stopped, T0).actions, vec![Action::Forget]);
    }

    #[test]
    fn stopping_during_backoff_just_marks_it_stopped() {
        let s = spec_desired(Desired::Stopped);
        let obs = Observed {
            phase: Phase::Exited { at_ms: T0 },
            unstable: 3,
            ..Observed::new()
        };
        assert_eq!(plan(&s, &obs, T0).actions, vec![Action::MarkStopped]);
    }

    #[test]
    fn a_live_process_is_adopted_as_it_is_after_a_restore() {
        let obs = running(42, T0);
        assert_eq!(on_restore(&spec(), &obs, true, T0 + 60_000), obs);
        assert_eq!(plan(&spec(), &obs, T0 + 60_000), Plan::idle());
    }

    #[test]
    fn a_process_gone_while_the_daemon_was_down_is_started_again() {
        let obs = on_restore(&spec(), &running(42, T0), false, T0 + 60_000);
        assert_eq!(obs.phase, Phase::Exited { at_ms: T0 + 60_000 });
        assert!(obs
            .last_exit
            .as_ref()
            .is_some_and(|e| e.code.is_none() && e.signal.is_none()));
        assert_eq!(
            plan(&spec(), &obs, T0 + 60_000).actions,
            vec![Action::Spawn]
        );
    }

    #[test]
    fn an_interrupted_spawn_is_started_again_when_its_child_is_not_found() {
        let obs = Observed {
            phase: Phase::Spawning {
                nonce: 9,
                at_ms: T0,
            },
            ..Observed::new()
        };
        assert_eq!(plan(&spec(), &obs, T0).actions, vec![Action::Spawn]);
    }

    #[test]
    fn a_stop_that_was_under_way_finishes_after_a_restore() {
        let s = spec_desired(Desired::Stopped);
        let obs = on_restore(&s, &stopping(42, T0 + 100), false, T0 + 500);
        assert_eq!(obs.phase, Phase::Stopped { at_ms: T0 + 500 });
        let alive = on_restore(&s, &stopping(42, T0 + 100), true, T0 + 500);
        assert_eq!(
            plan(&s, &alive, T0 + 500).actions,
            vec![Action::Kill { pgid: 42 }]
        );
    }

    #[test]
    fn a_start_of_a_running_process_changes_nothing() {
        let mut s = spec();
        on_user_action(&mut s, &running(42, T0), ActionKind::Start);
        assert_eq!((s.desired, s.generation), (Desired::Running, 1));
    }

    #[test]
    fn a_start_of_a_stopped_process_asks_for_a_new_run() {
        let mut s = spec_desired(Desired::Stopped);
        on_user_action(&mut s, &Observed::new(), ActionKind::Start);
        assert_eq!((s.desired, s.generation), (Desired::Running, 2));
    }

    #[test]
    fn a_start_of_a_process_being_stopped_asks_for_a_new_run() {
        let mut s = spec();
        on_user_action(&mut s, &stopping(42, T0 + 100), ActionKind::Start);
        assert_eq!(s.generation, 2);
    }

    #[test]
    fn a_restart_or_reload_always_asks_for_a_new_run() {
        for action in [ActionKind::Restart, ActionKind::Reload] {
            let mut s = spec();
            on_user_action(&mut s, &running(42, T0), action);
            assert_eq!((s.desired, s.generation), (Desired::Running, 2));
        }
    }

    #[test]
    fn stop_and_remove_change_only_the_desired_state() {
        let mut s = spec();
        on_user_action(&mut s, &running(42, T0), ActionKind::Stop);
        assert_eq!((s.desired, s.generation), (Desired::Stopped, 1));
        on_user_action(&mut s, &running(42, T0), ActionKind::Remove);
        assert_eq!((s.desired, s.generation), (Desired::Removed, 1));
    }

    #[test]
    fn a_start_is_not_settled_until_the_reconciler_has_seen_its_generation() {
        let s = spec();
        // The published spec is still the previous generation.
        assert!(!start_settled(&s, &running(42, T0), Desired::Running, 2));
        // The new generation is published but not spawned yet.
        let s2 = spec_generation(2);
        assert!(!start_settled(&s2, &running(42, T0), Desired::Running, 2));
        let spawned = Observed {
            generation: 2,
            ..running(43, T0 + 10)
        };
        assert!(start_settled(&s2, &spawned, Desired::Running, 2));
    }

    #[test]
    fn a_start_that_failed_to_spawn_is_settled() {
        let s = spec();
        let failed = on_spawn_failed(&s, &Observed::new(), "not executable", T0);
        assert!(start_settled(&s, &failed, Desired::Running, 1));
    }

    #[test]
    fn a_stop_is_settled_only_when_nothing_runs() {
        let s = spec_desired(Desired::Stopped);
        let settled =
            |o: &Observed| action_settled(ActionKind::Stop, Some((&s, o)), Desired::Stopped, 1);
        assert!(!settled(&running(42, T0)));
        assert!(!settled(&stopping(42, T0 + 100)));
        assert!(settled(&Observed::new()));
    }

    #[test]
    fn a_remove_is_settled_when_the_process_is_gone() {
        let s = spec();
        assert!(!action_settled(
            ActionKind::Remove,
            Some((&s, &running(42, T0))),
            Desired::Removed,
            1
        ));
        assert!(action_settled(
            ActionKind::Remove,
            None,
            Desired::Removed,
            1
        ));
    }
    fn stored(id: u64, name: &str, script: &str, origin: Option<&str>) -> Spec {
        Spec {
            id,
            name: name.into(),
            def: crate::definition::ProcessDef {
                script: script.into(),
                cwd: Some("/".into()),
                origin: origin.map(str::to_string),
                ..Default::default()
            },
            ..spec()
        }
    }

    fn entry(name: &str, script: &str, origin: &str) -> (String, crate::definition::ProcessDef) {
        (
            name.into(),
            crate::definition::ProcessDef {
                script: script.into(),
                cwd: Some("/".into()),
                origin: Some(origin.into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_file_applied_again_changes_only_the_entry_that_differs() {
        let db = [
            stored(1, "a", "sleep 1", Some("/f.toml")),
            stored(2, "b", "sleep 2", Some("/f.toml")),
        ];
        let file = [
            entry("a", "sleep 1", "/f.toml"),
            entry("b", "sleep 22", "/f.toml"),
            entry("c", "sleep 3", "/f.toml"),
        ];
        let p = apply_plan(&db, &file, Some("/f.toml"), false);
        assert_eq!(p.unchanged, vec![(0, 1)]);
        assert_eq!(p.change, vec![(1, 2)]);
        assert_eq!(p.create, vec![2]);
        assert!(p.prune.is_empty());
    }

    #[test]
    fn pruning_removes_only_what_came_from_this_file() {
        let db = [
            stored(1, "a", "sleep 1", Some("/f.toml")),
            stored(2, "gone", "sleep 2", Some("/f.toml")),
            stored(3, "other", "sleep 3", Some("/g.toml")),
            stored(4, "by-hand", "sleep 4", None),
        ];
        let file = [entry("a", "sleep 1", "/f.toml")];
        assert_eq!(apply_plan(&db, &file, Some("/f.toml"), true).prune, vec![2]);
        assert!(apply_plan(&db, &file, Some("/f.toml"), false)
            .prune
            .is_empty());
    }

    #[test]
    fn written_out_defaults_and_the_callers_environment_are_no_change() {
        let (_, def) = entry("a", "sleep 1", "/f.toml");
        let mut other = def.filled();
        other.caller_env = Some(std::sync::Arc::new(
            [("X".to_string(), "1".to_string())].into(),
        ));
        assert!(same_definition(&def, &other));
        other.env = vec![("X".into(), "1".into())];
        assert!(!same_definition(&def, &other));
    }

    #[test]
    fn a_process_being_removed_is_created_again_not_matched() {
        let mut gone = stored(1, "a", "sleep 1", None);
        gone.desired = Desired::Removed;
        let p = apply_plan(&[gone], &[entry("a", "sleep 1", "/f.toml")], None, true);
        assert_eq!(p.create, vec![0]);
    }
}
