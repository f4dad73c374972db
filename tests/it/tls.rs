//! TLS on every TCP link, on 127.0.0.1 with `[daemon.web.tls] enabled =
//! true`: a server and agents that talk only over TLS with pinned
//! certificates; stand-ins with another certificate refused by the agent,
//! the server and the CLI, each naming the fingerprint expected and the one
//! shown; plain HTTP to a TLS port failing at once; and a byte-logging relay
//! between agent and server that sees no token in clear.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::free_port;
use crate::common::roles::{agents_of, join_token_of};
use crate::common::{wait_until, TestHome, WAIT};

const TOKEN: &str = "server-token-for-tls-tests-0123456789";
const INTERVAL_MS: u64 = 400;
/// What "at once" means for a refused connection on a loaded machine: well
/// under the 10 s the server gives a handshake before it gives up.
const FAST: Duration = Duration::from_secs(5);

struct Server {
    home: TestHome,
    port: u16,
    join: String,
    fingerprint: String,
}

/// A TLS server on `port` (a new one when `None`).
fn tls_server(port: Option<u16>) -> Server {
    tls_server_with(port, "")
}

/// The same, with more lines for `[daemon.web]`.
fn tls_server_with(port: Option<u16>, web: &str) -> Server {
    let home = TestHome::new();
    let port = port.unwrap_or_else(free_port);
    home.write_config(&format!(
        "role = \"server\"\n[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {port}\n{web}\n\
         [daemon.web.secure]\nenabled = true\ntoken = \"{TOKEN}\"\n\
         [daemon.web.tls]\nenabled = true\n\
         [server]\nheartbeat_interval_ms = {INTERVAL_MS}\nheartbeat_grace_ms = {INTERVAL_MS}\n"
    ));
    home.opm(&["daemon", "restore"]).ok();
    let h = home.health();
    assert_eq!(
        h["api_url"],
        format!("https://127.0.0.1:{port}"),
        "the API is https: {h}"
    );
    let fingerprint = h["tls_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("a fingerprint in health: {h}"))
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let join = join_token_of(&home);
    Server {
        home,
        port,
        join,
        fingerprint,
    }
}

impl Server {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn agents(&self) -> Vec<serde_json::Value> {
        agents_of(&self.home)
    }
}

struct Agent {
    home: TestHome,
    api_port: u16,
}

/// An agent connected to `url` (trust on first use unless `pin`).
fn tls_agent(url: &str, name: &str, join: &str, pin: Option<&str>) -> (Agent, String) {
    let home = TestHome::new();
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    let mut args = vec![
        "agent",
        "connect",
        url,
        "--name",
        name,
        "--token",
        join,
        "--api-address",
        &api,
    ];
    if let Some(p) = pin {
        args.extend(["--fingerprint", p]);
    }
    let out = home.opm(&args).ok();
    (Agent { home, api_port }, out.stdout)
}

/// Sends `raw` to 127.0.0.1:`port` and reads the whole answer.
fn raw_exchange(port: u16, raw: &[u8]) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(raw).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    (String::from_utf8_lossy(&answer).into_owned(), t.elapsed())
}

