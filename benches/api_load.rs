//! Load benchmark of the HTTP API: `GET /daemon/list` over TCP on
//! 127.0.0.1 with the token, against a release daemon that manages 100
//! `sleep 1000` processes, from this separate process with N keep-alive
//! connections for a fixed time. Reports requests per second, latency
//! percentiles, the daemon's CPU (utime+stime delta over the load window,
//! from /proc/PID/stat) and its RSS during the load (sampled every 100 ms
//! from /proc/PID/status).
//!
//! `cargo bench --bench api_load`. Knobs (bounded): `OPM_BENCH_SECONDS`
//! (default 10, at most 60) per run, `OPM_BENCH_CONNECTIONS` (default
//! "1,8": one run per count, each at most 64), `OPM_BENCH_PROCESSES`
//! (default 100, at most 500); `OPM_BENCH_WRK=1` also runs the same load
//! from wrk (Debian's `wrk`), another program, when it is installed. Only
//! 127.0.0.1 is contacted. Everything it
//! starts carries `OPM_BENCH_HOME=<temp home>` and is killed at the end,
//! even after a panic.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MARKER: &str = "OPM_BENCH_HOME";

fn env_num(name: &str, default: u64, max: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

/// The temporary home; its drop kills whatever carries its marker.
struct Home {
    dir: PathBuf,
    marker: String,
}

impl Home {
    fn new() -> Home {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("opm-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the bench home");
        let marker = format!("{MARKER}={}", dir.display());
        Home { dir, marker }
    }

    fn opm(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_opm"))
            .args(args)
            .env("OPM_HOME", &self.dir)
            .env(MARKER, &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run opm");
        assert!(
            out.status.success(),
            "opm {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn marked(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|&pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|b| b.split(|c| *c == 0).any(|e| e == self.marker.as_bytes()))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.marked();
            if pids.is_empty() || Instant::now() > end {
                break;
            }
            for pid in pids {
                // SAFETY: kill only sends a signal to one positive pid that
                // carries this run's marker.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One keep-alive connection that sends requests and reads whole answers.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Sends `request` and returns (status, body length).
    fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, usize)> {
        self.writer.write_all(request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed in the headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let n = length.ok_or_else(|| std::io::Error::other("no content-length"))?;
        let mut body = vec![0u8; n];
        self.reader.read_exact(&mut body)?;
        Ok((status, n))
    }
}

fn request(method: &str, path: &str, token: &str, body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ntoken: {token}\r\n");
    if let Some(b) = body {
        r.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let rest: Vec<&str> = text[text.rfind(')').expect("a comm") + 1..]
        .split_whitespace()
        .collect();
    // After the comm: state is field 3, utime field 14, stime field 15.
    rest[11].parse::<u64>().expect("utime") + rest[12].parse::<u64>().expect("stime")
}

fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

struct RunResult {
    connections: usize,
    requests: usize,
    errors: usize,
    wall: Duration,
    sorted_us: Vec<u32>,
    cpu_percent: f64,
    rss_max: u64,
    rss_avg: u64,
}

fn run(port: u16, token: &str, daemon: i32, connections: usize, seconds: u64) -> RunResult {
    let req = Arc::new(request("GET", "/daemon/list", token, None));
    // Warm-up: a second of the same load, not measured.
    let go = |duration: Duration| {
        let stop_at = Instant::now() + duration;
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                let req = req.clone();
                std::thread::spawn(move || {
                    let mut lat = Vec::with_capacity(200_000);
                    let mut errors = 0usize;
                    let mut conn = Conn::open(port).ok();
                    while Instant::now() < stop_at {
                        let Some(c) = conn.as_mut() else {
                            errors += 1;
                            conn = Conn::open(port).ok();
                            continue;
                        };
                        let t = Instant::now();
                        match c.call(&req) {
                            Ok((200, _)) => {
                                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32)
                            }
                            Ok(_) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                conn = Conn::open(port).ok();
                            }
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a load thread"))
            .fold((Vec::new(), 0), |(mut all, e), (lat, errs)| {
                all.extend(lat);
                (all, e + errs)
            })
    };
    go(Duration::from_secs(1));

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                if let Some(r) = rss_bytes(daemon) {
                    samples.push(r);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let cpu0 = cpu_ticks(daemon);
    let t0 = Instant::now();
    let (mut lat, errors) = go(Duration::from_secs(seconds));
    let wall = t0.elapsed();
    let cpu1 = cpu_ticks(daemon);
    sampling.store(false, Ordering::Relaxed);
    let rss = sampler.join().expect("the RSS sampler");
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    lat.sort_unstable();
    RunResult {
        connections,
        requests: lat.len(),
        errors,
        wall,
        cpu_percent: (cpu1 - cpu0) as f64 / hz / wall.as_secs_f64() * 100.0,
        rss_max: rss.iter().copied().max().unwrap_or(0),
        rss_avg: if rss.is_empty() {
            0
        } else {
            rss.iter().sum::<u64>() / rss.len() as u64
        },
        sorted_us: lat,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The same load from wrk (another program), when `OPM_BENCH_WRK=1` and wrk is installed.
fn run_wrk(port: u16, token: &str, daemon: i32, connections: usize, seconds: u64) {
    let threads = connections.min(2);
    let args = [
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".to_string(),
        "-H".to_string(),
        format!("token: {token}"),
        format!("http://127.0.0.1:{port}/daemon/list"),
    ];
    let shown = args
        .iter()
        .map(|a| {
            if a.contains(token) {
                "'token: $TOKEN'".to_string()
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let cpu0 = cpu_ticks(daemon);
    let t0 = Instant::now();
    let out = match Command::new("wrk")
        .args(&args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("wrk not run ({e}): `apt-get install wrk` adds it");
            return;
        }
    };
    let wall = t0.elapsed();
    let cpu1 = cpu_ticks(daemon);
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "\nwrk {shown}: daemon CPU {:.0}% of one core, RSS after {:.1} MiB, load average {}\n{}",
        (cpu1 - cpu0) as f64 / hz / wall.as_secs_f64() * 100.0,
        rss_bytes(daemon).unwrap_or(0) as f64 / 1048576.0,
        loadavg(),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("api_load: a load benchmark; run it with `cargo bench --bench api_load`");
        return;
    }
    let seconds = env_num("OPM_BENCH_SECONDS", 10, 60);
    let processes = env_num("OPM_BENCH_PROCESSES", 100, 500) as usize;
    let connections: Vec<usize> = std::env::var("OPM_BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
        .map(|c| c.clamp(1, 64))
        .collect();

    let home = Home::new();
    let token = format!("bench-{}", std::process::id());
    let port = free_port();
    std::fs::write(
        home.dir.join("config.toml"),
        format!(
            "[daemon.web]\napi = true\naddress = \"127.0.0.1\"\nport = {port}\n\
             [daemon.web.secure]\nenabled = true\ntoken = \"{token}\"\n"
        ),
    )
    .expect("write config.toml");
    home.opm(&["daemon", "restore"]);

    let mut conn = Conn::open(port).expect("the API answers on 127.0.0.1");
    let body: Vec<String> = (0..processes)
        .map(|i| format!("{{\"script\": \"sleep 1000\", \"name\": \"b{i:03}\"}}"))
        .collect();
    let body = format!("[{}]", body.join(","));
    let (status, _) = conn
        .call(&request("POST", "/daemon/create", &token, Some(&body)))
        .expect("create");
    assert_eq!(status, 201, "creating {processes} processes");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = home.opm(&["list", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&list).expect("list json");
        let online = v
            .as_array()
            .map_or(0, |a| a.iter().filter(|p| p["status"] == "online").count());
        if online == processes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {online} of {processes} online"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let health: serde_json::Value =
        serde_json::from_str(&home.opm(&["daemon", "health", "--format", "json"])).expect("health");
    let daemon = health["pid"].as_i64().expect("daemon pid") as i32;
    let (_, list_bytes) = conn
        .call(&request("GET", "/daemon/list", &token, None))
        .expect("list");
    drop(conn);
    let idle_rss = rss_bytes(daemon).unwrap_or(0);

    println!(
        "api_load: GET /daemon/list over TCP 127.0.0.1 with the token header, {processes} processes \
         (`sleep 1000`), body {list_bytes} bytes, {seconds} s per run after 1 s warm-up, \
         {} cores, daemon RSS before the load {:.1} MiB",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        idle_rss as f64 / 1048576.0
    );
    println!("load average before: {}", loadavg());
    println!(
        "| connections | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | daemon CPU % of one core | daemon RSS avg / max MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &c in &connections {
        let r = run(port, &token, daemon, c, seconds);
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.1} / {:.1} |",
            r.connections,
            r.requests,
            r.requests as f64 / r.wall.as_secs_f64(),
            percentile(&r.sorted_us, 0.50),
            percentile(&r.sorted_us, 0.90),
            percentile(&r.sorted_us, 0.99),
            percentile(&r.sorted_us, 1.0),
            r.errors,
            r.cpu_percent,
            r.rss_avg as f64 / 1048576.0,
            r.rss_max as f64 / 1048576.0,
        );
    }
    println!("load average after: {}", loadavg());
    if std::env::var("OPM_BENCH_WRK").is_ok_and(|v| v == "1") {
        for &c in &connections {
            run_wrk(port, &token, daemon, c, seconds);
        }
    }
    drop(home);
}
