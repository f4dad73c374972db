//! The HTTP API over real TCP on 127.0.0.1 with security on: the token on
//! every route but `GET /health` (both header forms), the create → list →
//! action → logs round trip, bad input answered with a 4xx JSON error and
//! never a 5xx, the live log stream, a taken port, an empty token, and
//! tokens that never leak into answers or the daemon's log.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::http::{
    api_config, connect_tcp, head, host, open_head, tcp, tcp_with, unix, ApiHome, Auth,
};
use crate::common::{alive, free_port, unique, wait_until, TestHome};

/// Every route of the API (see `/openapi.json`) that a standalone or server
/// daemon serves over TCP, as (method, path template). `/daemon/stop` is
/// left out here: the test asks it last, once.
const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/daemon/list"),
    ("GET", "/daemon/info/{id}"),
    ("POST", "/daemon/create"),
    ("POST", "/daemon/action"),
    ("GET", "/daemon/logs/{id}"),
    ("GET", "/daemon/logs/{id}/stream"),
    ("GET", "/daemon/metrics"),
    ("GET", "/daemon/prometheus"),
    ("POST", "/daemon/agents/register"),
    ("POST", "/daemon/agents/{id}/heartbeat"),
    ("DELETE", "/daemon/agents/{id}"),
    ("GET", "/daemon/agents/list"),
    ("GET", "/daemon/agents/{id}/processes"),
    ("POST", "/daemon/agents/{id}/create"),
    ("POST", "/daemon/agents/{id}/action"),
    ("GET", "/daemon/agents/{id}/logs/{pid}"),
];

/// Reads only the status line and headers of an answer (for the endless stream).
fn status_of_head(port: u16, method: &str, path: &str, auth: Auth<'_>) -> (u16, String) {
    let (status, head, _) = open_head(
        connect_tcp(port).expect("connect"),
        &host(port),
        method,
        path,
        auth,
    );
    (status, head)
}

/// Every (method, path) to check: `API_ROUTES` and whatever /openapi.json adds.
fn route_list(api: &ApiHome) -> Vec<(String, String)> {
    let mut routes: Vec<(String, String)> = API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let doc = api.get("/openapi.json").expect(200).json();
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("/openapi.json has no paths: {doc}"));
    for (path, item) in paths {
        for method in item.as_object().into_iter().flat_map(|o| o.keys()) {
            let m = method.to_ascii_uppercase();
            // Routes the document marks as unix-socket-only are not served on TCP at all.
            let unix_only = item[method.as_str()]["x-opm-unix-socket-only"] == true;
            if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str())
                && !unix_only
                && !routes.iter().any(|(rm, rp)| rm == &m && rp == path)
            {
                routes.push((m, path.clone()));
            }
        }
    }
    routes
}

/// A template with its placeholders filled: process ids by `process`,
/// agent ids by a name no agent has.
fn fill(template: &str, process: &str) -> String {
    let agent_route = template.starts_with("/daemon/agents/");
    let mut out = String::new();
    for (i, seg) in template.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if seg.starts_with('{') && seg.ends_with('}') {
            if agent_route && (seg == "{id}" || seg == "{agent}") && !out.ends_with("/logs/") {
                out.push_str("no-such-agent");
            } else {
                out.push_str(process);
            }
        } else {
            out.push_str(seg);
        }
    }
    out
}

/// A body that the route accepts, or at least parses, with the right token.
fn body_for(method: &str, path: &str, n: usize) -> Option<Vec<u8>> {
    if method == "GET" || method == "DELETE" {
        return None;
    }
    let v = if path.ends_with("/create") {
        json!({ "script": "sleep 1000", "name": format!("auth-made-{n}") })
    } else if path.ends_with("/action") {
        json!({ "id": "authp", "action": "flush" })
    } else {
        json!({})
    };
    Some(serde_json::to_vec(&v).expect("a body"))
}

/// GET routes that must answer 200 with the right token (on a server).
fn must_succeed(method: &str, path: &str) -> bool {
    method == "GET" && !path.starts_with("/daemon/agents/") || path == "/daemon/agents/list"
}

