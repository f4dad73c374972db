//! Watching files and folder trees for changes (`--watch`), with inotify and
//! no polling. One `Watcher` serves every path a process watches. Folders
//! are watched recursively, new subfolders as they appear; dependency and
//! VCS folders (`node_modules`, `.git`, `target`, `__pycache__`), what the
//! `ignore_watch` globs match (relative to the watched path) and opm's own
//! log files (`Ignore::paths`: the logs folder and any log file elsewhere,
//! with its rotated siblings) are skipped. Watches go through the daemon's
//! one inotify instance (`super::inotify::Hub`).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use globset::GlobSet;
use nix::sys::inotify::AddWatchFlags;

use super::inotify::{Change, Hub, Subscription};

/// At most this many folders are watched for one process.
pub const MAX_WATCHED_DIRS: usize = 4096;

const SKIPPED: &[&str] = &["node_modules", ".git", "target", "__pycache__", ".venv"];

/// Changes a watcher may hold before it is told it lost some (and rescans).
const QUEUE: usize = 1024;

/// What a watcher leaves aside.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    /// `ignore_watch`, built by `definition::ignore_globs`: matched against
    /// the path relative to its watched root.
    pub globs: GlobSet,
    /// Absolute paths written by opm or for it (its logs folder, log files
    /// kept elsewhere): a path under one, or a sibling named after a file
    /// one (`app.log.1`, `app.log.1.gz`), is ignored.
    pub paths: Vec<PathBuf>,
}

impl Ignore {
    /// Whether a change of `path` (under `root`) is ignored.
    pub fn ignores(&self, root: &Path, path: &Path) -> bool {
        let opm_own = self.paths.iter().any(|p| {
            path.starts_with(p) || {
                let mut prefix = p.as_os_str().to_owned();
                prefix.push(".");
                path.as_os_str()
                    .as_encoded_bytes()
                    .starts_with(prefix.as_encoded_bytes())
            }
        });
        opm_own
            || path
                .strip_prefix(root)
                .is_ok_and(|rel| !rel.as_os_str().is_empty() && self.globs.is_match(rel))
    }
}

pub struct Watcher {
    sub: Subscription,
    roots: Vec<PathBuf>,
    dirs: HashSet<PathBuf>,
    ignore: Ignore,
}

impl Watcher {
    /// Starts watching every path of `roots`.
    pub fn new(roots: &[PathBuf], ignore: Ignore) -> io::Result<Watcher> {
        let mut w = Watcher {
            sub: Hub::global()?.subscribe(QUEUE),
            roots: roots.to_vec(),
            dirs: HashSet::new(),
            ignore,
        };
        for root in roots {
            if root.is_dir() {
                w.add_tree(root)?;
            } else {
                w.sub.add(root, false)?;
            }
        }
        Ok(w)
    }

    /// The watched root `path` is under (the deepest, when roots nest).
    fn root_of(&self, path: &Path) -> Option<&Path> {
        self.roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.components().count())
            .map(PathBuf::as_path)
    }

    fn ignored(&self, path: &Path) -> bool {
        match self.root_of(path) {
            Some(root) => self.ignore.ignores(root, path),
            None => self.ignore.ignores(path, path),
        }
    }

    fn skipped(&self, dir: &Path) -> bool {
        self.ignored(dir)
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

    /// Waits for the next change that is not ignored and returns the path
    /// that changed.
    pub async fn changed(&mut self) -> io::Result<PathBuf> {
        loop {
            let (path, mask) = match self.sub.next().await {
                Change::Path { path, mask } => (path, mask),
                Change::Lost => {
                    // Some changes (maybe new folders) were missed: watch the
                    // trees again and report the first root as changed.
                    for root in self.roots.clone() {
                        if root.is_dir() {
                            let _ = self.add_tree(&root);
                        }
                    }
                    return Ok(self.roots.first().cloned().unwrap_or_default());
                }
            };
            if self.ignored(&path) {
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
        let mut w = Watcher::new(&[dir.path().to_path_buf()], Ignore::default()).expect("watch");
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
        let mut w = Watcher::new(&[dir.path().to_path_buf()], Ignore::default()).expect("watch");
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

    fn ignore(globs: &[&str], paths: &[&str]) -> Ignore {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        Ignore {
            globs: crate::definition::ignore_globs(&globs).expect("globs"),
            paths: paths.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn ignore_globs_match_names_at_any_depth_and_slashed_ones_from_the_root() {
        let i = ignore(&["logs", "*.log", "build/tmp", "**/cache/*"], &[]);
        let root = Path::new("/srv/app");
        let ignored = |p: &str| i.ignores(root, &root.join(p));
        assert!(ignored("logs"));
        assert!(ignored("logs/c.log"));
        assert!(ignored("a/logs/x/y"));
        assert!(ignored("server.log"));
        assert!(ignored("deep/down/server.log"));
        assert!(ignored("build/tmp/x.o"));
        assert!(ignored("cache/k"));
        assert!(ignored("a/cache/k"));
        assert!(!ignored("src/app.js"));
        assert!(!ignored("logsx/a"), "a name, not a prefix");
        assert!(!ignored("a/build/tmp/x"), "anchored at the root");
        assert!(!ignored("server.log.txt"));
        assert!(!i.ignores(root, root), "the root itself");
        assert!(crate::definition::ignore_globs(&["a[".into()]).is_err());
        assert!(crate::definition::ignore_globs(&[" ".into()]).is_err());
    }

    #[test]
    fn opm_own_log_files_and_their_rotations_are_ignored_anywhere() {
        let i = ignore(&[], &["/home/u/.opm/logs", "/srv/app/out.log"]);
        let root = Path::new("/srv/app");
        assert!(i.ignores(root, Path::new("/home/u/.opm/logs/a-1.out.log")));
        assert!(i.ignores(root, Path::new("/srv/app/out.log")));
        assert!(i.ignores(root, Path::new("/srv/app/out.log.1.gz")));
        assert!(i.ignores(root, Path::new("/srv/app/out.log.rotating1")));
        assert!(!i.ignores(root, Path::new("/srv/app/out.logs")));
        assert!(!i.ignores(root, Path::new("/srv/app/app.js")));
    }

    #[tokio::test]
    async fn two_roots_are_watched_and_an_ignored_folder_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["a/logs", "b"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let roots = [dir.path().join("a"), dir.path().join("b")];
        let mut w = Watcher::new(&roots, ignore(&["logs", "*.tmp"], &[])).expect("watch");
        std::fs::write(dir.path().join("a/logs/c.log"), "x").expect("write");
        std::fs::write(dir.path().join("b/x.tmp"), "x").expect("write");
        std::fs::write(dir.path().join("b/app.js"), "x").expect("write");
        // Several events per write: none of them from the ignored ones.
        let mut seen = Vec::new();
        while !seen.iter().any(|p: &PathBuf| p.ends_with("b/app.js")) {
            seen.push(next(&mut w).await);
        }
        std::fs::write(dir.path().join("a/app.js"), "x").expect("write");
        while !seen.iter().any(|p: &PathBuf| p.ends_with("a/app.js")) {
            seen.push(next(&mut w).await);
        }
        assert!(
            seen.iter()
                .all(|p| p.ends_with("a/app.js") || p.ends_with("b/app.js")),
            "{seen:?}"
        );
    }

    async fn next(w: &mut Watcher) -> PathBuf {
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("in time")
            .expect("event")
    }
}
