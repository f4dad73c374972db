//! Helpers of the integration tests: `TestHome` (a temporary `OPM_HOME`
//! driven through the real `opm` binary, cleaned up on drop even after a
//! panic), `wait_until` (polling with a deadline, never a fixed sleep), and
//! small readers of `/proc` so tests assert on what really runs.
//!
//! Every `opm` command a test runs carries `OPM_TEST_HOME=<temp path>` in
//! its environment. The daemon inherits it and passes it on to every child
//! and grandchild, so the drop of a `TestHome` finds everything the test
//! started by scanning `/proc/*/environ` for that marker, and kills only that.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the helpers"
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod http;
pub mod prereq;
pub mod roles;
pub use prereq::{needs, require};

/// The marker variable every process of a `TestHome` carries.
pub const MARKER_VAR: &str = "OPM_TEST_HOME";

/// How long one `opm` command may take before the test fails instead of hanging.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the drop of a `TestHome` waits for its processes to vanish.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for something the daemon does on its own (a
/// restart, a status, an agent coming online): generous, because the suite
/// runs on a loaded 2-core machine. What is measured comes from the daemon's
/// own timestamps, never from how long the wait took.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often `wait_until` looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What one run of `opm` did.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` when the CLI was killed by a signal.
    pub code: Option<i32>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Fails the test unless the command exited 0; returns self for chaining.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(self.success(), "opm failed: {self}");
        self
    }

    /// Fails the test unless the command failed with a message on stderr.
    #[track_caller]
    pub fn failed(self) -> Output {
        assert!(
            !self.success() && self.code.is_some(),
            "opm should have failed: {self}"
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "a failure must say why on stderr: {self}"
        );
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Polls `f` every ~20 ms until it holds; panics with `what` after `deadline`.
#[track_caller]
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A temporary `OPM_HOME` with the real binary pointed at it.
pub struct TestHome {
    dir: tempfile::TempDir,
    marker: String,
}

impl Default for TestHome {
    fn default() -> Self {
        TestHome::new()
    }
}

impl TestHome {
    pub fn new() -> TestHome {
        let dir = tempfile::Builder::new()
            .prefix("opm-it-")
            .tempdir()
            .expect("create a temporary OPM_HOME");
        let marker = format!("{MARKER_VAR}={}", dir.path().display());
        TestHome { dir, marker }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `OPM_TEST_HOME=<path>`: the environment entry every process of this home carries.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// A command for the real binary with this home, the marker, and the home as cwd.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_opm"));
        cmd.args(args)
            .env("OPM_HOME", self.path())
            .env(MARKER_VAR, self.path())
            .current_dir(self.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `opm ARGS` to its end (at most `COMMAND_TIMEOUT`).
    #[track_caller]
    pub fn opm(&self, args: &[&str]) -> Output {
        run(self.command(args))
    }

    /// Runs `opm ARGS` with extra environment (e.g. another `OPM_HOME`).
    #[track_caller]
    pub fn opm_env<V: AsRef<OsStr>>(&self, args: &[&str], env: &[(&str, V)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd)
    }

    /// Writes `$OPM_HOME/config.toml` (before the daemon starts, or for its next start).
    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.join("config.toml"), toml).expect("write config.toml");
    }

    /// The TCP API's token: `opm daemon token` (generated when none is set).
    #[track_caller]
    pub fn token(&self) -> String {
        let out = self.opm(&["daemon", "token"]).ok();
        let token = out.stdout.trim().to_string();
        assert!(
            token.len() >= 16,
            "opm daemon token printed no token: {out}"
        );
        token
    }

    /// `opm list --format json`, which must succeed.
    #[track_caller]
    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.opm(&["list", "--format", "json"]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("list --format json is not a JSON array ({e}): {out}"))
    }

    /// The `list` entry named `name`, which must exist.
    #[track_caller]
    pub fn process(&self, name: &str) -> serde_json::Value {
        let list = self.list();
        list.iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no process {name:?} in {list:#?}"))
    }

    /// `opm info NAME --format json`, which must succeed.
    #[track_caller]
    pub fn info(&self, target: &str) -> serde_json::Value {
        let out = self.opm(&["info", target, "--format", "json"]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("info --format json is not JSON ({e}): {out}"))
    }

    /// Starts `opm start SCRIPT --name NAME EXTRA...`, which must succeed,
    /// and returns the created process's `list` entry.
    #[track_caller]
    pub fn start(&self, script: &str, name: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["start", script, "--name", name];
        args.extend_from_slice(extra);
        self.opm(&args).ok();
        self.process(name)
    }

    /// The pid recorded in `$OPM_HOME/daemon.pid`, if the file is there.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILLs this home's daemon and waits until it is gone. Does nothing
    /// when no daemon of this home runs.
    #[track_caller]
    pub fn kill_daemon(&self) {
        let Some(pid) = self.daemon_pid() else {
            return;
        };
        if !self.owns(pid) {
            return;
        }
        kill_pid(pid, libc::SIGKILL);
        self.wait_daemon_gone(pid);
    }

    /// Waits until the daemon `pid` has exited with everything it held.
    /// Not just `!alive`: the main thread turns zombie while the other
    /// threads still hold the socket and the database lock, and even once
    /// every thread reads as exited the socket was seen to take a
    /// connection (that then broke unanswered), so both are checked too.
    #[track_caller]
    pub fn wait_daemon_gone(&self, pid: i32) {
        wait_until(
            Duration::from_secs(10),
            "the killed daemon to vanish, with its socket and its lock",
            || {
                exited(pid)
                    && std::os::unix::net::UnixStream::connect(self.join("opm.sock")).is_err()
                    && lock_is_free(&self.join("db.lock"))
            },
        );
    }

    /// Whether `pid` is a live process carrying this home's marker.
    pub fn owns(&self, pid: i32) -> bool {
        environ(pid).is_some_and(|env| env.iter().any(|e| e == &self.marker))
    }

    /// Every live process carrying this home's marker (the CLI, the daemon,
    /// the managed processes and their descendants).
    pub fn marked_pids(&self) -> Vec<i32> {
        pids_with_env(&self.marker)
    }

    /// Every file under `$OPM_HOME/REL`, by relative path, with its bytes.
    pub fn snapshot(&self, rel: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot_dir(&self.join(rel))
    }

    /// Kills everything of this home: the daemon first (so nothing is
    /// started again), then every marked process, by group where it leads
    /// one. Returns the pids it still saw at the deadline.
    fn cleanup(&self) -> Vec<i32> {
        if let Some(pid) = self.daemon_pid() {
            if self.owns(pid) {
                kill_pid(pid, libc::SIGKILL);
            }
        }
        let end = Instant::now() + CLEANUP_TIMEOUT;
        loop {
            let pids = self.marked_pids();
            if pids.is_empty() || Instant::now() >= end {
                return pids;
            }
            for pid in pids {
                // Only what still carries the marker, checked right before the signal.
                if !self.owns(pid) {
                    continue;
                }
                if stat(pid).is_some_and(|s| s.pgrp == pid) {
                    // SAFETY: killpg only sends a signal; pid > 1 is a group
                    // leader that carries this home's marker.
                    unsafe { libc::killpg(pid, libc::SIGKILL) };
                }
                kill_pid(pid, libc::SIGKILL);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemon's side of a failure, next to the test's message.
            let log = std::fs::read_to_string(self.join("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of {}/daemon.log ---\n{}",
                self.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let left = self.cleanup();
        if !left.is_empty() {
            // No panic in drop: it would abort a test that is already unwinding.
            eprintln!(
                "TestHome {}: processes still alive after cleanup: {left:?}",
                self.path().display()
            );
        }
    }
}

/// Runs a command to its end with a deadline, collecting its output.
#[track_caller]
pub fn run(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run the opm binary");
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let end = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for opm") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        code: status.code(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A running `opm` command (e.g. `logs --follow`) whose stdout lines arrive
/// as they are printed; killed and reaped on drop.
pub struct Follow {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl TestHome {
    /// Spawns `opm ARGS` and reads its stdout line by line.
    pub fn follow(&self, args: &[&str]) -> Follow {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn opm {args:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follow {
            child,
            lines,
            seen: Vec::new(),
        }
    }
}

impl Follow {
    /// Reads lines until `done(seen)` holds; fails the test with `what` and
    /// the lines seen when the output ends or `WAIT` passes first.
    #[track_caller]
    pub fn until(&mut self, what: &str, done: impl Fn(&[String]) -> bool) -> &[String] {
        let end = Instant::now() + WAIT;
        while !done(&self.seen) {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("waiting for {what}: {e:?}; lines so far: {:?}", self.seen),
            }
        }
        &self.seen
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Peak resident memory of `pid` (`VmHWM` of `/proc/PID/status`), in KiB.
#[track_caller]
pub fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// Kills a child the test spawned (e.g. `opm logs --follow`) and reaps it.
pub fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `sig` to one process.
pub fn kill_pid(pid: i32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill only sends a signal to a single positive pid.
    unsafe { libc::kill(pid, sig) };
}

/// The fields of `/proc/PID/stat` the tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub start_time: u64,
}

/// `/proc/PID/stat`, cut at the last `)` (the command name may hold any character).
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is a live process (a zombie or a dying task is not).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x'))
}

/// Whether every thread of `pid` has exited (so it holds no file any more):
/// the process is gone, or all its tasks are zombies.
pub fn exited(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|text| {
                let state = text[text.rfind(')')? + 1..].split_whitespace().next()?;
                Some(matches!(state, "Z" | "X" | "x"))
            })
            .unwrap_or(true)
    })
}

/// Whether nobody holds the database lock at `path` (taken and given back
/// at once; a missing file is free).
pub fn lock_is_free(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return true;
    };
    // SAFETY: flock on a descriptor this function owns; closing it below
    // gives the lock back.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Every pid under /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The environment of `pid` (`None` when unreadable or gone; a zombie has an empty one).
pub fn environ(pid: i32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect(),
    )
}

/// Live processes whose environment holds exactly the entry `entry` (`K=V`).
pub fn pids_with_env(entry: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| environ(pid).is_some_and(|env| env.iter().any(|e| e == entry)))
        .filter(|&pid| alive(pid))
        .collect()
}

/// Live members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X' | 'x'))
        })
        .collect()
}

