//! The role system: `standalone` (no server-agent relationship), `server`
//! (keeps a registry of agents, judges their liveness, and controls their
//! processes through their APIs) and `agent` (registers with a server,
//! heartbeats, and exposes its API to it). `server.rs` and `agent.rs` hold
//! each side; this file holds what both use. The room depends downward
//! only: joining and leaving a server, which also move the TCP API, are
//! driven from `api/link.rs`.

pub mod agent;
pub mod server;

/// A cheap random number for jitter (not for secrets).
pub fn jitter_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = crate::spec::now_ms() ^ ((std::process::id() as u64) << 32) | 1;
    }
    // xorshift64
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}
