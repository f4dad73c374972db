//! Stopping: SIGTERM to the whole process group, SIGKILL after the kill
//! timeout for what ignores it (grandchildren included), and a prompt stop
//! for programs that obey.

use std::time::{Duration, Instant};

use crate::common::{
    alive, group_members, group_members_named, pid_of, wait_until, TestHome, WAIT,
};

const KILL_TIMEOUT: Duration = Duration::from_millis(500);

/// Writes a bash script into the home and returns the command that runs it
/// (no shell metacharacters, so bash itself leads the process group).
fn script(home: &TestHome, name: &str, body: &str) -> String {
    std::fs::write(home.join(name), body).expect("write the script");
    format!("bash {name}")
}

/// Waits until the group led by `leader` has `sleeps` sleeping grandchildren;
/// returns every member.
fn settled_group(leader: i32, sleeps: usize) -> Vec<i32> {
    wait_until(
        Duration::from_secs(10),
        "the program to fork its grandchildren",
        || group_members_named(leader, "sleep").len() == sleeps,
    );
    let members = group_members(leader);
    assert!(members.contains(&leader), "{members:?}");
    members
}

/// After a stop, nothing of the group may survive. The leader is reaped
/// by the daemon before it answers; members reparented to init may take a
/// moment to be reaped, so this waits briefly for SIGKILL to land.
fn assert_group_gone(leader: i32, members: &[i32]) {
    assert!(!alive(leader), "the leader {leader} survived the stop");
    wait_until(WAIT, "every member of the stopped group to be gone", || {
        members.iter().all(|p| !alive(*p)) && group_members(leader).is_empty()
    });
}

#[test]
fn a_program_that_ignores_sigterm_is_killed_with_its_grandchildren_after_the_timeout() {
    let home = TestHome::new();
    let cmd = script(
        &home,
        "stubborn.sh",
        "trap '' TERM\nsleep 1000 &\nsleep 1000 &\nwait\n",
    );
    let p = home.start(&cmd, "stubborn", &["--kill-timeout", "500ms"]);
    let leader = pid_of(&p);
    let members = settled_group(leader, 2);
    assert!(members.len() >= 3, "leader and two sleeps: {members:?}");

    let began = Instant::now();
    let out = home.opm(&["stop", "stubborn"]).ok();
    let took = began.elapsed();
    assert!(
        took >= KILL_TIMEOUT,
        "stop took {took:?}, less than the kill timeout: {out}"
    );
    assert!(took < KILL_TIMEOUT + Duration::from_secs(3), "{took:?}");
    assert_group_gone(leader, &members);

    let info = home.info("stubborn");
    assert_eq!(info["status"], "stopped");
    assert_eq!(info["last_exit"]["signal"], 9, "{info:#}");
    let kinds: Vec<&str> = info["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert!(kinds.contains(&"killed"), "{kinds:?}");
}

#[test]
fn a_grandchild_that_ignores_sigterm_is_killed_after_its_leader_exited() {
    let home = TestHome::new();
    // The leader obeys SIGTERM; its grandchild ignores it and keeps the group alive.
    let cmd = script(
        &home,
        "orphaning.sh",
        "(trap '' TERM; exec sleep 1000) &\nwait\n",
    );
    let p = home.start(&cmd, "orphaning", &["--kill-timeout", "500ms"]);
    let leader = pid_of(&p);
    let members = settled_group(leader, 1);

    let began = Instant::now();
    home.opm(&["stop", "orphaning"]).ok();
    let took = began.elapsed();
    assert!(took >= KILL_TIMEOUT, "stop took {took:?}");
    assert_group_gone(leader, &members);
    assert_eq!(home.process("orphaning")["status"], "stopped");
}

#[test]
fn remove_kills_a_stubborn_group_too() {
    let home = TestHome::new();
    let cmd = script(&home, "stubborn.sh", "trap '' TERM\nsleep 1000 &\nwait\n");
    let p = home.start(&cmd, "stubborn", &["--kill-timeout", "300ms"]);
    let leader = pid_of(&p);
    let members = settled_group(leader, 1);
    home.opm(&["rm", "stubborn"]).ok();
    assert_group_gone(leader, &members);
    assert!(home.list().is_empty());
}

#[test]
fn a_program_that_obeys_sigterm_stops_promptly() {
    let home = TestHome::new();
    // A generous timeout: a prompt stop must not wait for it.
    let p = home.start("sleep 1000", "polite", &["--kill-timeout", "10s"]);
    let pid = pid_of(&p);
    let began = Instant::now();
    home.opm(&["stop", "polite"]).ok();
    let took = began.elapsed();
    // Half the kill timeout: a stop that waited for SIGKILL takes all of it,
    // while a loaded machine's CLI run and fsyncs stay well under.
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(!alive(pid));
    let info = home.info("polite");
    assert_eq!(info["status"], "stopped");
    assert_eq!(info["last_exit"]["signal"], 15, "{info:#}");
}

#[test]
fn a_program_that_obeys_sigterm_stops_promptly_with_its_children() {
    let home = TestHome::new();
    let cmd = script(&home, "polite.sh", "sleep 1000 &\nsleep 1000 &\nwait\n");
    let p = home.start(&cmd, "polite", &["--kill-timeout", "10s"]);
    let leader = pid_of(&p);
    let members = settled_group(leader, 2);
    let began = Instant::now();
    home.opm(&["stop", "polite"]).ok();
    let took = began.elapsed();
    // Half the kill timeout: a stop that waited for SIGKILL takes all of it,
    // while a loaded machine's CLI run and fsyncs stay well under.
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_group_gone(leader, &members);
    let info = home.info("polite");
    assert_eq!(info["status"], "stopped");
    assert_eq!(info["last_exit"]["signal"], 15, "{info:#}");
}
