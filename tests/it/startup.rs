//! `opm startup`: the systemd unit it prints passes `systemd-analyze
//! verify`, and its own `ExecStart` (with its `Environment=`), run by the
//! test as systemd would, brings back every process of a home after a boot
//! (children gone) or a killed daemon (children adopted).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{alive, exited, kill_pid, needs, pid_of, require, wait_until, TestHome, WAIT};

/// The PATH systemd gives a service.
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The value of `KEY=` lines of a unit.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// A unit word without its quotes (systemd's quoting, as `opm startup` writes it).
fn unquote(word: &str) -> String {
    let w = word
        .strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .map_or(word.to_string(), |w| {
            w.replace("\\\"", "\"").replace("\\\\", "\\")
        });
    w.replace("%%", "%").replace("$$", "$")
}

/// The words of an `ExecStart=` line (a quoted first word, then plain ones).
fn exec_words(line: &str) -> Vec<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let end = rest.find('"').expect("a closing quote");
        let mut words = vec![unquote(&line[..end + 2])];
        words.extend(rest[end + 1..].split_whitespace().map(str::to_string));
        words
    } else {
        line.split_whitespace().map(str::to_string).collect()
    }
}

#[test]
fn the_startup_unit_passes_systemd_analyze_and_its_exec_start_brings_back_every_process() {
    if !require(needs().tool("systemd-analyze", "systemd").done()) {
        return;
    }
    let home = TestHome::new();
    let kept = home.start("sleep 1301", "kept", &[]);
    let lost = home.start("sleep 1302", "lost", &[]);
    let (kept_pid, lost_pid) = (pid_of(&kept), pid_of(&lost));

    let unit = home.opm(&["startup", "--print"]).ok().stdout;
    let alias = home.opm(&["daemon", "setup", "--print"]).ok().stdout;
    assert_eq!(alias, unit, "`daemon setup` is `startup`");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opm.service");
    std::fs::write(&path, &unit).expect("write the unit");
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {}\n{complaints}\n{unit}",
        verify.status
    );
    assert_eq!(unit_values(&unit, "KillMode"), ["process"], "{unit}");
    assert_eq!(unit_values(&unit, "Type"), ["exec"], "{unit}");

    // A boot (the children are gone) for one, a killed daemon (its child
    // lives on) for the other.
    home.kill_daemon();
    kill_pid(lost_pid, libc::SIGKILL);
    wait_until(WAIT, "the lost process to die", || !alive(lost_pid));

    // ExecStart as systemd runs it: a clean environment, Environment=, and
    // the test's marker so that the cleanup finds the daemon.
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "{unit}");
    let words = exec_words(exec[0]);
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..])
        .env_clear()
        .env("PATH", SYSTEMD_PATH)
        .env(crate::common::MARKER_VAR, home.path())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut set_home = false;
    for e in unit_values(&unit, "Environment") {
        let e = unquote(e);
        let (k, v) = e.split_once('=').expect("Environment=K=V");
        set_home |= k == "OPM_HOME" && std::path::Path::new(v) == home.path();
        cmd.env(k, v);
    }
    assert!(set_home, "the unit restores this home: {unit}");
    let mut daemon = cmd.spawn().expect("run ExecStart");

    wait_until(
        WAIT,
        "both processes online under the unit's daemon",
        || {
            home.daemon_pid() == Some(daemon.id() as i32)
                && home
                    .list()
                    .iter()
                    .all(|p| p["status"] == "online" && pid_of(p) > 0)
        },
    );
    assert_eq!(home.list().len(), 2);
    assert_eq!(
        pid_of(&home.process("kept")),
        kept_pid,
        "a process that outlived the daemon is adopted, not restarted"
    );
    let back = pid_of(&home.process("lost"));
    assert_ne!(back, lost_pid, "the lost process runs again");
    assert!(alive(back));

    // `opm kill` ends the processes and the daemon, which exits 0: what
    // Restart=on-failure leaves stopped.
    home.opm(&["kill"]).ok();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = daemon.try_wait().expect("wait for the daemon") {
            break s;
        }
        assert!(Instant::now() < end, "the unit's daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a stopped daemon exits 0: {status}");
    assert!(exited(back) && exited(kept_pid));
}

#[test]
fn unstartup_without_a_unit_says_there_is_nothing_to_remove() {
    let home = TestHome::new();
    let out = home
        .opm_env(
            &["unstartup", "--user"],
            &[("XDG_CONFIG_HOME", home.path())],
        )
        .ok();
    assert!(out.stdout.contains("nothing to remove"), "{out}");
    assert!(
        out.stdout
            .contains(&home.join("systemd/user/opm.service").display().to_string()),
        "{out}"
    );
}
