//! Acknowledged means on disk. The daemon is killed at each named crash
//! point of its write paths (the `failpoints` feature, armed through
//! `OPM_FAILPOINTS`): the next `opm daemon restore` starts, lists every
//! acknowledged change, and runs nothing twice. Under strace, the answer to
//! `opm start` leaves the daemon only after an fsync covering its write.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{
    exited, needs, pid_of, pids_with_env, require, unique, wait_until, Output, TestHome, WAIT,
};

/// What an acknowledged change left a process to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Running,
    Stopped,
    Removed,
}

/// Live processes carrying `MARK=<mark>-<name>`.
pub fn copies(mark: &str, name: &str) -> Vec<i32> {
    pids_with_env(&format!("MARK={mark}-{name}"))
}

/// `opm start "sleep 1000" --name NAME` marked with `MARK=<mark>-<name>`.
pub fn start_args(mark: &str, name: &str) -> Vec<String> {
    ["start", "sleep 1000", "--name", name, "--env"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("MARK={mark}-{name}")])
        .collect()
}

/// Runs `opm ARGS` with owned arguments.
#[track_caller]
pub fn opm(home: &TestHome, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    home.opm(&args)
}

/// Checks the home against every acknowledged change: each name is listed
/// (or gone) as acknowledged, every listed process that should run runs
/// exactly once (its marked copies are its listed pid), nothing else of
/// `mark` runs. Names in `unsure` (their command failed as the daemon died)
/// may be either way, but never run twice.
#[track_caller]
pub fn verify(home: &TestHome, mark: &str, acked: &BTreeMap<String, Expect>, unsure: &[String]) {
    // The first `list` starts the daemon if none runs; then its socket is polled.
    home.list();
    wait_until(WAIT, "every process to settle after the restore", || {
        home.try_api_list().is_some_and(|list| {
            list.iter().all(|p| {
                let s = p["status"].as_str().unwrap_or("");
                s == "online" || s == "stopped"
            })
        })
    });
    let list = home.list();
    let listed: BTreeMap<String, &serde_json::Value> = list
        .iter()
        .map(|p| (p["name"].as_str().expect("name").to_string(), p))
        .collect();
    for (name, expect) in acked {
        let entry = listed.get(name);
        match expect {
            Expect::Removed => assert!(entry.is_none(), "removed {name} is back: {list:#?}"),
            Expect::Running => {
                let p = entry.unwrap_or_else(|| panic!("acknowledged {name} is lost: {list:#?}"));
                assert_eq!(p["status"], "online", "{name}: {p:#}");
            }
            Expect::Stopped => {
                let p = entry.unwrap_or_else(|| panic!("acknowledged {name} is lost: {list:#?}"));
                assert_eq!(p["status"], "stopped", "{name}: {p:#}");
            }
        }
    }
    for (name, p) in &listed {
        assert!(
            acked.contains_key(name) || unsure.contains(name),
            "{name} was never created: {list:#?}"
        );
        let running = copies(mark, name);
        if p["status"] == "online" {
            assert_eq!(running, [pid_of(p)], "{name} runs exactly once, as listed");
        } else {
            assert!(running.is_empty(), "stopped {name} runs: {running:?}");
        }
    }
    for name in acked.keys().chain(unsure) {
        if !listed.contains_key(name) {
            assert!(copies(mark, name).is_empty(), "unlisted {name} runs");
        }
    }
}

/// Whether the crash points are compiled in; when they are not, the test
/// fails under CI and says why elsewhere (`common::require`).
pub fn failpoints_or_skip() -> bool {
    let mut missing = Vec::new();
    if !cfg!(feature = "failpoints") {
        missing.push(
            "the crash points are not compiled in: run `cargo test --features failpoints`".into(),
        );
    }
    require(missing)
}

/// The crash points of the write paths, in the order a write passes them,
/// with the hits (counted from when the daemon starts serving) to die at. A start
/// stores its create without a commit, flushes sled's log with the spawn's
/// intent (the create rides on it: `store::*-flush`/`after-fsync` at hit 1 fall
/// between the two), then commits the pid, appending to the journal and
/// writing `db.seq` in place. The atomic file
/// writes (`fsutil::*`) are reached with `OPM_JOURNAL_LIMIT=0`, which makes
/// every commit write a whole snapshot and an empty journal (two files): the
/// counts spread the kills over them.
const POINTS: &[(&str, &[u32])] = &[
    ("store::before-insert", &[1]),
    ("store::after-insert", &[1]),
    ("store::before-flush", &[1, 2]),
    ("store::after-flush", &[1, 2]),
    ("store::after-fsync", &[1, 3]),
    ("journal::mid-append", &[1, 3]),
    ("store::before-mirror", &[1, 3]),
    ("fsutil::mid-write", &[1, 4]),
    ("fsutil::before-rename", &[2, 5]),
    ("fsutil::after-rename", &[1, 4]),
    ("executor::after-spawn", &[1]),
];

