//! Watching process exits without polling or SIGCHLD: a `PidFd` wraps a
//! Linux pidfd (`pidfd_open(2)`) registered with tokio, which becomes
//! readable when the process terminates. Works for any process we may see,
//! not only our children. `reap` collects the exit status of one of our own
//! children with a non-blocking `waitpid`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A pidfd registered with the current tokio runtime's reactor.
#[derive(Debug)]
pub struct PidFd {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

/// Opens a pidfd for `pid`. Must be called inside a tokio runtime with IO
/// enabled. Fails with `ESRCH` if no such process exists (a zombie still
/// exists until reaped, and its pidfd is immediately readable).
pub fn open(pid: u32) -> io::Result<PidFd> {
    let raw = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid pid {pid}")))?;
    let flags: libc::c_uint = 0;
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, flags) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw_fd =
        RawFd::try_from(ret).map_err(|_| io::Error::other(format!("pidfd_open returned {ret}")))?;
    // SAFETY: raw_fd was just returned by a successful pidfd_open, so it is
    // an open descriptor that nothing else owns; OwnedFd takes ownership and
    // closes it exactly once. pidfd_open always sets close-on-exec, so it does
    // not leak into children we spawn.
    let owned = unsafe { OwnedFd::from_raw_fd(raw_fd) };
    // SAFETY: an OwnedFd always reports the same descriptor from as_raw_fd
    // and keeps it open until it is dropped, which happens only when the
    // AsyncFd that owns it is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?;
    Ok(PidFd { pid, fd })
}

impl PidFd {
    /// The pid this descriptor refers to.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the process has terminated (the pidfd is readable).
    /// Returns at once on every later call. Does not reap; call [`reap`]
    /// afterwards for a child of ours.
    pub async fn exited(&self) -> io::Result<()> {
        // Readiness is deliberately not cleared: once a process has exited
        // its pidfd stays readable for good.
        let _guard = self.fd.readable().await?;
        Ok(())
    }
}

/// How a process ended: exactly one of `code` (normal exit) and `signal`
/// (killed by that signal number) is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Non-blocking `waitpid(pid, WNOHANG)`. `Some` once our child `pid` has
/// exited (and is now reaped); `None` if it still runs or is not our child
/// (`ECHILD`, including when it was already reaped).
pub fn reap(pid: u32) -> Option<ExitStatus> {
    let raw = i32::try_from(pid).ok().filter(|p| *p > 0)?;
    // With WNOHANG waitpid never sleeps, so EINTR cannot occur.
    match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus {
            code: Some(code),
            signal: None,
        }),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(ExitStatus {
            code: None,
            signal: Some(sig as i32),
        }),
        // StillAlive (or a stop/continue report we did not ask for), ECHILD.
        Ok(_) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::spawn::{signal_group, spawn, SpawnSpec};
    use nix::sys::signal::Signal;
    use std::time::Duration;

    #[tokio::test]
    async fn open_missing_pid_fails() {
        assert!(open(0).is_err());
        assert!(open(u32::MAX).is_err());
        // pid_max is at most 2^22, so this pid cannot exist.
        let e = open(999_999_999).expect_err("no such pid");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn reap_of_non_child_is_none() {
        assert_eq!(reap(1), None);
        assert_eq!(reap(0), None);
        assert_eq!(reap(std::process::id()), None);
    }

    #[tokio::test]
    async fn exited_fires_and_reap_reports_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = vec!["-c".to_string(), "exit 7".to_string()];
        let spec = SpawnSpec {
            program: "/bin/sh",
            args: &args,
            cwd: dir.path(),
            env: &[],
            base: None,
            out_log: &dir.path().join("out.log"),
            err_log: &dir.path().join("err.log"),
            run_as: None,
        };
        let child = spawn(&spec).expect("spawn");
        let fd = open(child.pid).expect("pidfd");
        assert_eq!(fd.pid(), child.pid);
        let waited = tokio::time::timeout(Duration::from_secs(10), fd.exited()).await;
        if waited.is_err() {
            let _ = signal_group(child.pid, Signal::SIGKILL);
        }
        waited.expect("exits in time").expect("pidfd wait");
        // A second wait returns at once.
        tokio::time::timeout(Duration::from_secs(1), fd.exited())
            .await
            .expect("still readable")
            .expect("pidfd wait");
        assert_eq!(
            reap(child.pid),
            Some(ExitStatus {
                code: Some(7),
                signal: None
            })
        );
        assert_eq!(reap(child.pid), None);
    }
}