#[test]
fn every_route_needs_the_token_in_either_header_form_but_health() {
    let api = ApiHome::start_as("server");
    let port = api.port;
    let token = api.token.clone();
    let wrong = format!("{token}x");
    api.post(
        "/daemon/create",
        &json!({ "script": "sleep 1000", "name": "authp" }),
    )
    .expect(201);
    let routes = route_list(&api);
    let mut n = 0;
    for (method, template) in &routes {
        if (method.as_str(), template.as_str()) == ("POST", "/daemon/stop") {
            continue;
        }
        let path = fill(template, "authp");
        let stream = path.ends_with("/stream");
        // The agent routes also want the agent's own token: send a (wrong) one
        // so that the only missing credential is the API token.
        let extra: &[(&str, &str)] = if path.starts_with("/daemon/agents/") {
            &[("agent-token", "not-an-agent")]
        } else {
            &[]
        };
        let denied: [(&str, Auth<'_>); 5] = [
            ("no token", Auth::None),
            ("a wrong token:", Auth::Token(&wrong)),
            ("a wrong Bearer", Auth::Bearer(&wrong)),
            ("an empty token:", Auth::Token("")),
            (
                "a prefix of the token",
                Auth::Bearer(&token[..token.len() - 1]),
            ),
        ];
        for (what, auth) in denied {
            n += 1;
            let body = body_for(method, &path, n);
            if template == "/health" {
                // Without a token only "up"; a wrong one is a wrong token.
                let r = tcp(port, method, &path, auth, None);
                if matches!(auth, Auth::None) {
                    assert_eq!(r.expect(200).json(), json!({ "status": "ok" }));
                } else {
                    r.expect_json_error(401);
                }
                continue;
            }
            if stream {
                let (status, text) = status_of_head(port, method, &path, auth);
                assert_eq!(status, 401, "{method} {path} with {what}: {text}");
                continue;
            }
            let r = tcp_with(port, method, &path, auth, extra, body.as_deref());
            assert_eq!(r.status, 401, "{method} {path} with {what}: {r}");
            r.expect_json_error(401);
        }
        // A Basic scheme, or a Bearer without a space, is no token either.
        for header in [format!("Basic {token}"), format!("Bearer{token}")] {
            if template == "/health" || stream {
                continue;
            }
            n += 1;
            let body = body_for(method, &path, n);
            let mut headers: Vec<(&str, &str)> = extra.to_vec();
            headers.push(("authorization", &header));
            let r = tcp_with(port, method, &path, Auth::None, &headers, body.as_deref());
            assert_eq!(
                r.status, 401,
                "{method} {path} with authorization {header:?}: {r}"
            );
        }
        for (what, auth) in [
            ("token:", Auth::Token(&token)),
            ("Authorization: Bearer", Auth::Bearer(&token)),
        ] {
            n += 1;
            // The agent routes here name an agent that does not exist (404).
            if stream && !path.starts_with("/daemon/agents/") {
                let (status, text) = status_of_head(port, method, &path, auth);
                assert_eq!(status, 200, "{method} {path} with {what}: {text}");
                assert!(text.contains("text/event-stream"), "{text}");
                continue;
            }
            let body = body_for(method, &path, n);
            let r = tcp_with(port, method, &path, auth, extra, body.as_deref());
            assert!(
                r.status != 401 && r.status != 403 && r.status < 500,
                "{method} {path} with the right token as {what}: {r}"
            );
            if must_succeed(method, &path) {
                assert_eq!(r.status, 200, "{method} {path} with {what}: {r}");
            }
            if path == "/daemon/create" {
                assert_eq!(r.status, 201, "{method} {path} with {what}: {r}");
            }
            if path == "/daemon/action" {
                assert_eq!(r.status, 200, "{method} {path} with {what}: {r}");
            }
        }
    }
    // Both header forms created their process.
    let names: Vec<String> = api
        .get("/daemon/list")
        .expect(200)
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    assert!(
        names.iter().filter(|n| n.starts_with("auth-made-")).count() >= 2,
        "{names:?}"
    );
    // The unix socket needs no token (its file mode guards it).
    unix(&api.home, "GET", "/daemon/list", None).expect(200);
    // The daemon's own stop: refused without the token, obeyed with it.
    let pid = api.daemon_pid();
    tcp(port, "POST", "/daemon/stop", Auth::None, Some(b"{}")).expect_json_error(401);
    tcp(
        port,
        "POST",
        "/daemon/stop",
        Auth::Token(&wrong),
        Some(b"{}"),
    )
    .expect_json_error(401);
    assert!(alive(pid as i32), "a refused stop must not stop the daemon");
    tcp(
        port,
        "POST",
        "/daemon/stop",
        Auth::Token(&token),
        Some(b"{}"),
    )
    .expect(200);
    wait_until(Duration::from_secs(10), "the daemon to stop", || {
        !alive(pid as i32)
    });
}

#[test]
fn create_list_act_and_read_logs_over_tcp() {
    let api = ApiHome::start();
    let mark = unique("rt");
    let created = api
        .post(
            "/daemon/create",
            &json!({
                "script": "echo out-$MARK; echo err-$MARK >&2; exec sleep 1000",
                "name": "rt",
                "env": { "MARK": mark },
            }),
        )
        .expect(201)
        .json();
    assert_eq!(created["name"], "rt", "{created}");
    let id = created["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {created}"));

    let online = api.wait_status("rt", "online");
    let pid1 = online["pid"].as_i64().expect("an online process has a pid") as i32;
    assert!(alive(pid1));
    let info = api.get("/daemon/info/rt").expect(200).json();
    assert_eq!(info["id"], id, "{info}");
    let by_id = api.get(&format!("/daemon/info/{id}")).expect(200).json();
    assert_eq!(by_id["name"], "rt", "{by_id}");

    let mut logs = Value::Null;
    wait_until(Duration::from_secs(10), "the lines in the logs", || {
        logs = api.get("/daemon/logs/rt?lines=10").expect(200).json();
        logs["out"]
            .as_array()
            .is_some_and(|a| a.iter().any(|l| l == &json!(format!("out-{mark}"))))
            && logs["err"]
                .as_array()
                .is_some_and(|a| a.iter().any(|l| l == &json!(format!("err-{mark}"))))
    });

    // stop by numeric id
    let r = api
        .post("/daemon/action", &json!({ "id": id, "action": "stop" }))
        .expect(200)
        .json();
    assert_eq!(r["action"], "stop", "{r}");
    api.wait_status("rt", "stopped");
    wait_until(
        Duration::from_secs(10),
        "the stopped process to exit",
        || !alive(pid1),
    );

    // flush while stopped: nothing writes to the logs meanwhile
    api.action("rt", "flush");
    let logs = api.get("/daemon/logs/rt?lines=10").expect(200).json();
    assert_eq!(logs["out"], json!([]), "{logs}");
    assert_eq!(logs["err"], json!([]), "{logs}");

    api.action("rt", "start");
    let p = api.wait_status("rt", "online");
    let pid2 = p["pid"].as_i64().expect("pid") as i32;
    assert_ne!(pid2, pid1);

    api.action("rt", "restart");
    let mut pid3 = pid2;
    wait_until(Duration::from_secs(10), "a new pid after restart", || {
        let p = api.find("rt").unwrap_or(Value::Null);
        pid3 = p["pid"].as_i64().unwrap_or(0) as i32;
        p["status"] == "online" && pid3 != pid2 && pid3 != 0
    });
    wait_until(Duration::from_secs(10), "the old pid to exit", || {
        !alive(pid2)
    });

    let removed = api.action("rt", "remove");
    assert_eq!(removed["removed"], json!([id]), "{removed}");
    assert!(api.find("rt").is_none(), "removed but still listed");
    api.get("/daemon/info/rt").expect_json_error(404);
    api.get("/daemon/logs/rt").expect_json_error(404);
    wait_until(
        Duration::from_secs(10),
        "the removed process to exit",
        || !alive(pid3),
    );
}