#[test]
fn a_tls_server_and_its_agents_talk_only_over_tls_with_pinned_certificates() {
    let srv = tls_server(None);
    // Trust on first use: the agent prints and pins what the server shows.
    let (a1, out) = tls_agent(&srv.url(), "tls-1", &srv.join, None);
    assert!(
        out.contains(&format!("server certificate: {} (pinned)", srv.fingerprint)),
        "{out}"
    );
    // Pinned ahead of time, as `opm daemon health` on the server shows it.
    let (a2, _) = tls_agent(&srv.url(), "tls-2", &srv.join, Some(&srv.fingerprint));
    for a in [&a1, &a2] {
        let st = a.home.agent_status();
        assert_eq!(st["server_fingerprint"], srv.fingerprint.as_str(), "{st}");
        let h = a.home.health();
        assert_eq!(
            h["api_url"],
            format!("https://127.0.0.1:{}", a.api_port),
            "the agent's API speaks TLS to an https server: {h}"
        );
    }
    a1.home.start("sleep 1000", "job", &[]);
    wait_until(
        WAIT,
        "both agents online over TLS, tls-1 with its process",
        || {
            let list = srv.agents();
            list.len() == 2
                && list.iter().all(|a| a["status"] == "online")
                && list
                    .iter()
                    .any(|a| a["name"] == "tls-1" && a["processes"]["online"] == 1)
        },
    );
    for row in srv.agents() {
        assert!(
            row["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("https://127.0.0.1:")),
            "the server calls agents over https: {row}"
        );
    }
    // Heartbeats keep coming (over the pinned link).
    let before = a1.home.agent_status()["last_heartbeat_ms"]
        .as_u64()
        .expect("a heartbeat");
    wait_until(WAIT, "a later heartbeat", || {
        a1.home.agent_status()["last_heartbeat_ms"].as_u64() > Some(before)
    });

    // Control through the server: list, create, action, logs, live logs.
    let out = srv
        .home
        .opm(&["list", "--server", "tls-1", "--format", "json"])
        .ok();
    let via: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(via.len(), 1, "{via:?}");
    assert_eq!(via[0]["name"], "job");
    srv.home
        .opm(&[
            "start",
            "sh -c 'while true; do echo tick-$(date +%s%N); sleep 0.2; done'",
            "--name",
            "ticker",
            "--server",
            "tls-2",
        ])
        .ok();
    assert_eq!(a2.home.process("ticker")["status"], "online");
    srv.home.opm(&["stop", "job", "--server", "tls-1"]).ok();
    assert_eq!(a1.home.process("job")["status"], "stopped");

    let mut follow = srv.home.follow(&[
        "logs", "ticker", "--server", "tls-2", "--follow", "--lines", "0",
    ]);
    let seen = follow
        .until("two live lines over TLS", |seen| seen.len() >= 2)
        .to_vec();
    drop(follow);
    assert!(seen.iter().all(|l| l.contains("tick-")), "{seen:?}");

    // The CLI pins the server too.
    let out = TestHome::new()
        .opm(&[
            "list",
            "--server",
            &srv.url(),
            "--token",
            TOKEN,
            "--fingerprint",
            &srv.fingerprint,
            "--format",
            "json",
        ])
        .ok();
    assert!(out.stdout.trim_start().starts_with('['), "{out}");

    // A pin that does not match is refused at connect, naming both.
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let home = TestHome::new();
    let out = home
        .opm(&[
            "agent",
            "connect",
            &srv.url(),
            "--name",
            "tls-3",
            "--token",
            &srv.join,
            "--api-address",
            &format!("127.0.0.1:{}", free_port()),
            "--fingerprint",
            wrong,
        ])
        .failed();
    assert!(
        out.stderr.contains(wrong) && out.stderr.contains(&srv.fingerprint),
        "{out}"
    );
    assert_eq!(srv.agents().len(), 2, "the refused agent never registered");
}

#[test]
fn a_stand_in_with_another_certificate_is_refused_by_agent_server_and_cli() {
    let srv = tls_server(None);
    let (a1, _) = tls_agent(&srv.url(), "pin-1", &srv.join, None);
    wait_until(WAIT, "pin-1 online", || {
        srv.agents().iter().any(|a| a["status"] == "online")
    });
    let agent_fp = a1.home.health()["tls_fingerprint"]
        .as_str()
        .expect("the agent's fingerprint")
        .to_string();

    // The server calling an agent: another daemon, with its own
    // certificate, takes the agent's port.
    a1.home.opm(&["daemon", "stop"]).ok();
    let fake_agent = TestHome::new();
    fake_agent.write_config(&format!(
        "[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {}\n\
         [daemon.web.secure]\nenabled = true\ntoken = \"{TOKEN}\"\n[daemon.web.tls]\nenabled = true\n",
        a1.api_port
    ));
    fake_agent.opm(&["daemon", "restore"]).ok();
    let fake_fp = fake_agent.health()["tls_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    assert_ne!(fake_fp, agent_fp);
    let out = srv.home.opm(&["list", "--server", "pin-1"]).failed();
    assert!(
        out.stderr.contains(&fake_fp) && out.stderr.contains(&agent_fp),
        "the server names both fingerprints: {out}"
    );
    fake_agent.opm(&["daemon", "stop"]).ok();
    a1.home.opm(&["daemon", "restore"]).ok();
    wait_until(WAIT, "pin-1 back", || {
        a1.home.agent_status()["connected"] == true
    });

    // The agent: the server goes, another daemon with another certificate
    // answers at its address.
    srv.home.opm(&["daemon", "stop"]).ok();
    let fake = tls_server(Some(srv.port));
    assert_ne!(fake.fingerprint, srv.fingerprint);
    wait_until(WAIT, "the agent refuses the stand-in", || {
        a1.home.agent_status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&fake.fingerprint) && e.contains(&srv.fingerprint))
    });
    let log = std::fs::read_to_string(a1.home.join("agent.log")).expect("agent.log");
    assert!(
        log.contains(&fake.fingerprint) && log.contains("expected"),
        "{log}"
    );
    assert!(
        fake.agents().is_empty(),
        "nothing registered with the stand-in"
    );
    let out = a1.home.opm(&["agent", "status"]).ok();
    assert!(out.stdout.contains(&fake.fingerprint), "{out}");

    // The CLI, pinned to the real server, refuses the stand-in.
    let out = TestHome::new()
        .opm(&[
            "list",
            "--server",
            &fake.url(),
            "--token",
            TOKEN,
            "--fingerprint",
            &srv.fingerprint,
        ])
        .failed();
    assert!(
        out.stderr.contains(&fake.fingerprint) && out.stderr.contains(&srv.fingerprint),
        "{out}"
    );
    // Without a pin, a self-signed certificate is not trusted, and the
    // error says how to pin it.
    let out = TestHome::new()
        .opm(&["list", "--server", &fake.url(), "--token", TOKEN])
        .failed();
    assert!(
        out.stderr
            .contains(&format!("--fingerprint {}", fake.fingerprint)),
        "{out}"
    );
}

