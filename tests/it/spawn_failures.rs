//! A program that cannot be started is an answer, not a retry loop: a
//! missing or non-executable command is refused before anything is stored,
//! a shell line whose command is missing fails the start at once, and a
//! start that fails after creation (the program deleted, no file
//! descriptor left) shows its error in `list` and `info`, waits and retries,
//! and never stays `starting`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use crate::common::{kill_pid, pid_of, wait_until, TestHome, WAIT};

#[test]
fn a_missing_command_is_refused_and_nothing_is_stored() {
    let home = TestHome::new();
    let out = home.opm(&["start", "doesnotexist"]).failed();
    assert!(
        out.stderr.contains("command not found: doesnotexist"),
        "{out}"
    );
    // The same for the first command of a shell line.
    let out = home
        .opm(&[
            "start",
            "FOO=1 doesnotexist --flag | cat",
            "--name",
            "piped",
        ])
        .failed();
    assert!(
        out.stderr.contains("command not found: doesnotexist"),
        "{out}"
    );
    assert!(home.list().is_empty(), "nothing stored: {:?}", home.list());
}

#[test]
fn a_file_without_execute_permission_is_refused() {
    let home = TestHome::new();
    let tool = home.join("tool");
    std::fs::write(&tool, "#!/bin/sh\nsleep 100\n").expect("write tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = home.opm(&["start", "./tool"]).failed();
    assert!(out.stderr.contains("not executable: ./tool"), "{out}");
    assert!(out.stderr.contains("chmod +x"), "says how to fix it: {out}");
    assert!(home.list().is_empty(), "nothing stored: {:?}", home.list());

    // Once executable it starts.
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let p = home.start("./tool", "tool", &[]);
    assert_eq!(p["status"], "online", "{p}");
}

#[test]
fn a_shell_line_that_exits_127_at_once_is_a_failed_start() {
    let home = TestHome::new();
    let out = home
        .opm(&["start", "true && doesnotexist", "--name", "late"])
        .failed();
    assert!(
        out.stderr.contains("command not found: doesnotexist"),
        "{out}"
    );
    let p = home.process("late");
    assert!(
        p["status"] == "waiting" || p["status"] == "errored",
        "not starting: {p}"
    );
    assert!(
        p["error"]
            .as_str()
            .is_some_and(|e| e.contains("command not found: doesnotexist")),
        "{p}"
    );
}

#[test]
fn a_program_deleted_after_creation_shows_the_error_and_is_not_starting() {
    let home = TestHome::new();
    let tool = home.join("tool");
    std::fs::write(&tool, "#!/bin/sh\nexec sleep 1000\n").expect("write tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let p = home.start(
        "./tool",
        "gone",
        &["--max-restarts", "3", "--restart-delay", "100ms"],
    );
    let pid = pid_of(&p);
    std::fs::remove_file(&tool).expect("delete the program");
    kill_pid(pid, libc::SIGKILL);

    wait_until(WAIT, "the failed restart to be shown", || {
        home.process("gone")["error"].is_string()
    });
    let mut seen = Vec::new();
    wait_until(WAIT, "gone to end errored", || {
        let p = home.process("gone");
        seen.push(p["status"].as_str().unwrap_or("").to_string());
        p["status"] == "errored"
    });
    // A retry is `starting` only for the instant of its spawn: never two
    // looks in a row, as a process stuck in `starting` would be.
    assert!(
        !seen
            .windows(2)
            .any(|w| w[0] == "starting" && w[1] == "starting"),
        "a failed start is not left starting: {seen:?}"
    );
    let p = home.process("gone");
    assert!(
        p["error"]
            .as_str()
            .is_some_and(|e| e.contains("command not found: ./tool")),
        "{p}"
    );
    let info = home.info("gone");
    assert!(
        info["errored_reason"]
            .as_str()
            .is_some_and(|r| r.contains("command not found: ./tool")),
        "{info}"
    );
    let failed_events = info["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "spawn_failed")
        .count();
    assert!(failed_events >= 1, "{info}");
    let text = home.opm(&["list"]).ok();
    assert!(
        text.stdout.contains("command not found: ./tool"),
        "list shows the error: {text}"
    );

    // A restart while it is still missing says so and fails.
    let out = home.opm(&["restart", "gone"]).failed();
    assert!(out.stderr.contains("command not found: ./tool"), "{out}");

    // Put back, a restart runs it and the error is gone.
    std::fs::write(&tool, "#!/bin/sh\nexec sleep 1000\n").expect("write tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    home.opm(&["restart", "gone"]).ok();
    let p = home.process("gone");
    assert_eq!(p["status"], "online", "{p}");
    assert!(p["error"].is_null(), "{p}");
}

/// The daemon's open descriptors numbered below `limit`, i.e. the slots
/// of its descriptor table that `open` can no longer hand out.
fn used_below(pid: i32, limit: u64) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
                .filter(|fd| *fd < limit)
                .count() as u64
        })
        .unwrap_or(0)
}

