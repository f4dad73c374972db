//! What happens when a program exits on its own: restarts with a growing
//! delay, `errored` after too many quick crashes, a fast first restart
//! after a crash; the policy (`--restart always|on-failure|never`,
//! `--no-autorestart`, `--stop-exit-codes`) and the `exited` status it
//! leaves; a fixed `--restart-delay` and the `waiting` status; a finished
//! one-shot job that neither `opm restore` nor a daemon crash runs again;
//! `--cron-restart`.

use std::time::Duration;

use serde_json::Value;

use crate::common::http::unix;
use crate::common::{alive, kill_pid, pid_of, wait_until, TestHome, WAIT};

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
    // Without a fixed delay the first restart is immediate; then the
    // backoff starts at 100 ms and doubles. (5 ms of slack: the exit event is stamped a moment after the
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
fn without_autorestart_a_clean_exit_leaves_the_process_exited_with_its_code() {
    let home = TestHome::new();
    home.opm(&[
        "start",
        "sh -c 'echo done'",
        "--name",
        "once",
        "--no-autorestart",
    ])
    .ok();
    let p = home.wait_process("once", "exited");
    assert_eq!(p["exit_code"], 0, "{p:#}");
    let info = home.info("once");
    assert_eq!(info["autorestart"], false);
    assert_eq!(info["definition"]["restart"], "never", "{info:#}");
    assert_eq!(info["restarts"], 0);
    assert_eq!(info["last_exit"]["code"], 0, "{info:#}");
    assert!(info["errored_reason"].is_null());
    let kinds: Vec<String> = events(&info).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["started", "exited", "finished"], "{info:#}");
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

/// How many lines `rel` of the home holds (0 when it does not exist yet).
fn lines(home: &TestHome, rel: &str) -> usize {
    std::fs::read_to_string(home.join(rel)).map_or(0, |t| t.lines().count())
}

/// A shell command line that appends a line to `runs` (in the home), then
/// exits with `code`.
fn job(runs: &str, code: i32) -> String {
    format!("sh -c 'echo run >> {runs}; exit {code}'")
}

#[test]
fn an_exit_code_in_stop_exit_codes_is_not_restarted_and_others_are() {
    let home = TestHome::new();
    home.opm(&[
        "start",
        &job("three.runs", 3),
        "--name",
        "three",
        "--stop-exit-codes",
        "0,3",
    ])
    .ok();
    home.opm(&[
        "start",
        &job("four.runs", 4),
        "--name",
        "four",
        "--stop-exit-codes",
        "0,3",
        "--max-restarts",
        "1",
    ])
    .ok();
    let p = home.wait_process("three", "exited");
    assert_eq!(p["exit_code"], 3, "{p:#}");
    assert_eq!(p["restarts"], 0, "{p:#}");
    assert!(p["pid"].is_null());
    let table = home.opm(&["list"]).ok();
    assert!(table.stdout.contains("exited (3)"), "{table}");
    let info = home.info("three");
    assert_eq!(
        info["definition"]["stop_exit_codes"],
        serde_json::json!([0, 3])
    );
    let text = home.opm(&["info", "three"]).ok();
    assert!(text.stdout.contains("never after exit code 0, 3"), "{text}");
    // Exit 4 is not in the list: restarted, until the crash loop ends it.
    home.wait_process("four", "errored");
    assert_eq!(lines(&home, "four.runs"), 2);
    assert_eq!(lines(&home, "three.runs"), 1, "3 ran once");
}

#[test]
fn on_failure_keeps_a_clean_exit_and_restarts_a_failed_one() {
    let home = TestHome::new();
    home.start(&job("ok.runs", 0), "ok", &["--restart", "on-failure"]);
    home.start(
        &job("bad.runs", 1),
        "bad",
        &["--restart", "on-failure", "--max-restarts", "2"],
    );
    let ok = home.wait_process("ok", "exited");
    assert_eq!(ok["exit_code"], 0, "{ok:#}");
    let bad = home.wait_process("bad", "errored");
    assert_eq!(bad["restarts"], 2, "{bad:#}");
    assert_eq!(lines(&home, "bad.runs"), 3, "exit 1 was restarted");
    assert_eq!(lines(&home, "ok.runs"), 1, "exit 0 was not");
    assert_eq!(home.info("ok")["definition"]["restart"], "on-failure");
}

#[test]
fn never_runs_a_job_once_whatever_its_exit() {
    let home = TestHome::new();
    home.start(&job("n.runs", 1), "n", &["--restart", "never"]);
    let p = home.wait_process("n", "exited");
    assert_eq!(p["exit_code"], 1, "{p:#}");
    assert_eq!(p["autorestart"], false, "{p:#}");
    assert_eq!(lines(&home, "n.runs"), 1);
    // `opm start` runs it again, as the user asked.
    home.opm(&["start", "n"]).ok();
    wait_until(WAIT, "a second run", || lines(&home, "n.runs") == 2);
    home.wait_process("n", "exited");
    // A stop turns `exited` into `stopped`.
    home.opm(&["stop", "n"]).ok();
    assert_eq!(home.process("n")["status"], "stopped");
}

