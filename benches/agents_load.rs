//! A load generator for the server role: N simulated agents register with a
//! real `opm` server daemon (release build, its own temporary home, a port
//! on 127.0.0.1) and heartbeat at the interval the server hands them, with
//! a process summary each. Measured over a window: the server's CPU (from
//! /proc/PID/stat) and RSS, the latency of `GET /daemon/agents/list`, and of
//! the heartbeats themselves. Bounded in time and count; only 127.0.0.1.
//!
//! Each simulated agent has its own connections (kept alive between
//! heartbeats, as a real agent's are), and, with `tls`, speaks TLS to the
//! server with its certificate pinned (sessions resumed).
//!
//! `cargo bench --bench agents_load` (N = 100, 1000, 5000), or
//! `cargo bench --bench agents_load -- 1000` for one size, and
//! `cargo bench --bench agents_load -- tls 1000 5000` over TLS, and
//! `cargo bench --bench agents_load -- history=120 5000` with the server's
//! agent history sampled every 100 ms and `agent_samples = 120` kept (full
//! after 12 s of the 20 s window; `history=1` is the baseline to compare).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opm::client::{Client, Endpoint};
use opm::model::{HeartbeatAnswer, HeartbeatRequest, ProcessView, RegisterRequest, Status};

const TOKEN: &str = "bench-server-token-0123456789";
const JOIN: &str = "bench-join-token-0123456789";
const WINDOW: Duration = Duration::from_secs(20);
const WORKERS: usize = 64;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn summary() -> Vec<ProcessView> {
    (0..3)
        .map(|i| ProcessView {
            id: i,
            name: format!("svc-{i}"),
            pid: Some(1000 + i as u32),
            status: Status::Online,
            restarts: 0,
            uptime_ms: 60_000,
            cpu: 0.5,
            memory: 20_000_000,
            command: "node app.js".into(),
            cwd: "/srv".into(),
            autorestart: true,
            desired: "running".into(),
            error: None,
            instance: None,
            instances: 1,
            restart_at_ms: None,
            exit_code: None,
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Server {
    home: tempfile::TempDir,
    pid: u32,
    port: u16,
    /// The certificate's fingerprint when the server speaks TLS.
    fingerprint: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to the daemon this bench started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.home.path();
    }
}

fn start_server(tls: bool, history: Option<usize>) -> Server {
    let home = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "role = \"server\"\n[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {port}\n[daemon.web.secure]\nenabled = true\ntoken = \"{TOKEN}\"\n\
             [daemon.web.tls]\nenabled = {tls}\n\
             [server]\njoin_token = \"{JOIN}\"\nmax_agents = 1000000\nmax_registrations_per_minute = 100000000\n{}",
            history.map_or(String::new(), |s| format!(
                "[daemon.history]\nagent_interval_ms = 100\nagent_samples = {s}\n"
            ))
        ),
    )
    .expect("config");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_opm"))
        .args(["daemon", "restore"])
        .env("OPM_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("start the server");
    assert!(status.success());
    let pid = std::fs::read_to_string(home.path().join("daemon.pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    let health = std::process::Command::new(env!("CARGO_BIN_EXE_opm"))
        .args(["daemon", "health", "--format", "json"])
        .env("OPM_HOME", home.path())
        .output()
        .expect("health");
    let health: serde_json::Value = serde_json::from_slice(&health.stdout).expect("health JSON");
    let fingerprint = health["tls_fingerprint"].as_str().map(String::from);
    assert_eq!(fingerprint.is_some(), tls, "TLS as asked: {health}");
    Server {
        home,
        pid,
        port,
        fingerprint,
    }
}

/// A registered agent: its id and its own client (with its credential).
type Registered = (String, Client);

async fn run(n: usize, tls: bool, history: Option<usize>) {
    let server = start_server(tls, history);
    let scheme = if tls { "https" } else { "http" };
    let endpoint = |token: &str| {
        Endpoint::parse_url(
            &format!("{scheme}://127.0.0.1:{}", server.port),
            Some(token.into()),
        )
        .and_then(|e| e.with_fingerprint(server.fingerprint.as_deref()))
        .expect("url")
    };
    let client = Client::new(endpoint(TOKEN));
    // Agents join with the join token; their heartbeats carry their credential.
    let joiner = Client::new(endpoint(JOIN));
    let agent_endpoint = endpoint(JOIN);
    let base_rss = rss_kib(server.pid);

    // Register every agent (WORKERS at a time).
    let t = Instant::now();
    let next_due: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let ids: Arc<Mutex<Vec<Option<Registered>>>> = Arc::new(Mutex::new(vec![None; n]));
    let mut handles = Vec::new();
    for w in 0..WORKERS {
        let client = joiner.clone();
        let ids = ids.clone();
        let due = next_due.clone();
        let agent_endpoint = agent_endpoint.clone();
        let fingerprint = server.fingerprint.clone();
        handles.push(tokio::spawn(async move {
            for i in (w..n).step_by(WORKERS) {
                let req = RegisterRequest {
                    id: None,
                    name: format!("agent-{i}"),
                    hostname: format!("host-{i}"),
                    endpoint: format!("{scheme}://127.0.0.1:9"),
                    version: "bench".into(),
                    token: format!("agent-token-{i:012}"),
                    processes: summary(),
                    // A TLS server takes https endpoints only, with a pin.
                    fingerprint: fingerprint.clone(),
                };
                let a: HeartbeatAnswer = client
                    .post("/daemon/agents/register", &req)
                    .await
                    .expect("register");
                // Each agent heartbeats on connections of its own.
                let own = Client::new(agent_endpoint.clone())
                    .with_own_pool()
                    .expect("pool")
                    .with_header("agent-token", &a.credential.clone().expect("a credential"));
                ids.lock().expect("lock")[i] = Some((a.id.clone(), own));
                due.lock().expect("lock").push((
                    Instant::now() + Duration::from_millis(a.heartbeat_interval_ms),
                    i,
                ));
            }
        }));
    }
    for h in handles {
        h.await.expect("worker");
    }
    let register_time = t.elapsed();

    // Heartbeat at the server's pace for WINDOW, measuring as we go.
    let beats = Arc::new(AtomicU64::new(0));
    let beat_lat: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let start_ticks = cpu_ticks(server.pid);
    let window_start = Instant::now();
    let end = window_start + WINDOW;
    let mut handles = Vec::new();
    for _ in 0..WORKERS {
        let due = next_due.clone();
        let beats = beats.clone();
        let lat = beat_lat.clone();
        let ids = ids.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let job = {
                    let mut q = due.lock().expect("lock");
                    let now = Instant::now();
                    let pos = q.iter().position(|(t, _)| *t <= now);
                    pos.map(|p| q.swap_remove(p))
                };
                let Some((_, i)) = job else {
                    if Instant::now() >= end {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                if Instant::now() >= end {
                    return;
                }
                let (id, c) = ids.lock().expect("lock")[i].clone().expect("registered");
                let t = Instant::now();
                let a: HeartbeatAnswer = c
                    .post(
                        &format!("/daemon/agents/{id}/heartbeat"),
                        &HeartbeatRequest {
                            processes: summary(),
                        },
                    )
                    .await
                    .expect("heartbeat");
                lat.lock().expect("lock").push(t.elapsed());
                beats.fetch_add(1, Ordering::Relaxed);
                due.lock().expect("lock").push((
                    Instant::now() + Duration::from_millis(a.heartbeat_interval_ms),
                    i,
                ));
            }
        }));
    }
    // Meanwhile: the list latency, sampled through the window.
    let mut list_lat = Vec::new();
    let mut peak_rss = 0;
    while Instant::now() < end {
        let t = Instant::now();
        let (status, body) = client
            .request(hyper::Method::GET, "/daemon/agents/list", None)
            .await
            .expect("list");
        list_lat.push(t.elapsed());
        assert!(status.is_success() && body.len() > 2);
        peak_rss = peak_rss.max(rss_kib(server.pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for h in handles {
        h.await.expect("worker");
    }
    let secs = window_start.elapsed().as_secs_f64();
    let ticks = cpu_ticks(server.pid) - start_ticks;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = ticks as f64 / hz / secs * 100.0;
    list_lat.sort();
    let mut bl = beat_lat.lock().expect("lock").clone();
    bl.sort();
    let n_beats = beats.load(Ordering::Relaxed);
    println!(
        "| {n}{}{} | {:.0} ms | {:.0}/s | {:.1} % | {} → {} MiB | {:.2} / {:.2} ms | {:.2} / {:.2} ms |",
        if tls { " (TLS)" } else { "" },
        history.map_or(String::new(), |s| format!(" (history {s})")),
        register_time.as_secs_f64() * 1000.0,
        n_beats as f64 / secs,
        cpu,
        base_rss / 1024,
        peak_rss / 1024,
        percentile(&list_lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&list_lat, 0.99).as_secs_f64() * 1000.0,
        percentile(&bl, 0.5).as_secs_f64() * 1000.0,
        percentile(&bl, 0.99).as_secs_f64() * 1000.0,
    );
    drop(server);
}

fn main() {
    let tls = std::env::args().any(|a| a == "tls");
    let history: Option<usize> =
        std::env::args().find_map(|a| a.strip_prefix("history=").and_then(|s| s.parse().ok()));
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 5000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "window {} s per size, {WORKERS} concurrent connections, 3 processes per agent summary",
        WINDOW.as_secs()
    );
    println!("| agents | register all | heartbeats | server CPU | server RSS | agents/list p50 / p99 | heartbeat p50 / p99 |");
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        rt.block_on(run(n, tls, history));
    }
}
