//! Readiness: a process started with `--wait-ready` is `starting` until it
//! sends `READY=1` to `$NOTIFY_SOCKET` (systemd's notify protocol), one with
//! `--ready-port P` until it listens on P; when `--listen-timeout` passes
//! first, that is reported (an event, `opm info`) and the process keeps
//! running, still `starting`; after a daemon crash a ready process is
//! adopted `online` and one not ready yet still has to say so.

use std::time::{Duration, Instant};

use crate::common::{alive, free_port, pid_of, wait_until, TestHome, WAIT};
use crate::reload::{get, have_python, web_script};

/// A Python program that sends `STATUS=` then, after `after` seconds,
/// `READY=1` to its notify socket, then sleeps.
fn notifier(home: &TestHome, after: f32) -> String {
    let path = home.join("notify.py");
    std::fs::write(
        &path,
        format!(
            "import os, socket, time\n\
             a = os.environ['NOTIFY_SOCKET']\n\
             a = '\\0' + a[1:] if a.startswith('@') else a\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             s.sendto(b'STATUS=warming up', a)\n\
             time.sleep({after})\n\
             s.sendto(b'READY=1\\nSTATUS=serving', a)\n\
             time.sleep(600)\n"
        ),
    )
    .expect("write notify.py");
    format!("python3 {}", path.display())
}

fn events(home: &TestHome, name: &str) -> Vec<(String, String)> {
    home.info(name)["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or("").to_string(),
                        e["detail"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_wait_ready_process_is_starting_until_it_sends_ready_then_online() {
    if !have_python() {
        return;
    }
    let home = TestHome::new();
    let started = Instant::now();
    let p = home.start(&notifier(&home, 1.0), "n", &["--wait-ready"]);
    assert_eq!(p["status"], "starting", "{p:#}");
    let env = crate::common::environ(pid_of(&p)).expect("its environment");
    assert!(
        env.iter().any(|e| e.starts_with("NOTIFY_SOCKET=")),
        "NOTIFY_SOCKET is set: {env:?}"
    );
    wait_until(WAIT, "n online", || {
        let s = home.process("n")["status"].clone();
        if s != "online" {
            assert_eq!(s, "starting", "never anything but starting before READY=1");
        }
        s == "online"
    });
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "online only after READY=1 ({:?})",
        started.elapsed()
    );
    let info = home.info("n");
    assert!(
        info["readiness"]
            .as_str()
            .unwrap_or("")
            .starts_with("ready (READY=1"),
        "{info:#}"
    );
    assert_eq!(info["notify_status"], "serving", "{info:#}");
    assert!(events(&home, "n").iter().any(|(k, _)| k == "ready"));
    home.opm(&["stop", "n"]).ok();
}

#[test]
fn a_process_that_never_says_it_is_ready_is_reported_at_the_listen_timeout_and_keeps_running() {
    let home = TestHome::new();
    let p = home.start(
        "sleep 120",
        "mute",
        &["--wait-ready", "--listen-timeout", "1s"],
    );
    let pid = pid_of(&p);
    wait_until(WAIT, "the ready_timeout event", || {
        events(&home, "mute").iter().any(|(k, d)| {
            k == "ready_timeout" && d.contains("not ready within 1s") && d.contains("no READY=1")
        })
    });
    let info = home.info("mute");
    assert_eq!(
        info["status"], "starting",
        "never online without a sign: {info:#}"
    );
    assert!(
        info["readiness"]
            .as_str()
            .unwrap_or("")
            .starts_with("not ready within 1s (listen_timeout"),
        "{info:#}"
    );
    assert_eq!(pid_of(&info), pid, "it keeps running");
    assert!(alive(pid));
    let text = home.opm(&["info", "mute"]).ok();
    assert!(text.stdout.contains("not ready within 1s"), "{text}");
    home.opm(&["stop", "mute"]).ok();
}

#[test]
fn a_ready_port_process_is_online_once_it_listens_there() {
    if !have_python() {
        return;
    }
    let home = TestHome::new();
    let port = free_port();
    let cmd = format!("python3 {} {port} --delay 1", web_script(&home).display());
    let started = Instant::now();
    let p = home.start(&cmd, "web", &["--ready-port", &port.to_string()]);
    assert_eq!(p["status"], "starting", "{p:#}");
    wait_until(WAIT, "web online", || {
        home.process("web")["status"] == "online"
    });
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(get(port).is_some(), "online means it answers");
    home.opm(&["stop", "web"]).ok();
}

#[test]
fn after_a_daemon_crash_a_ready_process_stays_online_and_one_not_ready_yet_still_has_to_be() {
    if !have_python() {
        return;
    }
    let home = TestHome::new();
    let script = web_script(&home);
    let (p1, p2) = (free_port(), free_port());
    home.start(
        &format!("python3 {} {p1}", script.display()),
        "ready",
        &["--wait-ready"],
    );
    wait_until(WAIT, "ready online", || {
        home.process("ready")["status"] == "online"
    });
    let gate = home.join("gate");
    home.start(
        &format!(
            "python3 {} {p2} --ready-after-file {}",
            script.display(),
            gate.display()
        ),
        "later",
        &["--ready-port", &p2.to_string(), "--listen-timeout", "60s"],
    );
    let (ready_pid, later_pid) = (
        pid_of(&home.process("ready")),
        pid_of(&home.process("later")),
    );
    home.kill_daemon();
    let list = home.list();
    let by = |n: &str| list.iter().find(|p| p["name"] == n).cloned().expect(n);
    assert_eq!(
        (pid_of(&by("ready")), by("ready")["status"].as_str()),
        (ready_pid, Some("online"))
    );
    assert_eq!(
        (pid_of(&by("later")), by("later")["status"].as_str()),
        (later_pid, Some("starting"))
    );
    std::fs::write(&gate, "").expect("open the gate");
    wait_until(WAIT, "later online", || {
        home.process("later")["status"] == "online"
    });
    assert_eq!(
        pid_of(&home.process("later")),
        later_pid,
        "adopted, not restarted"
    );
    home.opm(&["stop", "all"]).ok();
}

#[test]
fn a_bad_ready_port_or_listen_timeout_is_refused() {
    let home = TestHome::new();
    let out = home
        .opm(&["start", "sleep 5", "--ready-port", "0"])
        .failed();
    assert!(out.stderr.contains("ready port"), "{out}");
    let out = home
        .opm(&["start", "sleep 5", "--listen-timeout", "soon"])
        .failed();
    assert!(out.stderr.contains("not a duration"), "{out}");
    assert!(home.list().is_empty());
}
