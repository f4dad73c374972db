//! The small process commands: `opm reset` (the restart counters back to
//! zero), `opm signal SIG NAME` (to the main process, or `--process-group` to its
//! whole process group) and `opm pid NAME` (for scripts), through the CLI
//! and `POST /daemon/action`.

use std::path::Path;

use crate::common::http::unix;
use crate::common::{pid_of, wait_until, TestHome, WAIT};

/// How many lines of `file` are `line`.
fn count(file: &Path, line: &str) -> usize {
    std::fs::read_to_string(file).map_or(0, |t| t.lines().filter(|l| *l == line).count())
}

#[test]
fn reset_zeroes_the_restart_counter_and_says_so_in_the_events() {
    let home = TestHome::new();
    home.start("sleep 1000", "r", &[]);
    home.opm(&["restart", "r"]).ok();
    home.opm(&["restart", "r"]).ok();
    assert_eq!(home.process("r")["restarts"], 2);
    let pid = pid_of(&home.process("r"));
    let out = home.opm(&["reset", "r"]).ok();
    assert!(out.stdout.contains("reset r"), "{out}");
    let p = home.process("r");
    assert_eq!(p["restarts"], 0, "{p:#}");
    assert_eq!(pid_of(&p), pid, "a reset does not touch the process");
    let info = home.info("r");
    let reset = info["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "reset")
        .cloned()
        .expect("a reset event");
    assert_eq!(reset["detail"], "2 restarts counted before", "{info:#}");
    // The count goes on from zero.
    home.opm(&["restart", "r"]).ok();
    assert_eq!(home.process("r")["restarts"], 1);
    // Through the API too.
    let r = unix(
        &home,
        "POST",
        "/daemon/action",
        Some(br#"{"id": "r", "action": "reset"}"#),
    )
    .expect(200)
    .json();
    assert_eq!(r["processes"][0]["restarts"], 0, "{r:#}");
    home.opm(&["reset", "nope"]).failed();
}

/// A bash program whose main process writes `main` to `marker` on
/// SIGUSR2, and whose child (same group) writes `child`.
fn trapping(home: &TestHome, marker: &Path) -> String {
    let script = home.join("trap.sh");
    let m = marker.display();
    std::fs::write(
        &script,
        format!(
            "trap 'echo main >> {m}' USR2\n\
             bash -c \"trap 'echo child >> {m}' USR2; while :; do sleep 0.1; done\" &\n\
             echo ready >> {m}\n\
             while :; do sleep 0.1; done\n"
        ),
    )
    .expect("write trap.sh");
    format!("bash {}", script.display())
}

#[test]
fn signal_reaches_the_main_process_or_with_group_the_whole_group() {
    let home = TestHome::new();
    let marker = home.join("got");
    let pid = pid_of(&home.start(&trapping(&home, &marker), "t", &[]));
    wait_until(WAIT, "the program to set its traps", || {
        count(&marker, "ready") == 1
    });
    let out = home.opm(&["signal", "SIGUSR2", "t"]).ok();
    assert!(out.stdout.contains(&format!("pid {pid}")), "{out}");
    wait_until(WAIT, "the main process's handler", || {
        count(&marker, "main") == 1
    });
    // The short name and the number are the same signal; --process-group reaches
    // the child too.
    home.opm(&["signal", "USR2", "t", "--process-group"]).ok();
    wait_until(WAIT, "both handlers", || {
        count(&marker, "main") == 2 && count(&marker, "child") == 1
    });
    home.opm(&["signal", "12", "t"]).ok();
    wait_until(WAIT, "the main handler, a third time", || {
        count(&marker, "main") == 3
    });
    assert_eq!(
        count(&marker, "child"),
        1,
        "without --process-group the child got nothing"
    );
    let p = home.process("t");
    assert_eq!(p["status"], "online", "{p:#}");
    assert_eq!(pid_of(&p), pid, "the process handled it and lives on");
    assert_eq!(p["restarts"], 0);
    let info = home.info("t");
    assert!(
        info["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "signal" && e["detail"] == format!("SIGUSR2 to pid {pid}")),
        "{info:#}"
    );

    // Refusals: an unknown signal, a stopped process, no signal in the body.
    let out = home.opm(&["signal", "SIGNOPE", "t"]).failed();
    assert!(out.stderr.contains("not a signal"), "{out}");
    home.start("sleep 1000", "s", &[]);
    home.opm(&["stop", "s"]).ok();
    let out = home.opm(&["signal", "USR2", "s"]).failed();
    assert!(out.stderr.contains("stopped"), "{out}");
    unix(
        &home,
        "POST",
        "/daemon/action",
        Some(br#"{"id": "t", "action": "signal"}"#),
    )
    .expect_json_error(400);
    unix(
        &home,
        "POST",
        "/daemon/action",
        Some(br#"{"id": "s", "action": "signal", "signal": "USR2"}"#),
    )
    .expect_json_error(409);
    let r = unix(
        &home,
        "POST",
        "/daemon/action",
        Some(br#"{"id": "t", "action": "signal", "signal": 12}"#),
    )
    .expect(200)
    .json();
    assert_eq!(r["processes"][0]["name"], "t", "{r:#}");
    wait_until(WAIT, "the API's signal", || count(&marker, "main") == 4);
}

#[test]
fn pid_prints_pids_for_scripts_and_fails_for_a_process_not_running() {
    let home = TestHome::new();
    let a = pid_of(&home.start("sleep 1000", "a", &[]));
    let b = pid_of(&home.start("sleep 1001", "b", &[]));
    assert_eq!(home.opm(&["pid", "a"]).ok().stdout, format!("{a}\n"));
    let id = home.process("b")["id"].to_string();
    assert_eq!(home.opm(&["pid", &id]).ok().stdout, format!("{b}\n"));
    assert_eq!(home.opm(&["pid"]).ok().stdout, format!("{a}\n{b}\n"));
    home.opm(&["stop", "b"]).ok();
    let out = home.opm(&["pid", "b"]).failed();
    assert_eq!(out.stdout, "", "nothing on stdout: {out}");
    assert!(out.stderr.contains("stopped"), "{out}");
    assert_eq!(home.opm(&["pid", "all"]).ok().stdout, format!("{a}\n"));
    let out = home.opm(&["pid", "nope"]).failed();
    assert!(out.stderr.contains("no process"), "{out}");
}
