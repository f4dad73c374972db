//! Starting, listing, stopping, restarting and removing processes through
//! the CLI: by id, by name, with `all`, several at once, the PM2 aliases,
//! `--env`/`--cwd`, and `.toml` process files.

use std::time::Duration;

use serde_json::Value;

use crate::common::{alive, environ, pid_of, stat, wait_until, TestHome};

fn names(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|p| p["name"].as_str().expect("a name").to_string())
        .collect()
}

#[track_caller]
fn assert_online(p: &Value) -> i32 {
    assert_eq!(p["status"], "online", "{p:#}");
    let pid = pid_of(p);
    assert!(alive(pid), "pid {pid} of {} is not running", p["name"]);
    pid
}

#[track_caller]
fn assert_stopped(p: &Value) {
    assert_eq!(p["status"], "stopped", "{p:#}");
    assert!(p["pid"].is_null(), "a stopped process has no pid: {p:#}");
}

#[test]
fn a_started_process_runs_in_its_own_group_and_is_listed() {
    let home = TestHome::new();
    let out = home.opm(&["start", "sleep 1000", "--name", "a"]).ok();
    assert!(out.stdout.contains("started a"), "{out}");
    let list = home.list();
    assert_eq!(list.len(), 1, "{list:#?}");
    let p = &list[0];
    assert_eq!(p["id"], 0);
    assert_eq!(p["name"], "a");
    assert_eq!(p["restarts"], 0);
    assert_eq!(p["command"], "sleep 1000");
    assert_eq!(p["desired"], "running");
    for key in ["uptime_ms", "cpu", "memory"] {
        assert!(p[key].is_number(), "{key} in {p:#}");
    }
    let pid = assert_online(p);
    let st = stat(pid).expect("stat of the child");
    assert_eq!(st.pgrp, pid, "the child leads its own process group");
    let env = environ(pid).expect("environ of the child");
    assert!(env.iter().any(|e| e == "OPM_ID=0"), "{env:?}");
    assert!(env.iter().any(|e| e == "OPM_NAME=a"), "{env:?}");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline"),
        "sleep\u{0}1000\u{0}"
    );
}

#[test]
fn stop_by_name_leaves_the_process_stopped_and_its_pid_gone() {
    let home = TestHome::new();
    let pid = assert_online(&home.start("sleep 1000", "a", &[]));
    let out = home.opm(&["stop", "a"]).ok();
    assert!(out.stdout.contains("stopped"), "{out}");
    // stop answers once the run has ended: no waiting needed.
    assert!(!alive(pid), "pid {pid} still runs after stop");
    let p = home.process("a");
    assert_stopped(&p);
    assert_eq!(p["desired"], "stopped");
    // And it stays stopped: the daemon does not bring it back.
    assert_stopped(&home.info("a"));
}

#[test]
fn stop_restart_and_remove_by_id() {
    let home = TestHome::new();
    let a = assert_online(&home.start("sleep 1000", "a", &[]));
    let b = assert_online(&home.start("sleep 1000", "b", &[]));
    home.opm(&["restart", "1"]).ok();
    let b2 = assert_online(&home.process("b"));
    assert_ne!(b, b2);
    assert!(!alive(b));

    home.opm(&["stop", "1"]).ok();
    assert!(!alive(b2));
    assert_stopped(&home.process("b"));
    assert_eq!(assert_online(&home.process("a")), a, "a was not named");

    home.opm(&["remove", "1"]).ok();
    assert_eq!(names(&home.list()), ["a"]);
    home.opm(&["remove", "0"]).ok();
    assert!(!alive(a), "a removed process no longer runs");
    assert!(home.list().is_empty());
}

