//! Deploying as PM2 users do: a process file applied again and again
//! (created, changed, unchanged, pruned), acting on a file's processes,
//! TOML/JSON/YAML, named environments, the caller's environment, arguments,
//! duplicates, and a PM2 ecosystem file given to `opm start`.

use serde_json::Value;

use crate::common::{alive, environ, pid_of, TestHome};

fn write(home: &TestHome, rel: &str, text: &str) {
    std::fs::write(home.join(rel), text).expect("write the process file");
}

fn pid(home: &TestHome, name: &str) -> i32 {
    let p = home.process(name);
    assert_eq!(p["status"], "online", "{p:#}");
    pid_of(&p)
}

fn names(home: &TestHome) -> Vec<String> {
    let mut n: Vec<String> = home
        .list()
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    n.sort();
    n
}

const THREE: &str = r#"
[[process]]
name = "a"
script = "sleep 1001"

[[process]]
name = "b"
script = "sleep 1002"

[[process]]
name = "c"
script = "sleep 1003"
"#;

#[test]
fn a_file_applied_again_restarts_only_the_entry_that_changed() {
    let home = TestHome::new();
    write(&home, "procs.toml", THREE);
    let first = home.opm(&["start", "procs.toml"]).ok();
    for n in ["a", "b", "c"] {
        assert!(first.stdout.contains(&format!("created {n}")), "{first}");
    }
    let before: Vec<i32> = ["a", "b", "c"].iter().map(|n| pid(&home, n)).collect();

    write(
        &home,
        "procs.toml",
        &THREE.replace("sleep 1002", "sleep 1012"),
    );
    let again = home.opm(&["start", "procs.toml"]).ok();
    assert!(again.stdout.contains("changed b"), "{again}");
    assert!(again.stdout.contains("unchanged a"), "{again}");
    assert!(again.stdout.contains("unchanged c"), "{again}");
    assert_eq!(pid(&home, "a"), before[0], "a kept its pid");
    assert_eq!(pid(&home, "c"), before[2], "c kept its pid");
    let b = pid(&home, "b");
    assert_ne!(b, before[1], "b was restarted");
    assert!(!alive(before[1]), "b's old run is gone");
    assert_eq!(home.process("b")["command"], "sleep 1012");
    assert_eq!(home.list().len(), 3, "no process was added");

    // The same file a third time changes nothing at all.
    let third = home.opm(&["start", "procs.toml", "--format", "json"]).ok();
    let r: Value = serde_json::from_str(&third.stdout).expect("json");
    assert_eq!(r["created"].as_array().map(Vec::len), Some(0), "{r:#}");
    assert_eq!(r["changed"].as_array().map(Vec::len), Some(0), "{r:#}");
    assert_eq!(r["unchanged"].as_array().map(Vec::len), Some(3), "{r:#}");
    assert_eq!(pid(&home, "b"), b);
}

#[test]
fn prune_removes_only_the_leftovers_of_this_file() {
    let home = TestHome::new();
    write(&home, "procs.toml", THREE);
    write(
        &home,
        "other.toml",
        "[[process]]\nname = \"x\"\nscript = \"sleep 1004\"\n",
    );
    home.opm(&["start", "procs.toml"]).ok();
    home.opm(&["start", "other.toml"]).ok();
    home.opm(&["start", "sleep 1005", "--name", "by-hand"]).ok();

    let without_b = THREE.replace(
        "name = \"b\"\nscript = \"sleep 1002\"\n",
        "name = \"d\"\nscript = \"sleep 1006\"\n",
    );
    write(&home, "procs.toml", &without_b);
    // Without --prune, b is left alone.
    home.opm(&["start", "procs.toml"]).ok();
    assert_eq!(names(&home), ["a", "b", "by-hand", "c", "d", "x"]);
    let b = pid(&home, "b");
    let out = home.opm(&["start", "procs.toml", "--prune"]).ok();
    assert!(out.stdout.contains("pruned b"), "{out}");
    assert_eq!(names(&home), ["a", "by-hand", "c", "d", "x"]);
    assert!(!alive(b), "the pruned process was stopped");
}

#[test]
fn stop_restart_and_remove_act_on_a_files_processes_narrowed_by_only() {
    let home = TestHome::new();
    write(&home, "procs.toml", THREE);
    home.opm(&["start", "procs.toml"]).ok();
    home.opm(&["start", "sleep 1007", "--name", "other"]).ok();

    home.opm(&["stop", "procs.toml", "--only", "a,b"]).ok();
    assert_eq!(home.process("a")["status"], "stopped");
    assert_eq!(home.process("b")["status"], "stopped");
    assert_eq!(home.process("c")["status"], "online");

    let c = pid(&home, "c");
    home.opm(&["restart", "procs.toml"]).ok();
    for n in ["a", "b", "c"] {
        assert_eq!(home.process(n)["status"], "online", "{n}");
    }
    assert_ne!(pid(&home, "c"), c, "restart FILE restarted c");

    // `--only` narrows `start FILE` too: a name not in the file is refused.
    let bad = home.opm(&["stop", "procs.toml", "--only", "zz"]).failed();
    assert!(bad.stderr.contains("no process named \"zz\""), "{bad}");

    home.opm(&["remove", "procs.toml"]).ok();
    assert_eq!(names(&home), ["other"]);
}

