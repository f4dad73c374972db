//! The stop signal (`kill_signal`): set from the command line, a process
//! file or the API, it is what `opm stop` sends the process group (SIGTERM
//! when not set), it shows in `opm info` and survives `save` + `restore`; a
//! signal opm cannot read is refused and nothing is stored.

use std::path::{Path, PathBuf};

use crate::common::http::unix;
use crate::common::{wait_until, TestHome, WAIT};

/// A bash program that, on SIGINT, writes "got INT" to `marker` and exits 0.
/// SIGTERM (no trap) ends it without writing anything.
fn handler_script(home: &TestHome, marker: &Path) -> PathBuf {
    let script = home.join("handler.sh");
    std::fs::write(
        &script,
        format!(
            "trap 'echo got INT >> {}; exit 0' INT\nwhile :; do sleep 0.1; done\n",
            marker.display()
        ),
    )
    .expect("write handler.sh");
    script
}

/// Stops `name` and checks that its SIGINT handler ran and ended it.
#[track_caller]
fn stop_runs_the_int_handler(home: &TestHome, name: &str, marker: &Path) {
    assert!(!marker.exists(), "no handler ran before the stop");
    home.opm(&["stop", name]).ok();
    wait_until(WAIT, "the SIGINT handler's marker", || {
        std::fs::read_to_string(marker).is_ok_and(|t| t.contains("got INT"))
    });
    let info = home.info(name);
    assert_eq!(info["status"], "stopped", "{info:#}");
    assert_eq!(
        info["last_exit"]["description"], "exit code 0",
        "ended by its handler, not by SIGKILL: {info:#}"
    );
}

#[test]
fn a_process_started_with_kill_signal_sigint_runs_its_handler_on_stop() {
    let home = TestHome::new();
    let marker = home.join("got-int");
    let script = handler_script(&home, &marker);
    let command = format!("bash {}", script.display());
    home.start(&command, "h", &["--kill-signal", "SIGINT"]);
    let info = home.info("h");
    assert_eq!(info["definition"]["kill_signal"], "SIGINT", "{info:#}");
    let text = home.opm(&["info", "h"]).ok();
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains("kill signal") && l.contains("SIGINT")),
        "{text}"
    );
    stop_runs_the_int_handler(&home, "h", &marker);
}

#[test]
fn without_kill_signal_a_stop_sends_sigterm() {
    let home = TestHome::new();
    let marker = home.join("got-int");
    let script = handler_script(&home, &marker);
    home.start(&format!("bash {}", script.display()), "h", &[]);
    assert_eq!(home.info("h")["definition"]["kill_signal"], "SIGTERM");
    home.opm(&["stop", "h"]).ok();
    let info = home.info("h");
    assert_eq!(info["status"], "stopped", "{info:#}");
    let exit = info["last_exit"]["description"].as_str().unwrap_or("");
    assert!(exit.contains("SIGTERM"), "ended by SIGTERM: {info:#}");
    assert!(!marker.exists(), "the SIGINT handler did not run");
}

#[test]
fn the_short_name_and_the_number_are_the_same_signal() {
    let home = TestHome::new();
    home.start("sleep 1000", "a", &["--kill-signal", "INT"]);
    home.start("sleep 1000", "b", &["--kill-signal", "2"]);
    assert_eq!(home.info("a")["definition"]["kill_signal"], "SIGINT");
    assert_eq!(home.info("b")["definition"]["kill_signal"], "SIGINT");
}

#[test]
fn a_process_file_sets_the_kill_signal() {
    let home = TestHome::new();
    let marker = home.join("got-int");
    let script = handler_script(&home, &marker);
    let file = home.join("procs.toml");
    std::fs::write(
        &file,
        format!(
            "[[process]]\nname = \"h\"\nscript = \"bash {}\"\nkill_signal = \"INT\"\n",
            script.display()
        ),
    )
    .expect("write procs.toml");
    home.opm(&["start", &file.display().to_string()]).ok();
    assert_eq!(home.info("h")["definition"]["kill_signal"], "SIGINT");
    stop_runs_the_int_handler(&home, "h", &marker);
}

#[test]
fn the_api_sets_the_kill_signal() {
    let home = TestHome::new();
    let marker = home.join("got-int");
    let script = handler_script(&home, &marker);
    home.opm(&["daemon", "restore"]).ok();
    let body = serde_json::json!({
        "script": format!("bash {}", script.display()),
        "name": "h",
        "path": home.path(),
        "kill_signal": "SIGINT",
    });
    let created = unix(
        &home,
        "POST",
        "/daemon/create",
        Some(body.to_string().as_bytes()),
    )
    .expect(201)
    .json();
    assert_eq!(created["name"], "h", "{created:#}");
    let info = unix(&home, "GET", "/daemon/info/h", None)
        .expect(200)
        .json();
    assert_eq!(info["definition"]["kill_signal"], "SIGINT", "{info:#}");
    stop_runs_the_int_handler(&home, "h", &marker);
}

#[test]
fn a_signal_opm_cannot_read_is_refused_and_nothing_is_stored() {
    let home = TestHome::new();
    let out = home
        .opm(&[
            "start",
            "sleep 1000",
            "--name",
            "a",
            "--kill-signal",
            "SIGNOPE",
        ])
        .failed();
    assert!(out.stderr.starts_with('✘'), "{out}");
    assert!(out.stderr.contains("SIGNOPE"), "{out}");
    assert!(out.stderr.contains("not a signal"), "{out}");

    let file = home.join("procs.toml");
    std::fs::write(
        &file,
        "[[process]]\nname = \"b\"\nscript = \"sleep 1000\"\nkill_signal = \"NOPE\"\n",
    )
    .expect("write procs.toml");
    let out = home.opm(&["start", &file.display().to_string()]).failed();
    assert!(out.stderr.contains("NOPE"), "{out}");

    home.opm(&["daemon", "restore"]).ok();
    for bad in [
        serde_json::json!("NOPE"),
        serde_json::json!(0),
        serde_json::json!(999),
        serde_json::json!(true),
    ] {
        let body = serde_json::json!({ "script": "sleep 1000", "name": "c", "kill_signal": bad });
        let r = unix(
            &home,
            "POST",
            "/daemon/create",
            Some(body.to_string().as_bytes()),
        );
        assert!(
            (400..500).contains(&r.status) && r.text().contains("signal"),
            "kill_signal {bad} is refused, naming the signal: HTTP {} {}",
            r.status,
            r.text()
        );
    }
    assert!(home.list().is_empty(), "nothing was stored");
}

#[test]
fn save_and_restore_keep_the_kill_signal() {
    let home = TestHome::new();
    let marker = home.join("got-int");
    let script = handler_script(&home, &marker);
    home.start(
        &format!("bash {}", script.display()),
        "h",
        &["--kill-signal", "SIGINT"],
    );
    home.opm(&["save"]).ok();
    let dump = std::fs::read_to_string(home.join("dump.toml")).expect("dump.toml");
    assert!(dump.contains("kill_signal = \"SIGINT\""), "{dump}");
    home.opm(&["remove", "h"]).ok();
    // The removal stopped it with SIGINT too: start from a clean marker.
    wait_until(WAIT, "the removal's handler", || marker.exists());
    std::fs::remove_file(&marker).expect("remove the marker");
    assert!(home.list().is_empty());

    home.opm(&["restore"]).ok();
    assert_eq!(home.info("h")["definition"]["kill_signal"], "SIGINT");
    stop_runs_the_int_handler(&home, "h", &marker);
}
