//! `opm reload` of one process: with readiness (`--wait-ready`,
//! `--ready-port`) the new run starts beside the old one (the program
//! shares its port with SO_REUSEPORT) and the old one is stopped only once
//! the new one is ready, so a request loop sees no failure; without
//! readiness the reload says it is a restart, and the loop sees the gap; a
//! new run that cannot start leaves the old one serving; a daemon SIGKILLed
//! mid-reload leaves each run once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::prereq::{needs, require};
use crate::common::{alive, free_port, pid_of, wait_until, TestHome, WAIT};

/// A small HTTP server in Python answering its pid: `web.py PORT
/// [--delay S] [--no-reuseport] [--ready-after-file F]`. It binds with
/// SO_REUSEPORT (unless told not to), sends `READY=1` to `$NOTIFY_SOCKET`
/// when it has one, and on SIGTERM serves what is queued before closing.
pub fn web_script(home: &TestHome) -> PathBuf {
    let path = home.join("web.py");
    std::fs::write(
        &path,
        r#"import os, socket, sys, time, signal, threading, http.server
args = sys.argv[1:]
port = int(args[0])
delay = float(args[args.index("--delay") + 1]) if "--delay" in args else 0
gate = args[args.index("--ready-after-file") + 1] if "--ready-after-file" in args else None
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.HTTPServer):
    def server_bind(self):
        if "--no-reuseport" not in args:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
time.sleep(delay)
while gate and not os.path.exists(gate):
    time.sleep(0.05)
srv = S(("127.0.0.1", port), H)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
addr = os.environ.get("NOTIFY_SOCKET")
if addr:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"STATUS=serving\nREADY=1", "\0" + addr[1:] if addr.startswith("@") else addr)
srv.serve_forever(poll_interval=0.05)
srv.socket.setblocking(False)
while True:
    try:
        conn, peer = srv.socket.accept()
    except OSError:
        break
    conn.setblocking(True)
    srv.finish_request(conn, peer)
    conn.close()
srv.server_close()
"#,
    )
    .expect("write web.py");
    path
}

/// Whether python3 is here (CI must have it).
pub fn have_python() -> bool {
    require(needs().tool("python3", "python3").done())
}

/// One GET to 127.0.0.1:`port`; the pid that answered.
pub fn get(port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.0 200")
        .then(|| out.rsplit("\r\n\r\n").next().unwrap_or("").to_string())
}

/// A request loop at `every` until stopped: (answered, failed, pids seen).
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u32, u32, Vec<String>)>,
}

impl Load {
    pub fn start(port: u16, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failed, mut pids) = (0, 0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                match get(port) {
                    Some(pid) => {
                        ok += 1;
                        if !pids.contains(&pid) {
                            pids.push(pid);
                        }
                    }
                    None => failed += 1,
                }
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
            (ok, failed, pids)
        });
        Load { stop, thread }
    }

    pub fn finish(self) -> (u32, u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the request loop")
    }
}

#[test]
fn a_reload_with_readiness_starts_the_new_run_first_and_fails_no_request() {
    if !have_python() {
        return;
    }
    let home = TestHome::new();
    let port = free_port();
    let cmd = format!("python3 {} {port} --delay 0.3", web_script(&home).display());
    home.start(&cmd, "web", &["--wait-ready"]);
    wait_until(WAIT, "web online", || {
        home.process("web")["status"] == "online"
    });
    let first = pid_of(&home.process("web"));
    let load = Load::start(port, Duration::from_millis(25));
    std::thread::sleep(Duration::from_millis(300));
    let out = home.opm(&["reload", "web"]).ok();
    assert!(out.stdout.contains("no downtime"), "{out}");
    let json = home.opm(&["reload", "web", "--format", "json"]).ok();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, pids) = load.finish();
    let answer: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(answer["reloads"][0]["outcome"], "handover", "{answer:#}");
    assert_eq!(
        failed,
        0,
        "{failed} failed requests of {}: {pids:?}",
        ok + failed
    );
    assert!(ok >= 20, "the loop ran ({ok} requests)");
    assert!(pids.len() >= 2, "the new runs answered too: {pids:?}");
    let now = home.process("web");
    assert_eq!(now["status"], "online");
    assert_eq!(now["restarts"], 2);
    assert_ne!(pid_of(&now), first);
    wait_until(WAIT, "the old run gone", || !alive(first));
    home.opm(&["stop", "web"]).ok();
}

