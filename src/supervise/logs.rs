//! The per-process log files that children append to: reading the last lines
//! (backwards, in blocks, without reading the whole file), following a file
//! from a byte offset, following a process's two logs live (`Follower`, for
//! `opm logs --follow` and the live stream), and truncating (flushing) a log
//! in place. Children hold their log open with `O_APPEND`, so after a
//! truncate they simply continue writing at offset 0.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::inotify::{Change, Hub};

/// Size of the blocks `tail_lines` reads backwards.
const BLOCK: u64 = 64 * 1024;

/// The most bytes `tail_lines` reads, whatever the number of lines asked:
/// a log of long lines (or one endless line) never takes the reader's
/// memory up with it.
pub const MAX_TAIL_BYTES: u64 = 8 * 1024 * 1024;

/// Opens `path` for reading; `Ok(None)` if it does not exist.
fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last `n` lines of the file, without their newlines, oldest first.
///
/// Reads backwards from the end in 64 KiB blocks until `n` line breaks have
/// been seen, so the cost depends on the size of the tail, not the file,
/// and never more than `MAX_TAIL_BYTES` (then the lines that fit whole are
/// returned, or the end of one longer line). A missing file gives an empty
/// list; a trailing newline does not produce an empty last line; invalid
/// UTF-8 is replaced.
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    // A concurrent truncate can shorten the file under us; start over then.
    let mut attempts = 0;
    loop {
        match tail_lines_once(path, n) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && attempts < 3 => attempts += 1,
            other => return other,
        }
    }
}