#[test]
fn json_and_yaml_files_give_the_same_processes_as_toml() {
    let toml = r#"
[[process]]
name = "web"
script = "sleep 1008"
kill_timeout = "2s"
env = { PORT = "8080" }
"#;
    let json = r#"{ "process": [ { "name": "web", "script": "sleep 1008", "kill_timeout": "2s", "env": { "PORT": "8080" } } ] }"#;
    let yaml = "process:\n  - name: web\n    script: sleep 1008\n    kill_timeout: 2s\n    env:\n      PORT: \"8080\"\n";
    let mut seen = Vec::new();
    for (file, text) in [("p.toml", toml), ("p.json", json), ("p.yaml", yaml)] {
        let home = TestHome::new();
        write(&home, file, text);
        home.opm(&["start", file]).ok();
        let p = home.process("web");
        assert_eq!(p["status"], "online", "{file}: {p:#}");
        let env = environ(pid_of(&p)).expect("environ");
        assert!(env.iter().any(|e| e == "PORT=8080"), "{file}: {env:?}");
        let info = home.info("web");
        seen.push((
            info["command"].clone(),
            info["kill_timeout_ms"].clone(),
            info["env_keys"].clone(),
        ));
    }
    assert_eq!(seen[0], seen[1], "JSON as TOML");
    assert_eq!(seen[0], seen[2], "YAML as TOML");
}

#[test]
fn env_production_picks_the_named_set() {
    let home = TestHome::new();
    write(
        &home,
        "procs.yaml",
        "process:\n  - name: api\n    script: sleep 1009\n    env:\n      MODE: dev\n      KEEP: yes-kept\n    env_production:\n      MODE: prod\n",
    );
    let bad = home
        .opm(&["start", "procs.yaml", "--env", "staging"])
        .failed();
    assert!(bad.stderr.contains("\"staging\""), "{bad}");
    home.opm(&["start", "procs.yaml", "--env", "production"])
        .ok();
    let env = environ(pid(&home, "api")).expect("environ");
    assert!(env.iter().any(|e| e == "MODE=prod"), "{env:?}");
    assert!(env.iter().any(|e| e == "KEEP=yes-kept"), "{env:?}");
    // A bare word on one command names a set, which only a file has.
    let one = home
        .opm(&["start", "sleep 1010", "--env", "production"])
        .failed();
    assert!(one.stderr.contains("env_production"), "{one}");
}

#[test]
fn the_callers_variable_reaches_the_child_and_opm_home_does_not() {
    let home = TestHome::new();
    home.opm_env(
        &["start", "sleep 1011", "--name", "app"],
        &[("NODE_ENV", "production")],
    )
    .ok();
    let env = environ(pid(&home, "app")).expect("environ");
    assert!(env.iter().any(|e| e == "NODE_ENV=production"), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("OPM_HOME=")), "{env:?}");
    assert!(env.iter().any(|e| e == "OPM_NAME=app"), "{env:?}");
}

#[test]
fn arguments_after_a_double_dash_reach_the_childs_argv() {
    let home = TestHome::new();
    home.opm(&["start", "sleep", "--name", "t", "--", "1014"])
        .ok();
    let p = pid(&home, "t");
    let cmdline = std::fs::read_to_string(format!("/proc/{p}/cmdline")).expect("cmdline");
    assert_eq!(cmdline, "sleep\u{0}1014\u{0}");
    std::fs::write(
        home.join("args.sh"),
        "printf '%s|' \"$@\" > args.out; exec sleep 1015\n",
    )
    .expect("write");
    home.opm(&["start", "args.sh", "--name", "sh", "--", "a", "b c"])
        .ok();
    crate::common::wait_until(std::time::Duration::from_secs(5), "args.out", || {
        std::fs::read_to_string(home.join("args.out")).is_ok_and(|t| t == "a|b c|")
    });
}

#[test]
fn an_unnamed_start_of_a_command_already_running_is_refused() {
    let home = TestHome::new();
    home.opm(&["start", "sleep 1016"]).ok();
    let again = home.opm(&["start", "sleep 1016"]).failed();
    assert!(
        again.stderr.contains("already runs under opm as sleep"),
        "{again}"
    );
    assert_eq!(home.list().len(), 1);
    home.opm(&["start", "sleep 1016", "--force"]).ok();
    home.opm(&["start", "sleep 1016", "--name", "second"]).ok();
    assert_eq!(home.list().len(), 3);
}

