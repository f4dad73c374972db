//! The Linux facts layer: everything opm knows about real processes comes
//! from here. It spawns children into their own session and process group,
//! signals whole groups, watches exits through pidfds and reaps them, samples
//! CPU and memory from `/proc`, reads the per-process log files, and watches
//! files through the daemon's one inotify instance, and runs children as
//! another user (`user.rs`); it also trims the daemon's own heap (`heap.rs`). It knows
//! nothing of HTTP, the store or desired state; callers decide, this module
//! only acts and observes.

pub mod growth;
pub mod heap;
pub mod inotify;
pub mod logs;
pub mod pidfd;
pub mod proc;
pub mod ready;
pub mod rotate;
pub mod spawn;
pub mod user;
pub mod watch;

pub use pidfd::{reap, ExitStatus, PidFd};
pub use proc::{ProcStat, Sampler, Usage};
pub use spawn::{signal_group, spawn, split_command, SpawnSpec, Spawned};
