//! The events timeline: `opm events` and `GET /daemon/events` (filtered by
//! process, agent and kind), `--follow` over `GET /daemon/events/stream`,
//! and a server's events about its agents.

use serde_json::Value;

use crate::common::http::unix;
use crate::common::roles;
use crate::common::{wait_until, TestHome, WAIT};

/// `opm events ARGS --format json`, which must succeed.
#[track_caller]
fn events(home: &TestHome, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = home.opm(&all).ok();
    match serde_json::from_str(&out.stdout) {
        Ok(Value::Array(list)) => list,
        _ => panic!("opm {all:?} is not a JSON array: {out}"),
    }
}

fn kinds(list: &[Value]) -> Vec<&str> {
    list.iter().filter_map(|e| e["kind"].as_str()).collect()
}

#[test]
fn a_crash_loop_shows_its_exits_with_their_codes_and_its_restarts_in_order() {
    let home = TestHome::new();
    home.start("sh -c 'sleep 0.2; exit 7'", "crashy", &[]);
    home.start("sleep 1000", "calm", &[]);
    wait_until(WAIT, "crashy to be restarted twice", || {
        kinds(&events(&home, &["crashy", "--lines", "100"]))
            .iter()
            .filter(|k| **k == "restarted")
            .count()
            >= 2
    });
    let list = events(&home, &["crashy", "--lines", "100"]);
    assert!(
        list.iter()
            .all(|e| e["name"] == "crashy" && e["subject"] == "process"),
        "{list:?}"
    );
    let at: Vec<u64> = list.iter().filter_map(|e| e["at_ms"].as_u64()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "oldest first: {at:?}");
    // started, then exited (with its code) before each restart.
    let k = kinds(&list);
    assert_eq!(k[0], "started", "{k:?}");
    for (i, kind) in k.iter().enumerate() {
        if *kind == "restarted" {
            assert_eq!(k[i - 1], "exited", "an exit before each restart: {k:?}");
        }
    }
    let exit = list
        .iter()
        .find(|e| e["kind"] == "exited")
        .expect("an exit");
    assert!(
        exit["detail"]
            .as_str()
            .is_some_and(|d| d.ends_with("exit code 7")),
        "{exit}"
    );

    // Filters: by kind (one or several), by process; they combine.
    let exits = events(&home, &["crashy", "--kind", "exited"]);
    assert!(!exits.is_empty() && kinds(&exits).iter().all(|k| *k == "exited"));
    let both = events(&home, &["--kind", "exited,restarted"]);
    assert!(kinds(&both)
        .iter()
        .all(|k| *k == "exited" || *k == "restarted"));
    assert!(
        both.iter().all(|e| e["name"] == "crashy"),
        "calm never exited"
    );
    let calm = events(&home, &["calm"]);
    assert_eq!(kinds(&calm), vec!["started"], "{calm:?}");
    let id = calm[0]["id"].as_u64().expect("a process event has its id");
    assert_eq!(events(&home, &[&id.to_string()]), calm, "by id as by name");
    assert_eq!(events(&home, &["crashy", "--lines", "1"]).len(), 1);

    // The API: the newest N, oldest first; a bad limit is a 400.
    let one = unix(
        &home,
        "GET",
        "/daemon/events?process=crashy&kind=restarted&limit=1",
        None,
    )
    .expect(200)
    .json();
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    for bad in ["0", "10001", "x"] {
        let r = unix(&home, "GET", &format!("/daemon/events?limit={bad}"), None);
        assert_eq!(r.status, 400, "limit={bad}: {}", r.text());
    }
    // The table: time, subject, kind, detail.
    let table = home
        .opm(&["events", "crashy", "--kind", "exited"])
        .ok()
        .stdout;
    let head = table.lines().next().unwrap_or_default();
    assert!(
        head.starts_with("TIME") && head.contains("SUBJECT") && head.ends_with("DETAIL"),
        "{table}"
    );
    assert!(
        table.contains("crashy (") && table.contains("exit code 7"),
        "{table}"
    );
    home.opm(&["remove", "all"]).ok();
}

/// The status of `GET /daemon/events/stream` on the socket; the stream is
/// closed at once.
fn stream_status(home: &TestHome) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(home.join("opm.sock")).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET /daemon/events/stream HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .expect("send");
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .expect("a status line");
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn follow_prints_a_new_event_as_it_happens_and_counts_against_max_streams() {
    let home = TestHome::new();
    home.write_config("[daemon.web]\nmax_streams = 1\n");
    home.start("sleep 1000", "first", &[]);
    let mut follow = home.follow(&["events", "--follow"]);
    follow.until("the backlog", |seen| {
        seen.iter()
            .any(|l| l.contains("first") && l.contains("started"))
    });
    // The one stream allowed is taken: another is refused, saying why.
    let refused = home.opm(&["events", "--follow"]).failed();
    assert!(refused.stderr.contains("max_streams"), "{refused}");
    assert_eq!(stream_status(&home), 503);
    home.start("sleep 1001", "late", &[]);
    follow.until("late's start, live", |seen| {
        seen.iter()
            .any(|l| l.contains("late (") && l.contains("started"))
    });
    drop(follow);
    // Its place is given back once it is gone.
    wait_until(WAIT, "the stream's place to be free", || {
        stream_status(&home) == 200
    });
    home.opm(&["remove", "all"]).ok();
}

#[test]
fn a_server_records_its_agents_going_offline_and_online_filtered_by_agent() {
    let srv = roles::server(None);
    let a = roles::agent(&srv, "ev-a", &srv.join);
    let b = roles::agent(&srv, "ev-b", &srv.join);
    srv.wait_agent("ev-a", "online");
    srv.wait_agent("ev-b", "online");
    a.home.start("sleep 1000", "worker", &[]);
    // ev-a goes dark, then comes back (its daemon registers again).
    a.home.kill_daemon();
    srv.wait_agent("ev-a", "offline");
    a.home.opm(&["daemon", "restore"]).ok();
    srv.wait_agent("ev-a", "online");
    let mine = events(&srv.home, &["--agent", "ev-a"]);
    let k = kinds(&mine);
    let joined = k.iter().position(|k| *k == "agent_joined").expect("joined");
    let off = k
        .iter()
        .position(|k| *k == "agent_offline")
        .expect("offline");
    let on = k
        .iter()
        .rposition(|k| *k == "agent_online" || *k == "agent_registered")
        .unwrap_or_else(|| panic!("online again: {k:?}"));
    assert!(joined < off && off < on, "{k:?}");
    assert!(
        mine.iter()
            .all(|e| e["name"] == "ev-a" && e["subject"] == "agent"),
        "{mine:?}"
    );
    // By agent id as by name; the other agent's events stay out.
    let id = srv.agent("ev-a").expect("ev-a")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(events(&srv.home, &["--agent", &id]), mine);
    let other = events(&srv.home, &["--agent", "ev-b"]);
    assert_eq!(kinds(&other), vec!["agent_joined"], "{other:?}");
    let offline = events(&srv.home, &["--kind", "agent_offline"]);
    assert!(offline.iter().all(|e| e["name"] == "ev-a"), "{offline:?}");
    // The agent's own events, through the server.
    let remote = events(&srv.home, &["worker", "--server", "ev-a"]);
    assert!(kinds(&remote).contains(&"started"), "{remote:?}");
    assert!(remote.iter().all(|e| e["name"] == "worker"));
    a.home.opm(&["remove", "all"]).ok();
    drop(b);
}
