//! The daemon keeps a bounded history of every process's CPU, memory and
//! restarts (`GET /daemon/history`), and a server one of every agent's
//! totals (`GET /daemon/agents/history`), sampled at `[daemon.history]`
//! intervals; an agent's own history is reachable through its server.

use std::time::Duration;

use serde_json::Value;

use crate::common::http::unix;
use crate::common::roles;
use crate::common::{needs, require, wait_until, TestHome};

const FAST_HISTORY: &str = "[daemon.history]\ninterval_ms = 200\nsamples = 6\nagent_interval_ms = 200\nagent_samples = 4\n";

fn history(home: &TestHome, path: &str) -> Value {
    unix(home, "GET", path, None).expect(200).json()
}

fn series<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["subjects"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no history for {name} in {h}"))
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[test]
fn a_growing_process_shows_its_memory_rising_in_a_bounded_history() {
    if !require(needs().tool("python3", "python3").done()) {
        return;
    }
    let home = TestHome::new();
    home.write_config(FAST_HISTORY);
    // Grows by 4 MiB (touched) every 150 ms, up to 80 MiB, then holds.
    let grow = "python3 -c \"import time\nb = []\nfor i in range(20):\n    x = bytearray(4 << 20); x[::4096] = b'x' * len(x[::4096]); b.append(x); time.sleep(0.15)\ntime.sleep(1000)\"";
    home.start(grow, "grow", &[]);
    home.start("sleep 1000", "idle", &[]);
    wait_until(Duration::from_secs(20), "a full history of grow", || {
        numbers(&series(&history(&home, "/daemon/history"), "grow")["at_ms"]).len() == 6
    });
    let h = history(&home, "/daemon/history");
    assert_eq!(h["interval_ms"], 200);
    assert_eq!(h["samples"], 6);
    // Never more than `samples` kept, times rising, arrays of one length.
    wait_until(
        Duration::from_secs(20),
        "memory rising across the kept samples",
        || {
            let h = history(&home, "/daemon/history/grow");
            let s = series(&h, "grow");
            let at = numbers(&s["at_ms"]);
            let mem = numbers(&s["memory"]);
            assert!(at.len() <= 6 && at.len() == mem.len(), "{s}");
            assert!(at.windows(2).all(|w| w[0] < w[1]), "times rise: {at:?}");
            mem.len() == 6 && mem[5] > mem[0] + 8 * 1024 * 1024
        },
    );
    let one = history(&home, "/daemon/history/idle");
    assert_eq!(one["subjects"].as_array().map(Vec::len), Some(1), "{one}");
    // A removed process has no history; an unknown one is a 404.
    home.opm(&["remove", "idle"]).ok();
    unix(&home, "GET", "/daemon/history/idle", None).expect_json_error(404);
    let all = history(&home, "/daemon/history");
    assert_eq!(all["subjects"].as_array().map(Vec::len), Some(1), "{all}");
    home.opm(&["remove", "all"]).ok();
}

#[test]
fn a_bad_history_setting_is_refused_with_its_name() {
    let home = TestHome::new();
    home.write_config("[daemon.history]\ninterval_ms = 5\n");
    let out = home.opm(&["daemon", "restore"]).failed();
    assert!(out.stderr.contains("daemon.history.interval_ms"), "{out}");
}

#[test]
fn a_server_keeps_each_agents_totals_and_relays_the_agents_own_history() {
    let srv = roles::server(None);
    // The server samples its agents fast.
    let config = std::fs::read_to_string(srv.home.join("config.toml")).expect("config");
    std::fs::write(
        srv.home.join("config.toml"),
        format!("{config}{FAST_HISTORY}"),
    )
    .expect("write config");
    srv.home.opm(&["daemon", "stop"]).ok();
    srv.home.opm(&["daemon", "restore"]).ok();
    let a = roles::agent(&srv, "hist-a", &srv.join);
    a.home.start("sleep 1000", "worker", &[]);
    wait_until(
        Duration::from_secs(20),
        "the agent's online process in the server's history",
        || {
            let h = history(&srv.home, "/daemon/agents/history");
            h["subjects"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["name"] == "hist-a" && numbers(&s["count"]).last() == Some(&1))
            })
        },
    );
    let h = history(&srv.home, "/daemon/agents/history");
    let s = series(&h, "hist-a");
    assert!(
        numbers(&s["at_ms"]).len() <= 4,
        "agent_samples bounds it: {s}"
    );
    assert!(numbers(&s["memory"]).last().is_some_and(|m| *m > 0), "{s}");
    // The agent's own history of its processes, through the server.
    let relayed = unix(
        &srv.home,
        "GET",
        "/daemon/agents/hist-a/history/worker",
        None,
    )
    .expect(200)
    .json();
    assert_eq!(series(&relayed, "worker")["name"], "worker");
    a.home.opm(&["remove", "all"]).ok();
}