/// One bad request and the status it must get.
struct Bad {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
    status: u16,
}

fn bad(
    what: &'static str,
    method: &'static str,
    path: &str,
    body: Option<&str>,
    status: u16,
) -> Bad {
    Bad {
        what,
        method,
        path: path.to_string(),
        body: body.map(|b| b.as_bytes().to_vec()),
        status,
    }
}

#[test]
fn bad_input_gets_its_4xx_and_the_daemon_keeps_serving() {
    let api = ApiHome::start();
    api.post(
        "/daemon/create",
        &json!({ "script": "sleep 1000", "name": "keep" }),
    )
    .expect(201);
    let pid = api.daemon_pid();
    let over_limit = {
        let mut b = br#"{"script": "sleep 1000", "name": ""#.to_vec();
        b.resize(1024 * 1024 + 10, b'a');
        b.extend_from_slice(b"\"}");
        b
    };
    let mut cases = vec![
        bad(
            "malformed JSON",
            "POST",
            "/daemon/create",
            Some("{bad"),
            400,
        ),
        bad(
            "truncated JSON",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1"#),
            400,
        ),
        bad("an empty body", "POST", "/daemon/create", Some(""), 400),
        bad(
            "malformed JSON action",
            "POST",
            "/daemon/action",
            Some("{\"id\":"),
            400,
        ),
        bad(
            "an unknown field",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "bogus": 1}"#),
            422,
        ),
        bad(
            "an unknown field in an action",
            "POST",
            "/daemon/action",
            Some(r#"{"id": "keep", "action": "stop", "force": true}"#),
            422,
        ),
        bad(
            "a wrong type",
            "POST",
            "/daemon/create",
            Some(r#"{"script": 5}"#),
            422,
        ),
        bad(
            "a wrong type of env",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "env": ["A=1"]}"#),
            422,
        ),
        bad(
            "a wrong type of autorestart",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "autorestart": "yes"}"#),
            422,
        ),
        bad(
            "a missing script",
            "POST",
            "/daemon/create",
            Some(r#"{"name": "x"}"#),
            422,
        ),
        bad(
            "a wrong type of id",
            "POST",
            "/daemon/action",
            Some(r#"{"id": [1], "action": "stop"}"#),
            422,
        ),
        bad(
            "a missing action",
            "POST",
            "/daemon/action",
            Some(r#"{"id": "keep"}"#),
            422,
        ),
        bad(
            "an unknown id",
            "POST",
            "/daemon/action",
            Some(r#"{"id": 987654, "action": "stop"}"#),
            404,
        ),
        bad(
            "an unknown name",
            "POST",
            "/daemon/action",
            Some(r#"{"id": "nobody", "action": "restart"}"#),
            404,
        ),
        bad(
            "an unknown id for info",
            "GET",
            "/daemon/info/987654",
            None,
            404,
        ),
        bad(
            "an unknown name for info",
            "GET",
            "/daemon/info/nobody",
            None,
            404,
        ),
        bad(
            "an unknown id for logs",
            "GET",
            "/daemon/logs/987654",
            None,
            404,
        ),
        bad(
            "an unknown id for the stream",
            "GET",
            "/daemon/logs/987654/stream",
            None,
            404,
        ),
        bad(
            "an unknown action",
            "POST",
            "/daemon/action",
            Some(r#"{"id": "keep", "action": "explode"}"#),
            422,
        ),
        bad(
            "an invalid name with a space",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "name": "bad name"}"#),
            400,
        ),
        bad(
            "an invalid name with a slash",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "name": "../escape"}"#),
            400,
        ),
        bad(
            "an empty name",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "name": ""}"#),
            400,
        ),
        bad(
            "a name that reads as an id",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "name": "42"}"#),
            400,
        ),
        bad(
            "a name that reads as all",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "name": "all"}"#),
            400,
        ),
        bad(
            "a duplicate name",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "name": "keep"}"#),
            409,
        ),
        bad(
            "a duplicate name within one batch",
            "POST",
            "/daemon/create",
            Some(
                r#"[{"script": "sleep 1000", "name": "twin"}, {"script": "sleep 1000", "name": "twin"}]"#,
            ),
            409,
        ),
        bad(
            "an empty command",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "  "}"#),
            400,
        ),
        bad(
            "a relative cwd",
            "POST",
            "/daemon/create",
            Some(r#"{"script": "sleep 1000", "path": "relative/dir"}"#),
            400,
        ),
        bad("an unknown route", "GET", "/nope", None, 404),
        bad(
            "an unknown route under /daemon",
            "GET",
            "/daemon/nope",
            None,
            404,
        ),
        bad(
            "a route with an extra segment",
            "GET",
            "/daemon/list/extra",
            None,
            404,
        ),
        bad(
            "a bad lines query",
            "GET",
            "/daemon/logs/keep?lines=many",
            None,
            400,
        ),
    ];
    cases.push(Bad {
        what: "a body over 1 MiB to create",
        method: "POST",
        path: "/daemon/create".into(),
        body: Some(over_limit.clone()),
        status: 413,
    });
    cases.push(Bad {
        what: "a body over 1 MiB to action",
        method: "POST",
        path: "/daemon/action".into(),
        body: Some(over_limit),
        status: 413,
    });
    let mut failures = Vec::new();
    for case in &cases {
        let r = tcp(
            api.port,
            case.method,
            &case.path,
            Auth::Bearer(&api.token),
            case.body.as_deref(),
        );
        let json_error = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .is_some_and(|v| v["error"].as_str().is_some_and(|e| !e.is_empty()));
        if r.status != case.status || !json_error {
            failures.push(format!(
                "{} ({} {}): expected {} with a JSON error, got {r}",
                case.what, case.method, case.path, case.status
            ));
        }
        assert!(r.status < 500, "{}: a 5xx: {r}", case.what);
        // The daemon keeps serving, and it is the same daemon.
        assert_eq!(
            api.daemon_pid(),
            pid,
            "the daemon changed after {}",
            case.what
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing that was refused was created; what was there still runs.
    let list = api.get("/daemon/list").expect(200).json();
    let names: Vec<&str> = list
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["keep"], "{list}");
    api.wait_status("keep", "online");
    api.post(
        "/daemon/create",
        &json!({ "script": "sleep 1000", "name": "after" }),
    )
    .expect(201);
    api.wait_status("after", "online");
}

