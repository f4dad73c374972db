//! Log reads and live streams stay bounded: `?lines=` is capped like
//! `logs --lines` (10,000) and a 50 MB log does not take the daemon's
//! memory up; live streams are capped (`[daemon.web] max_streams`, a 503
//! with a JSON error over it); and 150 open streams do not switch off
//! `--watch` (they share the daemon's one inotify instance).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::common::http::{open_head, unix, Auth};
use crate::common::{peak_rss_kib, pid_of, wait_until, TestHome};

/// Opens `GET path` on the daemon's socket and reads the answer's head;
/// returns the status, the head and the open connection.
fn open_stream(home: &TestHome, path: &str) -> (u16, String, UnixStream) {
    let s = UnixStream::connect(home.join("opm.sock")).expect("connect");
    open_head(s, "localhost", "GET", path, Auth::None)
}

#[test]
fn lines_asked_of_a_50_mb_log_are_capped_and_the_daemon_stays_small() {
    let home = TestHome::new();
    home.start("sleep 1000", "big", &[]);
    let out_log = home.info("big")["out_log"]
        .as_str()
        .expect("out_log")
        .to_string();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&out_log).expect("log"));
        let filler = "x".repeat(90);
        for i in 0..500_000 {
            writeln!(f, "line {i:07} {filler}").expect("write");
        }
        writeln!(f, "END-MARKER").expect("write");
    }
    assert!(std::fs::metadata(&out_log).expect("meta").len() > 50_000_000);
    let daemon = home.daemon_pid().expect("daemon");
    let before = peak_rss_kib(daemon);

    let logs = unix(&home, "GET", "/daemon/logs/big?lines=100000000", None)
        .expect(200)
        .json();
    let out = logs["out"].as_array().expect("out");
    assert_eq!(out.len(), 10_000, "capped like logs --lines");
    assert_eq!(out.last().and_then(|l| l.as_str()), Some("END-MARKER"));

    // The live stream's opening tail is capped the same way.
    let (status, _, mut s) = open_stream(&home, "/daemon/logs/big/stream?lines=100000000");
    assert_eq!(status, 200);
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(30);
    let marker = b"data:END-MARKER";
    while !raw[raw.len().saturating_sub(4096)..]
        .windows(marker.len())
        .any(|w| w == marker)
    {
        assert!(Instant::now() < deadline, "the tail never ended");
        let n = s.read(&mut buf).expect("read the stream");
        assert!(n > 0, "the stream ended");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw);
    let sent = text.matches("event:out").count();
    assert_eq!(sent, 10_000, "the stream's tail is capped");
    drop(s);

    // Uncapped, the 500,000 lines would have cost well over 100 MiB.
    let grown = peak_rss_kib(daemon).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "the daemon's peak memory grew by {} MiB",
        grown / 1024
    );
}

#[test]
fn streams_over_the_cap_get_a_503_with_a_json_error() {
    let home = TestHome::new();
    home.write_config("[daemon.web]\nmax_streams = 3\n");
    home.start("sleep 1000", "s", &[]);
    let mut open: Vec<UnixStream> = (0..3)
        .map(|_| {
            let (status, text, s) = open_stream(&home, "/daemon/logs/s/stream");
            assert_eq!(status, 200, "{text}");
            s
        })
        .collect();
    let over = unix(&home, "GET", "/daemon/logs/s/stream", None).expect(503);
    assert!(
        over.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_streams")),
        "{}",
        over.text()
    );
    // A closed stream gives its place back.
    drop(open.pop());
    wait_until(Duration::from_secs(10), "a place to free up", || {
        let (status, _, s) = open_stream(&home, "/daemon/logs/s/stream");
        if status == 200 {
            open.push(s);
        }
        status == 200
    });
}

#[test]
fn a_hundred_and_fifty_streams_do_not_switch_off_watch() {
    let home = TestHome::new();
    home.start("sleep 1000", "talker", &[]);
    let streams: Vec<UnixStream> = (0..150)
        .map(|_| {
            let (status, text, s) = open_stream(&home, "/daemon/logs/talker/stream");
            assert_eq!(status, 200, "{text}");
            s
        })
        .collect();

    // Created while the streams are open, the watch still works.
    std::fs::create_dir(home.join("src")).expect("mkdir");
    let first = pid_of(&home.start("sleep 1000", "watched", &["--watch", "src"]));
    std::fs::write(home.join("src/app.js"), "changed").expect("write");
    home.wait_for("watched", "a restart", |p| {
        p["status"] == "online" && p["pid"].as_i64().is_some_and(|pid| pid != i64::from(first))
    });
    let daemon = home.daemon_pid().expect("daemon");
    let instances = std::fs::read_dir(format!("/proc/{daemon}/fd"))
        .expect("fds")
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify"))
        })
        .count();
    // One for `--watch` and every log stream (the hub), one for the log
    // rotation check's one-shot watches: never one per stream or process.
    assert_eq!(
        instances, 2,
        "two inotify instances, whatever the number of streams"
    );
    drop(streams);
}
