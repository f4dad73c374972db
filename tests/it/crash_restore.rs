//! The daemon's own death: processes outlive a SIGKILLed or stopped daemon,
//! the next daemon adopts the survivors (never starting a second copy) and
//! starts again what died meanwhile; acknowledged starts are never lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opm::spec::{Observed, Phase};
use opm::store::Store;
use serde_json::Value;

use crate::common::{
    alive, exited, kill_pid, pid_of, pids_with_env, stat, unique, wait_until, TestHome, WAIT,
};
use crate::durability::{opm, start_args, verify, Expect};

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

/// A daemon killed a moment before `restore` still has its socket for as
/// long as its last thread takes to exit: the connection is taken, then
/// broken unanswered. Played here by a listener that reads the start of the
/// request and goes away; restore waits it out and starts a daemon.
#[test]
fn restore_right_after_a_kill_waits_for_the_dying_socket_and_starts_a_daemon() {
    use std::io::Read;
    let home = TestHome::new();
    let listener =
        std::os::unix::net::UnixListener::bind(home.join("opm.sock")).expect("bind opm.sock");
    let dying = std::thread::spawn(move || {
        // The CLI's first connection only checks that the socket answers.
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.expect("accept");
            let mut first = [0u8; 4];
            let got = stream.read(&mut first).expect("read");
            if got > 0 {
                // A request: the daemon dies with it unanswered (and the
                // rest of it unread), and its socket file stays behind.
                return n;
            }
        }
        unreachable!("incoming never ends");
    });
    let out = home.opm(&["daemon", "restore"]).ok();
    assert_eq!(
        dying.join().expect("listener thread"),
        1,
        "probed, then asked"
    );
    assert!(out.stdout.contains("daemon started"), "{out}");
    let pid = home.daemon_pid().expect("daemon pid");
    assert!(home.owns(pid) && alive(pid));
    assert!(home.list().is_empty());
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
    let now = pid_of(&home.wait_for("a", "online again with a new pid", |p| {
        p["status"] == "online" && p["pid"].as_i64() != Some(i64::from(a))
    }));
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
    wait_until(WAIT, "a to die", || !alive(a));

    // `list` starts the daemon, which adopts b and starts a again.
    home.opm(&["list"]).ok();
    home.wait_for("a", "online again with a new pid", |p| {
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

/// A mixed workload of CLI starts, stops, restarts and removes while
/// another thread SIGKILLs the daemon at random moments, 200 times (during
/// its start, its commits, its spawns): the daemon always starts again, no
/// acknowledged change is lost, no process runs twice, and no command ever
/// meets a "damaged" refusal.
#[test]
fn a_storm_of_daemon_kills_loses_nothing_and_runs_nothing_twice() {
    const KILLS: usize = 200;
    /// Past this many processes, the workload removes rather than starts.
    const MAX_PROCESSES: usize = 12;
    let home = TestHome::new();
    let mark = unique("storm");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("storm seed {seed}");
    let rng = std::sync::Mutex::new(seed);
    let random = |below: u64| {
        let mut x = rng.lock().expect("rng");
        // xorshift64: reproducible from the printed seed.
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % below
    };
    let done = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    let answers = AtomicUsize::new(0);
    let mut acked: BTreeMap<String, Expect> = BTreeMap::new();
    let mut unsure: Vec<String> = Vec::new();
    let mut refusals = Vec::new();
    let mut ops = 0usize;
    let mut acknowledged = 0usize;
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = None;
            while kills.load(Ordering::SeqCst) < KILLS {
                // The next daemon (started by the workload's next command)
                // must come up: a daemon that no longer starts fails here.
                wait_until(Duration::from_secs(20), "a daemon to start again", || {
                    home.daemon_pid()
                        .is_some_and(|p| Some(p) != last && home.owns(p) && !exited(p))
                });
                let Some(pid) = home.daemon_pid() else {
                    continue;
                };
                // A fifth of the kills land while the daemon starts (opening
                // the store, adopting), the rest among the commands it serves.
                // A fifth of the kills land while the daemon starts (opening
                // the store, adopting); the rest once it has answered a
                // command, among the next ones (commits, spawns, stops).
                if random(5) > 0 {
                    // A stop of an adopted process can take a second or two
                    // (its group is polled until gone): kill during it too.
                    let answered = answers.load(Ordering::SeqCst);
                    let patience = Instant::now() + Duration::from_millis(200 + random(300));
                    wait_until(Duration::from_secs(20), "the daemon to answer", || {
                        exited(pid)
                            || answers.load(Ordering::SeqCst) > answered
                            || Instant::now() > patience
                    });
                    std::thread::sleep(Duration::from_millis(random(60)));
                } else {
                    std::thread::sleep(Duration::from_millis(random(30)));
                }
                kill_pid(pid, libc::SIGKILL);
                wait_until(Duration::from_secs(10), "the daemon to die", || exited(pid));
                last = Some(pid);
                kills.fetch_add(1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut n = 0;
        while !done.load(Ordering::SeqCst) {
            let known: Vec<(String, Expect)> = acked
                .iter()
                .filter(|(_, e)| **e != Expect::Removed)
                .map(|(k, e)| (k.clone(), *e))
                .collect();
            let pick = |want: Expect| {
                let of: Vec<&String> = known
                    .iter()
                    .filter(|(_, e)| *e == want)
                    .map(|(k, _)| k)
                    .collect();
                (!of.is_empty()).then(|| of[random(of.len() as u64) as usize].clone())
            };
            let roll = random(10);
            let (args, name, expect) =
                if known.len() >= MAX_PROCESSES || (roll < 2 && !known.is_empty()) {
                    let (victim, _) = &known[random(known.len() as u64) as usize];
                    (
                        vec!["remove".to_string(), victim.clone()],
                        victim.clone(),
                        Expect::Removed,
                    )
                } else if let (true, Some(victim)) = (roll < 4, pick(Expect::Running)) {
                    (
                        vec!["stop".to_string(), victim.clone()],
                        victim,
                        Expect::Stopped,
                    )
                } else if let (true, Some(victim)) = (roll < 5, pick(Expect::Stopped)) {
                    (
                        vec!["restart".to_string(), victim.clone()],
                        victim,
                        Expect::Running,
                    )
                } else {
                    let name = format!("p{n}");
                    n += 1;
                    (start_args(&mark, &name), name, Expect::Running)
                };
            ops += 1;
            let out = opm(&home, &args);
            if out.stderr.contains("damaged") {
                refusals.push(out.to_string());
            }
            unsure.retain(|u| *u != name);
            if out.success() {
                acknowledged += 1;
                answers.fetch_add(1, Ordering::SeqCst);
                acked.insert(name, expect);
            } else {
                // The daemon died under the command: it may or may not
                // have been carried out.
                acked.remove(&name);
                unsure.push(name);
            }
        }
    });
    println!(
        "{} kills, {ops} commands, {acknowledged} acknowledged ({} names checked), {} unsure, in {:?}",
        kills.load(Ordering::SeqCst),
        acked.len(),
        unsure.len(),
        started.elapsed()
    );
    assert!(refusals.is_empty(), "damaged refusals: {refusals:#?}");
    assert!(kills.load(Ordering::SeqCst) >= KILLS);
    assert!(
        acknowledged > KILLS / 4,
        "the workload got answers ({acknowledged} of {ops} commands)"
    );
    home.opm(&["daemon", "restore"]).ok();
    verify(&home, &mark, &acked, &unsure);
}

/// A `sleep 1000` outside opm, carrying the home's marker so its drop ends it.
fn decoy(home: &TestHome) -> std::process::Child {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("1000")
        .env(crate::common::MARKER_VAR, home.path())
        .stdin(std::process::Stdio::null());
    cmd.spawn().expect("start a decoy sleep")
}

/// With the daemon stopped, rewrites the recorded runtime of process `id`.
fn edit_runtime(home: &TestHome, id: u64, edit: impl FnOnce(&mut Observed)) {
    let store = Store::open(&home.join("db")).expect("open the stopped daemon's store");
    let mut observed = store.runtime(id).expect("read").expect("a runtime record");
    edit(&mut observed);
    store.put_runtime(id, &observed).expect("write");
    store.flush().expect("flush");
}

#[test]
fn a_recorded_pid_alive_with_another_start_time_is_not_adopted() {
    let home = TestHome::new();
    let mark = unique("reuse");
    let a = start_marked(&home, &mark, "a");
    home.opm(&["daemon", "stop"]).ok();
    kill_pid(a, libc::SIGKILL);
    wait_until(WAIT, "a to die", || exited(a));
    // The pid now names another program, started later: pid reuse.
    let mut other = decoy(&home);
    let other_pid = other.id() as i32;
    edit_runtime(&home, 0, |o| match &mut o.phase {
        Phase::Running { pid, .. } => *pid = other_pid as u32,
        p => panic!("a was recorded running: {p:?}"),
    });

    home.opm(&["daemon", "restore"]).ok();
    home.wait_for("a", "online with a pid of its own", |p| {
        p["status"] == "online" && p["pid"].as_i64().is_some_and(|p| p != i64::from(other_pid))
    });
    assert_eq!(copies(&mark, "a").len(), 1, "a was started once");
    assert!(
        alive(other_pid),
        "the stranger was neither adopted nor killed"
    );
    assert!(other.try_wait().expect("wait").is_none());
    crate::common::kill_child(&mut other);
}

#[test]
fn a_pid_recorded_in_another_boot_is_not_adopted() {
    let home = TestHome::new();
    let mark = unique("boot");
    let a = start_marked(&home, &mark, "a");
    home.opm(&["daemon", "stop"]).ok();
    // Same pid and start time, but recorded before a (pretend) reboot.
    edit_runtime(&home, 0, |o| {
        assert!(!o.boot_id.is_empty(), "the boot is recorded");
        o.boot_id = "00000000-0000-0000-0000-000000000000".into();
    });
    home.opm(&["daemon", "restore"]).ok();
    home.wait_for("a", "started again", |p| {
        p["status"] == "online" && p["pid"].as_i64().is_some_and(|p| p != i64::from(a))
    });
    let now = copies(&mark, "a");
    assert_eq!(
        now.len(),
        2,
        "the old run is left alone, a new one started: {now:?}"
    );
    assert!(alive(a));
    kill_pid(a, libc::SIGKILL);
}

#[test]
fn remove_and_a_start_of_a_stopped_process_survive_a_daemon_killed_right_after_the_answer() {
    let home = TestHome::new();
    let mark = unique("durable");
    let a = start_marked(&home, &mark, "a");
    start_marked(&home, &mark, "b");
    home.opm(&["stop", "b"]).ok();

    home.opm(&["remove", "a"]).ok();
    home.kill_daemon();
    assert!(!alive(a));
    let list = home.list();
    assert_eq!(list.len(), 1, "the removal was kept: {list:#?}");
    assert_eq!(list[0]["name"], "b");
    assert!(copies(&mark, "a").is_empty(), "a is not started again");

    home.opm(&["start", "b"]).ok();
    home.kill_daemon();
    home.opm(&["daemon", "restore"]).ok();
    let b = home.wait_process("b", "online");
    assert_eq!(b["desired"], "running", "the start was kept: {b:#}");
    assert_eq!(copies(&mark, "b"), [pid_of(&b)], "b runs exactly once");
}
