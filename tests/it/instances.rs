//! Instance groups: `--instances N` runs N copies under one name, each with
//! its own id, pid and logs, told its index by `OPM_INSTANCE` and
//! `NODE_APP_INSTANCE`, with `--increment-var PORT` raised per copy;
//! `opm scale` grows and shrinks a group without touching the copies it
//! keeps; an action on the name acts on every copy and one on an id on that
//! copy; a group survives a SIGKILLed daemon, `save` + `restore`, and a
//! process file applied again with another count; and `reload` of a group
//! replaces one copy at a time, so a server of two copies answers every
//! request while it is reloaded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::prereq::{needs, require};
use crate::common::{environ, exited, free_port, pid_of, wait_until, TestHome, WAIT};

/// The `list` entries of `name`, lowest instance first.
fn copies(home: &TestHome, name: &str) -> Vec<Value> {
    let mut out: Vec<Value> = home
        .list()
        .into_iter()
        .filter(|p| p["name"] == name)
        .collect();
    out.sort_by_key(|p| p["instance"].as_u64());
    out
}

/// Each copy's (instance, pid), lowest instance first.
fn pids(home: &TestHome, name: &str) -> Vec<(u64, i32)> {
    copies(home, name)
        .iter()
        .map(|p| (p["instance"].as_u64().expect("an instance"), pid_of(p)))
        .collect()
}

/// The value of `var` in the environment of `pid`.
fn env_of(pid: i32, var: &str) -> Option<String> {
    let prefix = format!("{var}=");
    environ(pid)?
        .into_iter()
        .find_map(|e| e.strip_prefix(&prefix).map(str::to_string))
}

#[test]
fn four_instances_get_their_own_index_port_pid_and_logs() {
    let home = TestHome::new();
    let out = home
        .opm(&[
            "start",
            "sleep 1000",
            "--name",
            "w",
            "-i",
            "4",
            "--increment-var",
            "PORT",
            "--env",
            "PORT=3000",
        ])
        .ok();
    assert!(
        out.stdout.contains("w:3"),
        "the table shows each copy: {out}"
    );
    let list = copies(&home, "w");
    assert_eq!(list.len(), 4, "{list:#?}");
    let mut ids = Vec::new();
    let mut seen_pids = Vec::new();
    for (k, p) in list.iter().enumerate() {
        assert_eq!(p["instance"], k as u64, "{p:#}");
        assert_eq!(p["instances"], 4, "{p:#}");
        assert_eq!(p["status"], "online", "{p:#}");
        let pid = pid_of(p);
        assert_eq!(
            env_of(pid, "OPM_INSTANCE").as_deref(),
            Some(&*k.to_string())
        );
        assert_eq!(
            env_of(pid, "NODE_APP_INSTANCE").as_deref(),
            Some(&*k.to_string())
        );
        assert_eq!(
            env_of(pid, "PORT"),
            Some((3000 + k).to_string()),
            "PORT raised by the index"
        );
        ids.push(p["id"].as_u64().expect("id"));
        seen_pids.push(pid);
    }
    ids.dedup();
    seen_pids.sort_unstable();
    seen_pids.dedup();
    assert_eq!((ids.len(), seen_pids.len()), (4, 4), "own ids and pids");
    // Each copy its own log files, and `info` names the whole group.
    let info = home.info("w");
    assert_eq!(info["group"].as_array().map(Vec::len), Some(4), "{info:#}");
    let logs: Vec<String> = list
        .iter()
        .map(|p| home.info(&p["id"].to_string())["out_log"].to_string())
        .collect();
    let mut unique = logs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{logs:?}");
    let text = home.opm(&["info", "w:2"]).ok();
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("instance") && l.contains("2 of 4")),
        "{text}"
    );
    // The same again: the name is taken, and without a name the command
    // already runs (issue 12's duplicate rule), so nothing more is created.
    let again = home
        .opm(&["start", "sleep 1000", "--name", "w", "-i", "4"])
        .failed();
    assert!(again.stderr.contains("already exists"), "{again}");
    let unnamed = home.opm(&["start", "sleep 1000", "-i", "4"]).failed();
    assert!(unnamed.stderr.contains("already runs"), "{unnamed}");
    assert_eq!(home.list().len(), 4);
    // increment_var needs a number to start from.
    let bad = home
        .opm(&[
            "start",
            "sleep 999",
            "--name",
            "x",
            "-i",
            "2",
            "--increment-var",
            "NOPE_VAR",
        ])
        .failed();
    assert!(bad.stderr.contains("NOPE_VAR"), "{bad}");
    let zero = home
        .opm(&["start", "sleep 998", "--name", "y", "-i", "many"])
        .failed();
    assert!(zero.stderr.contains("many"), "{zero}");
    home.opm(&["remove", "w"]).ok();
    assert!(home.list().is_empty());
    for pid in seen_pids {
        wait_until(WAIT, "every copy to end", || exited(pid));
    }
}