#[test]
fn plain_http_to_a_tls_port_fails_fast_on_both_sides() {
    let srv = tls_server(None);
    // A raw client gets a plain 400 that says what to do.
    let (answer, took) = raw_exchange(
        srv.port,
        format!(
            "GET /health HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n\r\n",
            srv.port
        )
        .as_bytes(),
    );
    // Fast: the server's handshake timeout (10 s) would be the slow way.
    assert!(took < FAST, "took {took:?}");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("use https://"),
        "{answer}"
    );
    // opm's client, pointed with http:// at the TLS port.
    let t = Instant::now();
    let out = TestHome::new()
        .opm(&[
            "list",
            "--server",
            &format!("http://127.0.0.1:{}", srv.port),
            "--token",
            TOKEN,
        ])
        .failed();
    assert!(t.elapsed() < FAST, "took {:?}", t.elapsed());
    assert!(out.stderr.contains("use https://"), "{out}");

    // The other way: https:// at a plain HTTP port.
    let plain = TestHome::new();
    let port = free_port();
    plain.write_config(&format!(
        "[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {port}\n\
         [daemon.web.secure]\nenabled = true\ntoken = \"{TOKEN}\"\n"
    ));
    plain.opm(&["daemon", "restore"]).ok();
    assert_eq!(plain.health()["tls_fingerprint"], serde_json::Value::Null);
    let t = Instant::now();
    let out = TestHome::new()
        .opm(&[
            "list",
            "--server",
            &format!("https://127.0.0.1:{port}"),
            "--token",
            TOKEN,
            "--fingerprint",
            &srv.fingerprint,
        ])
        .failed();
    assert!(t.elapsed() < FAST, "took {:?}", t.elapsed());
    assert!(out.stderr.contains("does not speak TLS"), "{out}");
}

