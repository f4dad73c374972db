//! The role system with real separate daemons on 127.0.0.1: one server and
//! three agents, each with its own `OPM_HOME` and ports. Registration and
//! heartbeats, the server's control of agent processes, liveness across
//! kills and restarts, disconnect, and the token checks.
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::http::http;
use crate::common::roles::{agent, list_via, pid_of, server, Agent, Server, INTERVAL_MS, TOKEN};
use crate::common::{alive, free_port, wait_until, TestHome, WAIT};

const JOIN: &str = "join-token-for-tests-0123456789";
const AGENT_REFUSAL: &str =
    "✘ Agent role cannot perform remote operations. Only local process management is allowed.";

/// The silence, in ms, that the server itself measured when it marked agent
/// `name` offline: the figure in milliseconds of the last `agent_offline`
/// line for it in daemon.log (read by its unit, not its wording).
fn offline_silence(srv: &Server, name: &str) -> u64 {
    let log = std::fs::read_to_string(srv.home.join("daemon.log")).expect("daemon.log");
    log.lines()
        .rev()
        .filter(|l| l.contains("agent_offline") && l.contains(name))
        .find_map(ms_figure)
        .unwrap_or_else(|| panic!("no agent_offline event for {name} in:\n{log}"))
}

/// The first figure of `line` given in milliseconds: `1234 ms`, `1234ms`,
/// or `silent_ms=1234`.
fn ms_figure(line: &str) -> Option<u64> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit()
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let after = line[i..].trim_start();
        let unit_after =
            after.starts_with("ms") && !after[2..].starts_with(|c: char| c.is_alphanumeric());
        let unit_before = line[..start]
            .trim_end_matches(['=', ':', ' ', '"'])
            .ends_with("ms");
        if unit_after || unit_before {
            return line[start..i].parse().ok();
        }
    }
    None
}

#[test]
fn the_silence_is_read_from_a_log_line_by_its_unit() {
    assert_eq!(
        ms_figure("2026-11-29T11:27:13.123Z agent_offline edge (a1): no heartbeat for 812 ms"),
        Some(812)
    );
    assert_eq!(
        ms_figure("11:27:13 WARN agent_offline name=edge id=3f silent_ms=905"),
        Some(905)
    );
    assert_eq!(ms_figure("agent_offline edge (9ms0): gone"), None);
}