#[test]
fn a_policy_that_contradicts_autorestart_or_a_bad_value_is_refused() {
    let home = TestHome::new();
    let out = home
        .opm(&["start", "sleep 1000", "--restart", "sometimes"])
        .failed();
    assert!(out.stderr.contains("sometimes"), "{out}");
    let out = home
        .opm(&[
            "start",
            "sleep 1000",
            "--name",
            "x",
            "--restart",
            "always",
            "--no-autorestart",
        ])
        .failed();
    assert!(out.stderr.contains("contradicts"), "{out}");
    let out = home
        .opm(&[
            "start",
            "sleep 1000",
            "--name",
            "x",
            "--stop-exit-codes",
            "300",
        ])
        .failed();
    assert!(out.stderr.contains("stop exit code 300"), "{out}");
    for bad in [r#""always""#, r#""on-failure""#] {
        let body = format!(
            r#"{{"script": "sleep 1000", "name": "y", "restart": {bad}, "autorestart": false}}"#
        );
        let r = unix(&home, "POST", "/daemon/create", Some(body.as_bytes()));
        assert_eq!(r.status, 400, "{r}");
    }
    assert!(home.list().is_empty(), "nothing was stored");
}

#[test]
fn a_fixed_restart_delay_waits_before_each_restart_and_shows_waiting() {
    const DELAY_MS: u64 = 800;
    let home = TestHome::new();
    // Each run notes its start time (ms), lives 200 ms, notes its end and
    // exits 1; with a 100 ms min uptime each exit is "stable", so every
    // restart waits exactly the fixed delay (no crash-loop doubling).
    home.opm(&[
        "start",
        "sh -c 'date +%s%3N >> starts; sleep 0.2; date +%s%3N >> ends; exit 1'",
        "--name",
        "slow",
        "--restart-delay",
        "800ms",
        "--min-uptime",
        "100ms",
    ])
    .ok();
    // Between a run's end and the next start, the status is `waiting`, with
    // the time of the next try.
    let waiting = home.wait_for("slow", "waiting with its next try", |p| {
        p["status"] == "waiting" && p["restart_at_ms"].is_u64()
    });
    let now = opm::spec::now_ms();
    let at = waiting["restart_at_ms"].as_u64().expect("restart_at_ms");
    assert!(
        at > now.saturating_sub(50) && at <= now + DELAY_MS,
        "{waiting:#} at {now}"
    );
    let table = home.opm(&["list"]).ok();
    assert!(table.stdout.contains("waiting"), "{table}");
    wait_until(Duration::from_secs(15), "three runs", || {
        lines(&home, "starts") >= 3
    });
    home.opm(&["stop", "slow"]).ok();
    let read = |rel: &str| -> Vec<u64> {
        std::fs::read_to_string(home.join(rel))
            .expect("timestamps")
            .lines()
            .map(|l| l.trim().parse().expect("a time in ms"))
            .collect()
    };
    let (starts, ends) = (read("starts"), read("ends"));
    for i in 0..2 {
        let gap = starts[i + 1] - ends[i];
        assert!(
            gap >= DELAY_MS,
            "restart {} came {gap} ms after the exit, before the {DELAY_MS} ms delay",
            i + 1
        );
        assert!(
            gap < 2 * DELAY_MS,
            "restart {} came {gap} ms after the exit: a fixed delay, not a doubling one",
            i + 1
        );
    }
    // The daemon's own times agree: exit to restart, at least the delay.
    let gaps = restart_gaps(&events(&home.info("slow")));
    assert!(gaps.len() >= 2, "{gaps:?}");
    assert!(gaps.iter().all(|g| *g + 5 >= DELAY_MS), "{gaps:?}");
}

