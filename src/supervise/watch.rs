//! Watching a file or a folder tree for changes (`--watch`), with inotify and
//! no polling. Folders are watched recursively, new subfolders as they
//! appear; dependency and VCS folders (`node_modules`, `.git`, `target`,
//! `__pycache__`) and anything under `ignore` (opm's logs folder, which the
//! children themselves write) are skipped. Watches go through the daemon's
//! one inotify instance (`super::inotify::Hub`).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::inotify::AddWatchFlags;

use super::inotify::{Change, Hub, Subscription};

/// At most this many folders are watched for one process.
pub const MAX_WATCHED_DIRS: usize = 4096;

const SKIPPED: &[&str] = &["node_modules", ".git", "target", "__pycache__", ".venv"];

/// Changes a watcher may hold before it is told it lost some (and rescans).
const QUEUE: usize = 1024;

pub struct Watcher {
    sub: Subscription,
    root: PathBuf,
    dirs: HashSet<PathBuf>,
    ignore: PathBuf,
}

impl Watcher {
    /// Starts watching `path`.
    pub fn new(path: &Path, ignore: &Path) -> io::Result<Watcher> {
        let mut w = Watcher {
            sub: Hub::global()?.subscribe(QUEUE),
            root: path.to_path_buf(),
            dirs: HashSet::new(),
            ignore: ignore.to_path_buf(),
        };
        if path.is_dir() {
            w.add_tree(path)?;
        } else {
            w.sub.add(path, false)?;
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
            self.sub.add(&dir, true)?;
            self.dirs.insert(dir.clone());
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
            let (path, mask) = match self.sub.next().await {
                Change::Path { path, mask } => (path, mask),
                Change::Lost => {
                    // Some changes (maybe new folders) were missed: watch the
                    // whole tree again and report the root as changed.
                    if self.root.is_dir() {
                        let root = self.root.clone();
                        let _ = self.add_tree(&root);
                    }
                    return Ok(self.root.clone());
                }
            };
            if path.starts_with(&self.ignore) {
                continue;
            }
            if mask.contains(AddWatchFlags::IN_ISDIR)
                && mask.contains(AddWatchFlags::IN_CREATE)
                && !self.skipped(&path)
            {
                let _ = self.add_tree(&path);
            }
            return Ok(path);
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
