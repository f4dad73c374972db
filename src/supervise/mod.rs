//! The Linux facts layer: everything opm knows about real processes comes
//! from here. It spawns children into their own session and process group,
//! signals whole groups, watches exits through pidfds and reaps them, samples
//! CPU and memory from `/proc`, and reads the per-process log files. It knows
//! nothing of HTTP, the store or desired state; callers decide, this module
//! only acts and observes.

pub mod logs;
pub mod pidfd;
pub mod proc;
pub mod spawn;
pub mod watch;

pub use pidfd::{reap, ExitStatus, PidFd};
pub use proc::{ProcStat, Sampler, Usage};
pub use spawn::{signal_group, spawn, split_command, SpawnSpec, Spawned};

/// An inotify instance registered with tokio's reactor.
pub struct InotifyFd(pub nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Registers an inotify instance for readiness (call inside a runtime).
pub fn inotify_fd(
    inotify: nix::sys::inotify::Inotify,
) -> std::io::Result<tokio::io::unix::AsyncFd<InotifyFd>> {
    // SAFETY: the Inotify owns its descriptor, reports the same one from
    // as_raw_fd for its whole life, and closes it only when dropped, which
    // happens only when the AsyncFd that owns it is dropped.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            InotifyFd(inotify),
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(std::io::Error::from)
}