#[test]
fn a_server_sees_and_controls_the_processes_of_three_agents() {
    let srv = server(None);
    let agents: Vec<Agent> = (1..=3)
        .map(|i| agent(&srv, &format!("web-{i}"), &srv.join))
        .collect();
    for (i, a) in agents.iter().enumerate() {
        a.home.start("sleep 1000", &format!("job-{}", i + 1), &[]);
    }
    wait_until(WAIT, "three agents online with one process each", || {
        let list = srv.agents();
        list.len() == 3
            && list.iter().all(|a| {
                a["status"] == "online"
                    && a["processes"]["total"] == 1
                    && a["processes"]["online"] == 1
            })
    });
    let listed = srv.agents();
    // `opm agent list --format json` prints what the server's socket answers.
    let out = srv.home.opm(&["agent", "list", "--format", "json"]).ok();
    let by_cli: Vec<serde_json::Value> =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let names = |l: &[serde_json::Value]| -> Vec<String> {
        l.iter().map(|a| a["name"].to_string()).collect()
    };
    assert_eq!(names(&by_cli), names(&listed), "{out}");
    for a in &agents {
        let row = listed
            .iter()
            .find(|r| r["name"] == a.name.as_str())
            .expect("listed");
        assert_eq!(row["endpoint"], format!("http://127.0.0.1:{}", a.api_port));
        assert!(row["hostname"].as_str().is_some_and(|h| !h.is_empty()));
        assert!(row.get("token").is_none(), "tokens are never listed: {row}");
    }
    let out = srv.home.opm(&["agent", "list"]).ok();
    assert!(
        out.stdout.contains("web-2") && out.stdout.contains("online"),
        "{out}"
    );

    // The server reads one agent's processes, and only that agent's.
    let via = list_via(&srv, "web-2");
    assert_eq!(via.len(), 1, "{via:?}");
    assert_eq!(via[0]["name"], "job-2");
    assert_eq!(
        via[0]["pid"].as_i64(),
        Some(pid_of(&agents[1].home, "job-2"))
    );

    // Stop, start and restart on a chosen agent.
    let a1 = &agents[0];
    let before = pid_of(&a1.home, "job-1");
    srv.home.opm(&["stop", "job-1", "--server", "web-1"]).ok();
    assert_eq!(a1.home.process("job-1")["status"], "stopped");
    assert!(!alive(before as i32), "the stopped process is gone");
    assert_eq!(
        agents[1].home.process("job-2")["status"],
        "online",
        "other agents are untouched"
    );
    srv.home.opm(&["start", "job-1", "--server", "web-1"]).ok();
    assert_eq!(a1.home.process("job-1")["status"], "online");
    let started = pid_of(&a1.home, "job-1");
    srv.home
        .opm(&["restart", "job-1", "--server", "web-1"])
        .ok();
    let restarted = a1.home.process("job-1");
    assert_eq!(restarted["status"], "online");
    assert_ne!(
        restarted["pid"].as_i64(),
        Some(started),
        "a restart gives a new pid"
    );
    assert_eq!(restarted["restarts"], 2);
    // reset, pid and signal on a chosen agent.
    srv.home.opm(&["reset", "job-1", "--server", "web-1"]).ok();
    assert_eq!(a1.home.process("job-1")["restarts"], 0);
    let out = srv.home.opm(&["pid", "job-1", "--server", "web-1"]).ok();
    assert_eq!(
        out.stdout,
        format!("{}\n", pid_of(&a1.home, "job-1")),
        "{out}"
    );
    srv.home
        .opm(&["signal", "SIGWINCH", "job-1", "--server", "web-1"])
        .ok();

    // Create a process on an agent and read its logs through the server.
    srv.home
        .opm(&[
            "start",
            "sh -c 'echo hello-from-web-3; sleep 1000'",
            "--name",
            "echo",
            "--server",
            "web-3",
        ])
        .ok();
    assert_eq!(agents[2].home.process("echo")["status"], "online");
    wait_until(WAIT, "the agent's output through the server", || {
        srv.home
            .opm(&["logs", "echo", "--server", "web-3", "--lines", "5"])
            .stdout
            .contains("hello-from-web-3")
    });
    let info = srv
        .home
        .opm(&["info", "echo", "--server", "web-3", "--format", "json"])
        .ok();
    assert!(info.stdout.contains("\"name\": \"echo\""), "{info}");
    // Remove through the server.
    srv.home.opm(&["remove", "echo", "--server", "web-3"]).ok();
    let left: Vec<serde_json::Value> = agents[2].home.list();
    assert_eq!(
        left.iter().map(|p| p["name"].clone()).collect::<Vec<_>>(),
        ["job-3"],
        "only echo was removed: {left:#?}"
    );

    // The same routes answer over HTTP with the server's token.
    let (status, body) = http(
        "GET",
        srv.port,
        "/daemon/agents/web-1/processes",
        &[("token", TOKEN)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("job-1"), "{body}");
    let (status, _) = http(
        "GET",
        srv.port,
        "/daemon/agents/nobody/processes",
        &[("token", TOKEN)],
        None,
    );
    assert_eq!(status, 404);

    // An agent's own view: connected, and `--server` is refused with the exact message.
    let st = a1.home.opm(&["agent", "status"]).ok();
    assert!(
        st.stdout.contains("connected") && !st.stdout.contains("not connected"),
        "{st}"
    );
    assert!(st.stdout.contains(&srv.url()), "{st}");
    for args in [
        vec!["list", "--server", "web-2"],
        vec!["stop", "job-2", "--server", "http://127.0.0.1:1"],
        vec!["start", "sleep 1", "--server", "anything"],
    ] {
        let out = a1.home.opm(&args).failed();
        assert_eq!(out.stderr.trim(), AGENT_REFUSAL, "{out}");
    }
    let health = a1.home.health();
    assert_eq!(health["role"], "agent");
    assert_eq!(health["connected"], true);
    let health = srv.home.health();
    assert_eq!(health["role"], "server");
    assert_eq!(health["agents_online"], 3);
}

#[test]
fn an_agent_killed_goes_offline_within_three_intervals_and_comes_back_after_restore() {
    let srv = server(None);
    let a = agent(&srv, "edge", &srv.join);
    a.home.start("sleep 1000", "worker", &[]);
    srv.wait_agent("edge", "online");
    let st: serde_json::Value = a.home.agent_status();
    let interval = st["heartbeat_interval_ms"]
        .as_u64()
        .expect("the server gave an interval");
    let worker = pid_of(&a.home, "worker");

    a.home.kill_daemon();
    srv.wait_agent("edge", "offline");
    // The server measures the silence itself when it marks the agent
    // offline, so polling on a loaded machine does not blur the figure:
    // not before interval + grace, and not long after.
    let silent = offline_silence(&srv, "edge");
    assert!(
        silent >= interval + INTERVAL_MS - 50,
        "offline after {silent} ms of silence, before interval {interval} + grace {INTERVAL_MS}"
    );
    assert!(
        silent <= 3 * interval + 500,
        "offline after {silent} ms of silence, more than 3 intervals of {interval} ms"
    );
    assert!(
        alive(worker as i32),
        "the agent's process keeps running without its daemon"
    );

    a.home.opm(&["daemon", "restore"]).ok();
    srv.wait_agent("edge", "online");
    assert_eq!(
        pid_of(&a.home, "worker"),
        worker,
        "the process was adopted, not restarted"
    );
}

#[test]
fn a_restarted_server_keeps_its_registry_and_agents_keep_their_processes() {
    let srv = server(None);
    let agents: Vec<Agent> = (1..=2)
        .map(|i| agent(&srv, &format!("node-{i}"), &srv.join))
        .collect();
    let pids: Vec<i64> = agents
        .iter()
        .map(|a| {
            a.home.start("sleep 1000", "svc", &[])["pid"]
                .as_i64()
                .expect("pid")
        })
        .collect();
    srv.wait_online(2);

    srv.home.kill_daemon();
    srv.home.opm(&["daemon", "restore"]).ok();
    // Straight after the restart, before any heartbeat could have re-registered them.
    let listed = srv.agents();
    assert_eq!(
        listed.len(),
        2,
        "the registry survived the server's death: {listed:?}"
    );
    assert!(
        listed.iter().all(|a| a["status"] == "online"),
        "a restart does not flap the fleet: {listed:?}"
    );
    // Heartbeats go on against the restarted server: each agent is seen
    // again later than it was when the server came back.
    let seen_at_restart: Vec<(String, u64)> = listed
        .iter()
        .map(|a| {
            let name = a["name"].as_str().expect("name").to_string();
            (name, a["last_seen_ms"].as_u64().expect("last_seen_ms"))
        })
        .collect();
    wait_until(WAIT, "heartbeats after the restart", || {
        let now = srv.agents();
        seen_at_restart.iter().all(|(name, before)| {
            now.iter().any(|a| {
                a["name"] == name.as_str()
                    && a["status"] == "online"
                    && a["last_seen_ms"].as_u64().is_some_and(|t| t > *before)
            })
        })
    });
    for (a, pid) in agents.iter().zip(&pids) {
        assert_eq!(
            pid_of(&a.home, "svc"),
            *pid,
            "the agent's process kept its pid"
        );
        assert!(alive(*pid as i32));
    }
    let via = list_via(&srv, "node-2");
    assert_eq!(via[0]["pid"].as_i64(), Some(pids[1]));
}

#[test]
fn a_server_whose_database_was_wiped_gets_every_agent_back() {
    let srv = server(None);
    let agents: Vec<Agent> = (1..=3)
        .map(|i| agent(&srv, &format!("box-{i}"), &srv.join))
        .collect();
    srv.wait_online(3);
    srv.home.kill_daemon();
    std::fs::remove_dir_all(srv.home.join("db")).expect("wipe the server's database");
    srv.home.opm(&["daemon", "restore"]).ok();
    // Every agent registers again by itself.
    srv.wait_online(3);
    let names: Vec<String> = srv
        .agents()
        .iter()
        .map(|a| a["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["box-1", "box-2", "box-3"]);
    drop(agents);
}

#[test]
fn disconnect_restores_standalone_and_keeps_the_processes_running() {
    let srv = server(None);
    let a = agent(&srv, "leaver", &srv.join);
    let pid = a.home.start("sleep 1000", "keep", &[])["pid"]
        .as_i64()
        .expect("pid");
    srv.wait_agent("leaver", "online");
    let daemon = a.home.daemon_pid().expect("daemon pid");

    let out = a.home.opm(&["agent", "disconnect"]).ok();
    assert!(out.stdout.contains("deregistered"), "{out}");
    assert!(
        srv.agent("leaver").is_none(),
        "the server forgot the agent at once"
    );
    let config = std::fs::read_to_string(a.home.join("config.toml")).expect("config");
    assert!(config.contains("role = \"standalone\""), "{config}");
    assert!(
        config.contains("# role: \"standalone\" (default)"),
        "comments are kept: {config}"
    );
    assert_eq!(a.home.daemon_pid(), Some(daemon), "the daemon kept running");
    assert_eq!(pid_of(&a.home, "keep"), pid);
    assert!(alive(pid as i32));
    let st = a.home.opm(&["agent", "status"]).ok();
    assert!(st.stdout.contains("not connected"), "{st}");
    // The agent API is closed: nothing answers on its port any more.
    assert!(
        TcpStream::connect(("127.0.0.1", a.api_port)).is_err(),
        "the agent API still listens"
    );
    // Standalone again, `--server` is no longer refused as an agent's.
    let out = a.home.opm(&["list", "--server", "nowhere"]).failed();
    assert!(!out.stderr.contains("Agent role"), "{out}");
    // And it survives a daemon restart as standalone.
    a.home.kill_daemon();
    a.home.opm(&["daemon", "restore"]).ok();
    let health = a.home.health();
    assert_eq!(health["role"], "standalone");
    assert_eq!(pid_of(&a.home, "keep"), pid);
}

#[test]
fn wrong_tokens_are_refused_at_registration_and_on_calls_to_agents() {
    let srv = server(Some(JOIN));
    let home = TestHome::new();
    let out = home
        .opm(&[
            "agent",
            "connect",
            &srv.url(),
            "--name",
            "intruder",
            "--token",
            "not-the-token",
            "--api-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .failed();
    assert!(out.stderr.contains("refused"), "{out}");
    assert!(srv.agents().is_empty());
    // The admin token never goes to an agent: joining with it is refused.
    let out = home
        .opm(&[
            "agent",
            "connect",
            &srv.url(),
            "--name",
            "admin-holder",
            "--token",
            TOKEN,
            "--api-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .failed();
    assert!(out.stderr.contains("admin token never leaves"), "{out}");
    assert!(srv.agents().is_empty());
    let health = home.health();
    assert_eq!(
        health["role"], "standalone",
        "a refused connect changes nothing"
    );

    // Agents join with the join token, which cannot control anything.
    let a = agent(&srv, "a", JOIN);
    let b = agent(&srv, "b", JOIN);
    b.home.start("sleep 1000", "secret-job", &[]);
    srv.wait_online(2);
    for (method, path, body) in [
        ("GET", "/daemon/agents/list", None),
        ("GET", "/daemon/agents/b/processes", None),
        (
            "POST",
            "/daemon/agents/b/action",
            Some(r#"{"id":"secret-job","action":"stop"}"#),
        ),
        ("GET", "/daemon/list", None),
    ] {
        let (status, text) = http(method, srv.port, path, &[("token", JOIN)], body);
        assert_eq!(status, 403, "{method} {path} with the join token: {text}");
    }
    assert_eq!(b.home.process("secret-job")["status"], "online");
    // One agent cannot beat or leave in another's name.
    let b_id = srv.agent("b").expect("b")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = http(
        "POST",
        srv.port,
        &format!("/daemon/agents/{b_id}/heartbeat"),
        &[("token", JOIN), ("agent-token", "guessed-agent-token-0000")],
        Some(r#"{"processes":[]}"#),
    );
    assert_eq!(status, 401);
    let (status, _) = http(
        "DELETE",
        srv.port,
        &format!("/daemon/agents/{b_id}"),
        &[("token", JOIN)],
        None,
    );
    assert_eq!(status, 401);
    assert!(srv.agent("b").is_some());

    // An agent's API answers only to its own token: not to none, a wrong one, or the server's.
    for headers in [
        vec![],
        vec![("token", "wrong")],
        vec![("token", TOKEN)],
        vec![("token", JOIN)],
    ] {
        let (status, _) = http("GET", a.api_port, "/daemon/list", &headers, None);
        assert_eq!(status, 401, "agent API with {headers:?}");
    }
    // The agent refuses the agent-management routes even with its... no token it
    // could show; the server's own call path works (the server holds the agent's token).
    assert_eq!(list_via(&srv, "b")[0]["name"], "secret-job");
    drop(a);
}

#[test]
fn the_server_follows_an_agents_log_live() {
    let srv = server(None);
    let a = agent(&srv, "streamer", &srv.join);
    a.home.start(
        "sh -c 'while true; do echo tick-$$-$(date +%s%N); sleep 0.2; done'",
        "ticker",
        &[],
    );
    let mut follow = srv.home.follow(&[
        "logs", "ticker", "--server", "streamer", "--follow", "--lines", "0",
    ]);
    let seen = follow
        .until("two live lines through the server", |seen| seen.len() >= 2)
        .to_vec();
    drop(follow);
    assert!(
        seen.iter().all(|l| l.starts_with("out | tick-")),
        "{seen:?}"
    );
    assert_ne!(seen[0], seen[1], "new lines, not one repeated");
    // Over HTTP the server relays the same stream; an unknown agent is a 404.
    let (status, _) = http(
        "GET",
        srv.port,
        "/daemon/agents/nobody/logs/ticker/stream",
        &[("token", TOKEN)],
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn an_agent_backs_off_while_its_server_is_down() {
    let srv = server(None);
    let a = agent(&srv, "patient", &srv.join);
    srv.wait_agent("patient", "online");
    srv.home.kill_daemon();
    // The server's port now takes connections and drops them: every
    // heartbeat fails, and the test sees when each one came.
    let listener = TcpListener::bind(("127.0.0.1", srv.port)).expect("take the server's port");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut attempts: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while attempts.len() < 4 {
        assert!(Instant::now() < deadline, "too few attempts: {attempts:?}");
        match listener.accept() {
            Ok((conn, _)) => drop(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => panic!("accept: {e}"),
        }
        // One attempt may open more than one connection at once.
        if attempts
            .last()
            .is_none_or(|t| t.elapsed() > Duration::from_millis(150))
        {
            attempts.push(Instant::now());
        }
    }
    let gaps: Vec<u128> = attempts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // Each failure doubles the wait (with jitter): two failures on, the gap
    // is well over twice as long. Retrying at the interval would keep it flat.
    assert!(
        gaps[2] >= 2 * gaps[0],
        "no backoff between attempts: {gaps:?} ms"
    );
    assert!(
        gaps.iter().all(|g| *g <= 31_000),
        "a wait passed the 30 s cap: {gaps:?} ms"
    );
    assert!(a.home.daemon_pid().is_some_and(alive), "the agent lives on");
}
