//! Bounded logs: a live log past its cap is rotated (`--max-log-size`,
//! `--log-files`, `[logs]` in config.toml) without losing a line, also
//! across a SIGKILL of the daemon.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{wait_until, TestHome};

const CAP: u64 = 1024 * 1024;
const KEEP: u64 = 3;
/// What the writer adds between two checks of the daemon (100 ms at ~1.5
/// MB/s) and the block a cut leaves behind, with room to spare.
const SLACK: u64 = 512 * 1024;

/// Prints 0, 1, 2, ... as fast as the shell can until a file `stop`
/// appears, then writes the last number printed to `last`.
const WRITER: &str = "sh -c 'i=0; while [ ! -e stop ]; do echo $i; i=$((i+1)); done; \
     echo $((i-1)) > last; exec sleep 1000'";

/// The process's log files, oldest first: `.3`, `.2`, `.1`, then the live one.
fn files(home: &TestHome) -> Vec<PathBuf> {
    let live = home.join("logs/numbers-0.out.log");
    let mut v: Vec<PathBuf> = (1..=KEEP + 2)
        .rev()
        .flat_map(|n| ["", ".gz"].map(|gz| PathBuf::from(format!("{}.{n}{gz}", live.display()))))
        .filter(|p| p.exists())
        .collect();
    v.push(live);
    v
}

fn total_size(home: &TestHome) -> u64 {
    files(home)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Every number in the files, oldest first (the first line is skipped: the
/// oldest file may begin inside a line).
fn numbers(home: &TestHome) -> Vec<u64> {
    let mut all = Vec::new();
    for p in files(home) {
        let raw = std::fs::read(&p).expect("read a log file");
        if p.extension().is_some_and(|e| e == "gz") {
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut all)
                .expect("gunzip");
        } else {
            all.extend(raw);
        }
    }
    String::from_utf8(all)
        .expect("the log is text")
        .lines()
        .skip(1)
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")))
        .collect()
}

/// Samples the total size for `d`, returning the largest seen.
fn watch_sizes(home: &TestHome, d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut max = 0;
    while Instant::now() < end {
        max = max.max(total_size(home));
        std::thread::sleep(Duration::from_millis(20));
    }
    max
}

fn run(compress: bool) {
    let home = TestHome::new();
    home.write_config(&format!("[logs]\ncompress = {compress}\n"));
    home.start(
        WRITER,
        "numbers",
        &["--max-log-size", "1M", "--log-files", "3"],
    );
    let bound = CAP * (KEEP + 1) + SLACK;

    let before = watch_sizes(&home, Duration::from_secs(8));
    assert!(before <= bound, "{before} bytes of logs > {bound}");
    assert!(
        files(&home).len() as u64 == KEEP + 1,
        "rotated files: {:?}",
        files(&home)
    );

    home.kill_daemon();
    // The child goes on writing with no daemon (the live log grows meanwhile).
    std::thread::sleep(Duration::from_millis(1500));
    home.opm(&["daemon", "restore"]).ok();
    wait_until(
        Duration::from_secs(5),
        "the restored daemon to rotate again",
        || total_size(&home) <= bound,
    );
    let after = watch_sizes(&home, Duration::from_secs(9));
    assert!(
        after <= bound,
        "{after} bytes of logs > {bound} after restore"
    );

    std::fs::write(home.join("stop"), "").expect("write stop");
    wait_until(Duration::from_secs(10), "the writer to stop", || {
        home.join("last").exists()
            && !std::fs::read_to_string(home.join("last"))
                .unwrap_or_default()
                .is_empty()
    });
    let last: u64 = std::fs::read_to_string(home.join("last"))
        .expect("read last")
        .trim()
        .parse()
        .expect("last is a number");
    let got = numbers(&home);
    let first = *got.first().expect("some lines");
    assert_eq!(
        *got.last().expect("some lines"),
        last,
        "the last line printed is there"
    );
    let have: BTreeSet<u64> = got.iter().copied().collect();
    let missing: Vec<u64> = (first..=last)
        .filter(|n| !have.contains(n))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "gaps in {first}..={last}: {missing:?}..."
    );
    // The window kept is about the cap times the files kept (or more, when
    // the daemon was down), far more than a few lines.
    assert!(
        last - first > 300_000,
        "only {first}..={last} kept of 0..={last}"
    );
    assert!(first > 0, "{last} lines in 20 s and nothing rotated away?");
    let total = total_size(&home);
    assert!(total <= bound, "{total} bytes at the end > {bound}");
}

#[test]
fn a_fast_writer_loses_no_line_across_rotations_and_a_daemon_kill() {
    run(false);
}
