//! Readiness and the zero-downtime reload, as pure functions of (spec,
//! observed, now), beside `plan` and in its manner.
//!
//! Readiness: a run of a process that asks for it (`wait_ready`,
//! `ready_port`) is `starting` until it gives its sign (`READY=1` on the
//! notify socket, or a listening socket on the port); when `listen_timeout`
//! passes first, that is reported and the run keeps going (readiness is not
//! liveness: opm does not kill a program for being slow to say so), still
//! `starting`, ready if it says so later.
//!
//! Reload: with readiness set and the live run ready, a reload starts the
//! new run beside the live one (`Handover::Spawning`, then `Starting`), and
//! only when the new run is ready makes it the live one and stops the old
//! (`Retiring`). A new run that exits or is not ready within
//! `listen_timeout` is stopped instead and the old one keeps serving. Every
//! run of the process is in its runtime record at every moment (the new
//! one's spawn intent is flushed before it is made), so a daemon killed
//! mid-reload adopts or finishes both and never leaves one running twice.

use crate::spec::{Handover, Observed, Phase, Readiness, Spec};

/// How a reload ended, for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new run is ready and live; the old one was told to stop.
    Replaced { old_pid: Option<u32>, new_pid: u32 },
    /// The new run did not make it; the live one still serves.
    Failed { reason: String },
    /// No handover was possible: the reload is a restart (or a start).
    Restarted { reason: String },
}

/// What the handover side asks of the executor for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do here: the ordinary plan decides.
    Free,
    /// Nothing to do here, and the ordinary plan must wait (a new run is
    /// being started beside the live one).
    Hold,
    /// Spawn the new run beside the live one (record its intent first).
    SpawnNext,
    /// The reload cannot be a handover: answer why, then the ordinary plan
    /// restarts or starts it.
    Fallback(String),
    /// Give up on the new run (`listen_timeout` passed, or the request is
    /// no longer a reload): send it the stop signal.
    StopNext { pgid: u32, reason: String },
    /// SIGKILL to the group of a retiring run (its deadline passed).
    KillRetiring { pgid: u32 },
}

/// The readiness a run starts with.
pub fn readiness_at_spawn(spec: &Spec, now_ms: u64) -> Readiness {
    if spec.def.awaits_readiness() {
        Readiness::Waiting {
            deadline_ms: now_ms + spec.def.listen_timeout_ms(),
        }
    } else {
        Readiness::NotAsked
    }
}

/// Why a reload of this process cannot start its new run beside the live
/// one, if it cannot.
pub fn why_no_handover(spec: &Spec, obs: &Observed) -> Option<String> {
    if !spec.def.awaits_readiness() {
        return Some(
            "no readiness set (--wait-ready or --ready-port): reload falls back to a restart"
                .into(),
        );
    }
    match obs.phase {
        Phase::Running { .. } if obs.readiness.is_up() => None,
        Phase::Running { .. } => {
            Some("its current run is not ready yet: reload falls back to a restart".into())
        }
        _ => Some("it was not running: reload starts it".into()),
    }
}

/// The handover's decision for one process. `reload` is the generation of
/// the latest reload request still waiting for its answer, if any.
pub fn step(spec: &Spec, obs: &Observed, reload: Option<u64>, now_ms: u64) -> Step {
    let reload_wanted = reload == Some(spec.generation)
        && spec.desired == crate::spec::Desired::Running
        && obs.generation < spec.generation;
    match &obs.handover {
        None if reload_wanted => match why_no_handover(spec, obs) {
            None => Step::SpawnNext,
            Some(reason) => Step::Fallback(reason),
        },
        None => Step::Free,
        Some(Handover::Spawning { .. }) => Step::Hold,
        Some(Handover::Starting {
            pid, deadline_ms, ..
        }) => {
            if spec.desired != crate::spec::Desired::Running {
                Step::StopNext {
                    pgid: *pid,
                    reason: format!("the process is to be {}", spec.desired.as_str()),
                }
            } else if reload != Some(spec.generation) && obs.generation < spec.generation {
                Step::StopNext {
                    pgid: *pid,
                    reason: "a restart was asked for meanwhile".into(),
                }
            } else if now_ms >= *deadline_ms {
                Step::StopNext {
                    pgid: *pid,
                    reason: format!(
                        "the new run (pid {pid}) was not ready within {}",
                        crate::definition::Millis(spec.def.listen_timeout_ms())
                    ),
                }
            } else {
                Step::Hold
            }
        }
        Some(Handover::Retiring {
            pid,
            deadline_ms,
            killed,
            ..
        }) => {
            if !killed && now_ms >= *deadline_ms {
                Step::KillRetiring { pgid: *pid }
            } else if reload_wanted {
                // One run beside the live one at a time: the next reload
                // begins when the replaced run is gone.
                Step::Hold
            } else {
                Step::Free
            }
        }
    }
}