#[test]
fn a_restart_gives_a_new_pid_and_counts_one_restart() {
    let home = TestHome::new();
    let old = assert_online(&home.start("sleep 1000", "a", &[]));
    home.opm(&["restart", "a"]).ok();
    let p = home.process("a");
    let new = assert_online(&p);
    assert_ne!(old, new, "restart must start a new run");
    assert!(!alive(old), "the old run {old} is gone");
    assert_eq!(p["restarts"], 1, "{p:#}");
    let kinds: Vec<String> = home.info("a")["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("started"));
    assert_eq!(kinds.last().map(String::as_str), Some("restarted"));
}

#[test]
fn reload_restarts_a_single_process() {
    let home = TestHome::new();
    let old = assert_online(&home.start("sleep 1000", "a", &[]));
    home.opm(&["reload", "a"]).ok();
    let new = assert_online(&home.process("a"));
    assert_ne!(old, new);
    assert!(!alive(old));
}

#[test]
fn restart_starts_a_stopped_process_again() {
    let home = TestHome::new();
    let old = assert_online(&home.start("sleep 1000", "a", &[]));
    home.opm(&["stop", "a"]).ok();
    let out = home.opm(&["restart", "a", "--format", "json"]).ok();
    let answer: Value = serde_json::from_str(&out.stdout).expect("JSON answer");
    assert_eq!(answer["processes"][0]["status"], "online", "{out}");
    let p = home.process("a");
    let new = assert_online(&p);
    assert_ne!(old, new);
    assert_eq!(p["desired"], "running");
}

#[test]
fn start_on_a_stopped_process_starts_it_again() {
    let home = TestHome::new();
    let old = assert_online(&home.start("sleep 1000", "a", &[]));
    home.opm(&["stop", "a"]).ok();
    home.opm(&["start", "a"]).ok();
    let list = home.list();
    assert_eq!(names(&list), ["a"], "no second process: {list:#?}");
    let new = assert_online(&list[0]);
    assert_ne!(old, new);
}

#[test]
fn several_targets_at_once() {
    let home = TestHome::new();
    let a = assert_online(&home.start("sleep 1000", "a", &[]));
    let b = assert_online(&home.start("sleep 1000", "b", &[]));
    let c = assert_online(&home.start("sleep 1000", "c", &[]));

    home.opm(&["restart", "a", "2"]).ok();
    let list = home.list();
    let a2 = assert_online(&list[0]);
    assert_ne!(a2, a);
    assert_eq!(assert_online(&list[1]), b, "b was not named");
    assert_ne!(assert_online(&list[2]), c);
    assert!(!alive(a) && !alive(c));

    home.opm(&["stop", "a", "b"]).ok();
    assert!(!alive(a2) && !alive(b));
    let list = home.list();
    assert_stopped(&list[0]);
    assert_stopped(&list[1]);
    assert_online(&list[2]);

    home.opm(&["rm", "a", "b"]).ok();
    assert_eq!(names(&home.list()), ["c"]);
}

#[test]
fn restart_all_brings_stopped_processes_back() {
    let home = TestHome::new();
    for n in ["a", "b", "c"] {
        home.start("sleep 1000", n, &[]);
    }
    home.opm(&["stop", "all"]).ok();
    home.opm(&["restart", "all"]).ok();
    let list = home.list();
    assert_eq!(names(&list), ["a", "b", "c"], "{list:#?}");
    list.iter().for_each(|p| {
        assert_online(p);
    });
}

#[test]
fn one_unknown_target_fails_the_command_but_the_others_are_done() {
    let home = TestHome::new();
    let a = assert_online(&home.start("sleep 1000", "a", &[]));
    let out = home.opm(&["stop", "a", "nope"]).failed();
    assert!(out.stderr.contains("nope"), "{out}");
    assert!(!alive(a));
    assert_stopped(&home.process("a"));
}

#[test]
fn all_targets_every_process() {
    let home = TestHome::new();
    let first: Vec<i32> = ["a", "b", "c"]
        .iter()
        .map(|n| assert_online(&home.start("sleep 1000", n, &[])))
        .collect();
    home.opm(&["restart", "all"]).ok();
    let list = home.list();
    assert_eq!(list.len(), 3);
    let second: Vec<i32> = list.iter().map(assert_online).collect();
    for pid in &first {
        assert!(!alive(*pid), "{pid} still runs after restart all");
        assert!(!second.contains(pid));
    }

    home.opm(&["stop", "all"]).ok();
    for pid in &second {
        assert!(!alive(*pid), "{pid} still runs after stop all");
    }
    let list = home.list();
    assert_eq!(list.len(), 3, "{list:#?}");
    list.iter().for_each(assert_stopped);

    home.opm(&["delete", "all"]).ok();
    assert!(home.list().is_empty());
}

#[test]
fn rm_delete_and_ls_are_aliases() {
    let home = TestHome::new();
    let a = assert_online(&home.start("sleep 1000", "a", &[]));
    let b = assert_online(&home.start("sleep 1000", "b", &[]));
    let out = home.opm(&["ls", "--format", "json"]).ok();
    let listed: Vec<Value> = serde_json::from_str(&out.stdout).expect("ls prints JSON");
    assert_eq!(names(&listed), ["a", "b"]);

    home.opm(&["rm", "a"]).ok();
    assert!(!alive(a));
    assert_eq!(names(&home.list()), ["b"]);
    home.opm(&["delete", "b"]).ok();
    assert!(!alive(b));
    assert!(home.list().is_empty());

    let table = home.opm(&["ls"]).ok();
    assert!(!table.stdout.contains("sleep"), "{table}");
}

#[test]
fn removed_names_can_be_used_again_and_ids_are_not_reused() {
    let home = TestHome::new();
    home.start("sleep 1000", "a", &[]);
    home.opm(&["rm", "a"]).ok();
    let p = home.start("sleep 1000", "a", &[]);
    assert_online(&p);
    assert_eq!(p["id"], 1, "a new process gets a new id: {p:#}");
}

#[test]
fn env_and_cwd_reach_the_child() {
    let home = TestHome::new();
    let dir = home.join("work dir");
    std::fs::create_dir(&dir).expect("create the working directory");
    home.opm(&[
        "start",
        r#"sh -c 'echo "K=$K"; echo "L=$L"; pwd; sleep 1000'"#,
        "--name",
        "envy",
        "--env",
        "K=hello world",
        "--env",
        "L=a=b",
        "--cwd",
        dir.to_str().expect("utf-8 path"),
    ])
    .ok();
    let p = home.process("envy");
    assert_online(&p);
    assert_eq!(p["cwd"], dir.to_str().expect("utf-8 path"));
    let log = home.join("logs/envy-0.out.log");
    let want = format!(
        "K=hello world\nL=a=b\n{}\n",
        dir.canonicalize().expect("canonical").display()
    );
    wait_until(
        Duration::from_secs(10),
        "the child to print its env and cwd",
        || std::fs::read_to_string(&log).is_ok_and(|t| t == want),
    );
    let info = home.info("envy");
    assert_eq!(info["env_keys"], serde_json::json!(["K", "L"]));
}

#[test]
fn a_relative_cwd_is_taken_from_the_current_directory() {
    let home = TestHome::new();
    std::fs::create_dir(home.join("sub")).expect("mkdir");
    home.opm(&["start", "sleep 1000", "--name", "rel", "--cwd", "sub"])
        .ok();
    let p = home.process("rel");
    let pid = assert_online(&p);
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd of the child");
    assert_eq!(cwd, home.join("sub").canonicalize().expect("canonical"));
}

#[test]
fn a_process_file_starts_several_processes_with_their_settings() {
    let home = TestHome::new();
    std::fs::create_dir(home.join("apps")).expect("mkdir");
    std::fs::create_dir(home.join("apps/api")).expect("mkdir");
    std::fs::write(
        home.join("apps/procs.toml"),
        r#"
[[process]]
script = "sh -c 'echo \"$GREETING\"; pwd; sleep 1000'"
name = "api"
cwd = "api"
env = { GREETING = "hi from api" }
autorestart = true
max_restarts = 7
restart_delay = "250ms"
min_uptime = "2s"
kill_timeout = "1500ms"
max_memory = "64M"

[[process]]
script = "sleep 1000"
name = "worker"
autorestart = false

[[process]]
script = "sleep 1000"
name = "idle"
desired = "stopped"
"#,
    )
    .expect("write the process file");
    home.opm(&["start", "apps/procs.toml"]).ok();

    let list = home.list();
    assert_eq!(names(&list), ["api", "worker", "idle"], "{list:#?}");
    assert_online(&list[0]);
    assert_online(&list[1]);
    assert_stopped(&list[2]);
    assert_eq!(list[2]["desired"], "stopped");

    let api = home.info("api");
    assert_eq!(api["max_restarts"], 7);
    assert_eq!(api["restart_delay_ms"], 250);
    assert_eq!(api["min_uptime_ms"], 2000);
    assert_eq!(api["kill_timeout_ms"], 1500);
    assert_eq!(api["max_memory"], 64 * 1024 * 1024);
    assert_eq!(api["autorestart"], true);
    let api_dir = home.join("apps/api").canonicalize().expect("canonical");
    assert_eq!(api["cwd"], home.join("apps/api").to_str().expect("utf-8"));
    let log = home.join("logs/api-0.out.log");
    let want = format!("hi from api\n{}\n", api_dir.display());
    wait_until(
        Duration::from_secs(10),
        "api to print its env and cwd",
        || std::fs::read_to_string(&log).is_ok_and(|t| t == want),
    );

    let worker = home.info("worker");
    assert_eq!(worker["autorestart"], false);
    assert_eq!(worker["cwd"], home.join("apps").to_str().expect("utf-8"));
}

#[test]
fn kill_stops_every_process_then_the_daemon() {
    let home = TestHome::new();
    let a = assert_online(&home.start("sleep 1000", "a", &[]));
    let b = assert_online(&home.start("sleep 1000", "b", &[]));
    let daemon = home.daemon_pid().expect("a daemon runs");
    let out = home.opm(&["kill"]).ok();
    assert!(out.stdout.contains("stopped 2 processes"), "{out}");
    assert!(!alive(a) && !alive(b), "kill ended both processes");
    wait_until(Duration::from_secs(10), "the daemon to exit", || {
        crate::common::exited(daemon)
    });
    assert!(!home.join("opm.sock").exists(), "the socket is gone");
    // The next daemon keeps them stopped: kill is a stop, not a crash.
    let list = home.list();
    assert_eq!(names(&list), ["a", "b"], "{list:#?}");
    list.iter().for_each(assert_stopped);
    // With no daemon running, kill says so and succeeds.
    home.opm(&["daemon", "stop"]).ok();
    let out = home.opm(&["kill"]).ok();
    assert!(out.stdout.contains("not running"), "{out}");
}

#[test]
fn save_then_restore_and_resurrect_bring_the_list_back_with_its_settings() {
    let home = TestHome::new();
    home.start(
        "sleep 1000",
        "web",
        &["--env", "PORT=3000", "--max-restarts", "7"],
    );
    home.start("sleep 1000", "idle", &[]);
    home.opm(&["stop", "idle"]).ok();
    let out = home.opm(&["save"]).ok();
    assert!(out.stdout.contains("saved 2 processes"), "{out}");
    let dump = std::fs::read_to_string(home.join("dump.toml")).expect("dump.toml");
    assert!(dump.contains("PORT") && dump.contains("web"), "{dump}");

    home.opm(&["delete", "all"]).ok();
    assert!(home.list().is_empty());
    let out = home.opm(&["resurrect"]).ok();
    assert!(out.stdout.contains("2 created"), "{out}");
    let web = assert_online(&home.process("web"));
    let env = environ(web).expect("environ of web");
    assert!(env.iter().any(|e| e == "PORT=3000"), "{env:?}");
    assert_eq!(home.info("web")["max_restarts"], 7);
    assert_stopped(&home.process("idle"));

    // Restoring again creates nothing twice and leaves the running one alone.
    let out = home.opm(&["restore"]).ok();
    assert!(out.stdout.contains("0 created"), "{out}");
    assert_eq!(names(&home.list()), ["web", "idle"]);
    assert_eq!(assert_online(&home.process("web")), web);
}

#[test]
fn env_prints_the_whole_environment_the_child_has_and_diff_what_opm_adds() {
    let home = TestHome::new();
    let pid = assert_online(&home.start("sleep 1000", "a", &["--env", "FOO=bar baz"]));
    let out = home.opm(&["env", "a"]).ok();
    let printed: Vec<&str> = out.stdout.lines().collect();
    for line in ["FOO=bar baz", "OPM_ID=0", "OPM_NAME=a", home.marker()] {
        assert!(printed.contains(&line), "{line} not printed: {out}");
    }
    let env = environ(pid).expect("environ of a");
    for line in &printed {
        assert!(env.iter().any(|e| e == line), "{line} not in {env:?}");
    }
    let diff = home.opm(&["env", "a", "--diff"]).ok();
    let printed: Vec<&str> = diff.stdout.lines().collect();
    assert_eq!(printed, ["FOO=bar baz", "OPM_ID=0", "OPM_NAME=a"], "{diff}");
}
