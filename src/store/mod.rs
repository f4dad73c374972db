//! The sled store: its trees (listed in ARCHITECTURE.md), their codecs, the schema version
//! and the migrations runner. It knows records and transactions, not
//! processes: the reconciler decides, the store keeps.
//!
//! Opening is careful. An existing database is first opened as a copy and
//! checked (schema version, every value's checksum, names ↔ processes, the
//! flush sequence against the snapshot's), so sled's own recovery never
//! rewrites files we cannot read. A database of a newer schema is refused
//! and left byte-for-byte as it was. A damaged one is moved aside
//! (`db.damaged-<UTC time>`, never deleted) and rebuilt from the snapshot
//! (`snapshot.rs`), unless the caller asked to refuse instead.
//!
//! An acknowledged mutation is durable when the method returns, power cut
//! included: sled's flush (which is only `sync_file_range`), then an
//! `fdatasync` of its log, then what changed appended to the journal beside
//! the snapshot (`journal.rs`, `fdatasync`ed; now and then a whole new
//! snapshot instead), then the sequence mirror (`db.seq`) written
//! atomically. Concurrent callers share that work (group commit, see
//! `Store::flush`). The one exception, `create_unflushed`, returns with a
//! `Ticket` instead, which its caller makes durable before it answers.
//!
//! Every write to a tree the snapshot keeps (`snapshot::TREES`) marks its
//! key (`Dirty::mark`) after it is made and before its `flush`: the next
//! commit journals the key's value as it is then. A write that marks
//! nothing would be missing from a database rebuilt from the snapshot.

pub mod codec;
pub mod journal;
pub mod migrate;
pub mod records;
pub mod snapshot;

use crate::sync::{LockExt, RwLockExt};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::spec::{Event, Observed, Spec, Subject};

use snapshot::Snapshot;

pub const META: &str = "meta";
pub const PROCESSES: &str = "processes";
pub const NAMES: &str = "names";
pub const RUNTIME: &str = "runtime";
pub const ROLE: &str = "role";
pub const AGENTS: &str = "agents";
pub const EVENTS: &str = "events";
pub const SCHEMA_KEY: &[u8] = b"schema";
const NEXT_ID_KEY: &[u8] = b"next_id";

/// The events log keeps this many entries; older ones are dropped.
pub const EVENTS_LIMIT: u64 = 10_000;

/// How many new events wait for a slow follower before it misses some.
const EVENTS_FOLLOW_BUFFER: usize = 1024;

/// How long opening waits for a lock held by a daemon that is exiting.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// The `meta` key of the flush sequence. Each commit records its sequence
/// here, then in the snapshot and in `db.seq`: a database that recovers to
/// an older sequence than they hold has lost acknowledged writes (sled stops
/// its recovery at the first damaged record, silently), and is rebuilt from
/// the snapshot.
const FLUSH_SEQ_KEY: &[u8] = b"flush_seq";

/// The snapshot is born 0600, always: like the database, it holds agent
/// tokens and every process's environment.
pub const SNAPSHOT_MODE: u32 = 0o600;

/// The journal is replaced by a new snapshot once it is larger than the
/// snapshot and than this.
const JOURNAL_MIN_BYTES: u64 = 256 * 1024;

/// The smallest `conf` sled writes; shorter means damaged (sled itself would
/// quietly write a new one).
const MIN_CONF_BYTES: u64 = 16;

/// sled's page cache: the store holds kilobytes, so a small cache keeps the
/// daemon's memory flat.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is damaged ({0}); it was left untouched. Move it away (it is OPM_HOME/db) to start afresh, or restore a backup")]
    Damaged(String),
    #[error("the database is damaged ({why}); it was left untouched because recovery was not wanted. `opm daemon restore` (without --no-recover) moves it aside and rebuilds it from {snapshot}")]
    DamagedNotRecovered { why: String, snapshot: PathBuf },
    #[error("the database is damaged ({why}) and cannot be rebuilt ({snapshot}); it was left untouched. Move it away (it is OPM_HOME/db) to start afresh, or restore a backup")]
    DamagedNoSnapshot { why: String, snapshot: String },
    #[error("the database has schema version {found}, newer than this opm supports ({supported}); it was left untouched. Upgrade opm")]
    Newer { found: u32, supported: u32 },
    #[error("another opm daemon is using this database ({0})")]
    Locked(String),
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot encode a value: {0}")]
    Encode(String),
    #[error("a process named {0:?} already exists")]
    DuplicateName(String),
    #[error("no instance group named {0:?}")]
    NoSuchGroup(String),
    #[error("no process with id {0}")]
    NoSuchId(u64),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// A process definition before it has an id.
#[derive(Debug, Clone)]
pub struct NewSpec {
    pub spec: Spec,
    /// A name the user chose is refused when taken; a derived one gets a suffix.
    pub explicit_name: bool,
    /// An instance added to the existing group of its name (`opm scale`):
    /// it shares the name instead of taking a new one.
    pub join: bool,
}

/// How a damaged database was replaced when the store opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// When the rebuild happened (ms since the epoch).
    pub at_ms: u64,
    /// What was wrong with the database.
    pub reason: String,
    /// The snapshot it was rebuilt from, and when that was written.
    pub snapshot: PathBuf,
    pub snapshot_written_ms: u64,
    /// Where the damaged database was moved (None when it was missing).
    pub damaged_copy: Option<PathBuf>,
    /// Process definitions restored.
    pub processes: usize,
}

/// The keys written since the last commit in the trees the snapshot keeps
/// (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Dirty(Mutex<BTreeSet<(&'static str, Vec<u8>)>>);

impl Dirty {
    /// Marks a key written (or removed): call it after the write, before
    /// the `flush` that acknowledges it.
    pub(crate) fn mark(&self, tree: &'static str, key: &[u8]) {
        self.0.lock_or_recover().insert((tree, key.to_vec()));
    }

    fn take(&self) -> BTreeSet<(&'static str, Vec<u8>)> {
        std::mem::take(&mut *self.0.lock_or_recover())
    }
}

/// The journal being appended to; only the commit leader touches it.
#[derive(Debug, Default)]
struct JournalWriter {
    /// `None` until a snapshot and an empty journal are written (at the
    /// first commit, and after any failed one).
    file: Option<std::fs::File>,
    /// The journal's length and its snapshot's.
    len: u64,
    base_len: u64,
    /// The sequence of the last commit it holds.
    seq: u64,
    /// `db.seq`, open for writing in place once it was written whole.
    mirror: Option<std::fs::File>,
}