/// Reads server-sent events from `stream` until `want` is a `data:` line of
/// an `out` event, or `within` passes. Returns when it came.
fn wait_for_event(
    stream: &mut std::net::TcpStream,
    seen: &mut String,
    want: &str,
    within: Duration,
) -> Option<Instant> {
    let end = Instant::now() + within;
    let needle = format!("event:out\ndata:{want}\n");
    let mut buf = [0u8; 8192];
    loop {
        if normalize_sse(seen).contains(&needle) {
            return Some(Instant::now());
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(50))))
            .expect("set a read timeout");
        match stream.read(&mut buf) {
            Ok(0) => panic!("the stream ended: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the stream failed: {e}"),
        }
    }
}

/// SSE text without chunk framing noise: `field: value` → `field:value`.
fn normalize_sse(raw: &str) -> String {
    raw.replace("\r\n", "\n")
        .replace("event: ", "event:")
        .replace("data: ", "data:")
}

#[test]
fn a_printed_line_reaches_a_live_stream_client_within_a_second() {
    let api = ApiHome::start();
    let fifo = api.home.join("feed.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // The process echoes every line the test writes into the fifo.
    api.post(
        "/daemon/create",
        &json!({
            "script": format!("exec 3<>{0}; while IFS= read -r l <&3; do echo \"$l\"; done", fifo.display()),
            "name": "echoer",
        }),
    )
    .expect(201);
    api.wait_status("echoer", "online");
    let mut feed = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the fifo for writing");

    let mut stream = connect_tcp(api.port).expect("connect");
    stream
        .write_all(&head(
            &host(api.port),
            "GET",
            "/daemon/logs/echoer/stream",
            Auth::Token(&api.token),
            &[],
            None,
        ))
        .expect("ask for the stream");
    let mut seen = String::new();
    // The stream is live once a line written after it opened arrives.
    let mut live = false;
    for i in 0..50 {
        let warm = format!("warm-{i}");
        writeln!(feed, "{warm}").expect("write to the fifo");
        if wait_for_event(&mut stream, &mut seen, &warm, Duration::from_millis(200)).is_some() {
            live = true;
            break;
        }
    }
    assert!(live, "no line ever reached the stream: {seen:?}");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    for i in 0..5 {
        let probe = unique(&format!("probe{i}"));
        let sent = Instant::now();
        writeln!(feed, "{probe}").expect("write to the fifo");
        let got = wait_for_event(&mut stream, &mut seen, &probe, Duration::from_secs(5));
        let got = got.unwrap_or_else(|| panic!("{probe} never reached the stream: {seen:?}"));
        let took = got - sent;
        assert!(
            took < Duration::from_secs(1),
            "{probe} took {took:?} to reach the stream"
        );
    }
}

#[test]
fn a_taken_port_is_reported_by_health_and_the_daemon_log() {
    let home = TestHome::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    home.write_config(&api_config("standalone", port, "some-token-of-24-chars"));
    home.opm(&["daemon", "restore"]).ok();
    let health = home.health();
    assert!(health["api"].is_null(), "{health}");
    let error = health["api_error"].as_str().unwrap_or_default();
    let address = format!("127.0.0.1:{port}");
    assert!(
        error.contains(&address),
        "api_error must name {address}: {health}"
    );
    let log = std::fs::read_to_string(home.join("daemon.log")).expect("daemon.log");
    assert!(
        log.lines()
            .any(|l| l.contains(&address) && l.to_lowercase().contains("in use")),
        "daemon.log must say {address} is in use:\n{log}"
    );
    // The daemon still serves its unix socket.
    home.opm(&["start", "sleep 1000", "--name", "still"]).ok();
    assert_eq!(home.process("still")["status"], "online");
    drop(holder);
}

#[test]
fn a_short_token_is_a_config_error_at_start() {
    for token in ["   ", "short-token-15c"] {
        let home = TestHome::new();
        home.write_config(&api_config("standalone", free_port(), token));
        let out = home.opm(&["daemon", "restore"]).failed();
        assert!(
            out.stderr.contains("token is too short") && out.stderr.contains("16"),
            "the error must name the token and its minimum: {out}"
        );
        // The foreground daemon (as a service manager runs it) refuses too.
        let out = home.opm(&["daemon", "run"]).failed();
        assert!(out.stderr.contains("token"), "{out}");
        assert!(
            std::os::unix::net::UnixStream::connect(home.join("opm.sock")).is_err(),
            "no daemon may serve with a short token"
        );
        assert_eq!(home.daemon_pid().filter(|&p| alive(p)), None);
        assert!(home.marked_pids().is_empty(), "{:?}", home.marked_pids());
    }
}

#[test]
fn tokens_never_appear_in_answers_or_the_daemon_log() {
    let api = ApiHome::start();
    let token = api.token.clone();
    let wrong = unique("wrongtok");
    api.post(
        "/daemon/create",
        &json!({ "script": "sleep 1000", "name": "quiet" }),
    )
    .expect(201);
    api.wait_status("quiet", "online");
    let mut bodies = Vec::new();
    for path in [
        "/health",
        "/daemon/list",
        "/daemon/info/quiet",
        "/daemon/metrics",
        "/daemon/prometheus",
        "/openapi.json",
        "/daemon/dump",
        "/daemon/env/quiet",
        "/daemon/logs/quiet",
    ] {
        bodies.push((path.to_string(), api.get(path).text()));
        let r = tcp(api.port, "GET", path, Auth::Bearer(&wrong), None);
        bodies.push((format!("{path} (wrong token)"), r.text()));
        let r = tcp(api.port, "GET", path, Auth::Token(&wrong), None);
        bodies.push((format!("{path} (wrong token:)"), r.text()));
        bodies.push((
            format!("{path} (unix)"),
            unix(&api.home, "GET", path, None).text(),
        ));
    }
    for (what, out) in [
        (
            "daemon health",
            api.home.opm(&["daemon", "health"]).ok().stdout,
        ),
        (
            "daemon health json",
            api.home
                .opm(&["daemon", "health", "--format", "json"])
                .ok()
                .stdout,
        ),
        (
            "info",
            api.home
                .opm(&["info", "quiet", "--format", "json"])
                .ok()
                .stdout,
        ),
        ("list", api.home.opm(&["list"]).ok().stdout),
    ] {
        bodies.push((what.to_string(), out));
    }
    for (what, body) in &bodies {
        assert!(!body.is_empty(), "{what}: empty answer");
        assert!(!body.contains(&token), "{what} shows the token: {body}");
        assert!(
            !body.contains(&wrong),
            "{what} echoes a wrong token: {body}"
        );
    }
    // A restart of the daemon logs its start again: still no token.
    api.home.opm(&["daemon", "stop"]).ok();
    api.home.opm(&["daemon", "restore"]).ok();
    let log = std::fs::read_to_string(api.home.join("daemon.log")).expect("daemon.log");
    assert!(log.contains("API listening"), "{log}");
    assert!(!log.contains(&token), "daemon.log shows the token:\n{log}");
    assert!(
        !log.contains(&wrong),
        "daemon.log shows a wrong token:\n{log}"
    );
}

#[test]

fn the_bearer_scheme_is_case_insensitive() {
    let api = ApiHome::start();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let header = format!("{scheme} {}", api.token);
        let r = tcp_with(
            api.port,
            "GET",
            "/daemon/list",
            Auth::None,
            &[("authorization", &header)],
            None,
        );
        assert_eq!(r.status, 200, "authorization: {scheme} <token>: {r}");
    }
}
