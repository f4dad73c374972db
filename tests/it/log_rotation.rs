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
/// `[logs] check_interval_ms` in these tests.
const CHECK_MS: u64 = 100;

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

/// Each file's name and size, oldest first.
fn sizes(home: &TestHome) -> String {
    files(home)
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            format!("{name} {len}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first whole number in the first 64 bytes of a log file, or the
/// last in its last 64 (`from_end`) (a cut may split a line at either end).
fn edge_number(path: &std::path::Path, from_end: bool) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let mut text = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        let raw = std::fs::read(path).ok()?;
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut text)
            .ok()?;
    } else {
        let mut f = std::fs::File::open(path).ok()?;
        if from_end {
            f.seek(SeekFrom::End(-64)).ok()?;
        }
        f.take(64).read_to_end(&mut text).ok()?;
    }
    let window = if from_end {
        &text[text.len().saturating_sub(64)..]
    } else {
        &text[..text.len().min(64)]
    };
    // Whole lines only: what lies between two newlines.
    let lines: Vec<&[u8]> = window.split(|b| *b == b'\n').collect();
    let inner = lines.get(1..lines.len().saturating_sub(1))?;
    let line = if from_end {
        inner.last()
    } else {
        inner.first()
    }?;
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// Whether a rotation is between the new `.1` taking its name and the cut
/// of the live file: the head is then in both (the live file still starts
/// at or before the end of `.1`). On a quiet machine that lasts
/// microseconds; under load the cut (which writes back the rest of the
/// live file first) was seen to take 100 ms.
fn cut_pending(home: &TestHome) -> bool {
    let all = files(home);
    let [.., newest, live] = &all[..] else {
        return false;
    };
    match (edge_number(newest, true), edge_number(live, false)) {
        (Some(rotated_last), Some(live_first)) => live_first <= rotated_last,
        _ => false,
    }
}

/// The total size of the logs and each file's size then, or None while a
/// rotation's cut is pending (`cut_pending`, looked at before and after).
fn reading(home: &TestHome) -> Option<(u64, String)> {
    if cut_pending(home) {
        return None;
    }
    let seen = (total_size(home), sizes(home));
    (!cut_pending(home)).then_some(seen)
}

/// How long a rotation may leave its head in both files before the test
/// calls the cut lost.
const PENDING_AT_MOST: Duration = Duration::from_secs(1);

