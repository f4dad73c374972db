//! Process output: captured to `$OPM_HOME/logs/NAME-ID.{out,err}.log`,
//! shown by `opm logs` (last lines, and `--follow`), emptied by `opm flush`.

use std::time::Duration;

use crate::common::{wait_until, Output, TestHome};

/// A program that prints five lines to each stream, then waits for a file
/// named `go` in its working directory, prints `after` to both, and sleeps.
const CHATTY: &str = "sh -c 'for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; \
     while [ ! -e go ]; do sleep 0.02; done; echo after; echo after-err >&2; exec sleep 1000'";

fn read(home: &TestHome, rel: &str) -> String {
    std::fs::read_to_string(home.join(rel)).unwrap_or_default()
}

fn start_chatty(home: &TestHome) {
    home.start(CHATTY, "chatty", &[]);
    wait_until(Duration::from_secs(10), "chatty to print its lines", || {
        read(home, "logs/chatty-0.out.log").lines().count() == 5
            && read(home, "logs/chatty-0.err.log").lines().count() == 5
    });
}

/// The lines of each section of `opm logs` output: (stdout lines, stderr lines).
fn sections(out: &Output) -> (Vec<String>, Vec<String>) {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut current = None;
    for line in out.stdout.lines() {
        if line.starts_with("==> ") && line.ends_with("(stdout) <==") {
            current = Some(&mut stdout);
        } else if line.starts_with("==> ") && line.ends_with("(stderr) <==") {
            current = Some(&mut stderr);
        } else if let Some(section) = current.as_mut() {
            section.push(line.to_string());
        } else {
            panic!("a line before any section header: {out}");
        }
    }
    (stdout, stderr)
}

#[test]
fn output_goes_to_the_log_files_named_after_the_process() {
    let home = TestHome::new();
    start_chatty(&home);
    assert_eq!(
        read(&home, "logs/chatty-0.out.log"),
        "out1\nout2\nout3\nout4\nout5\n"
    );
    assert_eq!(
        read(&home, "logs/chatty-0.err.log"),
        "err1\nerr2\nerr3\nerr4\nerr5\n"
    );
    let info = home.info("chatty");
    assert_eq!(
        info["out_log"],
        home.join("logs/chatty-0.out.log").to_str().expect("utf-8")
    );
    assert_eq!(
        info["err_log"],
        home.join("logs/chatty-0.err.log").to_str().expect("utf-8")
    );
}

#[test]
fn logs_prints_the_last_lines_of_each_stream() {
    let home = TestHome::new();
    start_chatty(&home);
    let out = home.opm(&["logs", "chatty", "--lines", "3"]).ok();
    let (stdout, stderr) = sections(&out);
    assert_eq!(stdout, ["out3", "out4", "out5"], "{out}");
    assert_eq!(stderr, ["err3", "err4", "err5"], "{out}");
    // By id too.
    let by_id = home.opm(&["logs", "0", "--lines", "1"]).ok();
    assert_eq!(sections(&by_id), (vec!["out5".into()], vec!["err5".into()]));
}

#[test]
fn flush_empties_the_logs_and_new_output_still_arrives() {
    let home = TestHome::new();
    start_chatty(&home);
    home.opm(&["flush", "chatty"]).ok();
    assert_eq!(read(&home, "logs/chatty-0.out.log"), "");
    assert_eq!(read(&home, "logs/chatty-0.err.log"), "");
    let out = home.opm(&["logs", "chatty", "--lines", "3"]).ok();
    assert_eq!(sections(&out), (vec![], vec![]), "{out}");

    std::fs::write(home.join("go"), "").expect("create go");
    wait_until(
        Duration::from_secs(10),
        "new output after the flush",
        || {
            !read(&home, "logs/chatty-0.err.log").is_empty()
                && !read(&home, "logs/chatty-0.out.log").is_empty()
        },
    );
    // Written at the start of the emptied file: no hole, nothing old.
    assert_eq!(read(&home, "logs/chatty-0.out.log"), "after\n");
    assert_eq!(read(&home, "logs/chatty-0.err.log"), "after-err\n");
}

#[test]
fn flush_without_a_name_empties_every_log() {
    let home = TestHome::new();
    home.start("sh -c 'echo one; exec sleep 1000'", "one", &[]);
    home.start("sh -c 'echo two; exec sleep 1000'", "two", &[]);
    wait_until(Duration::from_secs(10), "both to print", || {
        read(&home, "logs/one-0.out.log") == "one\n" && read(&home, "logs/two-1.out.log") == "two\n"
    });
    home.opm(&["flush"]).ok();
    assert_eq!(read(&home, "logs/one-0.out.log"), "");
    assert_eq!(read(&home, "logs/two-1.out.log"), "");
}

#[test]
fn follow_shows_lines_written_after_it_started() {
    let home = TestHome::new();
    start_chatty(&home);
    let mut follow = home.follow(&["logs", "chatty", "--follow", "--lines", "1"]);
    // The stream is live once it has shown the existing last lines.
    follow.until("the tail from --follow", |seen| {
        seen.iter().any(|l| l == "out | out5") && seen.iter().any(|l| l == "err | err5")
    });
    std::fs::write(home.join("go"), "").expect("create go");
    let seen = follow
        .until("new lines from --follow", |seen| {
            seen.iter().any(|l| l == "out | after") && seen.iter().any(|l| l == "err | after-err")
        })
        .to_vec();
    drop(follow);
    assert!(
        !seen.iter().any(|l| l.contains("out4")),
        "only one line of tail: {seen:?}"
    );
}

#[test]
fn a_child_keeps_writing_its_logs_with_the_daemon_gone() {
    let home = TestHome::new();
    home.start(
        "sh -c 'i=0; while :; do i=$((i+1)); echo tick-$i; echo tock-$i >&2; sleep 0.05; done'",
        "ticker",
        &[],
    );
    let out = "logs/ticker-0.out.log";
    let err = "logs/ticker-0.err.log";
    wait_until(Duration::from_secs(10), "the first ticks", || {
        read(&home, out).contains("tick-1\n") && read(&home, err).contains("tock-1\n")
    });
    home.kill_daemon();
    let (out_then, err_then) = (read(&home, out).len(), read(&home, err).len());
    // Twenty more lines on each stream, written with no daemon at all.
    wait_until(
        Duration::from_secs(10),
        "lines written without the daemon",
        || {
            read(&home, out)[out_then..].lines().count() >= 20
                && read(&home, err)[err_then..].lines().count() >= 20
        },
    );
    assert!(
        home.daemon_pid().is_none_or(|p| !home.owns(p)),
        "no daemon ran meanwhile"
    );
    let text = read(&home, out);
    let ticks: Vec<u64> = text
        .lines()
        .map(|l| l.trim_start_matches("tick-").parse().expect("a tick"))
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost or doubled: {text}"
    );
}

#[test]
fn an_unreadable_log_file_is_reported_with_its_path_and_the_daemon_keeps_serving() {
    let home = TestHome::new();
    start_chatty(&home);
    // The child keeps its open file; the path now names a directory.
    let out_log = home.join("logs/chatty-0.out.log");
    std::fs::remove_file(&out_log).expect("remove the log");
    std::fs::create_dir(&out_log).expect("a directory in its place");
    let out = home.opm(&["logs", "chatty"]).failed();
    assert!(
        out.stderr
            .contains(&format!("cannot read {}", out_log.display()))
            && out.stderr.contains("directory"),
        "{out}"
    );
    assert_eq!(home.process("chatty")["status"], "online");
}