impl JournalWriter {
    /// Whether the next commit writes a whole snapshot instead of a record.
    fn full(&self) -> bool {
        match crate::failpoint::journal_limit() {
            Some(limit) => self.len > limit,
            None => self.len > self.base_len.max(JOURNAL_MIN_BYTES),
        }
    }
}

/// Writes waiting to be made durable (`Store::ticket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a ticket stands for writes not yet durable: flush_ticket it"]
pub struct Ticket(u64);

/// The group commit's state: tickets handed out, tickets durable, and
/// whether a leader is committing right now.
#[derive(Debug, Default)]
struct CommitState {
    requested: u64,
    durable: u64,
    leading: bool,
    /// Commits carried out (each one fsync round), for benches and tests.
    commits: u64,
}

pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    processes: sled::Tree,
    names: sled::Tree,
    runtime: sled::Tree,
    events: sled::Tree,
    event_seq: AtomicU64,
    /// Each new event, to whoever follows the log (`subscribe_events`).
    published: tokio::sync::broadcast::Sender<Event>,
    commit: Mutex<CommitState>,
    committed: Condvar,
    /// Multi-tree transactions hold it shared; the snapshot takes it alone,
    /// so it never sees half of one.
    writes: RwLock<()>,
    /// Held by the writes that add or forget names (create, remove): the
    /// copies of an instance group share one name, and the names index
    /// points at one of them, which a removal may have to move.
    naming: Mutex<()>,
    /// sled's log and its folder, fsynced by each commit.
    log_file: std::fs::File,
    dir: PathBuf,
    snapshot_file: PathBuf,
    journal_file: PathBuf,
    dirty: Arc<Dirty>,
    journal: Mutex<JournalWriter>,
    /// `db.seq`: the last commit's sequence, a second witness beside the
    /// snapshot's (see `FLUSH_SEQ_KEY`), so a damaged snapshot does not hide
    /// a damaged database.
    seq_file: PathBuf,
    schema: u32,
    recovery: Option<Recovery>,
    /// Held for the life of the store: one daemon per database.
    _lock: std::fs::File,
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        // Durability comes from explicit flushes after each acknowledged
        // mutation; a background flusher would only cost idle CPU.
        .flush_every_ms(None)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Locked(io.to_string())
            }
            sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => {
                StoreError::Damaged(e.to_string())
            }
            other => StoreError::Sled(other),
        })
}

/// Takes the database's lock file without blocking.
fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd;
    let path = dir.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io(path.clone(), e))?;
    // A daemon killed a moment ago may still be releasing the lock while its
    // threads exit: wait for that, not for a daemon that is alive.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Locked(format!("{} is locked", path.display())));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The snapshot at `path` with its journal replayed onto it: `Ok(None)`
