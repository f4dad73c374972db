//! What a test needs from the machine (a program, root, network
//! namespaces), checked in one place so that no test passes without running.
//!
//! `require(missing)` is the only way a test may skip:
//! - under `CI=true` a missing prerequisite fails the test with the reason,
//!   so CI can never report "ok" for a test that did not run;
//! - elsewhere the test returns early, and the skip is written where it is
//!   seen: straight to the terminal (past the harness's capture of
//!   `println!`/`eprintln!`) as `SKIPPED <test>: <why>`, and as a line of
//!   `target/skipped-tests.txt`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether this run is CI, where every test must really run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `true` when `missing` is empty: the test may go on. Otherwise fails the
/// test under CI, or records the skip and returns `false` (the test then
/// returns at once).
#[track_caller]
pub fn require(missing: Vec<String>) -> bool {
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    let test = std::thread::current()
        .name()
        .unwrap_or("an unnamed test")
        .to_string();
    assert!(
        !in_ci(),
        "{test} cannot run under CI=true: {why} (.ci/run installs every tool the tests use)"
    );
    let line = format!("SKIPPED {test}: {why}\n");
    // `std::io::stderr()` is not captured by the test harness (only the
    // print macros are), so this line shows up among the results.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    let file = skipped_list();
    if let Some(parent) = file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
    {
        let _ = f.write_all(line.as_bytes());
    }
    false
}

/// `target/skipped-tests.txt`: where skips outside CI are listed
/// (`OPM_TEST_SKIPPED_LIST` names another file).
pub fn skipped_list() -> PathBuf {
    if let Some(path) = std::env::var_os("OPM_TEST_SKIPPED_LIST") {
        return PathBuf::from(path);
    }
    // target/debug/opm → target/
    Path::new(env!("CARGO_BIN_EXE_opm"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("skipped-tests.txt")
}

/// A program found on the PATH (or at `path` when it has a slash).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Builder of the list of what is missing, for `require`.
#[derive(Default)]
pub struct Needs {
    missing: Vec<String>,
}

/// Starts a list of needs: `require(needs().tool("strace", "strace").root("…").done())`.
pub fn needs() -> Needs {
    Needs::default()
}

impl Needs {
    /// A program on the PATH, from the Debian package `package`.
    pub fn tool(mut self, program: &str, package: &str) -> Needs {
        if which(program).is_none() {
            self.missing.push(format!(
                "`{program}` is not on the PATH (apt-get install {package})"
            ));
        }
        self
    }

    /// The first of `programs` found on the PATH, or a note that none is.
    pub fn any_tool(mut self, programs: &[&str], package: &str) -> Needs {
        if !programs.iter().any(|p| which(p).is_some()) {
            self.missing.push(format!(
                "none of {programs:?} is on the PATH (apt-get install {package})"
            ));
        }
        self
    }

    /// Root, for `why`.
    pub fn root(mut self, why: &str) -> Needs {
        if !nix::unistd::geteuid().is_root() {
            self.missing.push(format!("not root: {why}"));
        }
        self
    }

    /// Network namespaces that this process may create (`ip netns`).
    pub fn netns(mut self) -> Needs {
        match Command::new("ip")
            .args(["netns", "list"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => self.missing.push(format!("`ip netns list` failed ({s})")),
            Err(e) => self
                .missing
                .push(format!("no `ip` command ({e}): apt-get install iproute2")),
        }
        self
    }

    /// A file that must exist.
    pub fn file(mut self, path: &Path, why: &str) -> Needs {
        if !path.exists() {
            self.missing
                .push(format!("{} does not exist: {why}", path.display()));
        }
        self
    }

    pub fn done(self) -> Vec<String> {
        self.missing
    }
}
