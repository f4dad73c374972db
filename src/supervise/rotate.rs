//! Bounded logs: when a live log passes its cap, its head moves to a
//! rotated file (`NAME-ID.out.log.1`, optionally gzipped as `.1.gz`; older
//! ones shift to `.2`, ... and the one past the number kept is deleted)
//! while the child keeps writing to the same file through its `O_APPEND`
//! descriptor.
//!
//! Lossless: the head is copied (and synced) to the rotated file first,
//! then cut out of the live file with `fallocate(FALLOC_FL_COLLAPSE_RANGE)`,
//! which the kernel does under the inode lock, so an append racing with it
//! lands at the new end: no byte is lost, and the child never notices. The
//! cut is a whole number of file-system blocks (the kernel's rule), so a
//! line that straddles it is split between the rotated file and the live
//! one (the bytes stay in order: reading the files oldest first gives the
//! stream back). A daemon killed between the copy and the cut leaves that
//! head in both files (a duplicate, never a gap).
//!
//! Where the file system cannot collapse (tmpfs, NFS, ...), the fallback is
//! copy-and-truncate: the rest of the file is appended to the rotated file
//! and the live one truncated to 0; what the child writes between that last
//! read and the truncate (a few microseconds) is lost.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, RwLock};

/// How one process's logs are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The size past which a live log is rotated.
    pub max_size: u64,
    /// How many rotated files are kept (0: the head is dropped).
    pub keep: u32,
    /// Whether rotated files are gzipped.
    pub compress: bool,
}

/// How a rotation cut the live file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// `FALLOC_FL_COLLAPSE_RANGE`: lossless.
    Collapse,
    /// Copy then truncate: what was written in between is lost.
    Truncate,
}

/// The bytes cut from the head of each live log since the daemon started,
/// so a follower can map its offset onto the shortened file. Held for
/// writing while a cut is made, for reading while a follower reads.
fn cuts() -> &'static RwLock<HashMap<PathBuf, u64>> {
    static CUTS: OnceLock<RwLock<HashMap<PathBuf, u64>>> = OnceLock::new();
    CUTS.get_or_init(Default::default)
}

/// One rotation at a time per daemon (they share the rotated names).
fn rotating() -> &'static Mutex<()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(Default::default)
}

/// Runs `f` with the number of bytes cut so far from the head of `path`
/// (no cut can happen meanwhile).
pub fn with_cut<T>(path: &Path, f: impl FnOnce(u64) -> T) -> T {
    let cuts = cuts().read().unwrap_or_else(|p| p.into_inner());
    f(cuts.get(path).copied().unwrap_or(0))
}

/// The bytes of the stream of `live` from `offset` up to `cut` (where the
/// live file starts), taken from its rotated files, for a follower that fell
/// behind a rotation; call it inside `with_cut`. When the rotated files no
/// longer reach back to `offset`, they start at the oldest one kept: the
/// offset the bytes start at comes with them.
pub fn rotated_since(live: &Path, offset: u64, cut: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut parts = Vec::new();
    let mut start = cut;
    for p in rotated_files(live, crate::definition::MAX_LOG_FILES) {
        if start <= offset {
            break;
        }
        let bytes = read_all(&p)?;
        start = start.saturating_sub(bytes.len() as u64);
        parts.push((start, bytes));
    }
    let mut out = Vec::new();
    let from = offset.max(start);
    for (start, bytes) in parts.into_iter().rev() {
        let skip = usize::try_from(offset.saturating_sub(start))
            .map_err(io::Error::other)?
            .min(bytes.len());
        out.extend_from_slice(&bytes[skip..]);
    }
    Ok((from, out))
}

/// The rotated file number `n` of `live` (1 is the newest).
pub fn rotated_path(live: &Path, n: u32, compress: bool) -> PathBuf {
    let mut name = live.as_os_str().to_owned();
    name.push(format!(".{n}"));
    if compress {
        name.push(".gz");
    }
    PathBuf::from(name)
}