#[test]
fn a_reload_without_readiness_says_it_is_a_restart_and_requests_fail_meanwhile() {
    if !have_python() {
        return;
    }
    let home = TestHome::new();
    let port = free_port();
    let cmd = format!("python3 {} {port}", web_script(&home).display());
    home.start(&cmd, "plain", &[]);
    wait_until(WAIT, "plain answers", || get(port).is_some());
    let load = Load::start(port, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(200));
    let out = home.opm(&["reload", "plain"]).ok();
    wait_until(WAIT, "plain answers again", || get(port).is_some());
    let (ok, failed, _) = load.finish();
    assert!(
        out.stdout
            .contains("was a restart: no readiness set (--wait-ready or --ready-port)"),
        "{out}"
    );
    // A restart of a Python server leaves a gap of a few hundred ms (the
    // README gives the figure): at 100 requests/s some of them fail.
    assert!(
        failed > 0,
        "a restart is not seamless: {ok} ok, {failed} failed"
    );
    home.opm(&["stop", "plain"]).ok();
}

#[test]
fn a_new_run_that_cannot_share_the_port_fails_the_reload_and_the_old_one_keeps_serving() {
    if !have_python() {
        return;
    }
    let home = TestHome::new();
    let port = free_port();
    let cmd = format!(
        "python3 {} {port} --no-reuseport",
        web_script(&home).display()
    );
    home.start(&cmd, "solo", &["--ready-port", &port.to_string()]);
    wait_until(WAIT, "solo online", || {
        home.process("solo")["status"] == "online"
    });
    let old = pid_of(&home.process("solo"));
    let out = home.opm(&["reload", "solo"]);
    assert!(!out.success(), "a failed reload exits non-zero: {out}");
    assert!(
        out.stderr.contains("ended before it was ready") && out.stderr.contains("still serves"),
        "{out}"
    );
    let now = home.process("solo");
    assert_eq!(
        (pid_of(&now), now["status"].as_str()),
        (old, Some("online"))
    );
    assert_eq!(get(port), Some(old.to_string()));
    home.opm(&["stop", "solo"]).ok();
}

#[test]
fn a_daemon_killed_mid_reload_finishes_it_with_each_run_once() {
    if !have_python() {
        return;
    }
    let home = TestHome::new();
    let port = free_port();
    let gate = home.join("ready-gate");
    let cmd = format!(
        "python3 {} {port} --ready-after-file {}",
        web_script(&home).display(),
        gate.display()
    );
    std::fs::write(&gate, "").expect("open the gate");
    home.start(&cmd, "web", &["--wait-ready", "--listen-timeout", "20s"]);
    wait_until(WAIT, "web online", || {
        home.process("web")["status"] == "online"
    });
    let old = pid_of(&home.process("web"));
    // The next run waits at the gate: the reload is under way when the
    // daemon dies.
    std::fs::remove_file(&gate).expect("close the gate");
    let mut reload = home.command(&["reload", "web"]);
    reload
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = reload.spawn().expect("opm reload");
    let servers = || {
        home.marked_pids()
            .into_iter()
            .filter(|p| crate::common::comm(*p).is_some_and(|c| c.starts_with("python3")))
            .collect::<Vec<_>>()
    };
    wait_until(WAIT, "the new run beside the old", || servers().len() == 2);
    home.kill_daemon();
    let _ = child.wait();
    assert!(alive(old), "the old run still serves while nobody watches");
    // The next command starts a daemon, which adopts both runs.
    assert_eq!(
        home.process("web")["pid"],
        old,
        "the old run is still the live one"
    );
    std::fs::write(&gate, "").expect("open the gate");
    wait_until(WAIT, "the new run live", || {
        let p = home.process("web");
        p["status"] == "online" && pid_of(&p) != old
    });
    wait_until(WAIT, "the old run stopped", || !alive(old));
    assert_eq!(servers().len(), 1, "each run once: {:?}", servers());
    assert_eq!(get(port), Some(pid_of(&home.process("web")).to_string()));
    home.opm(&["stop", "web"]).ok();
}