fn tail_lines_once(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let Some(file) = open_existing(path)? else {
        return Ok(Vec::new());
    };
    let len = file.metadata()?.len();
    if n == 0 || len == 0 {
        return Ok(Vec::new());
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    let end = if last[0] == b'\n' { len - 1 } else { len };

    // Blocks from the end backwards; together they cover file[pos..end].
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    let mut pos = end;
    while pos > 0 && newlines < n && end - pos < MAX_TAIL_BYTES {
        let size = BLOCK.min(pos).min(MAX_TAIL_BYTES - (end - pos));
        pos -= size;
        let mut block = vec![0u8; usize::try_from(size).map_err(io::Error::other)?];
        file.read_exact_at(&mut block, pos)?;
        newlines += block.iter().filter(|b| **b == b'\n').count();
        blocks.push(block);
    }
    let data: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    // data holds newlines+1 segments; when pos > 0 the first one may be a
    // partial line: then either newlines >= n and it is not among the last
    // n, or the byte cap stopped the read and it is dropped (unless it is
    // all there is).
    let segments: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let partial_first = pos > 0 && newlines < n && segments.len() > 1;
    let skip = segments
        .len()
        .saturating_sub(n)
        .max(usize::from(partial_first));
    Ok(segments[skip..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Truncates the file to length 0 if it exists; a missing file is fine,
/// and so is one that is not a regular file (a log sent to `/dev/null`).
pub fn truncate(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).open(path) {
        Ok(f) if !f.metadata()?.is_file() => Ok(()),
        Ok(f) => f.set_len(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The bytes from `offset` to the current end of the file and the offset
/// just after them (to pass to the next call). If the file is now shorter
/// than `offset` it was truncated, and reading restarts at 0. A missing file
/// gives no bytes and offset 0.
pub fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<u8>, u64)> {
    read_from_at_most(path, offset, u64::MAX)
}

/// Like [`read_from`], but at most `max` bytes; call again from the offset
/// it returns for the rest.
pub fn read_from_at_most(path: &Path, offset: u64, max: u64) -> io::Result<(Vec<u8>, u64)> {
    let Some(mut file) = open_existing(path)? else {
        return Ok((Vec::new(), 0));
    };
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    (&mut file).take(max).read_to_end(&mut buf)?;
    let read = u64::try_from(buf.len()).map_err(io::Error::other)?;
    Ok((buf, start + read))
}

/// Which of a process's two logs a line is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    /// `out` or `err`, as the live stream names its events.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// One line of a followed log, without its newline (invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    pub text: String,
}

/// Changes of the logs folder a follower may hold before it just re-reads.
const CHANGE_QUEUE: usize = 64;

/// The most bytes one read of a followed log takes in (a fast writer is
/// read in slices, never all at once).
const READ_SLICE: u64 = 1024 * 1024;

/// A line longer than this is sent in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// A process's two logs, followed live: the last lines of each, then every
/// new line as it is written. The daemon's one inotify instance (shared with
/// `--watch`) tells when the logs folder changes: no polling. A truncated
/// log is read again from its start.
pub struct Follower {
    out: PathBuf,
    err: PathBuf,
    /// Where following starts: the ends of both logs when it was made.
    offsets: [u64; 2],
    lines: usize,
}

impl Follower {
    /// Fixes where following starts (the logs' current ends), so a line
    /// written between now and `run` is not lost; `run` first sends the
    /// `lines` lines before that point.
    pub fn new(out: PathBuf, err: PathBuf, lines: usize) -> Follower {
        // Offsets count the bytes a rotation cut from the head too, so
        // following goes on where it was across a rotation.
        let offsets = [&out, &err].map(|p| {
            super::rotate::with_cut(p, |cut| {
                cut + std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            })
        });
        Follower {
            out,
            err,
            offsets,
            lines,
        }
    }

    /// Sends lines into `tx` until its receiver goes away (then `Ok`), or
    /// the logs folder cannot be watched.
    pub async fn run<T: From<LogLine>>(self, tx: &mpsc::Sender<T>) -> io::Result<()> {
        let mut changes = Hub::global()?.subscribe(CHANGE_QUEUE);
        // The two logs may live in different folders (`out_file`, `err_file`).
        for p in [&self.out, &self.err] {
            let dir = p.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir)?;
            changes.add(dir, true)?;
        }
        // Merged logs (one file for both streams) are read once, as out.
        let merged = self.out == self.err;
        let mut files: Vec<Followed> = [
            (&self.out, Stream::Out, self.offsets[0]),
            (&self.err, Stream::Err, self.offsets[1]),
        ]
        .into_iter()
        .take(if merged { 1 } else { 2 })
        .map(|(path, stream, offset)| Followed {
            path,
            stream,
            offset,
            partial: Vec::new(),
        })
        .collect();
        if self.lines > 0 {
            for f in &files {
                for text in super::rotate::tail_lines(f.path, self.lines)? {
                    let line = LogLine {
                        stream: f.stream,
                        text,
                    };
                    if tx.send(line.into()).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        let mut wanted = [true, true];
        loop {
            // Drain first: what was written before the watch existed goes out too.
            for (f, wanted) in files.iter_mut().zip(wanted) {
                if wanted && !f.drain(tx).await {
                    return Ok(());
                }
            }
            // Wait for a change to one of the two files (the folder holds
            // every process's logs).
            wanted = loop {
                let change = tokio::select! {
                    c = changes.next() => c,
                    _ = tx.closed() => return Ok(()),
                };
                match change {
                    Change::Lost => break [true, true],
                    Change::Path { path, .. } if path == self.out => break [true, false],
                    Change::Path { path, .. } if path == self.err => break [false, true],
                    Change::Path { .. } => {}
                }
            };
        }
    }
}

/// One followed file: where its next read starts, and the start of a line
/// not ended yet.
struct Followed<'a> {
    path: &'a Path,
    stream: Stream,
    offset: u64,
    partial: Vec<u8>,
}

impl Followed<'_> {
    /// Sends every complete line written since the last read; false when
    /// the receiver has gone.
    async fn drain<T: From<LogLine>>(&mut self, tx: &mpsc::Sender<T>) -> bool {
        loop {
            // The offset is in the whole stream: the bytes rotated away
            // from the head of the live file come before it. Fallen behind
            // a rotation, the follower reads the rest from the rotated files.
            let (bytes, next, behind) = super::rotate::with_cut(self.path, |cut| {
                if self.offset < cut {
                    let (from, bytes) = super::rotate::rotated_since(self.path, self.offset, cut)
                        .unwrap_or((cut, Vec::new()));
                    // Fallen further behind than the files kept: what is
                    // gone is skipped, and the line begun before with it.
                    if from > self.offset {
                        self.partial.clear();
                    }
                    return (bytes, cut, true);
                }
                read_from_at_most(self.path, self.offset - cut, READ_SLICE)
                    .map(|(bytes, next)| (bytes, next + cut, false))
                    .unwrap_or((Vec::new(), self.offset, false))
            });
            if next < self.offset {
                self.partial.clear();
            }
            let more = behind || bytes.len() as u64 == READ_SLICE;
            self.offset = next;
            self.partial.extend_from_slice(&bytes);
            loop {
                let line: Vec<u8> = match self.partial.iter().position(|b| *b == b'\n') {
                    Some(pos) => {
                        let mut line: Vec<u8> = self.partial.drain(..=pos).collect();
                        line.pop();
                        line
                    }
                    // A line without an end for too long goes out in pieces.
                    None if self.partial.len() >= MAX_LINE => {
                        self.partial.drain(..MAX_LINE).collect()
                    }
                    None => break,
                };
                let line = LogLine {
                    stream: self.stream,
                    text: String::from_utf8_lossy(&line).into_owned(),
                };
                if tx.send(line.into()).await.is_err() {
                    return false;
                }
            }
            if !more {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tail_missing_and_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing.log");
        assert!(tail_lines(&p, 10).expect("tail").is_empty());
        fs::write(&p, "").expect("write");
        assert!(tail_lines(&p, 10).expect("tail").is_empty());
        fs::write(&p, "a\nb\n").expect("write");
        assert!(tail_lines(&p, 0).expect("tail").is_empty());
    }

    #[test]
    fn tail_small_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.log");
        fs::write(&p, "a\nb\nc\n").expect("write");
        assert_eq!(tail_lines(&p, 2).expect("tail"), lines(&["b", "c"]));
        assert_eq!(tail_lines(&p, 10).expect("tail"), lines(&["a", "b", "c"]));
        fs::write(&p, "a\nb\nc").expect("write");
        assert_eq!(tail_lines(&p, 2).expect("tail"), lines(&["b", "c"]));
        fs::write(&p, "a\n\nb\n\n").expect("write");
        assert_eq!(tail_lines(&p, 3).expect("tail"), lines(&["", "b", ""]));
        fs::write(&p, "\n").expect("write");
        assert_eq!(tail_lines(&p, 3).expect("tail"), lines(&[""]));
        fs::write(&p, b"ok\n\xff\xfebad\n").expect("write");
        assert_eq!(
            tail_lines(&p, 1).expect("tail"),
            lines(&["\u{fffd}\u{fffd}bad"])
        );
    }

    #[test]
    fn tail_across_block_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big.log");
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("line {i}\n"));
        }
        assert!(text.len() > 20 * BLOCK as usize);
        fs::write(&p, &text).expect("write");

        let want = |from: usize, to: usize| -> Vec<String> {
            (from..to).map(|i| format!("line {i}")).collect()
        };
        assert_eq!(tail_lines(&p, 1).expect("tail"), want(199_999, 200_000));
        assert_eq!(tail_lines(&p, 10).expect("tail"), want(199_990, 200_000));
        // ~240 KiB of tail: spans several blocks.
        assert_eq!(
            tail_lines(&p, 20_000).expect("tail"),
            want(180_000, 200_000)
        );
        assert_eq!(tail_lines(&p, 300_000).expect("tail"), want(0, 200_000));
    }

    #[test]
    fn tail_line_ending_exactly_at_block_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("edge.log");
        // The first block read is file[end-BLOCK..end] with end = len-1.
        // Make it exactly `long + "\nlast"`, so it starts right after a
        // newline.
        let long = "x".repeat(BLOCK as usize - 5);
        let mut text = format!("first\nsecond\n{long}\nlast\n");
        fs::write(&p, &text).expect("write");
        assert_eq!(
            tail_lines(&p, 2).expect("tail"),
            vec![long.clone(), "last".to_string()]
        );
        assert_eq!(
            tail_lines(&p, 3).expect("tail"),
            vec!["second".to_string(), long.clone(), "last".to_string()]
        );
        // A single line longer than several blocks.
        text = format!("head\n{}\n", "y".repeat(3 * BLOCK as usize + 17));
        fs::write(&p, &text).expect("write");
        let got = tail_lines(&p, 1).expect("tail");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 3 * BLOCK as usize + 17);
        assert_eq!(tail_lines(&p, 2).expect("tail")[0], "head");
    }

    #[test]
    fn tail_reads_at_most_max_tail_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("huge.log");
        // 1 KiB lines, 12 MiB in all: asking for every line gets the ones
        // in the last 8 MiB, whole.
        let line = "z".repeat(1023);
        let mut f = fs::File::create(&p).expect("create");
        for _ in 0..12 * 1024 {
            writeln!(f, "{line}").expect("write");
        }
        drop(f);
        let got = tail_lines(&p, usize::MAX).expect("tail");
        assert_eq!(got.len(), (MAX_TAIL_BYTES / 1024) as usize);
        assert!(got.iter().all(|l| *l == line));
        // One line longer than the cap: its end.
        fs::write(&p, "y".repeat(MAX_TAIL_BYTES as usize + 10)).expect("write");
        let got = tail_lines(&p, 5).expect("tail");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), MAX_TAIL_BYTES as usize);
    }

    #[test]
    fn read_from_at_most_reads_in_slices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.log");
        fs::write(&p, "abcdefgh").expect("write");
        assert_eq!(
            read_from_at_most(&p, 0, 3).expect("read"),
            (b"abc".to_vec(), 3)
        );
        assert_eq!(
            read_from_at_most(&p, 3, 3).expect("read"),
            (b"def".to_vec(), 6)
        );
        assert_eq!(
            read_from_at_most(&p, 6, 3).expect("read"),
            (b"gh".to_vec(), 8)
        );
    }

    async fn next(rx: &mut mpsc::Receiver<LogLine>) -> (Stream, String) {
        let line = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a line in time")
            .expect("the follower runs");
        (line.stream, line.text)
    }

    #[tokio::test]
    async fn a_follower_sends_the_tail_then_each_new_line_of_both_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("a-out.log"), dir.path().join("a-err.log"));
        fs::write(&out, "old1\nold2\n").expect("write");
        let (tx, mut rx) = mpsc::channel::<LogLine>(16);
        let follower = Follower::new(out.clone(), err.clone(), 1);
        let task = tokio::spawn(async move { follower.run(&tx).await });
        assert_eq!(next(&mut rx).await, (Stream::Out, "old2".to_string()));
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .expect("open");
        w.write_all(b"new\npart").expect("write");
        assert_eq!(next(&mut rx).await, (Stream::Out, "new".to_string()));
        fs::write(&err, "oops\n").expect("write");
        assert_eq!(next(&mut rx).await, (Stream::Err, "oops".to_string()));
        // The end of a line comes later: one line.
        w.write_all(b"ial\n").expect("write");
        assert_eq!(next(&mut rx).await, (Stream::Out, "partial".to_string()));
        // Truncated (`opm flush`): read again from the start.
        truncate(&out).expect("truncate");
        w.write_all(b"again\n").expect("write");
        assert_eq!(next(&mut rx).await, (Stream::Out, "again".to_string()));
        // The receiver gone, the follower ends.
        drop(rx);
        w.write_all(b"nobody reads this\n").expect("write");
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("ends in time");
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    }

    #[tokio::test]
    async fn a_follower_goes_on_across_rotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("r-out.log"), dir.path().join("r-err.log"));
        let (tx, mut rx) = mpsc::channel::<LogLine>(100_000);
        let follower = Follower::new(out.clone(), err.clone(), 0);
        let task = tokio::spawn(async move { follower.run(&tx).await });
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .expect("open");
        let policy = super::super::rotate::Policy {
            max_size: 64 * 1024,
            keep: 2,
            compress: false,
        };
        // After each rotation the follower is behind it (its offset is in
        // what moved to the rotated file): it reads that back, then the
        // live file. Every line comes once, in order.
        let mut expect = 0;
        let mut rotations = 0;
        for i in 0..50_000 {
            writeln!(w, "padding-padding-n{i}").expect("write");
            if i % 997 == 0
                && super::super::rotate::rotate_if_over(&out, &policy)
                    .expect("rotate")
                    .is_some()
            {
                rotations += 1;
                while expect <= i {
                    assert_eq!(
                        next(&mut rx).await,
                        (Stream::Out, format!("padding-padding-n{expect}"))
                    );
                    expect += 1;
                }
            }
        }
        while expect < 50_000 {
            assert_eq!(
                next(&mut rx).await,
                (Stream::Out, format!("padding-padding-n{expect}"))
            );
            expect += 1;
        }
        assert!(rotations > 10, "{rotations} rotations");
        drop(rx);
        let _ = task.await;
    }

    #[test]
    fn truncate_and_read_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.log");
        truncate(&p).expect("missing is fine");
        assert!(!p.exists(), "truncate does not create");
        assert_eq!(read_from(&p, 5).expect("read"), (Vec::new(), 0));

        // An O_APPEND writer, like a child's stdout.
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .expect("open");
        w.write_all(b"hello\n").expect("write");
        let (bytes, off) = read_from(&p, 0).expect("read");
        assert_eq!((bytes.as_slice(), off), (&b"hello\n"[..], 6));
        w.write_all(b"world\n").expect("write");
        let (bytes, off) = read_from(&p, off).expect("read");
        assert_eq!((bytes.as_slice(), off), (&b"world\n"[..], 12));
        let (bytes, off) = read_from(&p, off).expect("read");
        assert_eq!((bytes.len(), off), (0, 12));

        truncate(&p).expect("truncate");
        assert_eq!(fs::metadata(&p).expect("meta").len(), 0);
        w.write_all(b"again\n").expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"again\n");
        // Offset beyond the (truncated) end restarts from 0.
        let (bytes, off) = read_from(&p, off).expect("read");
        assert_eq!((bytes.as_slice(), off), (&b"again\n"[..], 6));
    }
}
