//! What happens when a program exits on its own: restarts with a growing
//! delay, `errored` after too many quick crashes, no restart with
//! `--no-autorestart`, and a fast first restart after a crash.

use serde_json::Value;

use crate::common::{alive, kill_pid, pid_of, TestHome};

/// The `events` of `opm info NAME --format json` as (kind, at_ms).
fn events(info: &Value) -> Vec<(String, u64)> {
    info["events"]
        .as_array()
        .expect("events is an array")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_string(),
                e["at_ms"].as_u64().expect("at_ms"),
            )
        })
        .collect()
}

/// The gap between each `exited` and the `restarted` that follows it.
fn restart_gaps(events: &[(String, u64)]) -> Vec<u64> {
    let mut gaps = Vec::new();
    let mut exited_at = None;
    for (kind, at) in events {
        match kind.as_str() {
            "exited" => exited_at = Some(*at),
            "restarted" => {
                let from = exited_at.take().expect("a restart follows an exit");
                gaps.push(at - from);
            }
            _ => {}
        }
    }
    gaps
}

/// A home with process `flaky`, which exits 5 until a file `fixed` exists
/// in its home, left `errored` after its one restart.
fn errored_until_fixed() -> TestHome {
    let home = TestHome::new();
    home.opm(&[
        "start",
        "sh -c 'test -e fixed || exit 5; exec sleep 1000'",
        "--name",
        "flaky",
        "--max-restarts",
        "1",
        "--restart-delay",
        "10ms",
    ])
    .ok();
    let p = home.wait_process("flaky", "errored");
    assert_eq!(p["restarts"], 1, "{p:#}");
    let info = home.info("flaky");
    assert!(
        info["errored_reason"]
            .as_str()
            .is_some_and(|r| r.contains("exit code 5")),
        "{info:#}"
    );
    home
}

#[test]
fn a_crash_loop_backs_off_and_ends_errored() {
    let home = TestHome::new();
    home.opm(&[
        "start",
        "sh -c 'exit 3'",
        "--name",
        "crash",
        "--max-restarts",
        "3",
        "--restart-delay",
        "100ms",
    ])
    .ok();
    home.wait_process("crash", "errored");
    let info = home.info("crash");
    let evs = events(&info);
    let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "started",
            "exited",
            "restarted",
            "exited",
            "restarted",
            "exited",
            "restarted",
            "exited",
            "errored"
        ],
        "{info:#}"
    );
    let gaps = restart_gaps(&evs);
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    // The first restart is immediate; then the delay starts at 100 ms and
    // doubles. (5 ms of slack: the exit event is stamped a moment after the
    // exit time the delay counts from.)
    assert!(gaps[0] < 100, "first restart should be immediate: {gaps:?}");
    assert!(gaps[1] >= 95, "second restart after >= 100 ms: {gaps:?}");
    assert!(gaps[2] >= 195, "third restart after >= 200 ms: {gaps:?}");
    assert!(gaps[2] > gaps[1], "delays grow: {gaps:?}");

    assert_eq!(info["status"], "errored");
    assert_eq!(info["restarts"], 3, "{info:#}");
    assert!(info["pid"].is_null());
    assert_eq!(info["last_exit"]["code"], 3, "{info:#}");
    let reason = info["errored_reason"].as_str().expect("errored_reason");
    assert!(reason.contains("exit code 3"), "{reason}");
    assert!(info["restart_at_ms"].is_null(), "no restart is pending");
}

#[test]
fn an_errored_process_runs_again_on_restart() {
    let home = errored_until_fixed();
    std::fs::write(home.join("fixed"), "").expect("create the flag");
    home.opm(&["restart", "flaky"]).ok();
    home.wait_process("flaky", "online");
    let pid = pid_of(&home.process("flaky"));
    assert!(alive(pid));
    assert!(home.info("flaky")["errored_reason"].is_null());
}

#[test]
fn without_autorestart_a_clean_exit_leaves_the_process_stopped() {
    let home = TestHome::new();
    home.opm(&[
        "start",
        "sh -c 'echo done'",
        "--name",
        "once",
        "--no-autorestart",
    ])
    .ok();
    home.wait_process("once", "stopped");
    let info = home.info("once");
    assert_eq!(info["autorestart"], false);
    assert_eq!(info["restarts"], 0);
    assert_eq!(info["last_exit"]["code"], 0, "{info:#}");
    assert!(info["errored_reason"].is_null());
    let kinds: Vec<String> = events(&info).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["started", "exited", "stopped"], "{info:#}");
    assert_eq!(
        std::fs::read_to_string(home.join("logs/once-0.out.log")).expect("out log"),
        "done\n",
        "it ran exactly once"
    );
}

#[test]
fn a_crashed_process_is_restarted_within_a_second() {
    let home = TestHome::new();
    let old = pid_of(&home.start("sleep 1000", "victim", &[]));
    kill_pid(old, libc::SIGKILL);
    // The wait polls the daemon's socket; the daemon's own event times say
    // how fast the restart was.
    let p = home.wait_for("victim", "online with a new pid", |p| {
        p["status"] == "online" && p["pid"].as_i64().is_some_and(|pid| pid != i64::from(old))
    });
    let new = pid_of(&p);
    assert!(alive(new), "the new run {new} is alive");
    assert!(!alive(old));
    assert_eq!(p["restarts"], 1, "{p:#}");
    let info = home.info("victim");
    assert_eq!(info["last_exit"]["signal"], 9, "{info:#}");
    let gaps = restart_gaps(&events(&info));
    assert_eq!(gaps.len(), 1, "{info:#}");
    assert!(
        gaps[0] < 1000,
        "restarted {} ms after the crash: {info:#}",
        gaps[0]
    );
}

#[test]
fn start_clears_errored_and_runs_the_process_again() {
    let home = errored_until_fixed();
    std::fs::write(home.join("fixed"), "").expect("create the flag");
    home.opm(&["start", "flaky"]).ok();
    home.wait_process("flaky", "online");
    assert!(alive(pid_of(&home.process("flaky"))));
    let info = home.info("flaky");
    assert!(info["errored_reason"].is_null(), "{info:#}");
    assert_eq!(info["status"], "online");
}
