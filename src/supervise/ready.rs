//! The facts behind readiness: the daemon's notify socket (systemd's
//! `sd_notify` protocol: a child sends `READY=1` to `$NOTIFY_SOCKET`, a unix
//! datagram socket) with the sender known by the credentials the kernel
//! attaches (`SO_PASSCRED`), and whether a process group listens on a TCP
//! port (`/proc/net/tcp{,6}` against the sockets its members hold). It
//! observes; the reconciler decides what a sign means.

use std::collections::HashSet;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};

/// The longest message read; the protocol's are a few short lines.
const MAX_MESSAGE: usize = 4096;
/// The longest `STATUS=` text kept.
pub const MAX_STATUS_LEN: usize = 200;

/// One datagram received on the notify socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notice {
    /// The sender's pid, from the kernel (not from the message).
    pub pid: u32,
    /// `READY=1` was among its lines.
    pub ready: bool,
    /// Its `STATUS=` text, if it had one (cut to `MAX_STATUS_LEN`).
    pub status: Option<String>,
}

/// Reads the lines of one message (`KEY=VALUE`, newline-separated). Keys
/// opm does not act on (`MAINPID=`, `STOPPING=1`, `WATCHDOG=1`...) are
/// ignored: opm watches the process group it started.
pub fn parse(pid: u32, message: &[u8]) -> Notice {
    let text = String::from_utf8_lossy(message);
    let mut notice = Notice {
        pid,
        ..Notice::default()
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => notice.ready = true,
            Some(("STATUS", s)) => {
                notice.status = Some(s.chars().take(MAX_STATUS_LEN).collect());
            }
            _ => {}
        }
    }
    notice
}

/// The daemon's notify socket.
pub struct NotifySocket {
    sock: tokio::net::UnixDatagram,
    /// What children get as `NOTIFY_SOCKET`: the path, or `@name` for an
    /// abstract address when the path is too long for a socket address.
    pub address: String,
}

impl NotifySocket {
    /// Binds the socket at `path` (a stale one left by an earlier daemon is
    /// replaced), or at an abstract address named after it when the path
    /// does not fit in a socket address. Call inside the tokio runtime.
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        let fits = path.as_os_str().as_bytes().len() < 108;
        let (std_sock, address) = if fits {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let s = std::os::unix::net::UnixDatagram::bind(path)?;
            (s, path.display().to_string())
        } else {
            let name = format!(
                "opm-notify-{:08x}",
                crc32fast::hash(path.as_os_str().as_bytes())
            );
            let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(io::Error::from)?;
            let fd = socket::socket(
                socket::AddressFamily::Unix,
                socket::SockType::Datagram,
                socket::SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(io::Error::from)?;
            socket::bind(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
            (
                std::os::unix::net::UnixDatagram::from(fd),
                format!("@{name}"),
            )
        };
        socket::setsockopt(&std_sock, sockopt::PassCred, &true).map_err(io::Error::from)?;
        std_sock.set_nonblocking(true)?;
        Ok(NotifySocket {
            sock: tokio::net::UnixDatagram::from_std(std_sock)?,
            address,
        })
    }

    /// The next message with its sender's pid. Messages without
    /// credentials (none are sent without them while `SO_PASSCRED` is on)
    /// are skipped.
    pub async fn recv(&self) -> io::Result<Notice> {
        loop {
            self.sock.readable().await?;
            let mut buf = [0u8; MAX_MESSAGE];
            let got = self.sock.try_io(tokio::io::Interest::READABLE, || {
                let mut cmsg = nix::cmsg_space!(libc::ucred);
                let mut iov = [io::IoSliceMut::new(&mut buf)];
                let msg = socket::recvmsg::<()>(
                    self.sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
                )
                .map_err(io::Error::from)?;
                let pid = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|c| match c {
                        ControlMessageOwned::ScmCredentials(cred) => u32::try_from(cred.pid()).ok(),
                        _ => None,
                    })
                });
                let len = msg.bytes.min(MAX_MESSAGE);
                Ok(pid.map(|pid| (pid, len)))
            });
            let (pid, len) = match got {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            return Ok(parse(pid, &buf[..len]));
        }
    }
}

/// The socket inodes held by the members of process group `pgid`.
fn group_sockets(pgid: u32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for pid in super::proc::proc_pids() {
        if super::proc::stat(pid).is_none_or(|st| st.pgrp != pgid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
            {
                inodes.insert(n);
            }
        }
    }
    inodes
}

/// The inodes of the TCP sockets listening on `port`, from the text of
/// `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    let want = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let local_port = f.get(1)?.rsplit(':').next()?;
            (local_port == want && *f.get(3)? == "0A")
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Whether a member of process group `pgid` listens on TCP `port` (any
/// address). Another program on that port, or the old run of a reload
/// sharing it, does not count: that is why this reads `/proc` rather than
/// trying a connection.
pub fn group_listens(pgid: u32, port: u16) -> bool {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listening.extend(listening_inodes(&text, port));
        }
    }
    if listening.is_empty() {
        return false;
    }
    let held = group_sockets(pgid);
    listening.iter().any(|i| held.contains(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_status_are_read_and_other_keys_ignored() {
        let n = parse(7, b"STATUS=warming up\nMAINPID=9\nREADY=1\n");
        assert_eq!(n.pid, 7);
        assert!(n.ready);
        assert_eq!(n.status.as_deref(), Some("warming up"));
        assert!(!parse(7, b"READY=0\nSTOPPING=1").ready);
    }

    #[test]
    fn a_listening_socket_is_found_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 8080), vec![4242]);
        assert!(listening_inodes(table, 8081).is_empty());
    }
}