#[test]
fn a_pm2_ecosystem_file_is_never_run_as_a_program() {
    let home = TestHome::new();
    write(
        &home,
        "ecosystem.config.js",
        "module.exports = { apps: [{ name: 'x', script: 'app.js' }] }\n",
    );
    let out = home.opm(&["start", "ecosystem.config.js"]).failed();
    assert!(out.stderr.contains("PM2 ecosystem file"), "{out}");
    assert!(out.stderr.contains("opm import"), "{out}");
    write(
        &home,
        "eco.json",
        r#"{ "apps": [{ "name": "x", "script": "app.js" }] }"#,
    );
    let out = home.opm(&["start", "eco.json"]).failed();
    assert!(out.stderr.contains("PM2 ecosystem file"), "{out}");
    let out = home.opm(&["start", "procs.toml"]).failed();
    assert!(home.list().is_empty(), "{out}");
}

#[test]
fn update_env_refreshes_the_callers_environment_and_env_shows_it() {
    let home = TestHome::new();
    home.opm_env(
        &["start", "sleep 1017", "--name", "app"],
        &[("DEPLOY_TAG", "one")],
    )
    .ok();
    let first = pid(&home, "app");
    // A plain restart keeps the captured environment.
    home.opm_env(&["restart", "app"], &[("DEPLOY_TAG", "two")])
        .ok();
    let env = environ(pid(&home, "app")).expect("environ");
    assert!(env.iter().any(|e| e == "DEPLOY_TAG=one"), "{env:?}");
    home.opm_env(
        &["restart", "app", "--update-env"],
        &[("DEPLOY_TAG", "two")],
    )
    .ok();
    let p = pid(&home, "app");
    assert_ne!(p, first);
    let env = environ(p).expect("environ");
    assert!(env.iter().any(|e| e == "DEPLOY_TAG=two"), "{env:?}");
    let shown = home.opm(&["env", "app"]).ok();
    assert!(shown.stdout.contains("DEPLOY_TAG=two\n"), "{shown}");
    assert!(shown.stdout.contains("OPM_NAME=app\n"), "{shown}");
    let diff = home.opm(&["env", "app", "--diff"]).ok();
    assert!(diff.stdout.contains("DEPLOY_TAG=two\n"), "{diff}");
    assert!(
        !diff.stdout.contains("PATH="),
        "the same PATH as the daemon's: {diff}"
    );
}

#[test]
fn update_changes_the_command_and_env_and_restart_applies_it() {
    let home = TestHome::new();
    home.opm(&["start", "sleep 1018", "--name", "app", "--env", "A=1"])
        .ok();
    let first = pid(&home, "app");
    // Options to `start` of an existing process are refused, never ignored.
    let refused = home.opm(&["start", "app", "--env", "A=2"]).failed();
    assert!(refused.stderr.contains("opm update app"), "{refused}");

    let out = home
        .opm(&["update", "app", "sleep 1019", "--env", "A=2"])
        .ok();
    assert!(out.stdout.contains("next restart"), "{out}");
    assert_eq!(pid(&home, "app"), first, "not restarted without --restart");
    // The stored definition changed; the running process is the old one.
    assert_eq!(home.info("app")["definition"]["script"], "sleep 1019");

    home.opm(&["adjust", "app", "--env", "B=3", "--restart"])
        .ok();
    let p = pid(&home, "app");
    assert_ne!(p, first);
    let cmdline = std::fs::read_to_string(format!("/proc/{p}/cmdline")).expect("cmdline");
    assert_eq!(cmdline, "sleep\u{0}1019\u{0}");
    let env = environ(p).expect("environ");
    assert!(env.iter().any(|e| e == "A=2"), "{env:?}");
    assert!(env.iter().any(|e| e == "B=3"), "{env:?}");
    assert_eq!(home.list().len(), 1, "the same process, not a new one");
}

#[test]
fn completions_load_in_bash_and_the_manual_renders() {
    let home = TestHome::new();
    let script = home.opm(&["completion", "bash"]).ok();
    assert!(script.stdout.contains("_opm"), "{script}");
    let bin = env!("CARGO_BIN_EXE_opm");
    let mut bash = std::process::Command::new("bash");
    bash.arg("-c")
        .arg(format!(
            "source <('{bin}' completion bash) && complete -p opm"
        ))
        .env("OPM_HOME", home.path());
    let out = crate::common::run(bash).ok();
    assert!(out.stdout.contains("complete"), "{out}");
    for shell in ["zsh", "fish"] {
        home.opm(&["completion", shell]).ok();
    }
    let man = home.opm(&["man"]).ok();
    assert!(man.stdout.contains(".TH opm"), "{man}");
    assert!(man.stdout.contains("update"), "{man}");
}
