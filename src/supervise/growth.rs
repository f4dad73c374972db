//! Which log files may have grown since they were last looked at, so the
//! rotation check stats only those: a thousand processes' logs statted
//! every second cost the idle daemon half a percent of a core.
//!
//! Each log has a one-shot inotify watch (`IN_MODIFY`, and a rename, a
//! deletion or a change of attributes), armed before the file is looked at:
//! a write after the look fires it, and the kernel removes it, so a log
//! written a thousand times between two looks costs one event. A log nobody
//! writes costs nothing. The watches live on their own inotify instance,
//! read without blocking at each check (no thread). A log the kernel will
//! not watch (no inotify, the watch limit reached, the file not there yet)
//! is looked at every time, and every `SWEEP_EVERY` checks all logs are, so
//! nothing missed can grow for long.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Every this many checks, every log is looked at, watched or not.
pub const SWEEP_EVERY: u32 = 60;

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONESHOT
}

pub struct Growth {
    inotify: Option<Inotify>,
    /// Every log to look after, as last given to `set_live` (each path
    /// held once, shared by the maps below and the caller's).
    live: Vec<Arc<Path>>,
    /// Each log with an armed watch, and back.
    armed: HashMap<Arc<Path>, WatchDescriptor>,
    by_wd: HashMap<WatchDescriptor, Arc<Path>>,
    /// Logs due at the next check: written since their last look, new, or
    /// without a watch.
    pending: BTreeSet<Arc<Path>>,
    checks: u32,
}

impl Default for Growth {
    fn default() -> Self {
        Growth::new()
    }
}

impl Growth {
    pub fn new() -> Growth {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .inspect_err(|e| {
                tracing::warn!(
                    "no inotify for the log checks ({e}): every log is statted at every check"
                )
            })
            .ok();
        Growth {
            inotify,
            live: Vec::new(),
            armed: HashMap::new(),
            by_wd: HashMap::new(),
            pending: BTreeSet::new(),
            checks: 0,
        }
    }

    /// The logs to look after from now on (call it when they change):
    /// new ones are due at once, those no longer there are forgotten.
    pub fn set_live(&mut self, live: Vec<Arc<Path>>) {
        let keep: BTreeSet<&Arc<Path>> = live.iter().collect();
        let gone: Vec<Arc<Path>> = self
            .armed
            .keys()
            .filter(|p| !keep.contains(p))
            .cloned()
            .collect();
        for path in gone {
            self.disarm(&path);
        }
        self.pending.retain(|p| keep.contains(p));
        for path in &live {
            if !self.armed.contains_key(path) {
                self.pending.insert(path.clone());
            }
        }
        self.live = live;
    }

    /// The logs to look at now: those written (or renamed, deleted) since
    /// their last look, new ones, those without a watch, or all of them at
    /// a sweep or after the kernel lost events. Call `arm` on each before
    /// looking at it.
    pub fn due(&mut self) -> Vec<Arc<Path>> {
        let mut sweep = self.checks % SWEEP_EVERY == 0;
        self.checks = self.checks.wrapping_add(1);
        if let Some(inotify) = &self.inotify {
            loop {
                match inotify.read_events() {
                    Ok(events) if !events.is_empty() => {
                        for e in events {
                            if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                                sweep = true;
                            }
                            // A one-shot watch is gone once it fired.
                            if let Some(path) = self.by_wd.remove(&e.wd) {
                                self.armed.remove(&path);
                                self.pending.insert(path);
                            }
                        }
                    }
                    // Empty, EAGAIN, or an error: nothing more to read now.
                    _ => break,
                }
            }
        }
        if sweep {
            self.pending.clear();
            return self.live.clone();
        }
        std::mem::take(&mut self.pending).into_iter().collect()
    }

    /// Arms the watch on `path` (before it is looked at: a write after
    /// this fires it). A log that cannot be watched is due again next time.
    pub fn arm(&mut self, path: &Arc<Path>) {
        if self.armed.contains_key(path) {
            return;
        }
        let watched = self
            .inotify
            .as_ref()
            .and_then(|i| i.add_watch(&**path, flags()).ok());
        match watched {
            Some(wd) => {
                // The same inode under another name (a merged log, a hard
                // link) gives the same watch: the newest name keeps it.
                if let Some(old) = self.by_wd.insert(wd, path.clone()) {
                    self.armed.remove(&old);
                    self.pending.insert(old);
                }
                self.armed.insert(path.clone(), wd);
            }
            None => {
                self.pending.insert(path.clone());
            }
        }
    }

    fn disarm(&mut self, path: &Path) {
        if let Some(wd) = self.armed.remove(path) {
            self.by_wd.remove(&wd);
            if let Some(inotify) = &self.inotify {
                let _ = inotify.rm_watch(wd);
            }
        }
    }

    /// How many logs have an armed watch.
    pub fn armed(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn set(paths: &[&Arc<Path>]) -> Vec<Arc<Path>> {
        paths.iter().map(|p| Arc::clone(p)).collect()
    }

    /// Looks at what is due as the rotation check does: arm, then look.
    fn check(g: &mut Growth) -> Vec<Arc<Path>> {
        let due = g.due();
        for p in &due {
            g.arm(p);
        }
        due
    }

    #[test]
    fn only_written_renamed_or_new_logs_are_due_between_sweeps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b): (Arc<Path>, Arc<Path>) = (
            dir.path().join("a.log").into(),
            dir.path().join("b.log").into(),
        );
        std::fs::write(&a, "").expect("a");
        std::fs::write(&b, "").expect("b");
        let mut g = Growth::new();
        assert!(g.inotify.is_some(), "inotify is there on Linux");
        g.set_live(set(&[&a, &b]));
        // The first check is a sweep: both, and both armed.
        assert_eq!(check(&mut g), vec![a.clone(), b.clone()]);
        assert_eq!(g.armed(), 2);
        // Nobody wrote: nothing is due.
        assert!(check(&mut g).is_empty());
        // Many writes to a: one look.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&a)
            .expect("open");
        for _ in 0..100 {
            f.write_all(b"line\n").expect("write");
        }
        assert_eq!(check(&mut g), vec![a.clone()]);
        assert!(check(&mut g).is_empty());
        // b renamed away and made again (logrotate): due, and the new file
        // is the one watched.
        std::fs::rename(&b, dir.path().join("b.log.1")).expect("rename");
        std::fs::write(&b, "").expect("b again");
        assert_eq!(check(&mut g), vec![b.clone()]);
        std::fs::write(&b, "x").expect("write the new b");
        assert_eq!(check(&mut g), vec![b.clone()]);
        // A new log is due at once; a log no longer live is forgotten.
        let c: Arc<Path> = dir.path().join("c.log").into();
        std::fs::write(&c, "").expect("c");
        g.set_live(set(&[&a, &c]));
        assert_eq!(check(&mut g), vec![c.clone()]);
        assert_eq!(g.armed(), 2);
    }

    #[test]
    fn a_log_that_cannot_be_watched_is_due_every_time_and_a_sweep_sees_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, missing): (Arc<Path>, Arc<Path>) = (
            dir.path().join("a.log").into(),
            dir.path().join("not-yet.log").into(),
        );
        std::fs::write(&a, "").expect("a");
        let mut g = Growth::new();
        g.set_live(set(&[&a, &missing]));
        assert_eq!(check(&mut g).len(), 2);
        for _ in 1..SWEEP_EVERY {
            assert_eq!(check(&mut g), vec![missing.clone()]);
        }
        assert_eq!(check(&mut g), vec![a.clone(), missing.clone()]);
    }
}