/// The rotated files of `live` that exist, newest first (`.1` or `.1.gz`
/// first), up to `max` of them.
pub fn rotated_files(live: &Path, max: u32) -> Vec<PathBuf> {
    (1..=max)
        .map_while(|n| {
            [false, true]
                .into_iter()
                .map(|gz| rotated_path(live, n, gz))
                .find(|p| p.exists())
        })
        .collect()
}

/// The whole content of a rotated (or live) file, gunzipped if its name
/// ends in `.gz`.
pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let raw = fs::read(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut out)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The last `n` lines of a log, reading back into its rotated files
/// (gzipped or not, newest first) when the live file holds fewer: a line
/// split by a cut is whole again. At most `super::logs::MAX_TAIL_BYTES`
/// of rotated files are read.
pub fn tail_lines(live: &Path, n: usize) -> io::Result<Vec<String>> {
    let lines = super::logs::tail_lines(live, n)?;
    if lines.len() >= n {
        return Ok(lines);
    }
    let rotated = rotated_files(live, crate::definition::MAX_LOG_FILES);
    if rotated.is_empty() {
        return Ok(lines);
    }
    // The live file is short (fewer than n lines): the whole of it, after
    // as many rotated files as it takes.
    let mut data = fs::read(live).unwrap_or_default();
    let mut read = 0u64;
    for p in rotated {
        let older = read_all(&p)?;
        read += older.len() as u64;
        data.splice(0..0, older);
        let newlines = data.iter().filter(|b| **b == b'\n').count();
        if newlines > n || read >= super::logs::MAX_TAIL_BYTES {
            break;
        }
    }
    if data.last() == Some(&b'\n') {
        data.pop();
    }
    let segments: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let skip = segments.len().saturating_sub(n);
    Ok(segments[skip..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Rotates `live` if it is bigger than the policy's cap; what it did, if
/// anything. A missing file is fine. Each rotation is logged at debug
/// level with the bytes it moved and how long it took (the child went on
/// writing meanwhile, and the next check waits for it).
pub fn rotate_if_over(live: &Path, policy: &Policy) -> io::Result<Option<Cut>> {
    let start = std::time::Instant::now();
    Ok(rotate_over(live, policy)?.map(|(cut, bytes)| {
        tracing::debug!(
            "rotated {}: {bytes} bytes in {} ms",
            live.display(),
            start.elapsed().as_millis()
        );
        cut
    }))
}

/// `rotate_if_over`, with the bytes cut from the live file.
fn rotate_over(live: &Path, policy: &Policy) -> io::Result<Option<(Cut, u64)>> {
    // The common case (under the cap) costs one stat.
    match fs::metadata(live) {
        Ok(m) if m.len() <= policy.max_size => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let _one = rotating().lock().unwrap_or_else(|p| p.into_inner());
    let file = match OpenOptions::new().read(true).write(true).open(live) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let size = meta.len();
    if size <= policy.max_size {
        return Ok(None);
    }
    let block = meta.blksize().max(512);
    // The head is the whole caps the file holds, down to a block (the
    // kernel's unit): every rotated piece is at most the cap, and what
    // stays live is what the child wrote past the last whole cap.
    let all = size / policy.max_size;
    let mut cut = all * policy.max_size / block * block;
    // The kernel refuses a collapse that reaches the end of the file.
    if cut == size {
        cut -= block;
    }
    if cut == 0 || all == 0 {
        return Ok(None);
    }

    // 1. The rotated files this rotation pushes past the number kept go
    // first, so the disk never holds them and the new head at once (a
    // daemon killed right after loses only what was to be deleted).
    let pieces = u32::try_from(all).unwrap_or(u32::MAX).min(policy.keep);
    if pieces > 0 {
        for n in (policy.keep + 1 - pieces)..=policy.keep {
            for gz in [false, true] {
                match fs::remove_file(rotated_path(live, n, gz)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
    }

    // 2. The head, copied and synced to new files beside the live one, in
    // `all` even pieces (a head many caps long, when the daemon was down
    // while the child wrote, gives several rotated files), newest first;
    // pieces older than the number kept are not written.
    let bound = |i: u64| u64::try_from(u128::from(cut) * u128::from(i) / u128::from(all));
    let mut staged = Vec::new();
    for n in 1..=pieces {
        let end = bound(all - u64::from(n) + 1).map_err(io::Error::other)?;
        let start = bound(all - u64::from(n)).map_err(io::Error::other)?;
        let staging = {
            let mut name = live.as_os_str().to_owned();
            name.push(format!(".rotating{n}"));
            PathBuf::from(name)
        };
        let mut w = Rotated::create(&staging, policy.compress)?;
        // A process run as another user owns its rotated logs too.
        std::os::unix::fs::chown(&staging, Some(meta.uid()), Some(meta.gid()))?;
        copy_range(&file, start, end, &mut w)?;
        w.finish()?;
        staged.push((staging, n));
    }
    // From here to the cut, followers wait: the rotated files and the cut
    // change together.
    let mut cuts = cuts().write().unwrap_or_else(|p| p.into_inner());
    // 3. The older rotated files shift by that many (past the number kept:
    // deleted), and the new ones take their places.
    if pieces > 0 {
        for n in (1..=policy.keep).rev() {
            for gz in [false, true] {
                let from = rotated_path(live, n, gz);
                if !from.exists() {
                    continue;
                }
                if n + pieces > policy.keep {
                    fs::remove_file(&from)?;
                } else {
                    fs::rename(&from, rotated_path(live, n + pieces, gz))?;
                }
            }
        }
        for (staging, n) in staged {
            fs::rename(&staging, rotated_path(live, n, policy.compress))?;
        }
    }

    // 4. Cut the head out of the live file.
    match nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
        0,
        i64::try_from(cut).map_err(io::Error::other)?,
    ) {
        Ok(()) => {
            *cuts.entry(live.to_path_buf()).or_insert(0) += cut;
            Ok(Some((Cut::Collapse, cut)))
        }
        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {
            // Copy-and-truncate: the rest, then the truncate right after.
            let end = file.metadata()?.len();
            if policy.keep > 0 && end > cut {
                let first = rotated_path(live, 1, policy.compress);
                let mut w = Rotated::append(&first, policy.compress)?;
                std::os::unix::fs::chown(&first, Some(meta.uid()), Some(meta.gid()))?;
                copy_range(&file, cut, end, &mut w)?;
                w.finish()?;
            }
            file.set_len(0)?;
            *cuts.entry(live.to_path_buf()).or_insert(0) += end;
            Ok(Some((Cut::Truncate, end)))
        }
        Err(e) => Err(e.into()),
    }
}

/// What `reattach` found (and did) for one descriptor of a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reattach {
    /// The descriptor is the file at the configured path: nothing to do.
    Same,
    /// Renamed away (logrotate without `copytruncate`): the child's file
    /// is at the configured path again, and what it held up to a block
    /// before was copied to where it had been renamed (`bytes` of it).
    Moved { to: PathBuf, bytes: u64 },
    /// The file was deleted: no name can be given back to it.
    Deleted { was: PathBuf },
    /// Not a file named after the log (the program sent its output
    /// elsewhere itself, or to a pipe): left alone.
    Elsewhere { at: String },
    /// The configured path holds another file that is not empty.
    Occupied { bytes: u64 },
}

/// Makes the file that descriptor `fd` of process `pid` writes (its stdout
/// or stderr, opened by opm at spawn) the file at `live` again, when a tool
/// renamed it away (logrotate's default `create` mode): the child keeps its
/// descriptor, so opm cannot reopen it, but it can give the file its name
/// back. The head (down to a block) is copied to the name it was renamed to
/// and synced, the file is renamed back over `live` (an empty file there,
/// from logrotate's `create`, is replaced), and the head is cut out as in a
/// rotation: the child never notices and no line is lost. A renamed file
/// is one whose name starts with the log's (`app.log.1`, `app.log-20261129`,
/// in any folder of the same file system).
pub fn reattach(pid: u32, fd: u32, live: &Path) -> io::Result<Reattach> {
    let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    let target = fs::read_link(&link)?;
    let text = target.to_string_lossy().into_owned();
    let theirs = fs::metadata(&link)?;
    match fs::metadata(live) {
        Ok(m) if (m.dev(), m.ino()) == (theirs.dev(), theirs.ino()) => return Ok(Reattach::Same),
        _ => {}
    }
    if let Some(was) = text.strip_suffix(" (deleted)") {
        if theirs.is_file() {
            return Ok(Reattach::Deleted {
                was: PathBuf::from(was),
            });
        }
    }
    let named_after = live
        .file_name()
        .zip(target.file_name())
        .is_some_and(|(l, t)| t.as_encoded_bytes().starts_with(l.as_encoded_bytes()));
    if !theirs.is_file() || !target.is_absolute() || !named_after {
        return Ok(Reattach::Elsewhere { at: text });
    }
    match fs::metadata(live) {
        Ok(m) if m.len() > 0 || !m.is_file() => return Ok(Reattach::Occupied { bytes: m.len() }),
        _ => {}
    }
    let _one = rotating().lock().unwrap_or_else(|p| p.into_inner());
    let file = OpenOptions::new().read(true).write(true).open(&link)?;
    let size = file.metadata()?.len();
    let block = file.metadata()?.blksize().max(512);
    let mut cut = size / block * block;
    if cut == size && cut > 0 {
        cut -= block;
    }
    let staging = {
        let mut name = target.as_os_str().to_owned();
        name.push(".opm-reattach");
        PathBuf::from(name)
    };
    if cut > 0 {
        let mut w = Rotated::create(&staging, false)?;
        copy_range(&file, 0, cut, &mut w)?;
        w.finish()?;
    }
    // The child's file takes its name back (over logrotate's empty one).
    if let Err(e) = fs::rename(&target, live) {
        let _ = fs::remove_file(&staging);
        return Err(e);
    }
    if cut == 0 {
        return Ok(Reattach::Moved {
            to: target,
            bytes: 0,
        });
    }
    fs::rename(&staging, &target)?;
    let _cuts = cuts().write().unwrap_or_else(|p| p.into_inner());
    match nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
        0,
        i64::try_from(cut).map_err(io::Error::other)?,
    ) {
        Ok(()) => Ok(Reattach::Moved {
            to: target,
            bytes: cut,
        }),
        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {
            // Copy-and-truncate, as a rotation does on such file systems.
            let end = file.metadata()?.len();
            let mut w = Rotated::append(&target, false)?;
            copy_range(&file, cut, end, &mut w)?;
            w.finish()?;
            file.set_len(0)?;
            Ok(Reattach::Moved {
                to: target,
                bytes: end,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies `file[from..to]` into `w`, in 1 MiB slices.
fn copy_range(file: &File, from: u64, to: u64, w: &mut Rotated) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos < to {
        let want = usize::try_from((to - pos).min(buf.len() as u64)).map_err(io::Error::other)?;
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        w.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// A rotated file being written, plain or gzipped (a gzip file appended to
/// gets a second member: gzip readers read both).
enum Rotated {
    Plain(File),
    Gz(flate2::write::GzEncoder<File>),
}

impl Rotated {
    fn create(path: &Path, compress: bool) -> io::Result<Rotated> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Rotated::wrap(f, compress))
    }

    fn append(path: &Path, compress: bool) -> io::Result<Rotated> {
        let f = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(Rotated::wrap(f, compress))
    }

    fn wrap(f: File, compress: bool) -> Rotated {
        if compress {
            Rotated::Gz(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::fast(),
            ))
        } else {
            Rotated::Plain(f)
        }
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Rotated::Plain(f) => f.write_all(b),
            Rotated::Gz(g) => g.write_all(b),
        }
    }

    /// Ends the file and syncs it: the head is on disk before it is cut.
    fn finish(self) -> io::Result<()> {
        let f = match self {
            Rotated::Plain(f) => f,
            Rotated::Gz(g) => g.finish()?,
        };
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(dir: &Path, live: &Path, keep: u32) -> Vec<u64> {
        let _ = dir;
        let mut all = Vec::new();
        for p in rotated_files(live, keep).into_iter().rev() {
            all.extend(read_all(&p).expect("read rotated"));
        }
        all.extend(fs::read(live).expect("read live"));
        // The oldest file may start inside a line (its head was cut at a
        // block): skip that one.
        String::from_utf8(all)
            .expect("utf8")
            .lines()
            .skip(1)
            .map(|l| l.parse().expect("a number"))
            .collect()
    }

    #[test]
    fn rotation_keeps_every_byte_in_order_and_bounds_the_files() {
        for compress in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let live = dir.path().join("a-0.out.log");
            let mut w = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&live)
                .expect("open");
            let policy = Policy {
                max_size: 64 * 1024,
                keep: 3,
                compress,
            };
            let mut rotations = 0;
            for i in 0..100_000u64 {
                writeln!(w, "{i}").expect("write");
                if i % 1000 == 0 && rotate_if_over(&live, &policy).expect("rotate").is_some() {
                    rotations += 1;
                }
            }
            assert!(rotations > 3, "{rotations} rotations");
            let got = numbers(dir.path(), &live, 3);
            let last = *got.last().expect("some");
            assert_eq!(last, 99_999);
            let first = got[0];
            assert!(first > 0, "old lines are gone by design");
            assert_eq!(
                got,
                (first..=last).collect::<Vec<_>>(),
                "compress={compress}"
            );
            assert_eq!(rotated_files(&live, 10).len(), 3);
            assert!(!rotated_path(&live, 4, compress).exists());
        }
    }

    #[test]
    fn a_rotated_file_belongs_to_the_owner_of_its_live_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("u-0.out.log");
        fs::write(&live, vec![b'x'; 200 * 1024]).expect("write");
        // Root can give the log away (a process run with --user); others keep their own.
        let (uid, gid) = if nix::unistd::geteuid().is_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        };
        std::os::unix::fs::chown(&live, Some(uid), Some(gid)).expect("chown");
        let policy = Policy {
            max_size: 64 * 1024,
            keep: 2,
            compress: false,
        };
        rotate_if_over(&live, &policy).expect("rotate");
        let rotated = rotated_files(&live, 2);
        assert!(!rotated.is_empty());
        for r in rotated {
            let m = fs::metadata(&r).expect("rotated");
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", r.display());
        }
    }

    #[test]
    fn tail_lines_reads_back_into_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("c-0.out.log");
        let text: String = (0..50_000u64).map(|i| format!("{i}\n")).collect();
        fs::write(&live, &text).expect("write");
        let policy = Policy {
            max_size: 64 * 1024,
            keep: 2,
            compress: true,
        };
        rotate_if_over(&live, &policy).expect("rotate");
        let live_lines = super::super::logs::tail_lines(&live, usize::MAX).expect("tail");
        let want = live_lines.len() + 1000;
        let got = tail_lines(&live, want).expect("tail");
        let expect: Vec<String> = (50_000 - want as u64..50_000)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn a_head_many_caps_long_is_cut_into_the_files_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("b-0.out.log");
        let text: String = (0..200_000u64).map(|i| format!("{i}\n")).collect();
        fs::write(&live, &text).expect("write");
        let policy = Policy {
            max_size: 64 * 1024,
            keep: 3,
            compress: false,
        };
        assert_eq!(
            rotate_if_over(&live, &policy).expect("rotate"),
            Some(Cut::Collapse)
        );
        let files = rotated_files(&live, 10);
        assert_eq!(files.len(), 3);
        for f in &files {
            let len = fs::metadata(f).expect("meta").len();
            assert!((32 * 1024..=72 * 1024).contains(&len), "{len}");
        }
        assert!(fs::metadata(&live).expect("meta").len() < 64 * 1024);
        let got = numbers(dir.path(), &live, 3);
        assert_eq!(*got.last().expect("some"), 199_999);
        assert_eq!(got, (got[0]..=199_999).collect::<Vec<_>>());
    }
}