#[test]
fn a_daemon_killed_at_any_crash_point_loses_nothing_acknowledged_and_runs_nothing_twice() {
    if !failpoints_or_skip() {
        return;
    }
    let home = TestHome::new();
    let mark = unique("points");
    let mut acked: BTreeMap<String, Expect> = BTreeMap::new();
    let mut unsure: Vec<String> = Vec::new();
    let mut n = 0;
    for (point, hits) in POINTS {
        for hit in *hits {
            let spec = format!("{point}={hit}");
            let limit = if point.starts_with("fsutil::") {
                "0"
            } else {
                ""
            };
            let out = home.opm_env(
                &["daemon", "restore"],
                &[
                    ("OPM_FAILPOINTS", spec.as_str()),
                    ("OPM_JOURNAL_LIMIT", limit),
                ],
            );
            assert!(out.success(), "{spec}: {out}");
            let daemon = home.daemon_pid().expect("daemon pid");
            // Starts, with a stop and a remove of earlier ones mixed in,
            // until the crash point kills the daemon.
            let mut ops = 0;
            while !exited(daemon) {
                assert!(ops < 8, "{spec} never fired");
                let running: Vec<String> = acked
                    .iter()
                    .filter(|(_, e)| **e == Expect::Running)
                    .map(|(k, _)| k.clone())
                    .collect();
                let (args, name, expect) = match (ops % 3, running.first()) {
                    (1, Some(victim)) => (
                        vec!["stop".to_string(), victim.clone()],
                        victim.clone(),
                        Expect::Stopped,
                    ),
                    (2, Some(victim)) if running.len() > 3 => (
                        vec!["remove".to_string(), victim.clone()],
                        victim.clone(),
                        Expect::Removed,
                    ),
                    _ => {
                        let name = format!("p{n}");
                        n += 1;
                        (start_args(&mark, &name), name, Expect::Running)
                    }
                };
                ops += 1;
                // Only commands answered by the armed daemon count; one that
                // started a fresh daemon would prove nothing here.
                let out = opm(&home, &args);
                let same_daemon = home.daemon_pid() == Some(daemon);
                if out.success() && same_daemon {
                    acked.insert(name, expect);
                } else {
                    unsure.push(name.clone());
                    acked.remove(&name);
                    break;
                }
            }
            home.wait_daemon_gone(daemon);
            let out = home.opm(&["daemon", "restore"]);
            assert!(out.success(), "restore after {spec}: {out}");
            assert!(
                !out.stdout.contains("damaged"),
                "{spec}: a kill is not damage: {out}"
            );
            verify(&home, &mark, &acked, &unsure);
            // What failed as the daemon died is settled now, one way or the other.
            for name in unsure.drain(..) {
                if let Some(p) = home.list().iter().find(|p| p["name"] == name.as_str()) {
                    let e = if p["status"] == "online" {
                        Expect::Running
                    } else {
                        Expect::Stopped
                    };
                    acked.insert(name, e);
                }
            }
            home.opm(&["daemon", "stop"]).ok();
        }
    }
    assert!(acked.len() > 10, "{acked:?}");
}

#[test]
fn a_daemon_killed_between_spawn_and_record_finds_its_child_by_the_spawn_marker() {
    if !failpoints_or_skip() {
        return;
    }
    let home = TestHome::new();
    let mark = unique("marker");
    let out = home.opm_env(
        &["daemon", "restore"],
        &[("OPM_FAILPOINTS", "executor::after-spawn=1")],
    );
    assert!(out.success(), "{out}");
    let daemon = home.daemon_pid().expect("daemon pid");
    // The create is acknowledged before the spawn, so the CLI may or may not
    // hear back; the process is stored either way.
    let _ = opm(&home, &start_args(&mark, "a"));
    home.wait_daemon_gone(daemon);
    let child = copies(&mark, "a");
    assert_eq!(child.len(), 1, "the child was spawned: {child:?}");
    let spawn_marker = crate::common::environ(child[0])
        .expect("environ")
        .into_iter()
        .find(|e| e.starts_with("OPM_SPAWN="));
    assert!(spawn_marker.is_some(), "the child carries its spawn marker");

    home.opm(&["daemon", "restore"]).ok();
    let p = home.process("a");
    assert_eq!(p["status"], "online", "{p:#}");
    assert_eq!(pid_of(&p), child[0], "the same child is adopted");
    assert_eq!(copies(&mark, "a"), child, "never a second copy");
    let info = home.info("a");
    let found = info["events"].as_array().expect("events").iter().any(|e| {
        e["kind"] == "adopted"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("spawn marker"))
    });
    assert!(found, "adopted by its spawn marker: {:#}", info["events"]);
}

