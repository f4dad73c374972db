//! Watching a file or a folder tree for changes (`--watch`), with inotify and
//! no polling. Folders are watched recursively, new subfolders as they
//! appear; dependency and VCS folders (`node_modules`, `.git`, `target`,
//! `__pycache__`) and anything under `ignore` (opm's logs folder, which the
//! children themselves write) are skipped.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

use super::InotifyFd;

/// At most this many folders are watched for one process.
pub const MAX_WATCHED_DIRS: usize = 4096;

const SKIPPED: &[&str] = &["node_modules", ".git", "target", "__pycache__", ".venv"];

pub struct Watcher {
    fd: AsyncFd<InotifyFd>,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    ignore: PathBuf,
}

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
}

impl Watcher {
    /// Starts watching `path` (call inside a tokio runtime).
    pub fn new(path: &Path, ignore: &Path) -> io::Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let fd = super::inotify_fd(inotify)?;
        let mut w = Watcher {
            fd,
            dirs: HashMap::new(),
            ignore: ignore.to_path_buf(),
        };
        if path.is_dir() {
            w.add_tree(path)?;
        } else {
            let wd = w.fd.get_ref().0.add_watch(path, flags())?;
            w.dirs.insert(wd, path.to_path_buf());
        }
        Ok(w)
    }

    fn skipped(&self, dir: &Path) -> bool {
        dir.starts_with(&self.ignore)
            || dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| SKIPPED.contains(&n))
    }

    fn add_tree(&mut self, root: &Path) -> io::Result<()> {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if self.dirs.len() >= MAX_WATCHED_DIRS || (dir != root && self.skipped(&dir)) {
                continue;
            }
            let wd = self
                .fd
                .get_ref()
                .0
                .add_watch(&dir, flags() | AddWatchFlags::IN_ONLYDIR)?;
            self.dirs.insert(wd, dir.clone());
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for the next change and returns the path that changed.
    pub async fn changed(&mut self) -> io::Result<PathBuf> {
        loop {
            let mut guard = self.fd.readable().await?;
            let events = match guard.get_inner().0.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            drop(guard);
            let mut first = None;
            for ev in events {
                let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
                    continue;
                };
                let path = match &ev.name {
                    Some(name) => dir.join(name),
                    None => dir,
                };
                if path.starts_with(&self.ignore) {
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_ISDIR)
                    && ev.mask.contains(AddWatchFlags::IN_CREATE)
                    && !self.skipped(&path)
                {
                    let _ = self.add_tree(&path);
                }
                first.get_or_insert(path);
            }
            if let Some(p) = first {
                return Ok(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_change_in_a_subfolder_is_seen_and_skipped_folders_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("src/deep")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("node_modules/x")).expect("mkdir");
        let mut w = Watcher::new(dir.path(), Path::new("/nonexistent-opm-home")).expect("watch");
        std::fs::write(dir.path().join("node_modules/x/a.js"), "x").expect("write");
        std::fs::write(dir.path().join("src/deep/app.js"), "x").expect("write");
        let p = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("in time")
            .expect("event");
        assert!(p.ends_with("src/deep/app.js"), "{p:?}");
    }

    #[tokio::test]
    async fn a_new_subfolder_is_watched_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Watcher::new(dir.path(), Path::new("/nonexistent-opm-home")).expect("watch");
        std::fs::create_dir(dir.path().join("new")).expect("mkdir");
        let p = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("in time")
            .expect("event");
        assert!(p.ends_with("new"), "{p:?}");
        std::fs::write(dir.path().join("new/file"), "x").expect("write");
        let p = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("in time")
            .expect("event");
        assert!(p.ends_with("new/file"), "{p:?}");
    }
}
