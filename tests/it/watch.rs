//! `--watch` beyond one path: several paths, `--ignore` globs (an app
//! writing inside its own watched folder), `--watch-delay` (a burst of
//! changes, one restart after they stop), and bare `--watch` (the working
//! directory), with `opm start --watch app.js` read as the user means it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{wait_until, TestHome, WAIT};

/// The pid of a `list` entry (`None` between two runs).
fn pid(p: &serde_json::Value) -> Option<i64> {
    p["pid"].as_i64()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[test]
fn a_change_under_either_of_two_watched_paths_restarts_the_process() {
    let home = TestHome::new();
    let project = home.join("project");
    for d in ["api", "lib", "docs"] {
        std::fs::create_dir_all(project.join(d)).expect("mkdir");
    }
    let cwd = project.display().to_string();
    let first = home.start(
        "sleep 1000",
        "two",
        &[
            "--cwd",
            &cwd,
            "--watch",
            "api",
            "--watch",
            "lib",
            "--watch-delay",
            "100ms",
        ],
    );
    let info = home.info("two");
    assert_eq!(
        info["definition"]["watch"],
        serde_json::json!(["api", "lib"])
    );
    assert_eq!(info["watch"], "api, lib");

    write(&project.join("api/server.js"), "1");
    let second = home.wait_for("two", "a restart for api/", |p| {
        pid(p).is_some() && pid(p) != pid(&first)
    });
    write(&project.join("lib/util.js"), "1");
    let third = home.wait_for("two", "a restart for lib/", |p| {
        pid(p).is_some() && pid(p) != pid(&second)
    });
    assert_eq!(third["restarts"], 2, "{third}");

    // Outside both paths: nothing.
    write(&project.join("docs/readme.md"), "1");
    std::thread::sleep(Duration::from_millis(600)); // a quiet period is the assertion
    let after = home.process("two");
    assert_eq!(pid(&after), pid(&third), "{after}");
    assert_eq!(after["restarts"], 2);
}

#[test]
fn an_app_writing_into_an_ignored_folder_of_its_watched_tree_is_not_restarted() {
    let home = TestHome::new();
    let project = home.join("project");
    std::fs::create_dir_all(project.join("logs")).expect("mkdir");
    let cwd = project.display().to_string();
    // The app writes logs/c.log (and a .tmp file) 20 times, 50 ms apart, then idles.
    let app = "i=0; while [ $i -lt 20 ]; do echo $i >> logs/c.log; echo $i > state.tmp; i=$((i+1)); sleep 0.05; done; sleep 1000";
    let first = home.start(
        app,
        "writer",
        &[
            "--cwd", &cwd, "--watch", "--ignore", "logs", "--ignore", "*.tmp",
        ],
    );
    assert_eq!(
        home.info("writer")["definition"]["ignore_watch"],
        serde_json::json!(["logs", "*.tmp"])
    );
    wait_until(WAIT, "the app's 20 writes", || {
        std::fs::read_to_string(project.join("logs/c.log")).is_ok_and(|t| t.lines().count() >= 20)
    });
    // Past the 300 ms watch delay, with room: a restart would have come by now.
    std::thread::sleep(Duration::from_millis(1500)); // a quiet period is the assertion
    let after = home.process("writer");
    assert_eq!(pid(&after), pid(&first), "not restarted: {after}");
    assert_eq!(after["restarts"], 0);
    let lines = std::fs::read_to_string(project.join("logs/c.log")).expect("read");
    assert_eq!(lines.lines().count(), 20, "one run wrote it: {lines}");

    // The same tree is still watched: a change elsewhere restarts it.
    write(&project.join("app.js"), "changed");
    home.wait_for("writer", "a restart for app.js", |p| {
        pid(p).is_some() && pid(p) != pid(&first)
    });
}

#[test]
fn a_burst_of_changes_restarts_once_after_the_watch_delay() {
    let home = TestHome::new();
    let project = home.join("project");
    std::fs::create_dir_all(&project).expect("mkdir");
    let cwd = project.display().to_string();
    let first = home.start(
        "sleep 1000",
        "delayed",
        &["--cwd", &cwd, "--watch=.", "--watch-delay", "1s"],
    );
    assert_eq!(home.info("delayed")["definition"]["watch_delay"], "1s");
    // Five writes 250 ms apart: each one pushes the restart back.
    let mut last_write = Instant::now();
    for i in 0..5 {
        write(&project.join("app.js"), &format!("v{i}"));
        last_write = Instant::now();
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            pid(&home.process("delayed")),
            pid(&first),
            "no restart while the changes go on (write {i})"
        );
    }
    let second = home.wait_for("delayed", "the restart", |p| {
        pid(p).is_some() && pid(p) != pid(&first)
    });
    let waited = last_write.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "restarted {waited:?} after the last change, before the 1s delay"
    );
    std::thread::sleep(Duration::from_millis(1500)); // a quiet period is the assertion
    let after = home.process("delayed");
    assert_eq!(after["restarts"], 1, "one burst, one restart: {after}");
    assert_eq!(pid(&after), pid(&second));
}

#[test]
fn bare_watch_is_the_working_directory_even_before_the_script() {
    let home = TestHome::new();
    let project = home.join("project");
    std::fs::create_dir_all(&project).expect("mkdir");
    let script = project.join("app.sh");
    write(&script, "#!/bin/sh\nexec sleep 1000\n");
    // `--watch app.sh`: clap hands app.sh to --watch; opm reads it as the script.
    let out = home
        .command(&["start", "--watch", "app.sh", "--name", "bare"])
        .current_dir(&project)
        .output()
        .expect("run opm");
    assert!(out.status.success(), "{out:?}");
    let first = home.process("bare");
    assert_eq!(first["status"], "online", "{first}");
    let info = home.info("bare");
    assert_eq!(info["definition"]["watch"], ".");
    assert!(
        info["command"].as_str().unwrap_or("").contains("app.sh"),
        "{info}"
    );
    let text = home.opm(&["info", "bare"]).ok().stdout;
    assert!(text.contains(". (the working directory)"), "{text}");

    write(&project.join("config.json"), "{}");
    home.wait_for("bare", "a restart for config.json", |p| {
        pid(p).is_some() && pid(p) != pid(&first)
    });
}

#[test]
fn a_bad_ignore_glob_is_refused_and_nothing_is_stored() {
    let home = TestHome::new();
    let out = home
        .opm(&[
            "start",
            "sleep 100",
            "--name",
            "g",
            "--watch",
            "--ignore",
            "a[b",
        ])
        .failed();
    assert!(out.stderr.contains("a[b"), "{out}");
    assert!(home.list().is_empty());
}
