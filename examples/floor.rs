//! The floor `benches/compare.py` compares opm with: what the same stack
//! does with none of opm's own work, on the same machine, in the same run.
//!
//! ```text
//! floor serve SOCKET DBDIR N   a warp server on a unix socket; sled holds N
//!                              records shaped like `opm list --format json`
//!                              rows; GET /list answers them as one JSON array
//! floor get SOCKET PATH        one GET over the socket (a new connection, as
//!                              the opm CLI makes); the whole body to stdout
//! floor spawn N DIR [--no-logs]
//!                              N `/bin/sleep 1000` from 2 threads; first each
//!                              child's stdout and stderr opened to a new file
//!                              in DIR (2 files per child, created by one
//!                              thread before the spawns, as opm does); prints
//!                              the milliseconds until all are spawned, then
//!                              kills every child by its pid and reaps it
//! ```
//!
//! Build: `cargo build --release --example floor`.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use warp::Filter;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const USAGE: &str =
    "usage: floor serve SOCKET DBDIR N | floor get SOCKET PATH | floor spawn N DIR [--no-logs]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["serve", socket, db, n] => {
            count(n).and_then(|n| serve(Path::new(socket), Path::new(db), n))
        }
        ["get", socket, path] => get(Path::new(socket), path),
        ["spawn", n, dir] => count(n).and_then(|n| spawn(n, Path::new(dir), true)),
        ["spawn", n, dir, "--no-logs"] => count(n).and_then(|n| spawn(n, Path::new(dir), false)),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn count(text: &str) -> Res<usize> {
    text.parse()
        .map_err(|_| format!("not a count: {text:?}\n{USAGE}").into())
}

/// One row shaped like opm's `/daemon/list` answer: the same fields in the
/// same order, a working folder as long as compare.py's.
#[derive(serde::Serialize)]
struct Row {
    id: usize,
    name: String,
    pid: usize,
    status: &'static str,
    restarts: u32,
    uptime_ms: u64,
    cpu: f64,
    memory: u64,
    command: &'static str,
    cwd: &'static str,
    autorestart: bool,
    desired: &'static str,
    instance: Option<u32>,
    instances: u32,
}

fn record(i: usize) -> Res<Vec<u8>> {
    let row = Row {
        id: i,
        name: format!("p{i}"),
        pid: 100_000 + i,
        status: "online",
        restarts: 0,
        uptime_ms: 123_456,
        cpu: 0.0,
        memory: 1_597_440,
        command: "sleep 1000",
        cwd: "/tmp/opm-compare-0a1b2c3d/opm-run1-B",
        autorestart: true,
        desired: "running",
        instance: None,
        instances: 1,
    };
    Ok(serde_json::to_vec(&row)?)
}

fn serve(socket: &Path, db: &Path, n: usize) -> Res<()> {
    // opm's store settings: a 4 MiB cache, no background flusher.
    let tree = sled::Config::new()
        .path(db)
        .cache_capacity(4 * 1024 * 1024)
        .flush_every_ms(None)
        .open()?;
    tree.clear()?;
    let mut bytes = 0;
    for i in 0..n {
        let row = record(i)?;
        bytes += row.len();
        tree.insert((i as u64).to_be_bytes(), row)?;
    }
    tree.flush()?;
    eprintln!(
        "floor: {n} records, {} bytes each on average",
        bytes / n.max(1)
    );
    // The daemon's runtime: two worker threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)?;
        let list = warp::get()
            .and(warp::path("list"))
            .and(warp::path::end())
            .map(move || {
                let mut body = Vec::with_capacity(bytes + n + 2);
                body.push(b'[');
                for (k, item) in tree.iter().values().enumerate() {
                    match item {
                        Ok(v) => {
                            if k > 0 {
                                body.push(b',');
                            }
                            body.extend_from_slice(&v);
                        }
                        Err(e) => {
                            let status = warp::http::StatusCode::INTERNAL_SERVER_ERROR;
                            return warp::http::Response::builder()
                                .status(status)
                                .body(format!("sled: {e}").into_bytes())
                                .unwrap_or_default();
                        }
                    }
                }
                body.push(b']');
                warp::http::Response::builder()
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap_or_default()
            });
        warp::serve(list).incoming(listener).run().await;
        Ok(())
    })
}

fn get(socket: &Path, path: &str) -> Res<()> {
    // The opm CLI's runtime: one thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        if !resp.status().is_success() {
            return Err(format!("GET {path}: {}", resp.status()).into());
        }
        let body: Res<Bytes> = Ok(resp.into_body().collect().await?.to_bytes());
        body
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(&body)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn spawn(n: usize, dir: &Path, logs: bool) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let t0 = Instant::now();
    let mut outputs: Vec<Option<(File, File)>> = Vec::with_capacity(n);
    for i in 0..n {
        outputs.push(if logs {
            Some((
                new_log(dir.join(format!("p{i}-out.log")))?,
                new_log(dir.join(format!("p{i}-error.log")))?,
            ))
        } else {
            None
        });
    }
    let second = outputs.split_off(n / 2);
    let spawned = std::thread::scope(|s| {
        let a = s.spawn(|| spawn_all(outputs));
        let b = s.spawn(|| spawn_all(second));
        let join = |h: std::thread::ScopedJoinHandle<'_, Res<Vec<Child>>>| {
            h.join()
                .unwrap_or_else(|_| Err("a spawning thread panicked".into()))
        };
        (join(a), join(b))
    });
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut children = Vec::with_capacity(n);
    let mut failed = None;
    for part in [spawned.0, spawned.1] {
        match part {
            Ok(c) => children.extend(c),
            Err(e) => failed = Some(e),
        }
    }
    if failed.is_none() {
        println!(
            "{{\"spawned\":{},\"ms\":{ms:.3},\"logs\":{logs}}}",
            children.len()
        );
    }
    for c in &mut children {
        let _ = c.kill();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn new_log(path: PathBuf) -> Res<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o640)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file)
}

fn spawn_all(outputs: Vec<Option<(File, File)>>) -> Res<Vec<Child>> {
    let mut children = Vec::with_capacity(outputs.len());
    for out in outputs {
        let (stdout, stderr) = match out {
            Some((o, e)) => (Stdio::from(o), Stdio::from(e)),
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new("/bin/sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(format!("spawn /bin/sleep: {e}").into());
            }
        }
    }
    Ok(children)
}
