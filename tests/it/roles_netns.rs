//! The role system across real separate hosts: network namespaces made by
//! the test, a server in one and two agents in two others, joined by a
//! bridge inside a fourth. Cutting one agent's link makes it offline on the
//! server while its processes keep running with the same pids; restoring the
//! link brings it back online.
//!
//! Every daemon and every CLI call runs inside a namespace (`ip netns exec`),
//! never in the host's, so no packet to 10.200.0.0/24 can leave through the
//! host's interfaces. The namespaces and links are checked before anything
//! is sent, and removed (and the processes killed, by the fixture) whatever
//! happens. Skipped with a printed reason when not root or without `ip netns`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{alive, needs, require, run, wait_until, Output, TestHome, MARKER_VAR};

const TOKEN: &str = "netns-server-token-0123456789";
const INTERVAL_MS: u64 = 300;

fn ip(args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(args).stdin(Stdio::null());
    run(cmd)
}

#[track_caller]
fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(out.success(), "ip {}: {out}", args.join(" "));
}

/// The namespaces of one test run; removed on drop.
struct Net {
    hub: String,
    hosts: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.hub)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Builds: a hub namespace with a bridge, and one namespace per host with
/// `eth0` at 10.200.0.(i+1)/24 joined to the bridge through a veth pair whose
/// other end (`v<i>`) lives in the hub.
fn build(tag: &str, hosts: usize) -> Net {
    let net = Net {
        hub: format!("opm{tag}h"),
        hosts: (0..hosts).map(|i| format!("opm{tag}n{i}")).collect(),
    };
    ip_ok(&["netns", "add", &net.hub]);
    ip_ok(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"]);
    ip_ok(&["-n", &net.hub, "link", "set", "br0", "up"]);
    for (i, ns) in net.hosts.iter().enumerate() {
        ip_ok(&["netns", "add", ns]);
        let v = format!("v{i}");
        // Both ends are created inside namespaces: nothing touches the host's.
        ip_ok(&[
            "-n", &net.hub, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip_ok(&["-n", &net.hub, "link", "set", &v, "master", "br0"]);
        ip_ok(&["-n", &net.hub, "link", "set", &v, "up"]);
        ip_ok(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.200.0.{}/24", i + 1),
            "dev",
            "eth0",
        ]);
        ip_ok(&["-n", ns, "link", "set", "eth0", "up"]);
        ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
    }
    net
}

/// Asserts the namespaces and addresses exist before any packet is sent.
fn check(net: &Net) {
    let list = ip(&["netns", "list"]);
    for ns in net.hosts.iter().chain(std::iter::once(&net.hub)) {
        assert!(
            list.stdout.contains(ns.as_str()),
            "namespace {ns} missing: {list}"
        );
    }
    for (i, ns) in net.hosts.iter().enumerate() {
        let a = ip(&["-n", ns, "-4", "addr", "show", "dev", "eth0"]);
        assert!(
            a.stdout.contains(&format!("10.200.0.{}/24", i + 1)),
            "{ns}: {a}"
        );
        let host = ip(&["-4", "addr"]);
        assert!(
            !host.stdout.contains("10.200.0."),
            "10.200.0.x must not exist in the host namespace: {host}"
        );
    }
}

/// `opm ARGS` for `home`, run inside namespace `ns`.
fn opm_in(ns: &str, home: &TestHome, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_opm")])
        .args(args)
        .env("OPM_HOME", home.path())
        .env(MARKER_VAR, home.path())
        .current_dir(home.path())
        .stdin(Stdio::null());
    run(cmd)
}

fn json(out: Output) -> serde_json::Value {
    assert!(out.success(), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn status_on_server(ns: &str, server: &TestHome, name: &str) -> Option<String> {
    let list = json(opm_in(ns, server, &["agent", "list", "--format", "json"]));
    list.as_array()?.iter().find(|a| a["name"] == name)?["status"]
        .as_str()
        .map(String::from)
}

#[test]
fn cutting_an_agents_link_makes_it_offline_and_restoring_it_brings_it_back() {
    let needs = needs()
        .root("network namespaces need CAP_SYS_ADMIN")
        .netns();
    if !require(needs.done()) {
        return;
    }
    let tag = format!("{}", std::process::id() % 100_000);
    // Declared first, dropped last: the daemons die before their namespaces go.
    let net = build(&tag, 3);
    let (s_ns, a1_ns, a2_ns) = (
        net.hosts[0].clone(),
        net.hosts[1].clone(),
        net.hosts[2].clone(),
    );
    check(&net);

    let server = TestHome::new();
    std::fs::write(
        server.join("config.toml"),
        format!(
            "role = \"server\"\n[daemon.web]\napi = true\naddress = \"10.200.0.1\"\nport = 9876\n\
             [daemon.web.secure]\nenabled = true\ntoken = \"{TOKEN}\"\n\
             [server]\nheartbeat_interval_ms = {INTERVAL_MS}\nheartbeat_grace_ms = {INTERVAL_MS}\n"
        ),
    )
    .expect("server config");
    let out = opm_in(&s_ns, &server, &["daemon", "restore"]);
    assert!(
        out.success() && out.stdout.contains("10.200.0.1:9876"),
        "{out}"
    );
    // Off loopback, TLS is on by default.
    let health = json(opm_in(
        &s_ns,
        &server,
        &["daemon", "health", "--format", "json"],
    ));
    assert_eq!(health["api_url"], "https://10.200.0.1:9876", "{health}");
    let fingerprint = health["tls_fingerprint"]
        .as_str()
        .expect("the server's certificate fingerprint")
        .to_string();

    // Agents join with the join token the server generated, never the admin token.
    let join = crate::common::roles::join_token_of(&server);
    let agents = [
        (TestHome::new(), a1_ns.clone(), "a1", "10.200.0.2"),
        (TestHome::new(), a2_ns.clone(), "a2", "10.200.0.3"),
    ];
    let mut pids = Vec::new();
    for (home, ns, name, addr) in &agents {
        let out = opm_in(
            ns,
            home,
            &[
                "agent",
                "connect",
                "https://10.200.0.1:9876",
                "--name",
                name,
                "--token",
                &join,
                "--api-address",
                &format!("{addr}:9877"),
            ],
        );
        assert!(out.success(), "{out}");
        assert!(
            out.stdout
                .contains(&format!("server certificate: {fingerprint} (pinned)")),
            "{out}"
        );
        assert!(
            out.stdout.contains(&format!("https://{addr}:9877")),
            "{out}"
        );
        assert!(opm_in(ns, home, &["start", "sleep 1000", "--name", "job"]).success());
        let list = json(opm_in(ns, home, &["list", "--format", "json"]));
        pids.push(list[0]["pid"].as_i64().expect("pid"));
    }
    wait_until(
        Duration::from_secs(10),
        "both agents online on the server",
        || {
            status_on_server(&s_ns, &server, "a1").as_deref() == Some("online")
                && status_on_server(&s_ns, &server, "a2").as_deref() == Some("online")
        },
    );
    let listed = json(opm_in(
        &s_ns,
        &server,
        &["agent", "list", "--format", "json"],
    ));
    for row in listed.as_array().expect("a list") {
        assert!(
            row["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("https://10.200.0.")),
            "{row}"
        );
    }
    // The server reaches each agent's API across the bridge, over TLS.
    let via = json(opm_in(
        &s_ns,
        &server,
        &["list", "--server", "a1", "--format", "json"],
    ));
    assert_eq!(via[0]["pid"].as_i64(), Some(pids[0]));

    // Cut a1's link.
    ip_ok(&["-n", &net.hub, "link", "set", "v1", "down"]);
    let cut = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "a1 offline after its link was cut",
        || status_on_server(&s_ns, &server, "a1").as_deref() == Some("offline"),
    );
    let took = cut.elapsed();
    assert_eq!(
        status_on_server(&s_ns, &server, "a2").as_deref(),
        Some("online"),
        "a2 is unaffected"
    );
    let list = json(opm_in(&a1_ns, &agents[0].0, &["list", "--format", "json"]));
    assert_eq!(
        list[0]["pid"].as_i64(),
        Some(pids[0]),
        "a1's process runs on with the same pid"
    );
    assert_eq!(list[0]["status"], "online");
    assert!(alive(pids[0] as i32));
    wait_until(
        Duration::from_secs(15),
        "a1 knows it lost the server",
        || {
            let st = json(opm_in(
                &a1_ns,
                &agents[0].0,
                &["agent", "status", "--format", "json"],
            ));
            st["connected"] == false && st["last_error"].is_string()
        },
    );

    // Restore the link.
    ip_ok(&["-n", &net.hub, "link", "set", "v1", "up"]);
    wait_until(
        Duration::from_secs(40),
        "a1 online again after the link came back",
        || status_on_server(&s_ns, &server, "a1").as_deref() == Some("online"),
    );
    let list = json(opm_in(&a1_ns, &agents[0].0, &["list", "--format", "json"]));
    assert_eq!(
        list[0]["pid"].as_i64(),
        Some(pids[0]),
        "still the same process"
    );
    for (i, pid) in pids.iter().enumerate() {
        assert!(alive(*pid as i32), "agent {i}'s process survived");
    }
    println!("a1 went offline {took:?} after its link was cut (interval {INTERVAL_MS} ms)");
    drop(agents);
    drop(server);
    drop(net);
}
