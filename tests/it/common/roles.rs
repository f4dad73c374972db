//! Helpers of the role-system tests: a server daemon on a free port of
//! 127.0.0.1 with a short heartbeat interval, agents connected to it, and
//! their views read from the daemons' own sockets (no CLI run per poll).

use serde_json::Value;

use super::http::unix;
use super::{free_port, wait_until, TestHome, WAIT};

/// The server's admin token.
pub const TOKEN: &str = "server-token-for-tests-0123456789";
/// The heartbeat interval, and the grace, a test server hands its agents.
pub const INTERVAL_MS: u64 = 400;

pub struct Server {
    pub home: TestHome,
    pub port: u16,
    /// The join token: the one configured, or the one the server generated.
    pub join: String,
}

/// `[server] join_token` of a home's config.toml.
#[track_caller]
pub fn join_token_of(home: &TestHome) -> String {
    let text = std::fs::read_to_string(home.join("config.toml")).expect("config.toml");
    let config: toml::Value = toml::from_str(&text).expect("config.toml is TOML");
    config["server"]["join_token"]
        .as_str()
        .expect("a server has a join token")
        .to_string()
}

/// A server with the API on a free port, the admin token `TOKEN`, a
/// heartbeat interval and grace of `INTERVAL_MS`, and `join_token` (or one it
/// generates).
#[track_caller]
pub fn server(join_token: Option<&str>) -> Server {
    let home = TestHome::new();
    let port = free_port();
    let join = join_token.map_or(String::new(), |j| format!("join_token = \"{j}\"\n"));
    home.write_config(&format!(
        "role = \"server\"\n[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {port}\n\
         [daemon.web.secure]\nenabled = true\ntoken = \"{TOKEN}\"\n\
         [server]\nheartbeat_interval_ms = {INTERVAL_MS}\nheartbeat_grace_ms = {INTERVAL_MS}\n{join}"
    ));
    home.opm(&["daemon", "restore"]).ok();
    let join = join_token_of(&home);
    Server { home, port, join }
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's agents, from its socket.
    #[track_caller]
    pub fn agents(&self) -> Vec<Value> {
        agents_of(&self.home)
    }

    #[track_caller]
    pub fn agent(&self, name: &str) -> Option<Value> {
        self.agents().into_iter().find(|a| a["name"] == name)
    }

    #[track_caller]
    pub fn status_of(&self, name: &str) -> Option<String> {
        self.agent(name)
            .and_then(|a| a["status"].as_str().map(String::from))
    }

    /// Waits until the server lists agent `name` as `status`; returns its entry.
    #[track_caller]
    pub fn wait_agent(&self, name: &str, status: &str) -> Value {
        let mut last = None;
        wait_until(WAIT, &format!("agent {name} {status}"), || {
            last = self.agent(name);
            last.as_ref().is_some_and(|a| a["status"] == status)
        });
        last.expect("seen")
    }

    /// Waits until the server lists exactly `n` agents, every one online.
    #[track_caller]
    pub fn wait_online(&self, n: usize) -> Vec<Value> {
        let mut last = Vec::new();
        wait_until(WAIT, &format!("{n} agents online"), || {
            last = self.agents();
            last.len() == n && last.iter().all(|a| a["status"] == "online")
        });
        last
    }
}

/// The agents of the server of `home` (`GET /daemon/agents/list` on its
/// socket: the same objects as `opm agent list --format json`, without a CLI
/// run per poll).
#[track_caller]
pub fn agents_of(home: &TestHome) -> Vec<Value> {
    let r = unix(home, "GET", "/daemon/agents/list", None).expect(200);
    match r.json() {
        Value::Array(list) => list,
        other => panic!("/daemon/agents/list is not an array: {other}"),
    }
}

pub struct Agent {
    pub home: TestHome,
    pub name: String,
    pub api_port: u16,
}

/// A new home connected to `server` as agent `name` with `token`, its API on
/// a free port.
#[track_caller]
pub fn agent(server: &Server, name: &str, token: &str) -> Agent {
    let home = TestHome::new();
    let api_port = free_port();
    home.opm(&[
        "agent",
        "connect",
        &server.url(),
        "--name",
        name,
        "--token",
        token,
        "--api-address",
        &format!("127.0.0.1:{api_port}"),
    ])
    .ok();
    Agent {
        home,
        name: name.to_string(),
        api_port,
    }
}

impl TestHome {
    /// `opm agent status --format json`, which must succeed.
    #[track_caller]
    pub fn agent_status(&self) -> Value {
        let out = self.opm(&["agent", "status", "--format", "json"]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("agent status --format json is not JSON ({e}): {out}"))
    }
}

/// The pid of process `name` of `home`, which must have one.
#[track_caller]
pub fn pid_of(home: &TestHome, name: &str) -> i64 {
    home.process(name)["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no pid"))
}

/// `opm list --server AGENT --format json` run on the server.
#[track_caller]
pub fn list_via(server: &Server, agent: &str) -> Vec<Value> {
    let out = server
        .home
        .opm(&["list", "--server", agent, "--format", "json"])
        .ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}
