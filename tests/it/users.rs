//! `--user` and `--group`: a daemon running as root starts the child with
//! the user's uid, the group's gid (default: the user's primary group) and
//! the user's supplementary groups, names the user to it (`HOME`, `USER`,
//! `LOGNAME`) and gives it its log files; a daemon that is not root
//! refuses, and so does an unknown user or group, storing nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::{needs, require, run, wait_until, TestHome, MARKER_VAR, WAIT};

/// The fields of a `/proc/PID/status` line (`Uid:`, `Gid:`, `Groups:`).
fn status_line(pid: i64, key: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect()
}

fn nobody() -> nix::unistd::User {
    nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("the user nobody")
}

fn needs_root() -> bool {
    require(
        needs()
            .root("running a process as another user needs a daemon running as root")
            .done(),
    )
}

#[test]
fn a_process_run_as_nobody_has_its_ids_groups_environment_and_log_files() {
    if !needs_root() {
        return;
    }
    let home = TestHome::new();
    let who = nobody();
    let script = "echo \"home=$HOME user=$USER logname=$LOGNAME\"; exec sleep 1000";
    let p = home.start(script, "low", &["--user", "nobody", "--cwd", "/"]);
    assert_eq!(p["status"], "online", "{p}");
    let pid = p["pid"].as_i64().expect("pid");
    let uid = who.uid.as_raw();
    let gid = who.gid.as_raw();
    assert_eq!(
        status_line(pid, "Uid:"),
        vec![uid; 4],
        "real, effective, saved, fs uid"
    );
    assert_eq!(status_line(pid, "Gid:"), vec![gid; 4]);
    let cname = std::ffi::CString::new("nobody").expect("cstring");
    let mut expected: Vec<u32> = nix::unistd::getgrouplist(&cname, who.gid)
        .expect("getgrouplist")
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let mut groups = status_line(pid, "Groups:");
    groups.sort_unstable();
    assert_eq!(groups, expected, "the user's groups, not root's");

    let info = home.info("low");
    assert_eq!(info["definition"]["user"], "nobody");
    let out_log = info["out_log"].as_str().expect("out_log").to_string();
    wait_until(WAIT, "the child's first line", || {
        std::fs::read_to_string(&out_log).is_ok_and(|t| t.contains("home="))
    });
    let line = std::fs::read_to_string(&out_log).expect("read log");
    assert!(
        line.contains(&format!(
            "home={} user=nobody logname=nobody",
            who.dir.display()
        )),
        "{line}"
    );
    for log in [&out_log, info["err_log"].as_str().expect("err_log")] {
        let m = std::fs::metadata(log).expect("log file");
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{log} belongs to the user");
    }
    let text = home.opm(&["info", "low"]).ok().stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("user") && l.ends_with("nobody")),
        "{text}"
    );

    // After a restart the new run is the user's too.
    home.opm(&["restart", "low"]).ok();
    let again = home.wait_for("low", "a new run", |q| {
        q["pid"].as_i64().is_some_and(|n| n != pid) && q["status"] == "online"
    });
    let pid = again["pid"].as_i64().expect("pid");
    assert_eq!(status_line(pid, "Uid:"), vec![uid; 4]);
}

#[test]
fn a_numeric_uid_with_a_named_group_runs_with_that_group() {
    if !needs_root() {
        return;
    }
    let home = TestHome::new();
    let who = nobody();
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(1))
        .ok()
        .flatten()
        .expect("a group with gid 1 (daemon)");
    let uid = who.uid.as_raw().to_string();
    let p = home.start(
        "sleep 1000",
        "grouped",
        &["--user", &uid, "--group", &group.name, "--cwd", "/"],
    );
    let pid = p["pid"].as_i64().expect("pid");
    assert_eq!(status_line(pid, "Uid:"), vec![who.uid.as_raw(); 4]);
    assert_eq!(status_line(pid, "Gid:"), vec![1; 4]);
    assert!(
        status_line(pid, "Groups:").contains(&1),
        "the group is among its groups"
    );
}

#[test]
fn a_working_directory_the_user_cannot_enter_is_a_clear_spawn_failure() {
    if !needs_root() {
        return;
    }
    let home = TestHome::new();
    // The home is 0700 root: nobody cannot enter a folder under it.
    let private = home.join("private");
    std::fs::create_dir(&private).expect("mkdir");
    let cwd = private.display().to_string();
    home.opm(&[
        "start",
        "sleep 1000",
        "--name",
        "locked",
        "--user",
        "nobody",
        "--cwd",
        &cwd,
    ]);
    let p = home.wait_for("locked", "the spawn failure", |p| {
        p["error"].as_str().is_some_and(|e| !e.is_empty())
    });
    let e = p["error"].as_str().unwrap_or("");
    assert!(
        e.contains("user nobody cannot enter the working directory") && e.contains(&cwd),
        "{p}"
    );
    assert!(p["pid"].is_null(), "{p}");
}

#[test]
fn an_unknown_user_or_group_is_refused_and_nothing_is_stored() {
    let home = TestHome::new();
    let out = home
        .opm(&[
            "start",
            "sleep 100",
            "--name",
            "u",
            "--user",
            "no-such-user-opm",
        ])
        .failed();
    assert!(
        out.stderr.contains("no user named \"no-such-user-opm\""),
        "{out}"
    );
    let out = home
        .opm(&[
            "start",
            "sleep 100",
            "--name",
            "g",
            "--group",
            "no-such-group-opm",
        ])
        .failed();
    assert!(
        out.stderr.contains("no group named \"no-such-group-opm\""),
        "{out}"
    );
    assert!(home.list().is_empty());
}

/// `opm ARGS` run as nobody (with its home owned by nobody), so its daemon
/// is not root. `None` when this machine cannot switch users.
fn opm_as_nobody(home: &TestHome, bin: &Path, args: &[&str]) -> Option<crate::common::Output> {
    let ready = needs()
        .root("running opm as another user needs root")
        .tool("setpriv", "util-linux");
    if !require(ready.done()) {
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .args(args)
        .env("OPM_HOME", home.path())
        .env("HOME", home.path())
        .env(MARKER_VAR, home.path())
        .current_dir(home.path());
    Some(run(cmd))
}

#[test]
fn a_daemon_that_is_not_root_refuses_another_user() {
    let home = TestHome::new();
    // nobody needs its own home and a binary it can reach.
    let bin = home.join("opm");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_opm"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_opm"), &bin).expect("copy the binary");
    }
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(home.path(), Some(nix::unistd::Uid::from_raw(65534)), None)
            .expect("chown the home");
    }
    let Some(out) = opm_as_nobody(
        &home,
        &bin,
        &[
            "start",
            "sleep 100",
            "--name",
            "r",
            "--user",
            "root",
            "--cwd",
            "/",
        ],
    ) else {
        return;
    };
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("not root: it cannot run a process as user root"),
        "{out}"
    );
    // Its own user is fine, and nothing of the refused one was stored.
    let out = opm_as_nobody(
        &home,
        &bin,
        &[
            "start",
            "sleep 100",
            "--name",
            "self",
            "--user",
            "nobody",
            "--cwd",
            "/",
        ],
    )
    .expect("as nobody");
    assert!(out.success(), "{out}");
    let out = opm_as_nobody(&home, &bin, &["list", "--format", "json"]).expect("as nobody");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("json");
    let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, vec!["self"], "{out}");
    opm_as_nobody(&home, &bin, &["daemon", "stop"]).expect("as nobody");
}
