//! One inotify instance for every watcher of the daemon (the log rotation
//! check has one more, of its own: `growth.rs`). The kernel allows a user only
//! a few instances (`fs.inotify.max_user_instances`, often 128); one per
//! `--watch` process and one per live log stream would let 128 streams
//! switch `--watch` off. Here every watcher subscribes to the same instance:
//! a thread reads its events and hands each subscriber the changes under
//! the paths it added. A watch on a folder that several subscribers share
//! is added once and removed when the last of them goes.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::mpsc;

/// What every watch reports: the union of what `--watch` and the log
/// streams need (the kernel keeps one mask per watched inode and instance).
fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
}

/// A change seen by a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `path` (a watched path, or a file in a watched folder) changed.
    Path { path: PathBuf, mask: AddWatchFlags },
    /// Changes were lost (the subscriber or the kernel's queue fell behind):
    /// look at everything again.
    Lost,
}

struct Subscriber {
    tx: mpsc::Sender<Change>,
    lost: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// For each kernel watch, the subscribers on it and the path each added.
    watches: HashMap<WatchDescriptor, HashMap<u64, PathBuf>>,
    subscribers: HashMap<u64, Subscriber>,
    next_id: u64,
}

/// The daemon's inotify instance and who listens to it.
pub struct Hub {
    inotify: Inotify,
    state: Mutex<State>,
}

/// A poisoned lock means a panic while the maps were edited; each edit
/// leaves them consistent enough to go on (a stale entry only costs an
/// unused watch), so the guard is taken as is.
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock_or_recover()
}

static HUB: Mutex<Option<&'static Hub>> = Mutex::new(None);

impl Hub {
    /// The daemon's hub, created (with its reader thread) on first use.
    pub fn global() -> io::Result<&'static Hub> {
        let mut slot = HUB.lock_or_recover();
        if let Some(hub) = *slot {
            return Ok(hub);
        }
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
        // Leaked on purpose: it lives as long as the daemon (if the reader
        // thread cannot start, one instance is lost; the next call retries).
        let hub: &'static Hub = Box::leak(Box::new(Hub {
            inotify,
            state: Mutex::new(State::default()),
        }));
        std::thread::Builder::new()
            .name("opm-inotify".into())
            .spawn(move || hub.read_forever())?;
        *slot = Some(hub);
        Ok(hub)
    }

    /// A new subscription whose channel holds up to `capacity` changes
    /// (beyond that, it gets one `Change::Lost`).
    pub fn subscribe(&'static self, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lost = Arc::new(AtomicBool::new(false));
        let mut st = lock(&self.state);
        let id = st.next_id;
        st.next_id += 1;
        st.subscribers.insert(
            id,
            Subscriber {
                tx,
                lost: lost.clone(),
            },
        );
        Subscription {
            hub: self,
            id,
            rx,
            lost,
            watches: Vec::new(),
        }
    }

    fn read_forever(&self) {
        loop {
            match self.inotify.read_events() {
                Ok(events) => self.dispatch(events),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("inotify read failed: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn dispatch(&self, events: Vec<nix::sys::inotify::InotifyEvent>) {
        let mut st = lock(&self.state);
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                for sub in st.subscribers.values() {
                    send(sub, Change::Lost);
                }
                continue;
            }
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The watched path is gone (or the watch was removed).
                st.watches.remove(&ev.wd);
                continue;
            }
            let Some(on) = st.watches.get(&ev.wd) else {
                continue;
            };
            for (id, dir) in on {
                let Some(sub) = st.subscribers.get(id) else {
                    continue;
                };
                let path = match &ev.name {
                    Some(name) => dir.join(name),
                    None => dir.clone(),
                };
                send(
                    sub,
                    Change::Path {
                        path,
                        mask: ev.mask,
                    },
                );
            }
        }
    }
}

fn send(sub: &Subscriber, change: Change) {
    if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(change) {
        sub.lost.store(true, Ordering::Release);
    }
}

/// One listener on the hub: the paths it added and the changes under them.
/// Dropping it removes its watches (those no other subscriber shares).
pub struct Subscription {
    hub: &'static Hub,
    id: u64,
    rx: mpsc::Receiver<Change>,
    lost: Arc<AtomicBool>,
    watches: Vec<WatchDescriptor>,
}

impl Subscription {
    /// Watches `path` (a file, or a folder's direct entries); with
    /// `only_dir`, fails unless it is a folder.
    pub fn add(&mut self, path: &Path, only_dir: bool) -> io::Result<()> {
        let mut flags = flags();
        if only_dir {
            flags |= AddWatchFlags::IN_ONLYDIR;
        }
        // Under the lock: an event on the new watch waits for the entry.
        let mut st = lock(&self.hub.state);
        let wd = self.hub.inotify.add_watch(path, flags)?;
        st.watches
            .entry(wd)
            .or_default()
            .insert(self.id, path.to_path_buf());
        if !self.watches.contains(&wd) {
            self.watches.push(wd);
        }
        Ok(())
    }

    /// How many kernel watches this subscription holds.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// The next change.
    pub async fn next(&mut self) -> Change {
        if self.lost.swap(false, Ordering::AcqRel) {
            return Change::Lost;
        }
        match self.rx.recv().await {
            Some(c) => c,
            // The hub keeps every sender until the subscription drops.
            None => std::future::pending().await,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = lock(&self.hub.state);
        st.subscribers.remove(&self.id);
        for wd in self.watches.drain(..) {
            let Some(on) = st.watches.get_mut(&wd) else {
                continue;
            };
            on.remove(&self.id);
            if on.is_empty() {
                st.watches.remove(&wd);
                // Already gone if its path was deleted; nothing to do then.
                let _ = self.hub.inotify.rm_watch(wd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_path(sub: &mut Subscription) -> PathBuf {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .expect("a change in time")
            {
                Change::Path { path, .. } => return path,
                Change::Lost => {}
            }
        }
    }

    #[tokio::test]
    async fn two_subscribers_of_one_folder_share_a_watch_and_both_hear_of_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::global().expect("hub");
        let mut a = hub.subscribe(16);
        let mut b = hub.subscribe(16);
        a.add(dir.path(), true).expect("watch a");
        b.add(dir.path(), true).expect("watch b");
        std::fs::write(dir.path().join("f"), "x").expect("write");
        assert_eq!(next_path(&mut a).await, dir.path().join("f"));
        assert_eq!(next_path(&mut b).await, dir.path().join("f"));

        // The first one gone, the shared watch stays for the second.
        drop(a);
        std::fs::write(dir.path().join("g"), "x").expect("write");
        loop {
            if next_path(&mut b).await == dir.path().join("g") {
                break;
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_lost_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sub = Hub::global().expect("hub").subscribe(1);
        sub.add(dir.path(), true).expect("watch");
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("f{i}")), "x").expect("write");
        }
        let mut lost = false;
        for _ in 0..3 {
            if tokio::time::timeout(Duration::from_secs(5), sub.next()).await == Ok(Change::Lost) {
                lost = true;
                break;
            }
        }
        assert!(lost, "told of the lost changes");
    }

    #[test]
    fn many_subscriptions_use_one_instance() {
        let hub = Hub::global().expect("hub");
        let dir = tempfile::tempdir().expect("tempdir");
        let subs: Vec<Subscription> = (0..200)
            .map(|_| {
                let mut s = hub.subscribe(4);
                s.add(dir.path(), true).expect("watch");
                s
            })
            .collect();
        assert!(subs.iter().all(|s| s.watch_count() == 1));
        assert!(std::ptr::eq(hub, Hub::global().expect("hub")));
    }
}