#[test]
fn scale_adds_and_removes_copies_and_leaves_the_kept_ones_running() {
    let home = TestHome::new();
    home.opm(&["start", "sleep 1000", "--name", "s", "-i", "2"])
        .ok();
    let before = pids(&home, "s");
    assert_eq!(before.len(), 2);
    let out = home.opm(&["scale", "s", "4"]).ok();
    assert!(out.stdout.contains("s runs 4 instances"), "{out}");
    let grown = pids(&home, "s");
    assert_eq!(
        grown.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(&grown[..2], &before[..], "the kept copies were not touched");
    assert!(copies(&home, "s").iter().all(|p| p["instances"] == 4));
    let third = grown[2].1;
    assert_eq!(env_of(third, "OPM_INSTANCE").as_deref(), Some("2"));
    // Shrinking stops and removes the highest indexes.
    home.opm(&["scale", "s", "-3"]).ok();
    let shrunk = pids(&home, "s");
    assert_eq!(shrunk, vec![before[0]], "copy 0 kept as it was");
    for (_, pid) in &grown[1..] {
        wait_until(WAIT, "a removed copy to end", || exited(*pid));
    }
    home.opm(&["scale", "s", "+1"]).ok();
    assert_eq!(pids(&home, "s").len(), 2);
    let bad = home.opm(&["scale", "s", "0"]).failed();
    assert!(bad.stderr.contains("opm remove"), "{bad}");
    let none = home.opm(&["scale", "nope", "2"]).failed();
    assert!(none.stderr.contains("nope"), "{none}");
    home.opm(&["remove", "s"]).ok();
}

#[test]
fn an_action_on_the_name_acts_on_every_copy_and_one_on_an_id_on_that_copy() {
    let home = TestHome::new();
    home.opm(&["start", "sleep 1000", "--name", "g", "-i", "3"])
        .ok();
    let list = copies(&home, "g");
    let id = |k: usize| list[k]["id"].to_string();
    home.opm(&["stop", "g"]).ok();
    assert!(
        copies(&home, "g").iter().all(|p| p["status"] == "stopped"),
        "{:#?}",
        copies(&home, "g")
    );
    home.opm(&["start", &id(1)]).ok();
    let status: Vec<String> = copies(&home, "g")
        .iter()
        .map(|p| p["status"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(status, ["stopped", "online", "stopped"]);
    home.opm(&["restart", "g"]).ok();
    assert!(copies(&home, "g").iter().all(|p| p["status"] == "online"));
    // `g:2` names copy 2 alone.
    home.opm(&["stop", "g:2"]).ok();
    assert_eq!(copies(&home, "g")[2]["status"], "stopped");
    // Removing copy 0 (the one the name index pointed at) leaves the name
    // to the others, and the database reopens clean.
    home.opm(&["remove", &id(0)]).ok();
    assert_eq!(copies(&home, "g").len(), 2);
    home.opm(&["daemon", "stop"]).ok();
    let out = home.opm(&["daemon", "restore"]).ok();
    assert!(!out.stdout.contains("damaged"), "{out}");
    assert_eq!(home.info("g")["group"].as_array().map(Vec::len), Some(2));
    home.opm(&["remove", "g"]).ok();
    assert!(home.list().is_empty(), "{:#?}", home.list());
}

#[test]
fn a_group_survives_a_sigkilled_daemon_and_save_and_restore_without_duplicates() {
    let home = TestHome::new();
    home.opm(&[
        "start",
        "sleep 1000",
        "--name",
        "k",
        "-i",
        "3",
        "--increment-var",
        "PORT",
        "--env",
        "PORT=4000",
    ])
    .ok();
    let before = pids(&home, "k");
    home.kill_daemon();
    home.opm(&["daemon", "restore"]).ok();
    assert_eq!(
        pids(&home, "k"),
        before,
        "every copy adopted, none run twice"
    );
    assert_eq!(home.list().len(), 3);
    // `save` writes the group once; `restore` brings back three copies.
    home.opm(&["save"]).ok();
    let dump = std::fs::read_to_string(home.join("dump.toml")).expect("dump.toml");
    assert_eq!(dump.matches("name = \"k\"").count(), 1, "{dump}");
    assert!(dump.contains("instances = 3"), "{dump}");
    home.opm(&["remove", "k"]).ok();
    for (_, pid) in &before {
        wait_until(WAIT, "the removed copies to end", || exited(*pid));
    }
    home.opm(&["restore"]).ok();
    let back = pids(&home, "k");
    assert_eq!(
        back.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(env_of(back[2].1, "PORT").as_deref(), Some("4002"));
    // A second restore finds the group there and creates nothing.
    home.opm(&["restore"]).ok();
    assert_eq!(home.list().len(), 3);
    home.opm(&["remove", "k"]).ok();
}

#[test]
fn a_daemon_killed_while_it_creates_a_group_leaves_all_of_it_or_none() {
    if !crate::durability::failpoints_or_skip() {
        return;
    }
    for point in [
        "store::before-insert",
        "store::after-insert",
        "store::after-fsync",
    ] {
        let home = TestHome::new();
        let spec = format!("{point}=1");
        home.opm_env(&["daemon", "restore"], &[("OPM_FAILPOINTS", &spec)])
            .ok();
        let daemon = home.daemon_pid().expect("daemon pid");
        let out = home.opm(&["start", "sleep 1000", "--name", "c", "-i", "5"]);
        home.wait_daemon_gone(daemon);
        home.opm(&["daemon", "restore"]).ok();
        let n = copies(&home, "c").len();
        assert!(
            n == 0 || n == 5,
            "{point}: {n} of 5 copies after the crash ({out})"
        );
        let idx: Vec<u64> = copies(&home, "c")
            .iter()
            .filter_map(|p| p["instance"].as_u64())
            .collect();
        assert!(idx.is_empty() || idx == [0, 1, 2, 3, 4], "{point}: {idx:?}");
        home.opm(&["remove", "all"]).ok();
    }
}

#[test]
fn a_process_file_applied_again_with_another_count_scales_the_group() {
    let home = TestHome::new();
    let file = home.join("app.toml");
    let write = |n: u32| {
        std::fs::write(
            &file,
            format!("[[process]]\nname = \"f\"\nscript = \"sleep 1000\"\ninstances = {n}\n"),
        )
        .expect("write app.toml");
    };
    write(3);
    home.opm(&["start", "app.toml"]).ok();
    let three = pids(&home, "f");
    assert_eq!(three.len(), 3);
    write(2);
    home.opm(&["start", "app.toml"]).ok();
    let two = pids(&home, "f");
    assert_eq!(
        two,
        three[..2].to_vec(),
        "copy 2 removed, the others untouched"
    );
    wait_until(WAIT, "the removed copy to end", || exited(three[2].1));
    // The same file once more changes nothing.
    home.opm(&["start", "app.toml"]).ok();
    assert_eq!(pids(&home, "f"), two);
    home.opm(&["remove", "app.toml"]).ok();
    assert!(home.list().is_empty());
}

/// A small HTTP server for the rolling reload: its copies share one
/// listening socket, handed from a running copy to a starting one; on SIGTERM
/// a copy stops accepting, answers the requests it has, and exits, and what
/// waits in the queue is the other copies' to take. The socket lives while a
/// copy holds it: stopping every copy at once (or the last one before its
/// replacement took the socket) leaves no listener, and requests fail.
const SERVER: &str = r#"
import fcntl, glob, os, select, signal, socket, threading

# The stop signal only sets a flag, and the byte it writes to the wakeup
# pipe ends the wait in select: no exception can come between an accept and
# the hand-over of its connection to a worker (one raised from the handler
# there lost a connection the kernel had already given, and its client got
# a reset).
stopping = False
def on_stop(*_):
    global stopping
    stopping = True
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGTERM, on_stop)
signal.signal(signal.SIGINT, on_stop)

def answer(conn):
    try:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        body = os.environ.get("OPM_INSTANCE", "?").encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    finally:
        conn.close()

# Every copy accepts from one listening socket: a starting copy takes it
# from a running one over a unix socket (SCM_RIGHTS), and only a copy that
# finds none opens it. A stopping copy closes its descriptor and what is
# queued stays for the others; with a socket of its own per copy
# (SO_REUSEPORT), closing it would reset what the kernel had queued there.
port = int(os.environ["PORT"])
mine = "listener-%d.sock" % os.getpid()
with open("listener.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    lsock = None
    for path in glob.glob("listener-*.sock"):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(path)
                _, fds, _, _ = socket.recv_fds(c, 1, 1)
            lsock = socket.socket(fileno=fds[0])
            break
        except (OSError, IndexError):
            try:
                os.unlink(path)
            except OSError:
                pass
    if lsock is None:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", port))
        lsock.listen(128)
    lsock.setblocking(False)
    share = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    share.bind(mine)
    share.listen(8)

def hand_over():
    while True:
        c, _ = share.accept()
        with c:
            socket.send_fds(c, [b"L"], [lsock.fileno()])
threading.Thread(target=hand_over, daemon=True).start()

workers = []
while not stopping:
    ready, _, _ = select.select([lsock, wake_r], [], [])
    if wake_r in ready:
        os.read(wake_r, 512)
    if lsock in ready:
        try:
            conn, _ = lsock.accept()
        except BlockingIOError:
            continue  # another copy took it
        conn.setblocking(True)
        t = threading.Thread(target=answer, args=(conn,))
        t.start()
        workers.append(t)
os.unlink(mine)
lsock.close()
for t in workers:
    t.join()
"#;

/// One GET to `addr`: a whole 200 answer, or which step failed and how
/// (refused, reset, timed out).
fn get(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    if text.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answer: {text:?}"))
    }
}

#[test]
fn a_two_instance_server_reloaded_under_load_answers_every_request() {
    if !require(needs().tool("python3", "python3").done()) {
        return;
    }
    let home = TestHome::new();
    std::fs::write(home.join("server.py"), SERVER).expect("write server.py");
    let port = free_port();
    let port_env = format!("PORT={port}");
    home.opm(&[
        "start",
        "python3 server.py",
        "--name",
        "web",
        "-i",
        "2",
        "--env",
        &port_env,
    ])
    .ok();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until(WAIT, "the server to answer", || get(addr).is_ok());
    let before = pids(&home, "web");
    // A request every 25 ms (40 per second) from another thread, for as
    // long as the reload runs.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU32::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let begun = Instant::now();
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                match get(addr) {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failed.lock().expect("failures").push(format!(
                        "{} ms into the load: {e}",
                        t.duration_since(begun).as_millis()
                    )),
                }
                std::thread::sleep(Duration::from_millis(25).saturating_sub(t.elapsed()));
            }
        })
    };
    wait_until(WAIT, "the load to run", || ok.load(Ordering::SeqCst) >= 10);
    let started = Instant::now();
    let out = home.opm(&["reload", "web"]);
    let took = started.elapsed();
    let (from, to) = (
        started.duration_since(begun).as_millis(),
        (started + took).duration_since(begun).as_millis(),
    );
    // A little more load after the reload, on the new copies only.
    let after_ok = ok.load(Ordering::SeqCst) + 10;
    wait_until(WAIT, "more requests after the reload", || {
        ok.load(Ordering::SeqCst) >= after_ok
    });
    stop.store(true, Ordering::SeqCst);
    load.join().expect("the load thread");
    assert!(out.success(), "{out}");
    let after = pids(&home, "web");
    assert_eq!(after.len(), 2);
    for ((_, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "every copy was replaced: {before:?} → {after:?}");
    }
    let ok = ok.load(Ordering::SeqCst);
    let failed = failed.lock().expect("failures").clone();
    // Restarting both copies at once would leave no listener until the new
    // ones bind; the rolling reload keeps one serving at every moment, so
    // not one request may fail.
    assert!(
        failed.is_empty(),
        "{} failed, {ok} answered; the reload ran from {from} to {to} ms into the load:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(ok >= 20, "{ok} answered");
    eprintln!("rolling reload of 2 copies: {took:?}, {ok} requests answered, none failed");
    home.opm(&["remove", "web"]).ok();
}