/// The command name of `pid` (`/proc/PID/comm`).
pub fn comm(pid: i32) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim_end()
            .to_string(),
    )
}

/// Live members of group `pgid` running the program `name`.
pub fn group_members_named(pgid: i32, name: &str) -> Vec<i32> {
    group_members(pgid)
        .into_iter()
        .filter(|&pid| comm(pid).as_deref() == Some(name))
        .collect()
}

/// The pid field of a `list` entry.
#[track_caller]
pub fn pid_of(process: &serde_json::Value) -> i32 {
    let pid = process["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {process:#}"));
    i32::try_from(pid).expect("a pid fits in i32")
}

/// Every file under `dir`, by path relative to it, with its content.
pub fn snapshot_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if path.is_dir() {
                out.insert(rel.join(""), Vec::new());
                walk(root, &path, out);
            } else {
                out.insert(
                    rel,
                    std::fs::read(&path).expect("read a file of the snapshot"),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Copies a directory tree (fixtures into a home).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's folder");
    for entry in std::fs::read_dir(from).expect("read the folder to copy") {
        let entry = entry.expect("a folder entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// A value unique to this test run, for `--env MARK=...`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes `cmd` (and the daemon it may start, which inherits it) run with
/// `RLIMIT_NOFILE` soft = hard = `limit`, so the daemon cannot raise it.
pub fn with_fd_limit(cmd: &mut Command, limit: u64) {
    with_fd_limits(cmd, limit, limit);
}

/// Makes `cmd` run with `RLIMIT_NOFILE` = (`soft`, `hard`).
pub fn with_fd_limits(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raises the test process's own soft `RLIMIT_NOFILE` to at least `want`
/// (raising the hard limit too when allowed, e.g. as root). Fails the test
/// with the reason when it cannot: it never passes without running.
#[track_caller]
pub fn raise_own_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return;
    }
    let wanted = libc::rlimit {
        rlim_cur: want.max(lim.rlim_cur),
        rlim_max: want.max(lim.rlim_max),
    };
    // SAFETY: setrlimit reads the struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) };
    assert_eq!(
        rc,
        0,
        "this test needs {want} file descriptors; the limit is {} (hard {}) and cannot be raised: {}",
        lim.rlim_cur,
        lim.rlim_max,
        std::io::Error::last_os_error()
    );
}
