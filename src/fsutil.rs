//! Files written so that a crash, a kill or a power cut leaves either the
//! old content or the new one, never a truncated mix: a temporary file in the
//! same folder, created with an explicit mode, fsynced, renamed over the old
//! one, and the folder fsynced. A bottom-level leaf: it knows files, nothing
//! of opm.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The prefix of every temporary file `write_atomic` makes next to `path`;
/// `remove_leftovers` clears the ones a killed writer left.
fn tmp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp")
}

fn tmp_path(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!("{}{}-{n}", tmp_prefix(path), std::process::id()))
}

/// The folder a path lives in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically and durably (see the module doc).
/// The file gets `mode`, unless it exists already: then it keeps its own
/// mode (a user's 0600 stays 0600). The umask plays no part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(mode);
    write_atomic_exact(path, bytes, mode)
}

/// Like `write_atomic`, but the file always gets `mode`, whatever the old
/// one had (for files holding secrets).
pub fn write_atomic_exact(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = write_then_rename(&tmp, path, bytes, mode);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)?;
        // create_new's mode passes through the umask; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        f.write_all(first)?;
        fail::fail_point!("fsutil::mid-write");
        f.write_all(rest)?;
        f.sync_all()?;
    }
    fail::fail_point!("fsutil::before-rename");
    std::fs::rename(tmp, path)?;
    fail::fail_point!("fsutil::after-rename");
    sync_dir(folder(path))
}

/// fsyncs a folder, so that a rename or a new file in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes the temporary files a killed `write_atomic` of `path` left.
pub fn remove_leftovers(path: &Path) {
    let prefix = tmp_prefix(path);
    let Ok(entries) = std::fs::read_dir(folder(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_file_gets_the_mode_asked_for_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_atomic(&path, b"hello", 0o640).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello");
        assert_eq!(mode_of(&path), 0o640);
    }

    #[test]
    fn a_rewritten_file_keeps_its_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        write_atomic(&path, b"one", 0o600).expect("write");
        write_atomic(&path, b"two", 0o644).expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(mode_of(&path), 0o600, "the existing mode is kept");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
    }

    #[test]
    fn an_exact_write_sets_the_mode_even_over_a_looser_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        write_atomic(&path, b"one", 0o644).expect("write");
        write_atomic_exact(&path, b"two", 0o600).expect("rewrite");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn leftovers_of_a_killed_writer_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.snapshot");
        std::fs::write(dir.path().join(".db.snapshot.tmp123-0"), b"half").expect("write");
        std::fs::write(dir.path().join("other"), b"keep").expect("write");
        remove_leftovers(&path);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["other"]);
    }
}