/// Sets `pid`'s `RLIMIT_NOFILE` (soft and hard), as `prlimit(1)` does.
fn set_fd_limit(pid: i32, limit: u64) {
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads the struct we own and writes nothing (old is null).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn a_start_with_no_file_descriptor_left_fails_with_a_clear_error_and_is_retried() {
    let home = TestHome::new();
    home.opm(&["daemon", "restore"]).ok();
    let daemon = home.daemon_pid().expect("the daemon runs");
    // A low limit on the running daemon (it raised its own at start): a
    // dozen descriptors over what it holds now.
    let mut limit = 16;
    while used_below(daemon, limit) + 12 > limit {
        limit += 4;
    }
    set_fd_limit(daemon, limit);

    // Hold connections on the socket until one descriptor is left: the
    // start's own connection takes it, and the spawn finds none.
    // First the daemon settles (the CLI's own connection closes).
    let mut base = used_below(daemon, limit);
    let mut steady = 0;
    wait_until(WAIT, "the daemon's descriptors to settle", || {
        let now = used_below(daemon, limit);
        steady = if now == base { steady + 1 } else { 0 };
        base = now;
        steady >= 10
    });
    let mut held = Vec::new();
    while base + (held.len() as u64) < limit - 1 {
        let mut conn = UnixStream::connect(home.join("opm.sock")).expect("connect");
        // A partial request keeps the daemon reading, never answering.
        conn.write_all(b"GET /daemon/li").expect("write");
        held.push(conn);
        let want = base + held.len() as u64;
        wait_until(WAIT, "the daemon to accept", || {
            used_below(daemon, limit) >= want
        });
    }

    // The store's write may need a descriptor or two of its own (then the
    // start fails before anything is created): free one more and try again
    // until the spawn is what runs out.
    let mut attempt = 0;
    let (name, out) = loop {
        attempt += 1;
        let name = format!("nofd-{attempt}");
        let out = home.opm(&["start", "sleep 1000", "--name", &name]).failed();
        assert!(out.stderr.contains("Too many open files"), "{out}");
        if out.stderr.contains("cannot start") || held.len() < 2 {
            break (name, out);
        }
        let before = used_below(daemon, limit);
        held.pop();
        wait_until(WAIT, "the daemon to close one", || {
            used_below(daemon, limit) < before
        });
    };
    assert!(
        out.stderr.contains(&format!("{name} (id ")) && out.stderr.contains("cannot start: "),
        "{out}"
    );
    assert!(out.stderr.contains("no file descriptor left"), "{out}");

    drop(held);
    // Backed off and retried: it runs once descriptors are free again.
    // Backed off and retried: it runs once descriptors are free again.
    home.wait_process(&name, "online");
    let info = home.info(&name);
    assert!(
        info["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "spawn_failed"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("Too many open files"))),
        "{info}"
    );
}