/// When the syscall on `lines[i]` returned successfully: its own line, or
/// the `<... NAME resumed>` line of the same thread.
fn completed_at(lines: &[&str], i: usize, name: &str) -> Option<usize> {
    let line = lines[i];
    if !line.contains("<unfinished ...>") {
        return line.trim_end().ends_with("= 0").then_some(i);
    }
    let tid = line.split_whitespace().next()?;
    let resumed = format!("<... {name} resumed>");
    lines
        .iter()
        .enumerate()
        .skip(i + 1)
        .find(|(_, l)| l.split_whitespace().next() == Some(tid) && l.contains(&resumed))
        .and_then(|(j, l)| l.trim_end().ends_with("= 0").then_some(j))
}

#[test]
fn the_answer_to_a_start_is_written_only_after_an_fsync_covering_its_write() {
    if !require(needs().tool("strace", "strace").done()) {
        return;
    }
    let home = TestHome::new();
    home.opm(&["daemon", "restore"]).ok();
    let daemon = home.daemon_pid().expect("daemon pid");
    let trace = home.join("strace.out");
    let err = home.join("strace.err");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-y", "-s", "48", "-e"])
        .arg("trace=fsync,fdatasync,rename,renameat,renameat2,sync_file_range,write,writev,pwrite64,sendto,sendmsg")
        .arg("-o")
        .arg(&trace)
        .arg("-p")
        .arg(daemon.to_string())
        .stderr(std::fs::File::create(&err).expect("strace.err"))
        .spawn()
        .expect("run strace");
    wait_until(Duration::from_secs(10), "strace to attach", || {
        std::fs::read_to_string(&err).is_ok_and(|e| e.contains("attached"))
    });
    let p = home.start("sleep 1000", "a", &[]);
    assert_eq!(p["status"], "online");
    crate::common::kill_pid(strace.id() as i32, libc::SIGINT);
    let _ = strace.wait();

    let text = std::fs::read_to_string(&trace).expect("the trace");
    let lines: Vec<&str> = text.lines().collect();
    let answer = lines
        .iter()
        .position(|l| l.contains("HTTP/1.1 201"))
        .unwrap_or_else(|| panic!("no answer to the create in the trace:\n{text}"));
    let log = "/db/db>";
    let last_write = lines[..answer]
        .iter()
        .rposition(|l| (l.contains("pwrite64(") || l.contains("write(")) && l.contains(log))
        .unwrap_or_else(|| panic!("the create wrote nothing to the log before answering:\n{text}"));
    let flushed = lines[last_write..answer]
        .iter()
        .any(|l| l.contains("sync_file_range(") && l.contains(log));
    assert!(flushed, "sled flushed its write before the answer:\n{text}");
    let synced = (last_write..answer).find_map(|i| {
        ["fdatasync", "fsync"].into_iter().find_map(|name| {
            let l = lines[i];
            (l.contains(&format!(" {name}(")) && l.contains(log))
                .then(|| completed_at(&lines, i, name))
                .flatten()
        })
    });
    let synced = synced.unwrap_or_else(|| {
        panic!("no fsync of the log between its last write (line {last_write}) and the answer (line {answer}):\n{text}")
    });
    assert!(
        synced < answer,
        "the fsync (line {synced}) returned before the answer (line {answer}) was written:\n{text}"
    );
    // What changed is in the journal beside the snapshot, synced, before
    // the answer (or, at a daemon's first commit, in a new snapshot).
    let journaled = (synced..answer).any(|i| {
        let l = lines[i];
        (l.contains(" fdatasync(") && l.contains("db.journal>"))
            && completed_at(&lines, i, "fdatasync").is_some_and(|done| done < answer)
            || l.contains("rename(") && l.contains("db.snapshot\"")
    });
    assert!(
        journaled,
        "the change was journaled and synced before the answer:\n{text}"
    );
}
