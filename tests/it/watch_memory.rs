//! Restarts the daemon decides on by itself: `--watch` (a file under the
//! watched path changes) and `--max-memory` (the process group's memory
//! passes the limit).

use std::time::Duration;

use crate::common::{alive, needs, require, wait_until, TestHome, WAIT};

#[test]
fn a_change_under_the_watched_path_restarts_the_process_once_per_burst() {
    let home = TestHome::new();
    let project = home.join("project");
    std::fs::create_dir_all(project.join("src/lib")).expect("mkdir");
    std::fs::create_dir_all(project.join("node_modules/dep")).expect("mkdir");
    let cwd = project.display().to_string();
    let first = home.start("sleep 1000", "watched", &["--cwd", &cwd, "--watch", "src"]);
    let pid = first["pid"].as_i64().expect("pid");
    assert_eq!(home.info("watched")["watch"], "src");

    // Changes in a skipped folder or outside the watched path do nothing.
    std::fs::write(project.join("node_modules/dep/index.js"), "x").expect("write");
    std::fs::write(project.join("README"), "x").expect("write");
    // A burst of writes in a subfolder: one restart.
    for i in 0..5 {
        std::fs::write(project.join("src/lib/mod.js"), format!("v{i}")).expect("write");
    }
    home.wait_for("watched", "a restart after the change", |p| {
        p["pid"].as_i64().is_some_and(|p| p != pid)
    });
    let after = home.process("watched");
    assert_eq!(after["status"], "online");
    assert_eq!(after["restarts"], 1, "one burst, one restart: {after}");
    assert!(!alive(pid as i32), "the old run is gone");
    let events = home.info("watched")["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let watch: Vec<_> = events.iter().filter(|e| e["kind"] == "watch").collect();
    assert_eq!(watch.len(), 1, "{events:#?}");
    assert!(
        watch[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("src/lib/mod.js"),
        "{watch:?}"
    );
    assert!(!watch[0]["detail"]
        .as_str()
        .unwrap_or("")
        .contains("node_modules"));

    // A stopped process is not watched.
    home.opm(&["stop", "watched"]).ok();
    std::fs::write(project.join("src/lib/mod.js"), "again").expect("write");
    std::thread::sleep(Duration::from_millis(800)); // nothing may happen: a quiet period is the assertion
    assert_eq!(home.process("watched")["status"], "stopped");
}

#[test]
fn a_missing_watch_path_is_refused() {
    let home = TestHome::new();
    let out = home
        .opm(&[
            "start",
            "sleep 100",
            "--name",
            "w",
            "--watch",
            "does/not/exist",
        ])
        .failed();
    assert!(out.stderr.contains("does not exist"), "{out}");
}

#[test]
fn a_process_over_its_memory_limit_is_restarted() {
    if !require(needs().tool("python3", "python3").done()) {
        return;
    }
    let home = TestHome::new();
    // Holds about 64 MiB once started; the limit is 20 MiB.
    let hog = "python3 -c \"import time; b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(1000)\"";
    let first = home.start(
        hog,
        "hog",
        &["--max-memory", "20M", "--min-uptime", "100ms"],
    );
    let pid = first["pid"].as_i64().expect("pid");
    wait_until(WAIT, "a restart for memory", || {
        home.info("hog")["events"]
            .as_array()
            .is_some_and(|ev| ev.iter().any(|e| e["kind"] == "memory_limit"))
    });
    home.wait_for("hog", "a new run", |p| {
        p["pid"].as_i64().is_some_and(|p| p != pid)
    });
    let info = home.info("hog");
    assert_eq!(info["max_memory"], 20 * 1024 * 1024);
    let ev = info["events"].as_array().cloned().unwrap_or_default();
    let m = ev
        .iter()
        .find(|e| e["kind"] == "memory_limit")
        .expect("memory event");
    assert!(
        m["detail"]
            .as_str()
            .unwrap_or("")
            .contains("over the limit"),
        "{m}"
    );
}