/// Samples the total size for `d`, returning the largest seen (and each
/// file's size then). Moments of a pending cut are not counted, but one
/// that lasts past `PENDING_AT_MOST` fails.
fn watch_sizes(home: &TestHome, d: Duration) -> (u64, String) {
    let end = Instant::now() + d;
    let mut max = (0, String::new());
    let mut pending_since = None;
    while Instant::now() < end {
        // Two readings a moment apart: the files are not all read at the
        // same instant, and a whole rotation can fall inside one reading.
        let first = reading(home);
        std::thread::sleep(Duration::from_millis(5));
        match (first, reading(home)) {
            (Some((first, files)), Some((second, _))) => {
                pending_since = None;
                let total = first.min(second);
                if total > max.0 {
                    max = (total, files);
                }
            }
            _ => {
                let since = *pending_since.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < PENDING_AT_MOST,
                    "a rotation's head still in the live file after {:?}: {}",
                    since.elapsed(),
                    sizes(home)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    max
}

/// Waits until the logs are `KEEP` rotated files and the live one, no cut
/// is pending and their total is within `bound` (a rotation deletes the
/// oldest file before it writes the new `.1`, so a look in between sees
/// one file fewer).
#[track_caller]
fn wait_settled(home: &TestHome, bound: impl Fn() -> u64, what: &str) {
    wait_until(Duration::from_secs(5), what, || {
        files(home).len() as u64 == KEEP + 1 && reading(home).is_some_and(|(t, _)| t <= bound())
    });
}

/// The daemon's log filter in these tests: each rotation with how long it
/// took (`supervise::rotate` at debug level).
const LOG_FILTER: &str = "opm=info,opm::supervise::rotate=debug";

/// The longest rotation of the live log the daemon reported so far, in ms.
fn longest_rotation_ms(home: &TestHome) -> u64 {
    let live = home.join("logs/numbers-0.out.log");
    let prefix = format!("rotated {}: ", live.display());
    std::fs::read_to_string(home.join("daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(&prefix)?.1.split(" in ").nth(1))
        .filter_map(|ms| ms.strip_suffix(" ms")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The last whole number in the live log.
fn last_number(home: &TestHome) -> Option<u64> {
    let text = std::fs::read_to_string(home.join("logs/numbers-0.out.log")).ok()?;
    text.strip_suffix('\n')?.lines().last()?.parse().ok()
}

/// How fast the writer writes, in bytes per second (over about a second).
fn write_rate(home: &TestHome) -> u64 {
    let (n0, t0) = (last_number(home).unwrap_or(0), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let n1 = last_number(home).unwrap_or(n0);
    // Each line is the number's digits and a newline.
    let bytes = (n1.saturating_sub(n0)) * (n1.max(1).ilog10() as u64 + 2);
    bytes * 1000 / (t0.elapsed().as_millis() as u64).max(1)
}

fn run(compress: bool) {
    let home = TestHome::new();
    home.write_config(&format!(
        "[logs]\ncompress = {compress}\ncheck_interval_ms = {CHECK_MS}\n"
    ));
    let restore = || {
        home.opm_env(&["daemon", "restore"], &[("OPM_LOG", LOG_FILTER)])
            .ok()
    };
    restore();
    home.start(
        WRITER,
        "numbers",
        &["--max-log-size", "1M", "--log-files", "3"],
    );
    // README's bound: the cap times the files kept plus the live one, and
    // what the child writes in one check interval and while a rotation runs
    // (the next check waits for it); here two intervals (a check can be
    // late on a loaded machine), the longest rotation the daemon reported
    // so far, and a file-system block.
    let rate = write_rate(&home);
    let bound =
        || CAP * (KEEP + 1) + rate * (2 * CHECK_MS + longest_rotation_ms(&home)) / 1000 + 4096;
    eprintln!("the writer writes {rate} bytes/s");

    let (before, then) = watch_sizes(&home, Duration::from_secs(8));
    let b = bound();
    assert!(before <= b, "{before} bytes of logs > {b}: {then}");
    wait_settled(&home, bound, "3 rotated files and the live one");

    home.kill_daemon();
    // The child goes on writing with no daemon (the live log grows meanwhile).
    std::thread::sleep(Duration::from_millis(1500));
    restore();
    wait_settled(&home, bound, "the restored daemon to rotate again");
    let (after, then) = watch_sizes(&home, Duration::from_secs(9));
    let b = bound();
    eprintln!(
        "largest total of the logs: {before} bytes before the kill, {after} after ({then}); \
         bound {b} (longest rotation {} ms)",
        longest_rotation_ms(&home)
    );
    assert!(
        after <= b,
        "{after} bytes of logs > {b} after restore: {then}"
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
    // The last rotation done (the writer stopped: nothing more comes).
    wait_until(Duration::from_secs(5), "the logs to settle", || {
        files(&home).len() as u64 == KEEP + 1
            && !cut_pending(&home)
            && std::fs::metadata(home.join("logs/numbers-0.out.log")).is_ok_and(|m| m.len() <= CAP)
    });
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
        last - first > 250_000,
        "only {first}..={last} kept of 0..={last}"
    );
    assert!(first > 0, "{last} lines in 20 s and nothing rotated away?");
    let total = total_size(&home);
    let b = bound();
    assert!(total <= b, "{total} bytes at the end > {b}");
}

#[test]
fn a_fast_writer_loses_no_line_across_rotations_and_a_daemon_kill() {
    run(false);
}

/// Prints `N` lines to each stream of process `tag`, one of them an error
/// report on stdout, then sleeps.
fn chatty(tag: &str) -> String {
    format!(
        "sh -c 'echo {tag}-hello; echo {tag}-ERROR: disk full; echo {tag}-bye; \
         echo {tag}-oops >&2; exec sleep 1000'"
    )
}

fn start_two(home: &TestHome) {
    home.start(&chatty("a"), "a", &[]);
    home.start(&chatty("b"), "b", &[]);
    wait_until(Duration::from_secs(10), "both to print", || {
        ["a-0", "b-1"].iter().all(|p| {
            std::fs::read_to_string(home.join(format!("logs/{p}.out.log")))
                .unwrap_or_default()
                .lines()
                .count()
                == 3
                && std::fs::read_to_string(home.join(format!("logs/{p}.err.log")))
                    .unwrap_or_default()
                    .lines()
                    .count()
                    == 1
        })
    });
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn logs_of_every_process_with_stream_filter_and_json_options() {
    let home = TestHome::new();
    start_two(&home);
    let all = home.opm(&["logs"]).ok();
    assert_eq!(
        sorted_lines(&all.stdout),
        sorted_lines(
            "a | a-hello\na | a-ERROR: disk full\na | a-bye\na | a-oops\n\
             b | b-hello\nb | b-ERROR: disk full\nb | b-bye\nb | b-oops\n"
        ),
        "{all}"
    );
    assert_eq!(home.opm(&["logs", "all"]).ok().stdout, all.stdout);

    let err = home.opm(&["logs", "--err"]).ok();
    assert_eq!(
        sorted_lines(&err.stdout),
        ["a | a-oops", "b | b-oops"],
        "{err}"
    );
    let out = home.opm(&["logs", "a", "--out"]).ok();
    assert!(
        !out.stdout.contains("oops") && out.stdout.contains("a-bye"),
        "{out}"
    );
    assert!(!out.stdout.contains("(stderr)"), "{out}");

    let filtered = home.opm(&["logs", "--filter", "h[e]llo|bye$"]).ok();
    assert_eq!(
        sorted_lines(&filtered.stdout),
        ["a | a-bye", "a | a-hello", "b | b-bye", "b | b-hello"],
        "{filtered}"
    );
    let errors = home.opm(&["logs", "b", "--errors-only"]).ok();
    let body: Vec<&str> = errors
        .stdout
        .lines()
        .filter(|l| !l.starts_with("==> "))
        .collect();
    assert_eq!(body, ["b-ERROR: disk full", "b-oops"], "{errors}");
    let bad = home.opm(&["logs", "--filter", "("]);
    assert!(!bad.success() && bad.stderr.contains("--filter"), "{bad}");

    let json = home.opm(&["logs", "--json", "--err"]).ok();
    let objects: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(objects.len(), 2, "{json}");
    for o in &objects {
        let p = o["process"].as_str().expect("process");
        assert_eq!(o["stream"], "err");
        assert_eq!(o["line"], format!("{p}-oops"));
    }
}

#[test]
fn lines_read_back_into_rotated_files_and_follow_goes_on_across_a_rotation() {
    use std::io::{BufRead, BufReader};
    let home = TestHome::new();
    home.write_config("[logs]\ncheck_interval_ms = 100\n");
    // 20000 lines (~430 KB), then more each time a file `more` appears.
    let script =
        "sh -c 'i=0; while [ $i -lt 20000 ]; do echo padding-padding-n$i; i=$((i+1)); done; \
         while [ ! -e more ]; do sleep 0.02; done; \
         while [ $i -lt 40000 ]; do echo padding-padding-n$i; i=$((i+1)); done; exec sleep 1000'";
    home.start(script, "p", &["--max-log-size", "64K", "--log-files", "5"]);
    let rotated = home.join("logs/p-0.out.log.1");
    wait_until(Duration::from_secs(10), "a rotation", || {
        rotated.exists()
            && std::fs::read_to_string(home.join("logs/p-0.out.log"))
                .unwrap_or_default()
                .ends_with("padding-padding-n19999\n")
    });
    let out = home
        .opm(&["logs", "p", "--out", "--json", "--lines", "8000"])
        .ok();
    let got: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["line"].as_str().expect("line").to_string()
        })
        .collect();
    let want: Vec<String> = (12000..20000)
        .map(|i| format!("padding-padding-n{i}"))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "--lines 8000 is not n12000..n19999 (spanning the rotated files)"
    );

    // Following from here sees every later line, in order, across rotations.
    let mut follow = home
        .command(&["logs", "p", "--follow", "--lines", "0", "--out"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("opm logs --follow");
    let reader = BufReader::new(follow.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in reader.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    // Give the follower its start before the new lines.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(home.join("more"), "").expect("write more");
    let end = Instant::now() + Duration::from_secs(15);
    let mut next = 20000;
    while next < 40000 {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(l) = rx.recv_timeout(left) else {
            break;
        };
        assert_eq!(
            l,
            format!("out | padding-padding-n{next}"),
            "a line lost or repeated"
        );
        next += 1;
    }
    crate::common::kill_child(&mut follow);
    assert_eq!(next, 40000, "the follower stopped at n{next}");
    assert!(
        home.join("logs/p-0.out.log.3").exists(),
        "rotated meanwhile"
    );
}