/// Relays 127.0.0.1:returned-port to `to`, recording every byte both ways.
fn recording_relay(to: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<u8>>> = Default::default();
    let rec = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut into) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                let rec = rec.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        rec.lock().expect("lock").extend_from_slice(&buf[..n]);
                        if into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

#[test]
fn traffic_between_agent_and_server_carries_no_token_in_clear() {
    // Requests through the relay name its port in `Host`.
    let srv = tls_server_with(None, "allowed_hosts = [\"127.0.0.1\"]");
    let (relay, seen) = recording_relay(srv.port);
    let url = format!("https://127.0.0.1:{relay}");
    let (a, out) = tls_agent(&url, "quiet", &srv.join, None);
    assert!(out.contains(&srv.fingerprint), "{out}");
    wait_until(WAIT, "the agent online", || {
        srv.agents().iter().any(|a| a["status"] == "online")
    });
    let first = a.home.agent_status()["last_heartbeat_ms"]
        .as_u64()
        .expect("a heartbeat");
    wait_until(WAIT, "heartbeats through the relay", || {
        a.home.agent_status()["last_heartbeat_ms"].as_u64() > Some(first)
    });
    // The admin token through the same relay.
    TestHome::new()
        .opm(&[
            "list",
            "--server",
            &url,
            "--token",
            TOKEN,
            "--fingerprint",
            &srv.fingerprint,
        ])
        .ok();
    let bytes = seen.lock().expect("lock").clone();
    assert!(
        bytes.len() > 2000,
        "traffic went through: {} bytes",
        bytes.len()
    );
    assert_eq!(bytes.first(), Some(&0x16), "it starts with a TLS handshake");
    let text = String::from_utf8_lossy(&bytes);
    for secret in [
        srv.join.as_str(),
        TOKEN,
        "agent-token",
        "authorization",
        "heartbeat",
        "register",
    ] {
        assert!(
            !text
                .to_ascii_lowercase()
                .contains(&secret.to_ascii_lowercase()),
            "{secret:?} crossed the relay in clear"
        );
    }
}

#[test]
fn a_users_certificate_and_key_are_served_and_half_a_pair_is_refused() {
    let first = tls_server(None);
    let theirs = first.home.join("tls");
    // Another daemon serves the same certificate from the user's paths.
    let home = TestHome::new();
    let port = free_port();
    let web = format!(
        "[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {port}\n\
         [daemon.web.secure]\nenabled = true\ntoken = \"{TOKEN}\"\n"
    );
    home.write_config(&format!(
        "{web}[daemon.web.tls]\nenabled = true\ncert = \"{}\"\nkey = \"{}\"\n",
        theirs.join("cert.pem").display(),
        theirs.join("key.pem").display()
    ));
    home.opm(&["daemon", "restore"]).ok();
    assert_eq!(
        home.health()["tls_fingerprint"],
        first.fingerprint.as_str(),
        "the user's certificate is the one served"
    );
    assert!(
        !home.join("tls").exists(),
        "nothing is generated when the user brings a certificate"
    );
    let out = TestHome::new()
        .opm(&[
            "list",
            "--server",
            &format!("https://127.0.0.1:{port}"),
            "--token",
            TOKEN,
            "--fingerprint",
            &first.fingerprint,
            "--format",
            "json",
        ])
        .ok();
    assert!(out.stdout.trim_start().starts_with('['), "{out}");
    home.opm(&["daemon", "stop"]).ok();

    // A certificate without its key: the API says why it does not serve.
    home.write_config(&format!(
        "{web}[daemon.web.tls]\nenabled = true\ncert = \"{}\"\n",
        theirs.join("cert.pem").display()
    ));
    home.opm(&["daemon", "restore"]).ok();
    let h = home.health();
    assert_eq!(h["api"], serde_json::Value::Null, "{h}");
    assert!(
        h["api_error"]
            .as_str()
            .is_some_and(|e| e.contains("both cert and key")),
        "{h}"
    );
}