/// When the handover side wants to look again (a deadline), if ever.
pub fn next_check_ms(obs: &Observed) -> Option<u64> {
    let readiness = match obs.readiness {
        Readiness::Waiting { deadline_ms } if matches!(obs.phase, Phase::Running { .. }) => {
            Some(deadline_ms)
        }
        _ => None,
    };
    let handover = match &obs.handover {
        Some(Handover::Starting { deadline_ms, .. }) => Some(*deadline_ms),
        Some(Handover::Retiring {
            deadline_ms,
            killed: false,
            leader_gone,
            ..
        }) => Some(if *leader_gone {
            // The rest of its group is usually a moment from exiting.
            (*deadline_ms).min(crate::spec::now_ms() + super::plan::GROUP_RECHECK_MS)
        } else {
            *deadline_ms
        }),
        _ => None,
    };
    match (readiness, handover) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The live run's `listen_timeout` passed without a sign: reported, and
/// it keeps running. `true` when that happened now.
pub fn on_deadline(obs: &mut Observed, now_ms: u64) -> bool {
    match obs.readiness {
        Readiness::Waiting { deadline_ms }
            if now_ms >= deadline_ms && matches!(obs.phase, Phase::Running { .. }) =>
        {
            obs.readiness = Readiness::TimedOut { at_ms: now_ms };
            true
        }
        _ => false,
    }
}

/// The run leading group `pgid` gave its sign of readiness. Returns the
/// new record and, when a new run thereby replaced the live one, the
/// replaced run (pid) whose group must get the stop signal now.
pub fn on_ready(spec: &Spec, obs: &Observed, pgid: u32, now_ms: u64) -> (Observed, Option<u32>) {
    let mut next = obs.clone();
    if let Some(Handover::Starting {
        pid,
        start_time,
        since_ms,
        ..
    }) = obs.handover
    {
        if pid == pgid {
            let old = match obs.phase {
                Phase::Running {
                    pid: old,
                    start_time: old_start,
                    ..
                } => Some((old, old_start)),
                _ => None,
            };
            next.phase = Phase::Running {
                pid,
                start_time,
                since_ms,
            };
            next.readiness = Readiness::Ready { at_ms: now_ms };
            next.generation = spec.generation;
            next.starts = obs.starts.saturating_add(1);
            next.unstable = 0;
            next.last_error = None;
            next.notify_status = None;
            next.handover = old.map(|(pid, start_time)| Handover::Retiring {
                pid,
                start_time,
                deadline_ms: now_ms + spec.def.kill_timeout_ms(),
                killed: false,
                leader_gone: false,
            });
            return (next, old.map(|(pid, _)| pid));
        }
    }
    if let Phase::Running { pid, .. } = obs.phase {
        if pid == pgid && !matches!(obs.readiness, Readiness::Ready { .. }) {
            next.readiness = Readiness::Ready { at_ms: now_ms };
        }
    }
    (next, None)
}

/// The new run's intent, recorded before it is spawned.
pub fn on_spawn_next(obs: &Observed, nonce: u64, now_ms: u64) -> Observed {
    Observed {
        handover: Some(Handover::Spawning {
            nonce,
            at_ms: now_ms,
        }),
        ..obs.clone()
    }
}

/// The new run was spawned (or found by its marker after a restore).
pub fn on_next_spawned(
    spec: &Spec,
    obs: &Observed,
    pid: u32,
    start_time: u64,
    since_ms: u64,
) -> Observed {
    Observed {
        handover: Some(Handover::Starting {
            pid,
            start_time,
            since_ms,
            deadline_ms: since_ms + spec.def.listen_timeout_ms(),
        }),
        ..obs.clone()
    }
}

/// The reload is over without a new live run (the spawn failed, the new
/// run exited, or it is being stopped): the request counts as served, so
/// the live run is not restarted for it.
pub fn on_next_failed(spec: &Spec, obs: &Observed, retiring: Option<Handover>) -> Observed {
    Observed {
        handover: retiring,
        generation: obs.generation.max(spec.generation),
        ..obs.clone()
    }
}

/// The stop signal was sent to the new run that will not be used.
pub fn retire_next(spec: &Spec, obs: &Observed, now_ms: u64) -> Observed {
    let retiring = match obs.handover {
        Some(Handover::Starting {
            pid, start_time, ..
        }) => Some(Handover::Retiring {
            pid,
            start_time,
            deadline_ms: now_ms + spec.def.kill_timeout_ms(),
            killed: false,
            leader_gone: false,
        }),
        ref other => other.clone(),
    };
    on_next_failed(spec, obs, retiring)
}

/// SIGKILL was sent to a retiring run's group.
pub fn on_retiring_killed(obs: &Observed) -> Observed {
    let mut next = obs.clone();
    if let Some(Handover::Retiring {
        killed,
        leader_gone,
        ..
    }) = &mut next.handover
    {
        *killed = true;
        if *leader_gone {
            next.handover = None;
        }
    }
    next
}

/// The leader `pid` of the other run exited; `group_alive` says whether
/// members of its group remain. `None` when `pid` is not the other run.
pub fn on_other_exit(spec: &Spec, obs: &Observed, pid: u32, group_alive: bool) -> Option<Observed> {
    match obs.handover {
        Some(Handover::Starting { pid: p, .. }) if p == pid => {
            Some(on_next_failed(spec, obs, None))
        }
        Some(Handover::Retiring {
            pid: p,
            start_time,
            deadline_ms,
            killed,
            ..
        }) if p == pid => {
            let handover = (group_alive && !killed).then_some(Handover::Retiring {
                pid,
                start_time,
                deadline_ms,
                killed,
                leader_gone: true,
            });
            Some(Observed {
                handover,
                ..obs.clone()
            })
        }
        _ => None,
    }
}

/// The rest of a retiring group whose leader went first has exited too.
pub fn on_retiring_group_gone(obs: &Observed) -> Observed {
    match obs.handover {
        Some(Handover::Retiring {
            leader_gone: true, ..
        }) => Observed {
            handover: None,
            ..obs.clone()
        },
        _ => obs.clone(),
    }
}

/// After a daemon restart: the other run as found. `found` is, for a
/// recorded spawn intent, the child found by its marker (pid, start time);
/// `alive` whether a recorded `Starting`/`Retiring` run is still the same
/// process. Returns the record and whether a reload is still under way
/// (its request, whose waiter died with the old daemon, must be made again:
/// a new run not found or gone is started anew).
pub fn on_restore(
    spec: &Spec,
    obs: &Observed,
    found: Option<(u32, u64)>,
    alive: bool,
) -> (Observed, bool) {
    let without = || Observed {
        handover: None,
        ..obs.clone()
    };
    match obs.handover {
        Some(Handover::Spawning { at_ms, .. }) => match found {
            Some((pid, start_time)) => (on_next_spawned(spec, obs, pid, start_time, at_ms), true),
            None => (without(), true),
        },
        Some(Handover::Starting { .. }) if alive => (obs.clone(), true),
        Some(Handover::Starting { .. }) => (without(), true),
        Some(Handover::Retiring { .. }) if !alive => (without(), false),
        _ => (obs.clone(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Millis, ProcessDef};
    use crate::spec::Desired;

    const T0: u64 = 1_000_000;

    fn spec(ready: bool, generation: u64) -> Spec {
        Spec {
            id: 1,
            name: "web".into(),
            desired: Desired::Running,
            generation,
            created_ms: 0,
            def: ProcessDef {
                script: "python3 web.py".into(),
                wait_ready: ready.then_some(true),
                listen_timeout: Some(Millis(5_000)),
                ..ProcessDef::default()
            },
        }
    }

    fn live(pid: u32, readiness: Readiness) -> Observed {
        Observed {
            phase: Phase::Running {
                pid,
                start_time: 7,
                since_ms: T0,
            },
            generation: 1,
            starts: 1,
            readiness,
            ..Observed::new()
        }
    }

    fn ready() -> Readiness {
        Readiness::Ready { at_ms: T0 + 100 }
    }

    #[test]
    fn a_run_that_asks_for_readiness_is_starting_until_its_sign() {
        let s = spec(true, 1);
        let obs = crate::reconcile::plan::on_spawned(&s, &Observed::new(), 42, 7, "b", T0);
        assert_eq!(
            obs.readiness,
            Readiness::Waiting {
                deadline_ms: T0 + 5_000
            }
        );
        assert_eq!(
            crate::reconcile::plan::status(&s, &obs),
            crate::model::Status::Starting
        );
        let (obs, old) = on_ready(&s, &obs, 42, T0 + 1_000);
        assert_eq!(old, None);
        assert_eq!(
            crate::reconcile::plan::status(&s, &obs),
            crate::model::Status::Online
        );
    }

    #[test]
    fn a_run_that_asks_nothing_is_online_at_once() {
        let s = spec(false, 1);
        let obs = crate::reconcile::plan::on_spawned(&s, &Observed::new(), 42, 7, "b", T0);
        assert_eq!(obs.readiness, Readiness::NotAsked);
        assert_eq!(
            crate::reconcile::plan::status(&s, &obs),
            crate::model::Status::Online
        );
    }

    #[test]
    fn a_sign_from_another_group_changes_nothing() {
        let s = spec(true, 1);
        let obs = live(
            42,
            Readiness::Waiting {
                deadline_ms: T0 + 5_000,
            },
        );
        assert_eq!(on_ready(&s, &obs, 43, T0).0, obs);
    }

    #[test]
    fn the_listen_timeout_is_reported_and_the_run_keeps_going_still_starting() {
        let s = spec(true, 1);
        let mut obs = live(
            42,
            Readiness::Waiting {
                deadline_ms: T0 + 5_000,
            },
        );
        assert_eq!(next_check_ms(&obs), Some(T0 + 5_000));
        assert!(!on_deadline(&mut obs, T0 + 4_999));
        assert!(on_deadline(&mut obs, T0 + 5_000));
        assert_eq!(obs.readiness, Readiness::TimedOut { at_ms: T0 + 5_000 });
        assert!(!on_deadline(&mut obs, T0 + 6_000), "reported once");
        assert_eq!(
            crate::reconcile::plan::status(&s, &obs),
            crate::model::Status::Starting
        );
        assert_eq!(obs.pid(), Some(42));
        let (late, _) = on_ready(&s, &obs, 42, T0 + 9_000);
        assert!(late.readiness.is_up());
    }

    #[test]
    fn a_reload_with_readiness_starts_the_new_run_beside_the_ready_one() {
        let s = spec(true, 2);
        let obs = live(42, ready());
        assert_eq!(step(&s, &obs, Some(2), T0), Step::SpawnNext);
        let obs = on_spawn_next(&obs, 9, T0);
        assert_eq!(step(&s, &obs, Some(2), T0), Step::Hold);
        let obs = on_next_spawned(&s, &obs, 43, 8, T0 + 1);
        assert_eq!(obs.pid(), Some(42), "the old run still serves");
        assert_eq!(step(&s, &obs, Some(2), T0 + 10), Step::Hold);
        assert_eq!(next_check_ms(&obs), Some(T0 + 5_001));
        let (obs, old) = on_ready(&s, &obs, 43, T0 + 1_000);
        assert_eq!(old, Some(42));
        assert_eq!(obs.pid(), Some(43));
        assert_eq!(obs.generation, 2);
        assert_eq!(obs.restarts(), 1);
        assert!(matches!(
            obs.handover,
            Some(Handover::Retiring { pid: 42, deadline_ms, .. }) if deadline_ms == T0 + 1_000 + 3_000
        ));
        assert_eq!(
            crate::reconcile::plan::plan(&s, &obs, T0 + 1_001),
            crate::reconcile::plan::Plan::default(),
            "nothing left to do for the live run"
        );
        let again = spec(true, 3);
        assert_eq!(
            step(&again, &obs, Some(3), T0 + 1_001),
            Step::Hold,
            "a second reload waits until the replaced run is gone"
        );
        let gone = on_other_exit(&again, &obs, 42, false).expect("its run");
        assert_eq!(step(&again, &gone, Some(3), T0 + 1_100), Step::SpawnNext);
    }

    #[test]
    fn a_reload_without_readiness_says_it_is_a_restart() {
        let s = spec(false, 2);
        let Step::Fallback(why) = step(&s, &live(42, Readiness::NotAsked), Some(2), T0) else {
            panic!("a fallback");
        };
        assert!(why.contains("falls back to a restart"), "{why}");
    }

    #[test]
    fn a_reload_of_a_run_not_ready_yet_is_a_restart() {
        let s = spec(true, 2);
        let obs = live(42, Readiness::TimedOut { at_ms: T0 });
        assert!(matches!(step(&s, &obs, Some(2), T0), Step::Fallback(_)));
    }

    #[test]
    fn a_restart_request_is_not_a_reload() {
        let s = spec(true, 2);
        assert_eq!(step(&s, &live(42, ready()), None, T0), Step::Free);
        assert_eq!(step(&s, &live(42, ready()), Some(1), T0), Step::Free);
    }

    #[test]
    fn a_new_run_not_ready_in_time_is_stopped_and_the_old_one_kept() {
        let s = spec(true, 2);
        let obs = on_next_spawned(&s, &live(42, ready()), 43, 8, T0);
        let Step::StopNext { pgid, reason } = step(&s, &obs, Some(2), T0 + 5_000) else {
            panic!("stop the new run");
        };
        assert_eq!(pgid, 43);
        assert!(reason.contains("not ready within 5s"), "{reason}");
        let obs = retire_next(&s, &obs, T0 + 5_000);
        assert_eq!(obs.pid(), Some(42));
        assert_eq!(
            obs.generation, 2,
            "the request is served: no restart of the old"
        );
        assert!(matches!(
            obs.handover,
            Some(Handover::Retiring { pid: 43, .. })
        ));
        assert_eq!(
            crate::reconcile::plan::plan(&s, &obs, T0 + 5_001).actions,
            Vec::new()
        );
        assert_eq!(
            step(&s, &obs, Some(2), T0 + 8_000),
            Step::KillRetiring { pgid: 43 }
        );
        let killed = on_retiring_killed(&obs);
        let done = on_other_exit(&s, &killed, 43, false).expect("its run");
        assert_eq!(done.handover, None);
    }

    #[test]
    fn a_new_run_that_exits_before_it_is_ready_fails_the_reload() {
        let s = spec(true, 2);
        let obs = on_next_spawned(&s, &live(42, ready()), 43, 8, T0);
        let after = on_other_exit(&s, &obs, 43, false).expect("its run");
        assert_eq!(after.handover, None);
        assert_eq!(after.pid(), Some(42));
        assert_eq!(after.generation, 2);
        assert_eq!(
            on_other_exit(&s, &obs, 42, false),
            None,
            "the live run is plan's"
        );
    }

    #[test]
    fn a_stop_during_a_reload_stops_the_new_run_too() {
        let mut s = spec(true, 2);
        s.desired = Desired::Stopped;
        let obs = on_next_spawned(&s, &live(42, ready()), 43, 8, T0);
        assert!(matches!(
            step(&s, &obs, Some(2), T0),
            Step::StopNext { pgid: 43, .. }
        ));
    }

    #[test]
    fn a_retiring_group_whose_leader_left_first_is_done_when_the_group_is() {
        let s = spec(true, 2);
        let (obs, _) = on_ready(
            &s,
            &on_next_spawned(&s, &live(42, ready()), 43, 8, T0),
            43,
            T0,
        );
        let left = on_other_exit(&s, &obs, 42, true).expect("its run");
        assert!(matches!(
            left.handover,
            Some(Handover::Retiring {
                leader_gone: true,
                ..
            })
        ));
        assert_eq!(on_retiring_group_gone(&left).handover, None);
    }

    #[test]
    fn after_a_crash_mid_reload_the_new_run_is_adopted_by_its_marker_or_asked_again() {
        let s = spec(true, 2);
        let intent = on_spawn_next(&live(42, ready()), 9, T0);
        let (adopted, again) = on_restore(&s, &intent, Some((43, 8)), false);
        assert!(again);
        assert!(matches!(
            adopted.handover,
            Some(Handover::Starting { pid: 43, .. })
        ));
        let (none, again) = on_restore(&s, &intent, None, false);
        assert!(again);
        assert_eq!(none.handover, None);
        assert_eq!(none.pid(), Some(42));
        let (gone, again) = on_restore(&s, &adopted, None, false);
        assert!(again);
        assert_eq!(gone.handover, None);
        let (kept, again) = on_restore(&s, &adopted, None, true);
        assert!(again, "the reload is still wanted: its waiter is gone");
        assert_eq!(kept, adopted);
    }

    #[test]
    fn a_live_run_that_was_ready_stays_ready_after_a_restore() {
        let s = spec(true, 1);
        let obs = live(42, ready());
        let restored = crate::reconcile::plan::on_restore(&s, &obs, true, T0 + 60_000);
        assert_eq!(
            crate::reconcile::plan::status(&s, &restored),
            crate::model::Status::Online
        );
    }
}
