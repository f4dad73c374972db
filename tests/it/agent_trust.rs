//! Agents as an attacker would try them, against real daemons on 127.0.0.1:
//! a join-token holder who tries to take over an agent by its id or name,
//! endpoints that point at a path or carry user info, a fake agent (a tiny
//! HTTP server in the test) that answers 100 MB, refuses the server or
//! never answers, a flood of registrations, a removed agent that keeps
//! beating, and a hostname made of newlines and escape codes. Each attack
//! fails, and the real agent stays online and in control.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::http::http;
use crate::common::roles::{agent, server, Server};
use crate::common::{free_port, peak_rss_kib};
use crate::common::{wait_until, TestHome, WAIT};

const ADMIN: &str = "server-token-for-tests-0123456789";

/// A registration body; `id` only when registering again.
fn register_body(name: &str, hostname: &str, endpoint: &str, id: Option<&str>) -> String {
    let mut v = json!({
        "name": name,
        "hostname": hostname,
        "endpoint": endpoint,
        "version": "test",
        "token": "fake-agent-api-token-0123456789",
        "processes": [],
    });
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v.to_string()
}

fn register(srv: &Server, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, text) = http(
        "POST",
        srv.port,
        "/daemon/agents/register",
        headers,
        Some(body),
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A fake agent: answers on 127.0.0.1 by path, until dropped.
struct FakeAgent {
    port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

impl FakeAgent {
    fn start() -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), connections.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        let s = s.clone();
                        std::thread::spawn(move || answer(conn, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeAgent {
            port,
            stop,
            connections,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `/daemon/list`: 100 MB of JSON-looking bytes with no length;
/// `/daemon/info/big`: a declared length of 100 MB; `/daemon/info/*`: 401;
/// `/daemon/logs/slow`: nothing, ever; `.../stream`: one endless line.
fn answer(mut conn: TcpStream, stop: &AtomicBool) {
    conn.set_nonblocking(false).ok();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    const HUNDRED_MB: usize = 100 * 1024 * 1024;
    let endless = |conn: &mut TcpStream, head: &str| {
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < HUNDRED_MB && !stop.load(Ordering::Relaxed) {
            if conn.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
        }
    };
    if path.starts_with("/daemon/list") {
        endless(
            &mut conn,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n[\"",
        );
    } else if path.starts_with("/daemon/info/big") {
        endless(
            &mut conn,
            &format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {HUNDRED_MB}\r\n\r\n"),
        );
    } else if path.starts_with("/daemon/info/") {
        let body = r#"{"error":"wrong token"}"#;
        let _ = conn.write_all(
            format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    } else if path.contains("/stream") {
        endless(
            &mut conn,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: ",
        );
    } else if path.starts_with("/daemon/logs/slow") {
        // Holds the connection, answering nothing, until the test ends.
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn hijack_by_id_and_by_name_is_refused_and_the_real_agent_stays_in_control() {
    let srv = server(None);
    let real = agent(&srv, "real", &srv.join);
    srv.wait_agent("real", "online");
    let row = srv.agent("real").expect("listed");
    let id = row["id"].as_str().expect("id").to_string();
    assert!(
        id.starts_with("ag-") && id.len() == 19,
        "the server assigned the id: {id}"
    );
    let endpoint = row["endpoint"].clone();
    let trap = FakeAgent::start();
    let join = bearer(&srv.join);
    let auth = [("authorization", join.as_str())];

    // By id: the join token is not the agent's credential.
    let (status, body) = register(
        &srv,
        &auth,
        &register_body("evil", "evil-host", &trap.endpoint(), Some(&id)),
    );
    assert_eq!(status, 401, "{body}");
    // With a guessed credential as well.
    let (status, body) = register(
        &srv,
        &[
            ("authorization", join.as_str()),
            ("agent-token", "guessed-credential-0123456789"),
        ],
        &register_body("real", "evil-host", &trap.endpoint(), Some(&id)),
    );
    assert_eq!(status, 401, "{body}");
    // By name: names are unique and only their agent can register under them.
    let (status, body) = register(
        &srv,
        &auth,
        &register_body("real", "evil-host", &trap.endpoint(), None),
    );
    assert_eq!(status, 409, "{body}");
    // A name shaped like an id, so as to shadow one: refused.
    let (status, body) = register(
        &srv,
        &auth,
        &register_body(&id, "evil-host", &trap.endpoint(), None),
    );
    assert_eq!(status, 400, "{body}");
    // Beating or leaving in its name.
    for (method, path, body) in [
        (
            "POST",
            format!("/daemon/agents/{id}/heartbeat"),
            Some(r#"{"processes":[]}"#),
        ),
        ("DELETE", format!("/daemon/agents/{id}"), None),
        ("DELETE", "/daemon/agents/real".to_string(), None),
    ] {
        let (status, text) = http(method, srv.port, &path, &auth, body);
        assert_eq!(status, 401, "{method} {path}: {text}");
    }

    // The real agent is untouched: same id, same endpoint, online, and the
    // administrator's create reaches it, not the trap.
    let row = srv.agent("real").expect("still listed");
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["endpoint"], endpoint);
    assert_eq!(srv.agents().len(), 1, "{:?}", srv.agents());
    let beat = row["last_seen_ms"].as_u64().expect("last seen");
    wait_until(WAIT, "the real agent's next heartbeat", || {
        srv.agent("real")
            .and_then(|r| r["last_seen_ms"].as_u64())
            .is_some_and(|t| t > beat)
    });
    srv.home
        .opm(&[
            "start",
            "sleep 1000",
            "--name",
            "via-server",
            "--server",
            "real",
        ])
        .ok();
    assert_eq!(real.home.process("via-server")["status"], "online");
    let st: Value = real.home.agent_status();
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["agent_id"], id.as_str());
    assert_eq!(
        trap.connections.load(Ordering::Relaxed),
        0,
        "the server never called the attacker's endpoint"
    );

    // A connect that fails (nothing listens there) leaves the link as it was.
    let dead = format!("http://127.0.0.1:{}", free_port());
    real.home
        .opm(&["agent", "connect", &dead, "--token", &srv.join])
        .failed();
    let beat = srv.agent("real").expect("listed")["last_seen_ms"]
        .as_u64()
        .expect("last seen");
    wait_until(WAIT, "heartbeats going on after the failed connect", || {
        srv.agent("real")
            .and_then(|r| r["last_seen_ms"].as_u64())
            .is_some_and(|t| t > beat)
    });
    let st: Value = real.home.agent_status();
    assert_eq!(st["server"], srv.url().as_str(), "{st}");
    srv.home
        .opm(&["stop", "via-server", "--server", "real"])
        .ok();
    assert_eq!(real.home.process("via-server")["status"], "stopped");
}

#[test]
fn an_endpoint_with_a_path_query_or_user_info_is_refused() {
    let srv = server(None);
    let join = bearer(&srv.join);
    for endpoint in [
        "http://127.0.0.1:9/evil",
        "http://127.0.0.1:9/daemon/create?",
        "http://user:pw@127.0.0.1:9",
        "http://127.0.0.1:9?x=1",
        "http://127.0.0.1:9#frag",
        "http://127.0.0.1",
        "ftp://127.0.0.1:9",
        "http://127.0.0.1:9\r\nx: y",
    ] {
        let (status, body) = register(
            &srv,
            &[("authorization", join.as_str())],
            &register_body("edge", "edge-host", endpoint, None),
        );
        assert_eq!(status, 400, "{endpoint:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("http://host:port")),
            "{body}"
        );
    }
    assert!(srv.agents().is_empty());
    // The plain form is accepted.
    let (status, body) = register(
        &srv,
        &[("authorization", join.as_str())],
        &register_body("edge", "edge-host", "http://127.0.0.1:9", None),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["credential"].as_str().is_some_and(|c| c.len() >= 32));
}

#[test]
fn a_huge_slow_or_refusing_agent_answer_is_a_502_and_the_server_stays_small() {
    let srv = server(None);
    let fake = FakeAgent::start();
    let join = bearer(&srv.join);
    let (status, body) = register(
        &srv,
        &[("authorization", join.as_str())],
        &register_body("fake", "fake-host", &fake.endpoint(), None),
    );
    assert_eq!(status, 200, "{body}");
    let admin = [("token", ADMIN)];
    let pid = srv.home.daemon_pid().expect("server pid");
    let before = peak_rss_kib(pid);

    // 100 MB with no length, then a declared 100 MB: both cut off.
    for path in [
        "/daemon/agents/fake/processes",
        "/daemon/agents/fake/info/big",
    ] {
        let t = Instant::now();
        let (status, text) = http("GET", srv.port, path, &admin, None);
        assert_eq!(status, 502, "{path}: {text}");
        let err: Value = serde_json::from_str(&text).expect("a JSON error");
        assert!(
            err["error"]
                .as_str()
                .is_some_and(|e| e.contains("answered more than")),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{path}");
    }
    let peak = peak_rss_kib(pid);
    println!("server peak RSS: {before} KiB before, {peak} KiB after two 100 MB answers");
    assert!(
        peak < 64 * 1024,
        "the server's peak RSS was {peak} KiB (before: {before} KiB)"
    );

    // The agent refusing the server is the server's problem: a 502, not a 401.
    let (status, text) = http("GET", srv.port, "/daemon/agents/fake/info/x", &admin, None);
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("refused the server's credentials"), "{text}");

    // An endless line in a live stream ends the relay with an error event.
    let (status, text) = http(
        "GET",
        srv.port,
        "/daemon/agents/fake/logs/x/stream",
        &admin,
        None,
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("event:error"),
        "{}",
        &text[..text.len().min(300)]
    );
    let peak = peak_rss_kib(pid);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB after the stream");

    // An agent that never answers: a 502 within the server's time limit.
    let t = Instant::now();
    let (status, text) = http(
        "GET",
        srv.port,
        "/daemon/agents/fake/logs/slow",
        &admin,
        None,
    );
    let took = t.elapsed();
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("within"), "{text}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "{took:?}"
    );
    // And the server still serves.
    srv.home.opm(&["agent", "list"]).ok();
}

#[test]
fn a_hundred_registrations_a_second_are_limited_and_capped() {
    // Default limits: the rate gives out long before a hundred.
    let srv = server(None);
    let join = bearer(&srv.join);
    let t = Instant::now();
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..100 {
        let (status, body) = register(
            &srv,
            &[("authorization", join.as_str())],
            &register_body(&format!("flood-{i}"), "flood", "http://127.0.0.1:9", None),
        );
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert!(
                    body["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("max_registrations_per_minute")),
                    "{body}"
                );
            }
            s => panic!("registration {i}: {s} {body}"),
        }
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "100 registrations took {took:?}"
    );
    // 60 a minute by default, as a burst, plus what refilled meanwhile.
    assert!(
        ok <= 60 + took.as_secs() + 1,
        "{ok} joined in {took:?}, limited {limited}"
    );
    assert!(limited >= 30, "{limited} limited");
    assert_eq!(srv.agents().len(), ok as usize);

    // A cap: with the rate raised, max_agents still holds.
    let capped = TestHome::new();
    let port = free_port();
    capped.write_config(&format!(
        "role = \"server\"\n[daemon.web]\napi = true\nport = {port}\n\
         [daemon.web.secure]\nenabled = true\ntoken = \"{ADMIN}\"\n\
         [server]\nmax_agents = 10\nmax_registrations_per_minute = 100000\n"
    ));
    capped.opm(&["daemon", "restore"]).ok();
    let capped = Server {
        join: crate::common::roles::join_token_of(&capped),
        home: capped,
        port,
    };
    let join = bearer(&capped.join);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..100 {
        let (status, _) = register(
            &capped,
            &[("authorization", join.as_str())],
            &register_body(&format!("many-{i}"), "many", "http://127.0.0.1:9", None),
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        [(200, 10), (403, 90)].into_iter().collect(),
        "{statuses:?}"
    );
    assert_eq!(capped.agents().len(), 10);
}

#[test]
fn a_removed_agent_gets_401_and_must_join_again() {
    let srv = server(None);
    let join = bearer(&srv.join);

    // Over HTTP: join, beat, be removed, then every credential call is a 401.
    let (status, joined) = register(
        &srv,
        &[("authorization", join.as_str())],
        &register_body("by-hand", "host", "http://127.0.0.1:9", None),
    );
    assert_eq!(status, 200, "{joined}");
    let id = joined["id"].as_str().expect("id").to_string();
    let credential = joined["credential"]
        .as_str()
        .expect("credential")
        .to_string();
    let beat = |headers: &[(&str, &str)]| {
        http(
            "POST",
            srv.port,
            &format!("/daemon/agents/{id}/heartbeat"),
            headers,
            Some(r#"{"processes":[]}"#),
        )
    };
    assert_eq!(beat(&[("agent-token", &credential)]).0, 200);
    // Registering again with its credential keeps its id and issues nothing new.
    let (status, again) = register(
        &srv,
        &[("agent-token", &credential)],
        &register_body("by-hand", "host2", "http://127.0.0.1:9", Some(&id)),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert!(again.get("credential").is_none(), "{again}");

    let out = srv.home.opm(&["agent", "remove", "by-hand"]).ok();
    assert!(out.stdout.contains("revoked"), "{out}");
    let (status, text) = beat(&[("agent-token", &credential)]);
    assert_eq!(status, 401, "{text}");
    // Even with the join token too: the id was removed, not forgotten.
    let (status, text) = beat(&[("agent-token", &credential), ("authorization", &join)]);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("removed"), "{text}");
    let (status, body) = register(
        &srv,
        &[("agent-token", &credential), ("authorization", &join)],
        &register_body("by-hand", "host", "http://127.0.0.1:9", Some(&id)),
    );
    assert_eq!(status, 401, "{body}");
    assert!(srv.agent("by-hand").is_none());
    // Joining again, as a new agent, works.
    let (status, body) = register(
        &srv,
        &[("authorization", join.as_str())],
        &register_body("by-hand", "host", "http://127.0.0.1:9", None),
    );
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["id"], id.as_str());

    // A real agent: removed, it says so in its status and log, and does not
    // come back by itself.
    let a = agent(&srv, "gone", &srv.join);
    srv.wait_agent("gone", "online");
    srv.home.opm(&["agent", "remove", "gone"]).ok();
    wait_until(WAIT, "the agent to know it was refused", || {
        let st: Value = a.home.agent_status();
        st["refused"] == true && st["connected"] == false
    });
    let st = a.home.opm(&["agent", "status"]).ok();
    assert!(st.stdout.contains("join again"), "{st}");
    let log = std::fs::read_to_string(a.home.join("agent.log")).expect("agent.log");
    assert!(log.contains("refused this agent"), "{log}");
    assert!(
        srv.agent("gone").is_none(),
        "it did not come back by itself"
    );
    let refusals = log.matches("refused this agent").count();
    assert!(
        refusals <= 2,
        "the agent backs off, it does not loop: {log}"
    );

    // It joins again with the join token.
    a.home
        .opm(&[
            "agent",
            "connect",
            &srv.url(),
            "--name",
            "gone",
            "--token",
            &srv.join,
        ])
        .ok();
    srv.wait_agent("gone", "online");
}

#[test]
fn control_characters_from_an_agent_are_refused_and_never_reach_logs_or_terminals() {
    let srv = server(None);
    let join = bearer(&srv.join);
    let forged = "host\n2026-01-01 00:00:00 agent_removed everyone\x1b[31m";
    for body in [
        register_body("ok-name", forged, "http://127.0.0.1:9", None),
        register_body("bad\nname", "host", "http://127.0.0.1:9", None),
        register_body("ok-name", "host", "http://127.0.0.1:9", None)
            .replace("\"test\"", "\"1.0\\u001b[2J\""),
    ] {
        let (status, answer) = register(&srv, &[("authorization", join.as_str())], &body);
        assert_eq!(status, 400, "{answer}");
        assert!(
            !answer.to_string().contains('\x1b'),
            "the refusal escapes what it quotes: {answer}"
        );
    }
    assert!(srv.agents().is_empty());
    // Process names in a heartbeat's summary are counted, never shown.
    let (status, joined) = register(
        &srv,
        &[("authorization", join.as_str())],
        &register_body("clean", "host", "http://127.0.0.1:9", None),
    );
    assert_eq!(status, 200, "{joined}");
    let credential = joined["credential"].as_str().expect("credential");
    let summary = json!({ "processes": [{
        "id": 0, "name": "x\n\x1b[31mred", "pid": null, "status": "online", "restarts": 0,
        "uptime_ms": 0, "cpu": 0.0, "memory": 0, "command": "sleep 1\x1b[2J", "cwd": "/",
        "autorestart": true, "desired": "running"
    }]});
    let (status, text) = http(
        "POST",
        srv.port,
        &format!(
            "/daemon/agents/{}/heartbeat",
            joined["id"].as_str().expect("id")
        ),
        &[("agent-token", credential)],
        Some(&summary.to_string()),
    );
    assert_eq!(status, 200, "{text}");
    let out = srv.home.opm(&["agent", "list"]).ok();
    assert!(
        out.stdout.contains("clean") && out.stdout.contains("1 online"),
        "{out}"
    );
    assert!(!out.stdout.contains('\x1b'), "{out}");
    let log = std::fs::read_to_string(srv.home.join("daemon.log")).expect("daemon.log");
    assert!(!log.contains('\x1b'), "{log}");
    assert!(!log.contains("agent_removed everyone"), "{log}");
}

#[test]
fn a_default_server_says_how_agents_join_and_one_does() {
    let srv_home = TestHome::new();
    let port = free_port();
    srv_home.write_config(&format!(
        "# my server\nrole = \"server\"\n[daemon.web]\nport = {port} # mine\n"
    ));
    let out = srv_home
        .opm(&["daemon", "restore", "--api", "--webui"])
        .ok();
    assert!(
        out.stdout.contains(&format!(
            "agents join with: opm agent connect http://127.0.0.1:{port} --name NAME --token JOIN"
        )),
        "{out}"
    );
    assert!(out.stdout.contains("join_token"), "{out}");
    let join = crate::common::roles::join_token_of(&srv_home);
    assert!(join.len() >= 64, "32 random bytes, in hex: {join}");
    assert!(
        !out.stdout.contains(&join),
        "the token itself is not printed"
    );
    let config = std::fs::read_to_string(srv_home.join("config.toml")).expect("config");
    assert!(
        config.contains("# my server") && config.contains("# mine"),
        "{config}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(srv_home.join("config.toml"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "config.toml holds the join token");
    let srv = Server {
        home: srv_home,
        port,
        join,
    };

    let a = TestHome::new();
    a.opm(&[
        "agent",
        "connect",
        &srv.url(),
        "--name",
        "my-agent",
        "--token",
        &srv.join,
        "--api-address",
        &format!("127.0.0.1:{}", free_port()),
    ])
    .ok();
    srv.wait_agent("my-agent", "online");
}
