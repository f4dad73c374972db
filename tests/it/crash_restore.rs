//! The daemon's own death: processes outlive a SIGKILLed or stopped daemon,
//! the next daemon adopts the survivors (never starting a second copy) and
//! starts again what died meanwhile; acknowledged starts are never lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    alive, all_pids, environ, exited, kill_pid, pid_of, pids_with_env, stat, unique, wait_until,
    TestHome,
};

/// Starts `sleep 1000` named `name` carrying `MARK=<mark>-<name>`; returns its pid.
fn start_marked(home: &TestHome, mark: &str, name: &str) -> i32 {
    let env = format!("MARK={mark}-{name}");
    let p = home.start("sleep 1000", name, &["--env", &env]);
    assert_eq!(p["status"], "online", "{p:#}");
    pid_of(&p)
}

/// Live processes carrying `MARK=<mark>-<name>`.
fn copies(mark: &str, name: &str) -> Vec<i32> {
    pids_with_env(&format!("MARK={mark}-{name}"))
}

fn event_kinds(info: &Value) -> Vec<String> {
    info["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect()
}

#[test]
fn a_sigkilled_daemon_leaves_its_children_running_and_restore_adopts_them() {
    let home = TestHome::new();
    let mark = unique("adopt");
    let a = start_marked(&home, &mark, "a");
    let b = start_marked(&home, &mark, "b");
    let identity = |pid| stat(pid).map(|s| (s.pgrp, s.start_time));
    let started = [identity(a), identity(b)];
    let first_daemon = home.daemon_pid().expect("daemon pid");

    home.kill_daemon();
    assert!(alive(a) && alive(b), "children die with the daemon");
    assert_eq!([identity(a), identity(b)], started, "the same runs");

    let out = home.opm(&["daemon", "restore"]).ok();
    assert!(out.stdout.contains("daemon started"), "{out}");
    let second_daemon = home.daemon_pid().expect("daemon pid");
    assert_ne!(first_daemon, second_daemon);

    let list = home.list();
    assert_eq!(list.len(), 2, "{list:#?}");
    for (p, pid) in list.iter().zip([a, b]) {
        assert_eq!(p["status"], "online", "{p:#}");
        assert_eq!(pid_of(p), pid, "the same run is adopted: {p:#}");
        assert_eq!(p["restarts"], 0, "{p:#}");
    }
    assert_eq!(copies(&mark, "a"), [a], "exactly one copy of a");
    assert_eq!(copies(&mark, "b"), [b], "exactly one copy of b");
    assert!(event_kinds(&home.info("a")).contains(&"adopted".to_string()));
}

#[test]
fn an_adopted_process_that_crashes_is_restarted() {
    let home = TestHome::new();
    let mark = unique("adopted-crash");
    let a = start_marked(&home, &mark, "a");
    home.kill_daemon();
    home.opm(&["daemon", "restore"]).ok();
    assert_eq!(pid_of(&home.process("a")), a);

    kill_pid(a, libc::SIGKILL);
    wait_until(Duration::from_secs(5), "a to run again", || {
        let p = home.process("a");
        p["status"] == "online" && p["pid"].as_i64() != Some(i64::from(a))
    });
    let now = pid_of(&home.process("a"));
    assert_eq!(copies(&mark, "a"), [now]);
}

#[test]
fn any_command_restarts_the_daemon_and_a_child_killed_meanwhile_runs_again() {
    let home = TestHome::new();
    let mark = unique("lost");
    let a = start_marked(&home, &mark, "a");
    let b = start_marked(&home, &mark, "b");
    home.kill_daemon();
    kill_pid(a, libc::SIGKILL);
    wait_until(Duration::from_secs(5), "a to die", || !alive(a));

    // `list` starts the daemon, which adopts b and starts a again.
    wait_until(Duration::from_secs(10), "a to run again", || {
        let p = home.process("a");
        p["status"] == "online" && p["pid"].as_i64() != Some(i64::from(a))
    });
    let list = home.list();
    let a2 = pid_of(&list[0]);
    assert!(alive(a2));
    assert_eq!(pid_of(&list[1]), b, "b is adopted, not restarted");
    assert_eq!(list[1]["status"], "online");
    assert_eq!(copies(&mark, "a"), [a2]);
    assert_eq!(copies(&mark, "b"), [b]);
    let kinds = event_kinds(&home.info("a"));
    assert!(kinds.contains(&"lost".to_string()), "{kinds:?}");
}

#[test]
fn daemon_stop_leaves_processes_running_and_the_next_daemon_adopts_them() {
    let home = TestHome::new();
    let mark = unique("stop");
    let a = start_marked(&home, &mark, "a");
    let daemon = home.daemon_pid().expect("daemon pid");
    let out = home.opm(&["daemon", "stop"]).ok();
    assert!(out.stdout.contains("stopped"), "{out}");
    assert!(!alive(daemon), "the daemon exited");
    assert!(!home.join("opm.sock").exists(), "the socket is gone");
    assert!(alive(a), "the process outlives a stopped daemon");

    let p = home.process("a");
    assert_ne!(home.daemon_pid(), Some(daemon), "a new daemon answers");
    assert_eq!(p["status"], "online");
    assert_eq!(pid_of(&p), a);
    assert_eq!(copies(&mark, "a"), [a]);
}

#[test]
fn stopped_processes_stay_stopped_across_a_daemon_crash() {
    let home = TestHome::new();
    let mark = unique("stays");
    let a = start_marked(&home, &mark, "a");
    home.opm(&["stop", "a"]).ok();
    assert!(!alive(a));
    home.kill_daemon();
    let p = home.process("a");
    assert_eq!(p["status"], "stopped", "{p:#}");
    assert!(
        copies(&mark, "a").is_empty(),
        "a stopped process is not started"
    );
}

/// 100 starts through the CLI while another thread SIGKILLs the daemon
/// twice: every acknowledged start is listed afterwards, and every listed
/// process runs exactly once.
#[test]
fn starts_survive_daemon_kills_and_nothing_runs_twice() {
    const STARTS: usize = 100;
    let home = TestHome::new();
    let mark = unique("storm");
    let done = AtomicUsize::new(0);
    // Set from the kill until every thread of the daemon is gone: for the
    // few milliseconds the other threads take to exit after the main one,
    // the old socket still accepts connections (and the CLI then fails with
    // "connection error" instead of starting a daemon), so a retry waits for
    // the death to be over.
    let dying = AtomicBool::new(false);
    let mut acknowledged = Vec::new();
    let mut kills = 0;
    std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let mut kills = 0;
            for at in [STARTS / 3, 2 * STARTS / 3] {
                wait_until(Duration::from_secs(120), "the starts to progress", || {
                    done.load(Ordering::SeqCst) >= at
                });
                if let Some(pid) = home.daemon_pid().filter(|p| home.owns(*p)) {
                    dying.store(true, Ordering::SeqCst);
                    kill_pid(pid, libc::SIGKILL);
                    wait_until(Duration::from_secs(10), "the daemon to die", || exited(pid));
                    dying.store(false, Ordering::SeqCst);
                    kills += 1;
                }
            }
            kills
        });
        for i in 0..STARTS {
            let name = format!("p{i}");
            let env = format!("MARK={mark}-{name}");
            let args = ["start", "sleep 1000", "--name", &name, "--env", &env];
            let mut out = home.opm(&args);
            if !out.success() {
                // The daemon may have died under this start; try once more.
                // If the first attempt was stored, the name is now taken.
                wait_until(Duration::from_secs(10), "the kill to be over", || {
                    !dying.load(Ordering::SeqCst)
                });
                let again = home.opm(&args);
                let taken = again.stderr.contains("already exists");
                assert!(
                    again.success() || taken,
                    "retry of {name}: {again}\nfirst: {out}"
                );
                out = again;
            }
            if out.success() {
                acknowledged.push(name);
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
        kills = killer.join().expect("killer thread");
    });
    assert_eq!(kills, 2, "the daemon was killed twice");

    let list = home.list();
    let listed: BTreeMap<String, &Value> = list
        .iter()
        .map(|p| (p["name"].as_str().expect("name").to_string(), p))
        .collect();
    for name in &acknowledged {
        assert!(listed.contains_key(name), "acknowledged {name} is lost");
    }
    wait_until(
        Duration::from_secs(20),
        "every listed process to be online",
        || home.list().iter().all(|p| p["status"] == "online"),
    );
    let list = home.list();
    for p in &list {
        let name = p["name"].as_str().expect("name");
        assert_eq!(
            copies(&mark, name),
            [pid_of(p)],
            "{name} runs exactly once, as listed"
        );
    }
    // Nothing runs that is not listed.
    let prefix = format!("MARK={mark}-");
    let running: Vec<String> = all_pids()
        .into_iter()
        .filter(|pid| alive(*pid))
        .filter_map(|pid| environ(pid)?.into_iter().find(|e| e.starts_with(&prefix)))
        .collect();
    assert_eq!(running.len(), list.len(), "{running:?}");
}
