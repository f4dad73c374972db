//! Safe by default, tried as an attacker would against a real daemon on
//! 127.0.0.1: TCP is never open without a token (one is generated), a web
//! page cannot drive the API (content type, `Origin`, `Host`), wrong tokens
//! are rate-limited per peer, `0.0.0.0` without a token is refused at start,
//! the home is private to its owner, and opm's token variables reach
//! neither the daemon's nor a child's environment.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::http::{host, tcp, tcp_with, unix, Auth, Response};
use crate::common::{
    environ, free_port, needs, pid_of, require, run, unique, wait_until, Output, TestHome,
};

/// A daemon serving the API on a free port of 127.0.0.1 with the config
/// `extra` (below `[daemon.web]`'s address and port) and `opm daemon
/// restore ARGS`; returns its port and the restore output.
fn daemon_with(home: &TestHome, web_extra: &str, restore: &[&str]) -> (u16, Output) {
    let port = free_port();
    home.write_config(&format!(
        "[daemon.web]\naddress = \"127.0.0.1\"\nport = {port}\n{web_extra}"
    ));
    let mut args = vec!["daemon", "restore"];
    args.extend_from_slice(restore);
    let out = home.opm(&args).ok();
    let health = home.health();
    assert_eq!(
        health["api"].as_str(),
        Some(format!("127.0.0.1:{port}").as_str()),
        "the API must serve: {health}"
    );
    (port, out)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn names(home: &TestHome) -> Vec<String> {
    home.list()
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_daemon_whose_config_set_no_token_generates_one_and_says_where() {
    let home = TestHome::new();
    let (port, out) = daemon_with(&home, "", &["--api", "--webui"]);
    let config = home.join("config.toml");
    assert!(
        out.stdout
            .contains(&format!("token: in {}", config.display()))
            && out.stdout.contains("opm daemon token"),
        "restore must say where the token is: {out}"
    );
    let token = home.token();
    assert_eq!(token.len(), 64, "32 random bytes as hex: {token}");
    assert_eq!(token, home.token(), "printed again, not generated again");
    let text = std::fs::read_to_string(&config).expect("config.toml");
    assert!(text.contains(&token), "{text}");
    assert_eq!(mode(&config), 0o600, "config.toml holds the token");
    assert_eq!(mode(&home.join("opm.sock")), 0o600);
    let health = home.opm(&["daemon", "health"]).ok();
    assert!(health.stdout.contains("opm daemon token"), "{health}");
    assert!(
        !health.stdout.contains(&token),
        "health never prints it: {health}"
    );
    let log = std::fs::read_to_string(home.join("daemon.log")).expect("daemon.log");
    assert!(!log.contains(&token), "daemon.log never shows it:\n{log}");

    // Without the token: 401 and no data; /health says only that it is up.
    let r = tcp(port, "GET", "/daemon/list", Auth::None, None);
    r.clone().expect_json_error(401);
    let r = tcp(port, "GET", "/health", Auth::None, None).expect(200);
    assert_eq!(r.json(), json!({ "status": "ok" }), "{r}");
    for secret in ["pid", "version", "home", "server"] {
        assert!(!r.text().contains(secret), "{secret} in {r}");
    }
    // With it, everything as before.
    tcp(port, "GET", "/daemon/list", Auth::Bearer(&token), None).expect(200);
    let h = tcp(port, "GET", "/health", Auth::Token(&token), None)
        .expect(200)
        .json();
    assert!(h["pid"].is_number() && h["home"].is_string(), "{h}");
    // The unix socket keeps its full answer without a token.
    let h = unix(&home, "GET", "/health", None).expect(200).json();
    assert!(h["pid"].is_number(), "{h}");
}

#[test]
fn a_cross_origin_text_plain_create_starts_nothing() {
    let home = TestHome::new();
    let (port, _) = daemon_with(&home, "api = true\n", &[]);
    let token = home.token();
    let name = unique("csrf");
    let body = json!({ "script": "sleep 1000", "name": name }).to_string();
    let evil = ("origin", "http://evil.example");
    // What a page can send without a preflight: text/plain, its own origin,
    // no token. Then the same with the token, to show each guard holds alone.
    // (what, credential, headers, the status it gets)
    type Try<'a> = (&'a str, Auth<'a>, Vec<(&'a str, &'a str)>, u16);
    let tries: [Try<'_>; 5] = [
        (
            "a page's simple POST",
            Auth::None,
            vec![("content-type", "text/plain"), evil],
            403,
        ),
        (
            "text/plain with the token",
            Auth::Bearer(&token),
            vec![("content-type", "text/plain;charset=UTF-8")],
            415,
        ),
        (
            "a form with the token",
            Auth::Bearer(&token),
            vec![("content-type", "application/x-www-form-urlencoded")],
            415,
        ),
        (
            "JSON from another origin with the token",
            Auth::Bearer(&token),
            vec![("content-type", "application/json"), evil],
            403,
        ),
        (
            "JSON with the token from origin null",
            Auth::Bearer(&token),
            vec![("content-type", "application/json"), ("origin", "null")],
            403,
        ),
    ];
    for (what, auth, headers, status) in tries {
        let r = tcp_with(
            port,
            "POST",
            "/daemon/create",
            auth,
            &headers,
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, status, "{what}: {r}");
        r.expect_json_error(status);
    }
    assert!(!names(&home).contains(&name), "nothing was created");
    // The daemon's own origin, with JSON and the token, is how the web UI creates.
    let own = format!("http://{}", host(port));
    let r = tcp_with(
        port,
        "POST",
        "/daemon/create",
        Auth::Bearer(&token),
        &[("origin", &own)],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 201, "{r}");
    assert!(names(&home).contains(&name));
}

#[test]
fn a_forged_host_gets_403_and_no_data() {
    let home = TestHome::new();
    let (port, _) = daemon_with(
        &home,
        "api = true\nallowed_hosts = [\"opm.example.com\"]\n",
        &[],
    );
    let token = home.token();
    let name = unique("secret-job");
    home.start("sleep 1000", &name, &[]);
    let get = |h: &str| {
        tcp_with(
            port,
            "GET",
            "/daemon/list",
            Auth::Bearer(&token),
            &[("host", h)],
            None,
        )
    };
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    for forged in [
        format!("rebind.example:{port}"),
        "rebind.example".to_string(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("10.1.2.3:{port}"),
    ] {
        let r = get(&forged);
        assert_eq!(r.status, 403, "Host {forged}: {r}");
        assert!(!r.text().contains(&name), "no data for Host {forged}: {r}");
        assert!(r.text().contains("allowed_hosts"), "says how to fix: {r}");
    }
    for good in [
        host(port),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "opm.example.com".to_string(),
    ] {
        let r = get(&good);
        assert_eq!(r.status, 200, "Host {good}: {r}");
        assert!(r.text().contains(&name));
    }
}

#[test]
fn wrong_tokens_are_limited_per_peer_and_the_right_one_is_not_slowed() {
    let home = TestHome::new();
    let (port, _) = daemon_with(&home, "api = true\n", &[]);
    let token = home.token();
    let right = || tcp(port, "GET", "/daemon/list", Auth::Bearer(&token), None);
    // A user who mistypes a few times and then gets it right is not held.
    for _ in 0..2 {
        for _ in 0..9 {
            tcp(
                port,
                "GET",
                "/daemon/list",
                Auth::Bearer("wrong-token-0123456789"),
                None,
            )
            .expect(401);
        }
        right().expect(200);
    }
    let start = Instant::now();
    for _ in 0..20 {
        right().expect(200);
    }
    let per_request = start.elapsed() / 20;
    assert!(per_request < Duration::from_millis(100), "{per_request:?}");
    // A guesser: ten wrong tokens, then 429 with Retry-After, whatever it sends.
    for i in 0..10 {
        let r = tcp(
            port,
            "GET",
            "/daemon/list",
            Auth::Token(&format!("guess-{i}-0123456789")),
            None,
        );
        assert_eq!(r.status, 401, "guess {i}: {r}");
    }
    let r = tcp(
        port,
        "GET",
        "/daemon/list",
        Auth::Token("guess-10-0123456789"),
        None,
    );
    assert_eq!(r.status, 429, "{r}");
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a 429 says when to come back: {r}"));
    assert!((1..=60).contains(&wait), "{wait}");
    // The right token from the locked address waits too (else a right guess
    // would still stand out), and the count is per address: the unix socket
    // and requests without a token are not affected.
    assert_eq!(right().status, 429);
    unix(&home, "GET", "/daemon/list", None).expect(200);
    tcp(port, "GET", "/health", Auth::None, None).expect(200);
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_at_start() {
    // Refused before any socket is bound, so 0.0.0.0 is never listened on.
    let home = TestHome::new();
    home.write_config(
        "[daemon.web]\napi = true\naddress = \"0.0.0.0\"\nport = 9876\n[daemon.web.secure]\nenabled = false\n",
    );
    let out = home.opm(&["daemon", "restore"]).failed();
    assert!(
        out.stderr.contains("not a loopback address") && out.stderr.contains("enabled = false"),
        "the error says what is wrong and how to fix it: {out}"
    );
    // The same when only the flag turns the API on: the daemon refuses.
    home.write_config(
        "[daemon.web]\naddress = \"0.0.0.0\"\nport = 9876\n[daemon.web.secure]\nenabled = false\n",
    );
    let out = home.opm(&["daemon", "restore", "--api"]).failed();
    assert!(out.stderr.contains("not a loopback address"), "{out}");
    assert!(
        std::os::unix::net::UnixStream::connect(home.join("opm.sock")).is_err(),
        "no daemon serves"
    );
    // Without the API the same file is fine (nothing is served on TCP).
    home.opm(&["daemon", "restore"]).ok();
    home.opm(&["daemon", "stop"]).ok();

    // With the token on but none set, a token is not made up behind the
    // user's back for a port the network can reach: start is refused until
    // `opm daemon token` has made one and shown it.
    home.write_config("[daemon.web]\napi = true\naddress = \"0.0.0.0\"\nport = 9876\n");
    let out = home.opm(&["daemon", "restore"]).failed();
    assert!(
        out.stderr.contains("no token is set") && out.stderr.contains("opm daemon token"),
        "the error says how to get a token: {out}"
    );
    assert!(
        std::os::unix::net::UnixStream::connect(home.join("opm.sock")).is_err(),
        "no daemon serves"
    );
    let token = home
        .opm(&["daemon", "token"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(token.len() >= 32, "a generated token: {token:?}");
    let config = std::fs::read_to_string(home.join("config.toml")).expect("config.toml");
    assert!(config.contains(&token), "the token is stored: {config}");
    // (Not started now: tests listen on 127.0.0.1 only.)
}

#[test]
fn token_off_on_loopback_works_without_a_token_with_a_warning() {
    // The role system's documented token-less use: a server on loopback, read with curl.
    let home = TestHome::new();
    let port = free_port();
    home.write_config(&format!(
        "role = \"server\"\n[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {port}\n[daemon.web.secure]\nenabled = false\n"
    ));
    let out = home.opm(&["daemon", "restore", "--api", "--webui"]).ok();
    assert!(
        out.stdout.contains("⚠") && out.stdout.contains("enabled = false"),
        "restore warns: {out}"
    );
    let health = home.opm(&["daemon", "health"]).ok();
    assert!(
        health.stdout.contains("warning:") && health.stdout.contains("no token"),
        "{health}"
    );
    let h = home.health();
    assert_eq!(h["warnings"].as_array().map(Vec::len), Some(1), "{h}");
    let curl = |path: &str| {
        tcp_with(
            port,
            "GET",
            path,
            Auth::None,
            &[("host", &format!("localhost:{port}"))],
            None,
        )
    };
    assert_eq!(curl("/daemon/agents/list").expect(200).json(), json!([]));
    curl("/daemon/list").expect(200);
    assert!(curl("/health").expect(200).json()["pid"].is_number());
    // The browser guard still holds.
    let r = tcp_with(
        port,
        "POST",
        "/daemon/create",
        Auth::None,
        &[("content-type", "text/plain")],
        Some(br#"{"script": "sleep 1000", "name": "nope"}"#),
    );
    assert_eq!(r.status, 415, "{r}");
    assert!(!names(&home).contains(&"nope".to_string()));
    home.opm(&["daemon", "token"]).failed();

    // `opm agent connect URL --name my-agent`, without a token.
    let agent = TestHome::new();
    let agent_port = free_port();
    agent
        .opm(&[
            "agent",
            "connect",
            &format!("http://127.0.0.1:{port}"),
            "--name",
            "my-agent",
            "--api-address",
            &format!("127.0.0.1:{agent_port}"),
        ])
        .ok();
    let agents = curl("/daemon/agents/list").expect(200).json();
    assert_eq!(agents[0]["name"], "my-agent", "{agents}");
    assert_eq!(agents[0]["status"], "online", "{agents}");
    // Disconnect rewrites the agent's config.toml: it stays 0600.
    agent.opm(&["agent", "disconnect"]).ok();
    assert_eq!(agent.health()["role"], "standalone");
    assert_eq!(mode(&agent.join("config.toml")), 0o600);
}

#[test]
fn an_agent_without_the_token_of_a_server_that_wants_one_is_told_how_to_get_it() {
    let server = TestHome::new();
    let (port, _) = daemon_with(&server, "", &["--api"]);
    std::fs::write(
        server.join("config.toml"),
        std::fs::read_to_string(server.join("config.toml"))
            .expect("config.toml")
            .replacen("[daemon.web]", "role = \"server\"\n[daemon.web]", 1),
    )
    .expect("role = server");
    server.opm(&["daemon", "stop"]).ok();
    server.opm(&["daemon", "restore"]).ok();
    let agent = TestHome::new();
    let out = agent
        .opm(&[
            "agent",
            "connect",
            &format!("http://127.0.0.1:{port}"),
            "--api-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .failed();
    assert!(
        out.stderr.contains("opm daemon token --join") && out.stderr.contains("--token-file"),
        "{out}"
    );
    assert_eq!(agent.health()["role"], "standalone");
}

/// Runs `sh -c SCRIPT` as the unprivileged user nobody (65534). `None`
/// when this machine cannot switch users (not root, or no setpriv): then the
/// test says why, and fails under CI.
fn as_nobody(script: &str) -> Option<Output> {
    let needs = needs()
        .root("reading as another user needs root")
        .tool("setpriv", "util-linux");
    if !require(needs.done()) {
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        script,
    ]);
    Some(run(cmd))
}

#[test]
fn a_home_created_0755_becomes_private_and_another_user_reads_no_token() {
    let home = TestHome::new();
    let token = unique("user-set-token");
    let port = free_port();
    home.write_config(&format!(
        "[daemon.web]\napi = true\nport = {port}\n[daemon.web.secure]\ntoken = \"{token}\"\n"
    ));
    for p in [home.path().to_path_buf(), home.join("config.toml")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // The attack works on such a home before the daemon starts…
    let before = as_nobody(&format!("cat '{}'", home.join("config.toml").display()));
    if let Some(out) = &before {
        assert!(
            out.stdout.contains(&token),
            "the test must be able to fail: {out}"
        );
    }
    home.opm(&["daemon", "restore"]).ok();
    home.start("sleep 1000", "job", &["--env", &format!("SECRET={token}")]);
    assert_eq!(mode(home.path()), 0o700);
    assert_eq!(mode(&home.join("config.toml")), 0o600);
    assert_eq!(mode(&home.join("db")), 0o700);
    let log = std::fs::read_to_string(home.join("daemon.log")).expect("daemon.log");
    assert!(log.contains("made the home private"), "{log}");
    // …and not after: nobody reads no file of the home.
    let Some(out) = as_nobody(&format!(
        "cd '{0}' 2>&1; cat '{0}/config.toml' 2>&1; grep -rl '{1}' '{0}' 2>&1; ls '{0}' 2>&1",
        home.path().display(),
        token
    )) else {
        return;
    };
    assert!(!out.stdout.contains(&token), "{out}");
    assert!(out.stdout.contains("Permission denied"), "{out}");
}

#[test]
fn a_home_owned_by_another_user_is_refused() {
    if !require(
        needs()
            .root("giving a folder to another user needs root")
            .done(),
    ) {
        return;
    }
    let home = TestHome::new();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).expect("chown");
    let out = home.opm(&["daemon", "restore"]).failed();
    assert!(
        out.stderr.contains("belongs to") && out.stderr.contains("OPM_HOME"),
        "says whose it is and what to do: {out}"
    );
    assert_eq!(std::fs::metadata(home.path()).expect("stat").uid(), 65534);
    std::os::unix::fs::chown(home.path(), Some(0), Some(0)).expect("chown back");
}

#[test]
fn no_token_reaches_the_daemon_or_a_child_environment() {
    let home = TestHome::new();
    let secrets = [
        ("OPM_TOKEN", unique("admin-secret")),
        ("OPM_SERVER_TOKEN", unique("join-secret")),
    ];
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The CLI, with the secrets in its environment, starts the daemon and a child.
    home.opm_env(&["start", "sleep 1000", "--name", "child"], &env)
        .ok();
    let child = pid_of(&home.process("child"));
    let daemon = home.daemon_pid().expect("daemon.pid");
    let leaks = |pid: i32| {
        let env = environ(pid).unwrap_or_else(|| panic!("environ of {pid}"));
        assert!(env.iter().any(|e| e == home.marker()), "the right process");
        env.into_iter()
            .filter(|e| {
                secrets
                    .iter()
                    .any(|(k, v)| e.starts_with(k) || e.contains(v.as_str()))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(leaks(daemon), Vec::<String>::new(), "daemon {daemon}");
    assert_eq!(leaks(child), Vec::<String>::new(), "child {child}");
    home.opm(&["daemon", "stop"]).ok();

    // A daemon run in the foreground (as a service manager would) with them set.
    let mut cmd = home.command(&["daemon", "run"]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut fg = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon run");
    wait_until(
        Duration::from_secs(10),
        "the foreground daemon's socket",
        || std::os::unix::net::UnixStream::connect(home.join("opm.sock")).is_ok(),
    );
    let pid = fg.id() as i32;
    assert_eq!(
        home.daemon_pid(),
        Some(pid),
        "the same process, started again in place"
    );
    home.start("sleep 1000", "child2", &[]);
    let child2 = pid_of(&home.process("child2"));
    assert_eq!(leaks(pid), Vec::<String>::new(), "foreground daemon {pid}");
    assert_eq!(leaks(child2), Vec::<String>::new(), "child {child2}");
    home.opm(&["daemon", "stop"]).ok();
    let _ = fg.wait();
}

#[test]
fn the_cli_takes_the_token_from_a_file_or_the_environment() {
    let server = TestHome::new();
    let (port, _) = daemon_with(&server, "api = true\n", &[]);
    let token = server.token();
    let local = TestHome::new();
    let url = format!("http://127.0.0.1:{port}");
    let file = local.join("token");
    std::fs::write(&file, format!("{token}\n")).expect("write the token file");
    let list = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["list", "--format", "json", "--server", &url];
        args.extend_from_slice(extra);
        local.opm_env(&args, env)
    };
    let out = list(&["--token-file", file.to_str().expect("utf-8 path")], &[]).ok();
    assert!(serde_json::from_str::<Value>(&out.stdout).is_ok(), "{out}");
    list(&[], &[("OPM_TOKEN", &token)]).ok();
    list(&["--token", &token], &[]).ok();
    let out = list(&[], &[]).failed();
    assert!(out.stderr.contains("token"), "{out}");
    let out = list(&["--token-file", "/nonexistent/token"], &[]).failed();
    assert!(out.stderr.contains("--token-file"), "{out}");
    let _: Response = tcp(port, "GET", "/daemon/list", Auth::Bearer(&token), None).expect(200);
}

#[test]
fn the_socket_is_private_to_the_user_even_after_a_crash_left_it_open() {
    use std::os::unix::fs::FileTypeExt;
    let home = TestHome::new();
    home.opm(&["daemon", "restore"]).ok();
    let socket = home.join("opm.sock");
    let meta = std::fs::metadata(&socket).expect("stat opm.sock");
    assert!(meta.file_type().is_socket(), "opm.sock is a socket");
    assert_eq!(mode(&socket), 0o600, "only the user may connect");
    assert_eq!(mode(home.path()), 0o700, "in a private home");

    // A daemon killed leaves its socket behind; someone opens it up.
    home.kill_daemon();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod the stale socket");
    home.opm(&["daemon", "restore"]).ok();
    assert_eq!(mode(&socket), 0o600, "the next daemon's socket is private");
    assert!(
        unix(&home, "GET", "/health", None).status == 200,
        "and it is the live one"
    );
}