/// A finished one-shot job (`--restart never`, or `--no-autorestart`) is not
/// run again by `opm restore`, nor by a daemon killed and brought back; a
/// job that ended while the daemon was down is not run again either.
#[test]
fn a_finished_one_shot_job_is_not_run_again_by_restore_nor_after_a_daemon_crash() {
    let home = TestHome::new();
    home.start(&job("once.runs", 0), "once", &["--restart", "never"]);
    home.start(&job("legacy.runs", 0), "legacy", &["--no-autorestart"]);
    // A job still running when the daemon dies, that ends while it is down.
    let long = home.start(
        "sh -c 'echo run >> long.runs; exec sleep 1000'",
        "long",
        &["--restart", "never"],
    );
    home.wait_process("once", "exited");
    home.wait_process("legacy", "exited");
    home.opm(&["save"]).ok();

    let out = home.opm(&["restore"]).ok();
    assert!(out.stdout.contains("0 started again"), "{out}");
    assert_eq!(home.process("once")["status"], "exited");

    home.kill_daemon();
    let long_pid = pid_of(&long);
    kill_pid(long_pid, libc::SIGKILL);
    wait_until(WAIT, "long to end", || !alive(long_pid));
    home.opm(&["restore"]).ok();
    for name in ["once", "legacy", "long"] {
        let p = home.wait_process(name, "exited");
        assert!(p["pid"].is_null(), "{p:#}");
    }
    // Ended unseen: no exit code to show.
    assert!(home.process("long")["exit_code"].is_null());
    home.opm(&["daemon", "restore"]).ok();
    for runs in ["once.runs", "legacy.runs", "long.runs"] {
        assert_eq!(lines(&home, runs), 1, "{runs}: ran once");
    }
}

#[test]
fn a_cron_restart_with_seconds_restarts_a_process_and_runs_an_exited_job_again() {
    let home = TestHome::new();
    let first = pid_of(&home.start("sleep 1000", "tick", &["--cron-restart", "*/2 * * * * *"]));
    home.start(
        &job("cron.runs", 0),
        "cronjob",
        &["--restart", "never", "--cron-restart", "*/2 * * * * *"],
    );
    let info = home.info("tick");
    let next = info["cron_next_ms"].as_u64().expect("cron_next_ms");
    assert!(next <= opm::spec::now_ms() + 2_000, "{info:#}");
    let text = home.opm(&["info", "tick"]).ok();
    assert!(
        text.stdout.contains("cron restart") && text.stdout.contains("next at"),
        "{text}"
    );
    let p = home.wait_for("tick", "a new pid after a cron match", |p| {
        p["status"] == "online" && p["pid"].as_i64().is_some_and(|pid| pid != i64::from(first))
    });
    assert!(p["restarts"].as_u64() >= Some(1), "{p:#}");
    assert!(!alive(first));
    wait_until(Duration::from_secs(10), "the job's second run", || {
        lines(&home, "cron.runs") >= 2
    });
    let kinds: Vec<String> = events(&home.info("cronjob"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(kinds.contains(&"cron_restart".to_string()), "{kinds:?}");
}

/// The five-field form at minute granularity: the restart comes at the next
/// minute's start (this test waits for it, up to a minute).
#[test]
fn a_cron_restart_happens_at_the_next_minute() {
    let home = TestHome::new();
    let first = pid_of(&home.start("sleep 1000", "minutely", &["--cron-restart", "* * * * *"]));
    let next = home.info("minutely")["cron_next_ms"]
        .as_u64()
        .expect("cron_next_ms");
    assert_eq!(next % 60_000, 0, "a minute's start: {next}");
    assert!(next > opm::spec::now_ms(), "in the future");
    // Up to a minute away: longer than the usual wait.
    let mut p = Value::Null;
    wait_until(Duration::from_secs(75), "restarted at the minute", || {
        p = home
            .try_api_list()
            .and_then(|l| l.into_iter().find(|p| p["name"] == "minutely"))
            .unwrap_or(Value::Null);
        p["pid"].as_i64().is_some_and(|pid| pid != i64::from(first))
    });
    assert!(opm::spec::now_ms() >= next, "not before the minute");
    let evs = events(&home.info("minutely"));
    let (_, at) = evs
        .iter()
        .find(|(k, _)| k == "cron_restart")
        .expect("a cron_restart event");
    assert!(
        *at >= next && *at < next + 2_000,
        "restarted at {at}, the minute began at {next}"
    );
    assert_eq!(p["restarts"], 1, "{p:#}");
}

#[test]
fn a_bad_cron_expression_is_refused_by_the_cli_the_api_and_a_file() {
    let home = TestHome::new();
    let out = home
        .opm(&[
            "start",
            "sleep 1000",
            "--name",
            "c",
            "--cron-restart",
            "every night",
        ])
        .failed();
    assert!(out.stderr.contains("not a cron expression"), "{out}");
    std::fs::write(
        home.join("p.toml"),
        "[[process]]\nname = \"f\"\nscript = \"sleep 1000\"\ncron_restart = \"61 * * * *\"\n",
    )
    .expect("write p.toml");
    let out = home.opm(&["start", "p.toml"]).failed();
    assert!(out.stderr.contains("cron_restart"), "{out}");
    let body = br#"{"script": "sleep 1000", "name": "a", "cron_restart": "0 3 * *"}"#;
    let r = unix(&home, "POST", "/daemon/create", Some(body)).expect_json_error(400);
    assert!(r.text().contains("not a cron expression"), "{r}");
    assert!(home.list().is_empty(), "nothing was stored");
}
