//! A flood of TCP connections does not stop supervision: with the daemon
//! held to 1,024 file descriptors, 1,100 connections that never finish
//! their request leave the unix socket answering and a crash loop
//! restarting; connections over the cap are closed at once, the rest when
//! their headers do not arrive in time, and the TCP API answers again.
//! Each request knows its peer, so a token guesser locks out only itself.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::http::{api_config, exchange, host, ApiHome, Auth, Response};
use crate::common::{
    free_port, raise_own_fd_limit, run, wait_until, with_fd_limit, with_fd_limits, TestHome,
};

/// What the daemon's `[daemon.web] max_connections` defaults to.
const CAP: usize = 256;
const FLOOD: usize = 1_100;

/// Whether the server has closed `conn` (end of file or an error), without
/// waiting.
fn closed_by_server(mut conn: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn half_open_connections_leave_the_socket_answering_and_restarts_going() {
    raise_own_fd_limit(FLOOD as u64 + 512);
    let home = TestHome::new();
    let port = free_port();
    home.write_config(&api_config(
        "standalone",
        port,
        "flood-test-token-0123456789abcdef",
    ));
    let mut cmd = home.command(&["daemon", "restore"]);
    with_fd_limit(&mut cmd, 1024);
    run(cmd).ok();
    let daemon = home.daemon_pid().expect("the daemon runs");
    home.opm(&[
        "start",
        "sh -c 'sleep 0.1; exit 1'",
        "--name",
        "crashy",
        "--min-uptime",
        "50ms",
        "--restart-delay",
        "50ms",
    ])
    .ok();

    let mut conns: Vec<TcpStream> = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        // The listen backlog may refuse a few while the daemon closes the
        // ones over the cap; the rest make the flood.
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        let _ = c.write_all(b"GET /daemon/list HTTP/1.1\r\nhost: 127.0.0.1\r\nto");
        let _ = c.set_nonblocking(true);
        conns.push(c);
    }
    assert!(conns.len() >= 1_000, "only {} connected", conns.len());

    // While the flood is held (within the 10 s header timeout: every wait
    // below ends by 9 s after it)...
    let flooded = std::time::Instant::now();
    let window = || Duration::from_secs(9).saturating_sub(flooded.elapsed());
    // ...connections over the cap are closed at once...
    wait_until(window(), "the ones over the cap to close", || {
        conns.iter().filter(|c| !closed_by_server(c)).count() <= CAP
    });
    // ...the unix socket answers and the crash loop keeps restarting...
    let restarts = || {
        home.api_list()
            .iter()
            .find(|p| p["name"] == "crashy")
            .and_then(|p| p["restarts"].as_u64())
            .expect("crashy's restarts")
    };
    let before = restarts();
    wait_until(window(), "crashy to restart twice more", || {
        restarts() >= before + 2
    });
    // ...and the daemon keeps descriptors to spare.
    assert!(
        open_fds(daemon) < 1024 - 64,
        "{} descriptors open",
        open_fds(daemon)
    );
    assert!(
        flooded.elapsed() < Duration::from_secs(9),
        "all this happened before any connection could time out"
    );
    let held = conns.iter().filter(|c| !closed_by_server(c)).count();
    assert!(held > 0, "some connections are held until their timeout");

    // Headers that never come end the connection (HEADER_READ_TIMEOUT, 10 s).
    wait_until(
        Duration::from_secs(20),
        "the held connections to time out",
        || conns.iter().all(closed_by_server),
    );
    drop(conns);

    // And TCP serves again.
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(
        format!("GET /health HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("send");
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// One request to the daemon on 127.0.0.1:`port` from the source address
/// `from` (any 127.x.y.z is loopback on Linux).
fn request_from(from: [u8; 4], port: u16, auth: Auth<'_>) -> Response {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&std::net::SocketAddr::from((from, 0)).into())
        .expect("bind the source address");
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    let stream: TcpStream = s.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    exchange(stream, &host(port), "GET", "/daemon/list", auth, &[], None).expect("request")
}

#[test]
fn each_request_knows_its_peer_so_a_guesser_locks_out_only_itself() {
    let api = ApiHome::start();
    let guesser = [127, 0, 0, 2];
    for i in 0..10 {
        let r = request_from(
            guesser,
            api.port,
            Auth::Token(&format!("guess-{i}-0123456789")),
        );
        assert_eq!(r.status, 401, "{r}");
    }
    let r = request_from(guesser, api.port, Auth::Token(&api.token));
    assert_eq!(r.status, 429, "the guesser is locked out: {r}");
    let r = request_from([127, 0, 0, 1], api.port, Auth::Token(&api.token));
    assert_eq!(r.status, 200, "another address is not: {r}");
}

#[test]
fn the_daemon_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let home = TestHome::new();
    let mut cmd = home.command(&["daemon", "restore"]);
    with_fd_limits(&mut cmd, 512, 4096);
    run(cmd).ok();
    let daemon = home.daemon_pid().expect("the daemon runs");
    let limits = std::fs::read_to_string(format!("/proc/{daemon}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open files line");
    let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(values, ["4096", "4096"], "{line}");
}
