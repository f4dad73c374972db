//! `/openapi.json` is kept in step with the routes: every path it lists is
//! routed (a request to it never gets the "no such route" 404 or a 405), and
//! every `warp::path!(...)` of `src/api/*.rs`, with its method, is in it.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::http::{connect_tcp, host, open_head, tcp, unix, ApiHome, Auth, Response};
use crate::common::{free_port, TestHome};

/// Routes that are pages, not JSON, and so stay out of `/openapi.json`.
/// Only static UI files may be listed here.
const UI_PAGES: &[(&str, &str)] = &[("GET", "/"), ("GET", "/ui/app.js"), ("GET", "/ui/app.css")];

/// The operation flag of a route that only the unix socket serves.
const UNIX_ONLY: &str = "x-opm-unix-socket-only";

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head"];

/// `/daemon/info/{id}` → `/daemon/info/{}`: placeholders compare equal whatever their name.
fn normalize(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The text of `warp::path!( ... )` starting at `open` (just after the `(`).
fn macro_body(text: &str, open: usize) -> Option<&str> {
    let mut depth = 1;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[open..open + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// `"daemon" / "info" / String` → `/daemon/info/{}`.
fn template_of(body: &str) -> String {
    let mut out = String::new();
    for seg in body.split('/').map(str::trim).filter(|s| !s.is_empty()) {
        out.push('/');
        match seg.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(lit) => out.push_str(lit),
            None => out.push_str("{}"),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Every (METHOD, template) that `warp::path!` declares in `src/api/*.rs`:
/// the method is the first `warp::get()`/`post()`/... after the macro and
/// before the next one.
fn source_routes() -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut routes = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read src/api")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    const MACRO: &str = "warp::path!(";
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        // Doc comments and `//` comments may mention the macro: skip them.
        let code: String = text
            .lines()
            .map(|l| match l.find("//") {
                Some(i) if !l[..i].contains('"') => &l[..i],
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let starts: Vec<usize> = code.match_indices(MACRO).map(|(i, _)| i).collect();
        for (k, &start) in starts.iter().enumerate() {
            let open = start + MACRO.len();
            let body = macro_body(&code, open)
                .unwrap_or_else(|| panic!("unclosed warp::path! in {}", file.display()));
            let template = template_of(body);
            let until = starts.get(k + 1).copied().unwrap_or(code.len());
            let after = &code[open..until];
            let method = METHODS
                .iter()
                .filter_map(|m| after.find(&format!("warp::{m}()")).map(|i| (i, *m)))
                .min()
                .map(|(_, m)| m.to_ascii_uppercase())
                .unwrap_or_else(|| {
                    panic!(
                        "no method filter after warp::path!({body}) in {}",
                        file.display()
                    )
                });
            let name = file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            routes.push((method, template, name));
        }
    }
    routes
}

/// Every (METHOD, path template) of the document, and whether it is unix-only.
fn documented(doc: &Value) -> Vec<(String, String, bool)> {
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths in /openapi.json: {doc}"));
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not an object"));
        for (method, op) in item {
            if METHODS.contains(&method.as_str()) {
                let unix_only = op[UNIX_ONLY].as_bool() == Some(true);
                out.push((method.to_ascii_uppercase(), path.clone(), unix_only));
            }
        }
    }
    out
}

/// A concrete path for a template: every placeholder an id nothing has.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "no-such-thing"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the daemon routed the request: neither "no such route" nor a 405.
fn routed(r: &Response) -> bool {
    let no_route = r.status == 404
        && serde_json::from_slice::<Value>(&r.body)
            .ok()
            .is_some_and(|v| v["error"] == "no such route");
    !no_route && r.status != 405
}

#[test]
fn the_source_scan_understands_warp_path_macros() {
    assert_eq!(
        template_of(r#""daemon" / "info" / String"#),
        "/daemon/info/{}"
    );
    assert_eq!(template_of(r#""openapi.json""#), "/openapi.json");
    assert_eq!(
        template_of(r#""daemon" / "agents" / String / "logs" / u64"#),
        "/daemon/agents/{}/logs/{}"
    );
    assert_eq!(
        normalize("/daemon/agents/{id}/logs/{pid}"),
        "/daemon/agents/{}/logs/{}"
    );
    let routes = source_routes();
    for expected in [
        ("GET", "/health"),
        ("GET", "/daemon/list"),
        ("POST", "/daemon/create"),
        ("GET", "/daemon/logs/{}/stream"),
    ] {
        assert!(
            routes
                .iter()
                .any(|(m, p, _)| (m.as_str(), p.as_str()) == expected),
            "the scan missed {expected:?}: {routes:?}"
        );
    }
}

#[test]
fn every_documented_path_is_routed() {
    let api = ApiHome::start_as("server");
    let doc = api.get("/openapi.json").expect(200).json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not OpenAPI 3: {}",
        doc["openapi"]
    );
    let ops = documented(&doc);
    assert!(ops.len() >= 10, "too few operations: {ops:?}");
    let mut failures = Vec::new();
    let mut last = Vec::new();
    for (method, template, unix_only) in &ops {
        let path = concrete(template);
        // Stopping the daemon is tried last, once.
        if template == "/daemon/stop" {
            last.push((method.clone(), path));
            continue;
        }
        // The events stream never ends when it is routed: its head says so.
        if template == "/daemon/events/stream" {
            let socket = std::os::unix::net::UnixStream::connect(api.home.join("opm.sock"))
                .expect("connect to the socket");
            let (on_unix, ..) = open_head(socket, "localhost", method, &path, Auth::None);
            let tcp_stream = connect_tcp(api.port).expect("connect over TCP");
            let (on_tcp, ..) = open_head(
                tcp_stream,
                &host(api.port),
                method,
                &path,
                Auth::Bearer(&api.token),
            );
            if on_unix != 200 || on_tcp != 200 {
                failures.push(format!(
                    "{method} {template}: {on_unix} on the socket, {on_tcp} over TCP"
                ));
            }
            continue;
        }
        let body: Option<&[u8]> =
            matches!(method.as_str(), "POST" | "PUT" | "PATCH").then_some(b"{}");
        let on_unix = unix(&api.home, method, &path, body);
        if !routed(&on_unix) {
            failures.push(format!("{method} {template} on the unix socket: {on_unix}"));
        }
        let on_tcp = tcp(api.port, method, &path, Auth::Bearer(&api.token), body);
        if *unix_only && routed(&on_tcp) {
            failures.push(format!(
                "{method} {template} is unix-socket only but TCP routes it: {on_tcp}"
            ));
        }
        if !unix_only && !routed(&on_tcp) {
            failures.push(format!("{method} {template} over TCP: {on_tcp}"));
        }
    }
    let unix_only = ops.iter().filter(|(_, _, u)| *u).count();
    assert!(
        unix_only >= 3,
        "agent status, connect and disconnect are unix-socket only: {ops:?}"
    );
    for (method, path) in last {
        let r = tcp(
            api.port,
            &method,
            &path,
            Auth::Token(&api.token),
            Some(b"{}"),
        );
        if !routed(&r) {
            failures.push(format!("{method} {path} over TCP: {r}"));
        }
    }
    assert!(
        failures.is_empty(),
        "documented but not routed:\n{}",
        failures.join("\n")
    );
}

#[test]

fn every_route_in_the_source_is_documented() {
    let api = ApiHome::start();
    let doc = api.get("/openapi.json").expect(200).json();
    let documented: BTreeSet<(String, String)> = documented(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, normalize(&p)))
        .collect();
    let ui: BTreeSet<(String, String)> = UI_PAGES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let mut missing = Vec::new();
    for (method, template, file) in source_routes() {
        let key = (method.clone(), template.clone());
        if !documented.contains(&key) && !ui.contains(&key) {
            missing.push(format!("{method} {template} (src/api/{file})"));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json:\n{}",
        missing.join("\n")
    );
    // The exceptions are pages, never JSON: with the UI on, each is served.
    let web = TestHome::new();
    let port = free_port();
    web.write_config(&format!(
        "[daemon.web]\nui = true\naddress = \"127.0.0.1\"\nport = {port}\n"
    ));
    web.opm(&["daemon", "restore"]).ok();
    for (method, path) in UI_PAGES {
        let r = tcp(port, method, path, Auth::None, None);
        assert_eq!(r.status, 200, "{method} {path} with the UI on: {r}");
        let ctype = r.header("content-type").unwrap_or_default();
        assert!(
            !ctype.is_empty() && !ctype.contains("json"),
            "{method} {path} is listed as a UI page but answers {ctype:?}"
        );
    }
}
