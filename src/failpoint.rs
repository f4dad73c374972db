//! Crash points for the tests: under the `failpoints` feature, the daemon
//! reads `OPM_FAILPOINTS=name=N[,name=N...]` at start and SIGKILLs itself the
//! N-th time the named point (a `fail::fail_point!` in the write paths) is
//! passed after it began serving. Without the feature the points compile to
//! nothing and the variable is ignored.

/// The variable that names the points and their hit counts.
pub const ENV: &str = "OPM_FAILPOINTS";

#[cfg(feature = "failpoints")]
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Registers the points named in `OPM_FAILPOINTS`; they count only after `arm`.
#[cfg(feature = "failpoints")]
pub fn setup() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, nth) = item.split_once('=').unwrap_or((item, "1"));
        let nth: u64 = nth.trim().parse().unwrap_or(1);
        let hits = AtomicU64::new(0);
        let name = name.trim().to_string();
        let label = name.clone();
        let registered = fail::cfg_callback(name, move || {
            if !ARMED.load(Ordering::SeqCst) {
                return;
            }
            if hits.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                tracing::warn!("fail point {label}: killing the daemon");
                // SAFETY: raise only sends a signal to this process.
                unsafe { libc::raise(libc::SIGKILL) };
            }
        });
        if let Err(e) = registered {
            tracing::error!("fail point {item}: {e}");
        }
    }
}

#[cfg(not(feature = "failpoints"))]
pub fn setup() {}

/// From now on the points count their hits.
pub fn arm() {
    #[cfg(feature = "failpoints")]
    ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Under the `failpoints` feature, `OPM_JOURNAL_LIMIT=BYTES` makes the store
/// write a whole snapshot whenever its journal is longer than that (0: at
/// every commit), so the crash tests reach the snapshot's write path too.
pub fn journal_limit() -> Option<u64> {
    #[cfg(feature = "failpoints")]
    {
        static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        *LIMIT.get_or_init(|| {
            std::env::var("OPM_JOURNAL_LIMIT")
                .ok()
                .and_then(|v| v.trim().parse().ok())
        })
    }
    #[cfg(not(feature = "failpoints"))]
    None
}