/// when there is none, `Err(why)` when it is there but unreadable. A
/// journal that stops early leaves the snapshot at an older sequence, which
/// the acknowledged one (`db.seq`) then judges.
fn read_snapshot(path: &Path, journal_path: &Path) -> Result<Option<Snapshot>, String> {
    let Some(mut snap) = Snapshot::read(path)? else {
        return Ok(None);
    };
    match std::fs::read(journal_path) {
        Ok(bytes) => {
            let replay = journal::replay(&mut snap, &bytes);
            if let Some(why) = replay.stopped {
                tracing::warn!(
                    "{}: replayed {} commits, then stopped ({why})",
                    journal_path.display(),
                    replay.applied
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "{}: {e}; the snapshot is read alone",
            journal_path.display()
        ),
    }
    Ok(Some(snap))
}

/// Reads every tree of a database and checks what must hold; returns the
/// schema version. Runs the pending migrations (on the copy this proves they
/// succeed before the real database is touched).
fn check(db: &sled::Db, fresh_ok: bool, mirrored_seq: Option<u64>) -> Result<u32, StoreError> {
    if let Some(mirrored) = mirrored_seq {
        let recovered = recorded_seq(db)?;
        if recovered < mirrored {
            return Err(StoreError::Damaged(format!(
                "it holds writes up to {recovered} but {mirrored} were acknowledged: part of it cannot be read"
            )));
        }
    }
    let version = match migrate::recorded(db)? {
        Some(v) => v,
        None => {
            let has_data = [PROCESSES, NAMES, RUNTIME, ROLE, AGENTS]
                .iter()
                .map(|t| db.open_tree(t).map(|t| !t.is_empty()))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .any(|b| b);
            if has_data || !fresh_ok {
                return Err(StoreError::Damaged("no schema version recorded".into()));
            }
            migrate::initialize(db)?;
            migrate::CURRENT
        }
    };
    if version > migrate::CURRENT {
        return Err(StoreError::Newer {
            found: version,
            supported: migrate::CURRENT,
        });
    }
    migrate::run(db, version)?;
    let processes = db.open_tree(PROCESSES)?;
    let names = db.open_tree(NAMES)?;
    let mut count = 0usize;
    for item in processes.iter() {
        let (key, value) = item?;
        let id = codec::key_id(PROCESSES, &key)?;
        let spec: Spec = codec::decode(PROCESSES, &key, &value)?;
        if spec.id != id {
            return Err(StoreError::Damaged(format!(
                "process {id} records id {}",
                spec.id
            )));
        }
        // The copies of an instance group share their name; the index
        // points at one of them.
        let holder = match names.get(spec.name.as_bytes())? {
            Some(v) => Some(codec::decode::<u64>(NAMES, spec.name.as_bytes(), &v)?),
            None => None,
        };
        let shares = |other: u64| -> Result<bool, StoreError> {
            let key = codec::id_key(other);
            Ok(match processes.get(key)? {
                Some(v) => {
                    let o: Spec = codec::decode(PROCESSES, &key, &v)?;
                    o.name == spec.name && o.def.instance.is_some() && spec.def.instance.is_some()
                }
                None => false,
            })
        };
        match holder {
            Some(h) if h == id => count += 1,
            Some(h) if shares(h)? => {}
            _ => {
                return Err(StoreError::Damaged(format!(
                    "process {id} ({}) is missing from the names index",
                    spec.name
                )))
            }
        }
    }
    if names.len() != count {
        return Err(StoreError::Damaged(
            "the names index does not match the processes".into(),
        ));
    }
    for tree in [RUNTIME] {
        let t = db.open_tree(tree)?;
        for item in t.iter() {
            let (key, value) = item?;
            codec::decode::<Observed>(tree, &key, &value)?;
        }
    }
    let meta = db.open_tree(META)?;
    if let Some(v) = meta.get(NEXT_ID_KEY)? {
        codec::decode::<u64>(META, NEXT_ID_KEY, &v)?;
    }
    Ok(migrate::CURRENT)
}

fn recorded_seq(db: &sled::Db) -> Result<u64, StoreError> {
    let meta = db.open_tree(META)?;
    match meta.get(FLUSH_SEQ_KEY)? {
        Some(v) => codec::decode(META, FLUSH_SEQ_KEY, &v),
        None => Ok(0),
    }
}

/// The sequence mirrored in `db.seq`, when that file is there and whole. A
/// file that does not hold a number (an older opm truncated it in place)
/// says nothing, and is not a reason to refuse anything.
fn mirrored_seq(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}
/// sled rewrites a missing or short `conf` without a word; a database with
/// data but no whole `conf` is damaged.
fn check_conf(dir: &Path) -> Result<(), StoreError> {
    let has_log = std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
    let conf = std::fs::metadata(dir.join("conf"))
        .map(|m| m.len())
        .unwrap_or(0);
    if has_log && conf < MIN_CONF_BYTES {
        return Err(StoreError::Damaged(format!(
            "its conf file is missing or cut short ({conf} bytes)"
        )));
    }
    Ok(())
}

/// Checks an existing database on a copy (see the module doc), leaving the
/// real one untouched.
fn verify_copy(dir: &Path, parent: &Path, acknowledged: Option<u64>) -> Result<(), StoreError> {
    check_conf(dir)?;
    // Copies a killed daemon left: the lock is ours, nobody else checks now.
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".db-check-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let copy = parent.join(format!(".db-check-{}", std::process::id()));
    copy_dir(dir, &copy).map_err(|e| StoreError::Io(copy.clone(), e))?;
    let copy_for_check = copy.clone();
    // sled may panic on some damaged files; on a copy that is just a
    // finding.
    let checked = std::panic::catch_unwind(move || -> Result<u32, StoreError> {
        let db = open_sled(&copy_for_check)?;
        if !db.was_recovered() {
            return Err(StoreError::Damaged(
                "sled found no database in the files".into(),
            ));
        }
        check(&db, false, acknowledged)
    });
    let _ = std::fs::remove_dir_all(&copy);
    match checked {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::Damaged("sled could not read the files".into())),
    }
}

/// A name beside `dir` for its damaged copy: `db.damaged-<UTC time>`.
fn damaged_name(dir: &Path, now_ms: u64) -> PathBuf {
    let (y, mo, d, h, mi, s) = crate::spec::civil_utc(now_ms);
    let base = format!(
        "{}.damaged-{y:04}-{mo:02}-{d:02}T{h:02}-{mi:02}-{s:02}Z",
        dir.file_name().map_or("db".into(), |n| n.to_string_lossy())
    );
    let parent = dir.parent().unwrap_or(Path::new("."));
    let mut candidate = parent.join(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = parent.join(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// Moves the damaged database aside and writes a fresh one from `snap`.
fn rebuild(dir: &Path, snap: &Snapshot, now_ms: u64) -> Result<Option<PathBuf>, StoreError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StoreError::Io(p, e)
    };
    let aside = if dir.exists() {
        let aside = damaged_name(dir, now_ms);
        std::fs::rename(dir, &aside).map_err(io(dir))?;
        crate::fsutil::sync_dir(parent).map_err(io(parent))?;
        Some(aside)
    } else {
        None
    };
    let db = open_sled(dir)?;
    for (name, entries) in &snap.trees {
        let tree = db.open_tree(name)?;
        for (k, v) in entries {
            tree.insert(k.as_slice(), v.as_slice())?;
        }
    }
    db.open_tree(META)?
        .insert(FLUSH_SEQ_KEY, codec::encode(&snap.seq)?)?;
    db.flush()?;
    drop(db);
    crate::fsutil::sync_dir(parent).map_err(io(parent))?;
    Ok(aside)
}

impl Store {
    /// Opens (or creates) the database in `dir`, rebuilding a damaged one
    /// from its snapshot. See the module doc.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, true)
    }

    /// Opens the database in `dir`; with `recover` false a damaged database
    /// is refused and left untouched instead of rebuilt.
    pub fn open_with(dir: &Path, recover: bool) -> Result<Store, StoreError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Io(parent.to_path_buf(), e))?;
        let lock = lock(dir)?;
        let snapshot_file = dir.with_extension("snapshot");
        let journal_file = dir.with_extension("journal");
        let seq_file = dir.with_extension("seq");
        crate::fsutil::remove_leftovers(&snapshot_file);
        crate::fsutil::remove_leftovers(&journal_file);
        crate::fsutil::remove_leftovers(&seq_file);
        let exists = dir.exists()
            && std::fs::read_dir(dir)
                .map_err(|e| StoreError::Io(dir.to_path_buf(), e))?
                .next()
                .is_some();
        let snap = read_snapshot(&snapshot_file, &journal_file);
        let acknowledged = [
            snap.as_ref().ok().and_then(|s| s.as_ref()).map(|s| s.seq),
            mirrored_seq(&seq_file),
        ]
        .into_iter()
        .flatten()
        .max();
        let verdict = if exists {
            verify_copy(dir, parent, acknowledged)
        } else if matches!(snap, Ok(Some(_))) {
            Err(StoreError::Damaged(
                "the database folder is missing or empty, but its snapshot is there".into(),
            ))
        } else {
            Ok(())
        };
        let mut recovery = None;
        let mut acknowledged = acknowledged;
        match verdict {
            Ok(()) => {}
            Err(StoreError::Damaged(why)) => {
                let snap = match snap {
                    Ok(Some(snap)) => snap,
                    Ok(None) => {
                        return Err(StoreError::DamagedNoSnapshot {
                            why,
                            snapshot: format!("there is no {}", snapshot_file.display()),
                        })
                    }
                    Err(bad) => {
                        return Err(StoreError::DamagedNoSnapshot {
                            why,
                            snapshot: format!("the snapshot is damaged too: {bad}"),
                        })
                    }
                };
                if let Some(mirrored) = acknowledged.filter(|a| *a > snap.seq) {
                    return Err(StoreError::DamagedNoSnapshot {
                        why,
                        snapshot: format!(
                            "its snapshot holds writes up to {} but {mirrored} were acknowledged",
                            snap.seq
                        ),
                    });
                }
                if let Some(found) = snap.schema().filter(|v| *v > migrate::CURRENT) {
                    return Err(StoreError::Newer {
                        found,
                        supported: migrate::CURRENT,
                    });
                }
                if !recover {
                    return Err(StoreError::DamagedNotRecovered {
                        why,
                        snapshot: snapshot_file,
                    });
                }
                let now = crate::spec::now_ms();
                let aside = rebuild(dir, &snap, now)?;
                acknowledged = Some(snap.seq);
                recovery = Some(Recovery {
                    at_ms: now,
                    reason: why,
                    snapshot: snapshot_file.clone(),
                    snapshot_written_ms: snap.written_ms,
                    damaged_copy: aside,
                    processes: snap.processes(),
                });
            }
            Err(e) => return Err(e),
        }
        let fresh = !exists && recovery.is_none();
        let db = open_sled(dir)?;
        let schema = check(&db, fresh, acknowledged)?;
        let log_path = dir.join("db");
        let log_file =
            std::fs::File::open(&log_path).map_err(|e| StoreError::Io(log_path.clone(), e))?;
        let committed_seq = recorded_seq(&db)?;
        let meta = db.open_tree(META)?;
        let events = db.open_tree(EVENTS)?;
        let event_seq = events
            .last()?
            .map(|(k, _)| codec::key_id(EVENTS, &k))
            .transpose()?
            .map_or(0, |s| s + 1);
        let store = Store {
            processes: db.open_tree(PROCESSES)?,
            names: db.open_tree(NAMES)?,
            runtime: db.open_tree(RUNTIME)?,
            meta,
            events,
            event_seq: AtomicU64::new(event_seq),
            published: tokio::sync::broadcast::channel(EVENTS_FOLLOW_BUFFER).0,
            commit: Mutex::new(CommitState {
                requested: committed_seq,
                durable: committed_seq,
                ..CommitState::default()
            }),
            committed: Condvar::new(),
            writes: RwLock::new(()),
            naming: Mutex::new(()),
            log_file,
            dir: dir.to_path_buf(),
            snapshot_file,
            journal_file,
            dirty: Arc::default(),
            journal: Mutex::default(),
            seq_file,
            schema,
            recovery,
            db,
            _lock: lock,
        };
        for tree in [ROLE, AGENTS] {
            store.db.open_tree(tree)?;
        }
        // The conf file is written once, when sled creates the database.
        if let Ok(conf) = std::fs::File::open(dir.join("conf")) {
            conf.sync_all()
                .map_err(|e| StoreError::Io(dir.join("conf"), e))?;
        }
        store.flush()?;
        Ok(store)
    }

    /// How a damaged database was rebuilt when this store opened, if it was.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// How many commits (fsync rounds) this store has made.
    pub fn commits(&self) -> u64 {
        self.commit.lock_or_recover().commits
    }

    pub fn schema_version(&self) -> u32 {
        self.schema
    }

    /// The underlying database, for the role trees.
    /// The role system's own state (`role` tree): the agent's link, the
    /// server's tombstones of removed agents.
    pub fn role_records(&self) -> Result<records::Records, StoreError> {
        records::Records::open(&self.db, ROLE, self.dirty.clone())
    }

    /// A server's agent registrations (`agents` tree), keyed by agent id.
    pub fn agent_records(&self) -> Result<records::Records, StoreError> {
        records::Records::open(&self.db, AGENTS, self.dirty.clone())
    }

    /// Makes every write made before the call durable (see the module doc).
    ///
    /// Group commit: each call takes a ticket. When no commit is running,
    /// the caller leads one that covers every ticket handed out so far;
    /// otherwise it waits, and a commit that started after its ticket covers
    /// it. N concurrent callers therefore pay two commits at most, not N.
    /// A lock poisoned by a panicking thread still holds consistent counters
    /// (they change only under it, by plain assignments).
    pub fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.ticket();
        self.flush_ticket(ticket)
    }

    /// A ticket for every write made before the call, to be made durable
    /// later by `flush_ticket`: a commit that some other caller starts in
    /// between covers it, and then the ticket costs no sync of its own.
    fn ticket(&self) -> Ticket {
        let mut state = self.commit.lock_or_recover();
        state.requested += 1;
        Ticket(state.requested)
    }

    /// Returns once the writes `ticket` stands for are durable: at once when
    /// a commit started since it was taken has ended, else after leading or
    /// waiting for one.
    pub fn flush_ticket(&self, Ticket(ticket): Ticket) -> Result<(), StoreError> {
        let mut state = self.commit.lock_or_recover();
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.leading {
                state = self
                    .committed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leading = true;
            let upto = state.requested;
            drop(state);
            let result = self.commit_upto(upto);
            state = self.commit.lock_or_recover();
            state.leading = false;
            if result.is_ok() {
                state.durable = state.durable.max(upto);
                state.commits += 1;
            }
            self.committed.notify_all();
            // On failure the waiters take the lead in turn and try again.
            result?;
        }
    }

    /// Makes every write made before the call durable in the log (sled's
    /// flush and an `fdatasync`), without a commit: no sequence, no snapshot.
    /// For internal records that the next `flush` puts in the snapshot soon
    /// after (a spawn's intent, whose pass always ends with a `flush`): a
    /// killed daemon finds them in the log; only a database damaged in that
    /// instant would be rebuilt without them.
    pub fn flush_log(&self) -> Result<(), StoreError> {
        self.sync_log(false)
    }

    /// sled's flush, then an `fdatasync` of its log (sled's flush is
    /// `sync_file_range`: the data may still sit in the drive's cache and the
    /// file's size in the journal), and with `dir` an fsync of its folder.
    fn sync_log(&self, dir: bool) -> Result<(), StoreError> {
        fail::fail_point!("store::before-flush");
        self.db.flush()?;
        fail::fail_point!("store::after-flush");
        self.log_file
            .sync_data()
            .map_err(|e| StoreError::Io(self.dir.join("db"), e))?;
        if dir {
            crate::fsutil::sync_dir(&self.dir).map_err(|e| StoreError::Io(self.dir.clone(), e))?;
        }
        fail::fail_point!("store::after-fsync");
        Ok(())
    }

    /// One commit: records `seq`, has sled write its log, fsyncs it,
    /// journals what changed (or writes a new snapshot), and mirrors `seq`.
    fn commit_upto(&self, seq: u64) -> Result<(), StoreError> {
        self.meta.insert(FLUSH_SEQ_KEY, codec::encode(&seq)?)?;
        self.dirty.mark(META, FLUSH_SEQ_KEY);
        self.sync_log(true)?;
        {
            let mut journal = self.journal.lock_or_recover();
            let result = match journal.file {
                Some(_) if !journal.full() => self.append_journal(&mut journal, seq),
                _ => self.write_snapshot(&mut journal, seq),
            };
            if result.is_err() {
                // What was taken from `dirty` is in no record: the next
                // commit writes everything.
                journal.file = None;
            }
            result?;
            fail::fail_point!("store::before-mirror");
            self.mirror_seq(&mut journal, seq)
        }
    }

    /// Writes `seq` to `db.seq`: whole (atomically) the first time, then in
    /// place, always 21 bytes, with an `fdatasync`: a write torn by a power
    /// cut leaves no number, which `mirrored_seq` reads as no witness.
    fn mirror_seq(&self, journal: &mut JournalWriter, seq: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let io = |e| StoreError::Io(self.seq_file.clone(), e);
        let text = format!("{seq:020}\n");
        match &journal.mirror {
            Some(file) => {
                file.write_all_at(text.as_bytes(), 0).map_err(io)?;
                file.sync_data().map_err(io)
            }
            None => {
                crate::fsutil::write_atomic_exact(&self.seq_file, text.as_bytes(), 0o600)
                    .map_err(io)?;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.seq_file)
                    .map_err(io)?;
                journal.mirror = Some(file);
                Ok(())
            }
        }
    }

    /// Appends the values of the keys marked since the last commit.
    fn append_journal(&self, journal: &mut JournalWriter, seq: u64) -> Result<(), StoreError> {
        let changes = {
            let _alone = self.writes.write_or_recover();
            let mut changes = Vec::new();
            for (tree, key) in self.dirty.take() {
                let value = self.db.open_tree(tree)?.get(&key)?.map(|v| v.to_vec());
                changes.push(journal::Change {
                    tree: tree.to_string(),
                    key,
                    value,
                });
            }
            changes
        };
        let record = journal::Record {
            prev_seq: journal.seq,
            seq,
            written_ms: crate::spec::now_ms(),
            changes,
        };
        let bytes = journal::encode(&record).map_err(StoreError::Encode)?;
        let io = |e| StoreError::Io(self.journal_file.clone(), e);
        let file = journal.file.as_mut().expect("appending to an open journal");
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        file.write_all(first).map_err(io)?;
        fail::fail_point!("journal::mid-append");
        file.write_all(rest).map_err(io)?;
        file.sync_data().map_err(io)?;
        journal.len += bytes.len() as u64;
        journal.seq = seq;
        Ok(())
    }

    /// Every tree the snapshot keeps, raw, as the database holds it now
    /// (the caller holds `writes` alone when it must not see half of a
    /// transaction).
    fn kept_trees(&self) -> Result<Vec<(String, snapshot::Entries)>, StoreError> {
        let mut trees = Vec::with_capacity(snapshot::TREES.len());
        for name in snapshot::TREES {
            let entries = self
                .db
                .open_tree(name)?
                .iter()
                .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<Vec<_>, _>>()?;
            trees.push((name.to_string(), entries));
        }
        Ok(trees)
    }

    /// Writes a whole snapshot of `seq`, then an empty journal after it.
    fn write_snapshot(&self, journal: &mut JournalWriter, seq: u64) -> Result<(), StoreError> {
        let snap = {
            let _alone = self.writes.write_or_recover();
            // Every key marked so far is in this snapshot.
            self.dirty.take();
            Snapshot {
                seq,
                written_ms: crate::spec::now_ms(),
                trees: self.kept_trees()?,
            }
        };
        let bytes = snap.encode().map_err(StoreError::Encode)?;
        crate::fsutil::write_atomic_exact(&self.snapshot_file, &bytes, SNAPSHOT_MODE)
            .map_err(|e| StoreError::Io(self.snapshot_file.clone(), e))?;
        let io = |e| StoreError::Io(self.journal_file.clone(), e);
        crate::fsutil::write_atomic_exact(&self.journal_file, &journal::header(seq), SNAPSHOT_MODE)
            .map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.journal_file)
            .map_err(io)?;
        journal.file = Some(file);
        journal.len = journal::HEADER as u64;
        journal.base_len = bytes.len() as u64;
        journal.seq = seq;
        Ok(())
    }

    /// Shared hold on the trees for a multi-tree transaction (see `writes`).
    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.writes.read_or_recover()
    }

    /// Creates processes in one transaction (ids, names, specs) and flushes.
    pub fn create(&self, new: Vec<NewSpec>) -> Result<Vec<Spec>, StoreError> {
        self.apply(new, &[])
    }

    /// Replaces the specs (same ids and names) in one transaction and flushes.
    pub fn update(&self, specs: &[Spec]) -> Result<(), StoreError> {
        fail::fail_point!("store::before-insert");
        let writing = self.writing();
        self.processes
            .transaction(|p| {
                for spec in specs {
                    if p.get(codec::id_key(spec.id))?.is_none() {
                        return Err(abort(StoreError::NoSuchId(spec.id)));
                    }
                    put(p, &codec::id_key(spec.id), spec)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        drop(writing);
        for spec in specs {
            self.dirty.mark(PROCESSES, &codec::id_key(spec.id));
        }
        fail::fail_point!("store::after-insert");
        self.flush()
    }

    /// Creates `new` and replaces `changed` (same ids and names) in one
    /// transaction, then flushes: a process file applied at once.
    pub fn apply(&self, new: Vec<NewSpec>, changed: &[Spec]) -> Result<Vec<Spec>, StoreError> {
        let (created, ticket) = self.apply_unflushed(new, changed)?;
        self.flush_ticket(ticket)?;
        Ok(created)
    }

    /// `create` without its commit: the caller makes the ticket durable
    /// (`flush_ticket`) before it answers. A start does so after the spawn,
    /// whose own commit covers the create too: one round of syncs, not two.
    pub fn create_unflushed(&self, new: Vec<NewSpec>) -> Result<(Vec<Spec>, Ticket), StoreError> {
        self.apply_unflushed(new, &[])
    }

    fn apply_unflushed(
        &self,
        new: Vec<NewSpec>,
        changed: &[Spec],
    ) -> Result<(Vec<Spec>, Ticket), StoreError> {
        fail::fail_point!("store::before-insert");
        let naming = self.naming.lock_or_recover();
        let writing = self.writing();
        let created = (&self.processes, &self.names, &self.meta)
            .transaction(|(p, n, m)| {
                for spec in changed {
                    if p.get(codec::id_key(spec.id))?.is_none() {
                        return Err(abort(StoreError::NoSuchId(spec.id)));
                    }
                    put(p, &codec::id_key(spec.id), spec)?;
                }
                let mut next_id: u64 = match m.get(NEXT_ID_KEY)? {
                    Some(v) => codec::decode(META, NEXT_ID_KEY, &v).map_err(abort)?,
                    None => 0,
                };
                let mut out = Vec::with_capacity(new.len());
                // The name the newest group of this batch took (its copy 0
                // picks it, the next copies share it).
                let mut group_name: Option<String> = None;
                for item in &new {
                    let mut spec = item.spec.clone();
                    spec.id = next_id;
                    let copy = spec.def.instance;
                    if item.join {
                        let member = match n.get(spec.name.as_bytes())? {
                            Some(v) => {
                                let id: u64 = codec::decode(NAMES, spec.name.as_bytes(), &v)
                                    .map_err(abort)?;
                                match p.get(codec::id_key(id))? {
                                    Some(v) => Some(
                                        codec::decode::<Spec>(PROCESSES, &codec::id_key(id), &v)
                                            .map_err(abort)?,
                                    ),
                                    None => None,
                                }
                            }
                            None => None,
                        };
                        if copy.is_none() || member.is_none_or(|m| m.def.instance.is_none()) {
                            return Err(abort(StoreError::NoSuchGroup(spec.name.clone())));
                        }
                    } else if let (Some(k), Some(name)) = (copy, &group_name) {
                        if k > 0 {
                            spec.name.clone_from(name);
                        }
                    }
                    let shares = item.join || (copy.is_some_and(|k| k > 0) && group_name.is_some());
                    if !shares {
                        spec.name = pick_name(n, &spec.name, item.explicit_name)?;
                        put(n, spec.name.as_bytes(), &spec.id)?;
                        if copy.is_some() {
                            group_name = Some(spec.name.clone());
                        }
                    }
                    put(p, &codec::id_key(spec.id), &spec)?;
                    next_id += 1;
                    out.push(spec);
                }
                put(m, NEXT_ID_KEY, &next_id)?;
                Ok(out)
            })
            .map_err(tx_err)?;
        drop(writing);
        drop(naming);
        for spec in changed.iter().chain(&created) {
            self.dirty.mark(PROCESSES, &codec::id_key(spec.id));
        }
        for spec in &created {
            self.dirty.mark(NAMES, spec.name.as_bytes());
        }
        self.dirty.mark(META, NEXT_ID_KEY);
        fail::fail_point!("store::after-insert");
        Ok((created, self.ticket()))
    }

    /// Forgets a process: spec, name and runtime, in one transaction; flushes.
    pub fn remove(&self, id: u64) -> Result<(), StoreError> {
        fail::fail_point!("store::before-insert");
        let naming = self.naming.lock_or_recover();
        // The other copies of its group, if it has one: the name stays
        // theirs. (Names change only under `naming`, so this list holds.)
        let existing = self.get(id)?;
        let siblings: Vec<u64> = match &existing {
            Some(spec) if spec.def.instance.is_some() => self
                .specs()?
                .into_iter()
                .filter(|s| s.id != id && s.name == spec.name && s.def.instance.is_some())
                .map(|s| s.id)
                .collect(),
            _ => Vec::new(),
        };
        let writing = self.writing();
        (&self.processes, &self.names, &self.runtime)
            .transaction(|(p, n, r)| {
                let key = codec::id_key(id);
                let Some(v) = p.remove(&key)? else {
                    return Ok(());
                };
                let spec: Spec = codec::decode(PROCESSES, &key, &v).map_err(abort)?;
                let holder: Option<u64> = match n.get(spec.name.as_bytes())? {
                    Some(v) => Some(codec::decode(NAMES, spec.name.as_bytes(), &v).map_err(abort)?),
                    None => None,
                };
                if holder == Some(id) {
                    match siblings.first() {
                        Some(next) => put(n, spec.name.as_bytes(), next)?,
                        None => {
                            n.remove(spec.name.as_bytes())?;
                        }
                    }
                }
                r.remove(&key)?;
                Ok(())
            })
            .map_err(tx_err)?;
        drop(writing);
        drop(naming);
        let key = codec::id_key(id);
        self.dirty.mark(PROCESSES, &key);
        self.dirty.mark(RUNTIME, &key);
        if let Some(spec) = &existing {
            self.dirty.mark(NAMES, spec.name.as_bytes());
        }
        fail::fail_point!("store::after-insert");
        self.flush()
    }

    pub fn get(&self, id: u64) -> Result<Option<Spec>, StoreError> {
        let key = codec::id_key(id);
        self.processes
            .get(key)?
            .map(|v| codec::decode(PROCESSES, &key, &v))
            .transpose()
    }

    pub fn id_by_name(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.names
            .get(name.as_bytes())?
            .map(|v| codec::decode(NAMES, name.as_bytes(), &v))
            .transpose()
    }

    /// Every spec, in id order.
    pub fn specs(&self) -> Result<Vec<Spec>, StoreError> {
        self.processes
            .iter()
            .map(|item| {
                let (k, v) = item?;
                codec::decode(PROCESSES, &k, &v)
            })
            .collect()
    }

    pub fn runtime(&self, id: u64) -> Result<Option<Observed>, StoreError> {
        let key = codec::id_key(id);
        self.runtime
            .get(key)?
            .map(|v| codec::decode(RUNTIME, &key, &v))
            .transpose()
    }

    /// Records what was observed; durable at the next `flush`.
    pub fn put_runtime(&self, id: u64, observed: &Observed) -> Result<(), StoreError> {
        let key = codec::id_key(id);
        self.runtime.insert(key, codec::encode(observed)?)?;
        self.dirty.mark(RUNTIME, &key);
        Ok(())
    }

    /// Appends to the bounded events log (durable at the next `flush`) and
    /// publishes it to every follower: the one place events are written.
    pub fn push_event(&self, event: &Event) -> Result<(), StoreError> {
        let seq = self.event_seq.fetch_add(1, Ordering::Relaxed);
        self.events.insert(
            codec::id_key(seq),
            codec::encode(&StoredEvent::from(event))?,
        )?;
        if seq >= EVENTS_LIMIT {
            self.events.remove(codec::id_key(seq - EVENTS_LIMIT))?;
        }
        // No follower is no error.
        let _ = self.published.send(event.clone());
        Ok(())
    }

    /// Every event pushed from now on. A follower more than
    /// `EVENTS_FOLLOW_BUFFER` events behind is told how many it missed.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.published.subscribe()
    }

    /// The newest `limit` events of one process (or of all with `None`), oldest first.
    pub fn events(&self, id: Option<u64>, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.events_where(limit, |e| {
            id.is_none_or(|id| e.subject.process_id() == Some(id))
        })
    }

    /// The newest `limit` events that `keep` accepts, oldest first.
    pub fn events_where(
        &self,
        limit: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        for item in self.events.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let event: Event = codec::decode::<StoredEvent>(EVENTS, &k, &v)?.into();
            if keep(&event) {
                out.push(event);
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// An event as the `events` tree holds it (the layout since schema 1):
/// the subject is a number, with two values kept for subjects that are no
/// process. Only this conversion knows them.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEvent {
    at_ms: u64,
    id: u64,
    name: String,
    kind: String,
    detail: String,
}

/// The stored id of an event about an agent.
const AGENT_SUBJECT: u64 = u64::MAX;
/// The stored id of an event about the daemon itself.
const DAEMON_SUBJECT: u64 = u64::MAX - 1;

impl From<&Event> for StoredEvent {
    fn from(e: &Event) -> StoredEvent {
        let id = match &e.subject {
            Subject::Process { id, .. } => *id,
            Subject::Agent(_) => AGENT_SUBJECT,
            Subject::Daemon => DAEMON_SUBJECT,
        };
        StoredEvent {
            at_ms: e.at_ms,
            id,
            name: e.subject.name().to_string(),
            kind: e.kind.clone(),
            detail: e.detail.clone(),
        }
    }
}

impl From<StoredEvent> for Event {
    fn from(e: StoredEvent) -> Event {
        let subject = match e.id {
            AGENT_SUBJECT => Subject::Agent(e.name),
            DAEMON_SUBJECT => Subject::Daemon,
            id => Subject::Process { id, name: e.name },
        };
        Event {
            at_ms: e.at_ms,
            subject,
            kind: e.kind,
            detail: e.detail,
        }
    }
}

fn put<T: serde::Serialize>(
    tree: &TransactionalTree,
    key: &[u8],
    value: &T,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let bytes = codec::encode(value).map_err(abort)?;
    tree.insert(key, bytes)?;
    Ok(())
}

/// The name itself when free; for a derived name the first free `name-N`.
fn pick_name(
    names: &TransactionalTree,
    wanted: &str,
    explicit: bool,
) -> Result<String, ConflictableTransactionError<StoreError>> {
    if names.get(wanted.as_bytes())?.is_none() {
        return Ok(wanted.to_string());
    }
    if explicit {
        return Err(abort(StoreError::DuplicateName(wanted.to_string())));
    }
    for n in 1u64.. {
        let candidate = format!("{wanted}-{n}");
        if names.get(candidate.as_bytes())?.is_none() {
            return Ok(candidate);
        }
    }
    unreachable!("u64 suffixes do not run out")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> NewSpec {
        NewSpec {
            spec: Spec {
                id: 0,
                name: name.to_string(),
                desired: crate::spec::Desired::Running,
                generation: 1,
                created_ms: 0,
                def: crate::definition::ProcessDef {
                    script: "sleep 1000".into(),
                    cwd: Some("/".into()),
                    ..Default::default()
                },
            },
            explicit_name: true,
            join: false,
        }
    }

    #[test]
    fn concurrent_creates_share_their_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("open");
        let before = store.commits();
        std::thread::scope(|s| {
            for i in 0..100 {
                let store = &store;
                s.spawn(move || store.create(vec![spec(&format!("p{i}"))]).expect("create"));
            }
        });
        let commits = store.commits() - before;
        assert!(commits >= 1, "the creates were committed");
        assert!(commits < 100, "100 creates paid {commits} commits");
        assert_eq!(store.specs().expect("specs").len(), 100);
    }

    #[test]
    fn every_acknowledged_create_is_in_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let store = Store::open(&db).expect("open");
        store.create(vec![spec("a")]).expect("create");
        let snap = read_snapshot(
            &db.with_extension("snapshot"),
            &db.with_extension("journal"),
        )
        .expect("readable")
        .expect("written");
        assert_eq!(snap.processes(), 1);
        assert_eq!(snap.schema(), Some(migrate::CURRENT));
        assert_eq!(Some(snap.seq), mirrored_seq(&db.with_extension("seq")));
    }

    /// A start's create waits for the spawn's commit: that later commit
    /// covers it, and its ticket then costs no commit of its own; a ticket
    /// that nothing covered yet is committed when it is flushed.
    #[test]
    fn a_ticket_is_covered_by_any_commit_started_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let store = Store::open(&db).expect("open");
        let kept = || {
            read_snapshot(
                &db.with_extension("snapshot"),
                &db.with_extension("journal"),
            )
            .expect("readable")
            .map_or(0, |s| s.processes())
        };
        let (created, ticket) = store.create_unflushed(vec![spec("a")]).expect("create");
        assert_eq!(kept(), 0, "not committed yet");
        let commits = store.commits();
        store
            .put_runtime(created[0].id, &Observed::default())
            .expect("runtime");
        store.flush().expect("the spawn's commit");
        assert_eq!(store.commits(), commits + 1);
        assert_eq!(kept(), 1, "the later commit holds the create");
        store.flush_ticket(ticket).expect("covered");
        assert_eq!(store.commits(), commits + 1, "no second commit");

        let (_, ticket) = store.create_unflushed(vec![spec("b")]).expect("create");
        store.flush_ticket(ticket).expect("committed");
        assert_eq!(store.commits(), commits + 2);
        assert_eq!(kept(), 2);
    }

    /// Every tree the snapshot keeps, as the database holds it now.
    fn dump(store: &Store) -> Vec<(String, snapshot::Entries)> {
        store.kept_trees().expect("the trees")
    }

    #[test]
    fn the_snapshot_and_its_journal_hold_every_write_of_every_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let store = Store::open(&db).expect("open");
        let read = || {
            read_snapshot(
                &db.with_extension("snapshot"),
                &db.with_extension("journal"),
            )
            .expect("readable")
            .expect("written")
        };
        let role = store.role_records().expect("role");
        let agents = store.agent_records().expect("agents");
        let mut bases = 0;
        let mut last_base = std::fs::metadata(db.with_extension("snapshot"))
            .expect("snapshot")
            .modified()
            .expect("mtime");
        for round in 0..300u64 {
            let created = store
                .create(vec![spec(&format!("p{round}")), spec(&format!("q{round}"))])
                .expect("create");
            let mut changed = created[0].clone();
            changed.generation += 1;
            store.update(&[changed]).expect("update");
            let mut seen = Observed::new();
            seen.starts = round as u32;
            store.put_runtime(created[1].id, &seen).expect("runtime");
            role.put(&format!("k{}", round % 7), &round).expect("role");
            agents
                .put_all([("a", &round), ("b", &(round + 1))])
                .expect("agents");
            if round % 3 == 0 {
                store.remove(created[1].id).expect("remove");
                role.remove(&format!("k{}", (round + 3) % 7)).expect("role");
            }
            store.flush().expect("flush");
            let snap = read();
            assert!(
                snap.trees == dump(&store),
                "round {round}: the snapshot and journal differ from the database"
            );
            let base = std::fs::metadata(db.with_extension("snapshot"))
                .expect("snapshot")
                .modified()
                .expect("mtime");
            if base != last_base {
                bases += 1;
                last_base = base;
            }
        }
        let journal = std::fs::metadata(db.with_extension("journal")).expect("journal");
        let snapshot = std::fs::metadata(db.with_extension("snapshot")).expect("snapshot");
        assert!(
            journal.len() <= snapshot.len().max(JOURNAL_MIN_BYTES) + 64 * 1024,
            "the journal ({} bytes) was replaced by a snapshot ({} bytes) when it grew",
            journal.len(),
            snapshot.len()
        );
        assert!(
            bases >= 1,
            "a new snapshot was written when the journal grew"
        );
        // Reopened (the first commit writes a whole snapshot again), it
        // holds the same.
        let specs = store.specs().expect("specs");
        drop((role, agents, store));
        let store = Store::open(&db).expect("reopen");
        assert_eq!(store.specs().expect("specs"), specs);
        assert!(
            read().trees == dump(&store),
            "the reopened store's snapshot"
        );
    }

    #[test]
    fn a_journal_cut_short_by_a_killed_commit_loses_only_that_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let store = Store::open(&db).expect("open");
        store.create(vec![spec("a")]).expect("create");
        store.create(vec![spec("b")]).expect("create");
        let whole = std::fs::read(db.with_extension("journal")).expect("journal");
        let seq = read_snapshot(
            &db.with_extension("snapshot"),
            &db.with_extension("journal"),
        )
        .expect("readable")
        .expect("written")
        .seq;
        drop(store);
        // The last append, half written.
        let mut torn = whole.clone();
        torn.truncate(whole.len() - 10);
        std::fs::write(db.with_extension("journal"), &torn).expect("tear");
        let snap = read_snapshot(
            &db.with_extension("snapshot"),
            &db.with_extension("journal"),
        )
        .expect("readable")
        .expect("written");
        assert!(snap.seq < seq, "the torn commit is not replayed");
        assert_eq!(snap.processes(), 1);
        // The database itself is sound: it opens with both, and the first
        // commit writes a whole snapshot and an empty journal again.
        let store = Store::open(&db).expect("open");
        assert_eq!(store.specs().expect("specs").len(), 2);
        let snap = read_snapshot(
            &db.with_extension("snapshot"),
            &db.with_extension("journal"),
        )
        .expect("readable")
        .expect("written");
        assert_eq!(snap.processes(), 2);
        assert_eq!(
            std::fs::metadata(db.with_extension("journal"))
                .expect("journal")
                .len(),
            journal::HEADER as u64
        );
    }

    #[test]
    fn a_damaged_copy_gets_a_utc_name_that_never_overwrites_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let first = damaged_name(&db, 1_795_942_960_448);
        assert_eq!(
            first.file_name().expect("name").to_string_lossy(),
            "db.damaged-2026-11-29T09-02-40Z"
        );
        std::fs::create_dir(&first).expect("mkdir");
        let second = damaged_name(&db, 1_795_942_960_448);
        assert_ne!(first, second);
    }

    #[test]
    fn events_of_every_subject_read_back_and_old_events_read_as_before() {
        /// `spec::Event` as releases before typed subjects stored it.
        #[derive(serde::Serialize)]
        struct OldEvent {
            at_ms: u64,
            id: u64,
            name: String,
            kind: String,
            detail: String,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let old = |id: u64, name: &str| OldEvent {
            at_ms: 1,
            id,
            name: name.into(),
            kind: "old".into(),
            detail: String::new(),
        };
        for (seq, e) in [
            old(3, "web"),
            old(u64::MAX, "edge-1"),
            old(u64::MAX - 1, "daemon"),
        ]
        .iter()
        .enumerate()
        {
            store
                .events
                .insert(codec::id_key(seq as u64), codec::encode(e).expect("encode"))
                .expect("insert");
        }
        store.event_seq.store(3, Ordering::Relaxed);
        let new = |subject: Subject| Event {
            at_ms: 2,
            subject,
            kind: "new".into(),
            detail: "d".into(),
        };
        let subjects = [
            Subject::Process {
                id: 3,
                name: "web".into(),
            },
            Subject::Agent("edge-1".into()),
            Subject::Daemon,
        ];
        for s in &subjects {
            store.push_event(&new(s.clone())).expect("push");
        }
        let all = store.events(None, 100).expect("events");
        let got: Vec<(&Subject, &str)> =
            all.iter().map(|e| (&e.subject, e.kind.as_str())).collect();
        let want: Vec<(&Subject, &str)> = subjects
            .iter()
            .map(|s| (s, "old"))
            .chain(subjects.iter().map(|s| (s, "new")))
            .collect();
        assert_eq!(got, want);
        let of_web = store.events(Some(3), 100).expect("events");
        assert_eq!(of_web.len(), 2);
        assert!(of_web.iter().all(|e| e.subject.process_id() == Some(3)));
    }
}
