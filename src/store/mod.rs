//! The sled store: the trees of DESIGN.md, their codecs, the schema version
//! and the migrations runner. It knows records and transactions, not
//! processes: the reconciler decides, the store keeps.
//!
//! Opening is careful. An existing database is first opened as a copy and
//! checked (schema version, every value's checksum, names ↔ processes), so a
//! damaged database or one of a newer schema is refused with the real one
//! left byte-for-byte as it was: sled's own recovery may rewrite files, and
//! that must not happen to data we cannot read. An acknowledged mutation is
//! flushed before the method returns.

pub mod codec;
pub mod migrate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::spec::{Event, Observed, Spec};

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

/// How long opening waits for a lock held by a daemon that is exiting.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// The `meta` key of the flush sequence, mirrored in `<db>.seq` after each
/// flush: a database that recovers to an older sequence than the mirror has
/// lost acknowledged writes (sled stops its recovery at the first damaged
/// record), and is refused.
const FLUSH_SEQ_KEY: &[u8] = b"flush_seq";

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
}

pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    processes: sled::Tree,
    names: sled::Tree,
    runtime: sled::Tree,
    events: sled::Tree,
    event_seq: AtomicU64,
    /// The flush sequence; its lock keeps the stored value, the flush and
    /// the mirror in one order across threads.
    flush_seq: std::sync::Mutex<u64>,
    seq_file: PathBuf,
    schema: u32,
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
        match names.get(spec.name.as_bytes())? {
            Some(v) if codec::decode::<u64>(NAMES, spec.name.as_bytes(), &v)? == id => {}
            _ => {
                return Err(StoreError::Damaged(format!(
                    "process {id} ({}) is missing from the names index",
                    spec.name
                )))
            }
        }
        count += 1;
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

/// The sequence mirrored beside the database, if the file is there.
fn mirrored_seq(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            text.trim().parse().map(Some).map_err(|_| {
                StoreError::Damaged(format!("{} does not hold a number", path.display()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io(path.to_path_buf(), e)),
    }
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

impl Store {
    /// Opens (or creates) the database in `dir`. See the module doc.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Io(parent.to_path_buf(), e))?;
        let lock = lock(dir)?;
        let exists = dir.exists()
            && std::fs::read_dir(dir)
                .map_err(|e| StoreError::Io(dir.to_path_buf(), e))?
                .next()
                .is_some();
        let seq_file = dir.with_extension("seq");
        let mirrored = if exists {
            mirrored_seq(&seq_file)?
        } else {
            None
        };
        if exists {
            check_conf(dir)?;
            let copy = parent.join(format!(".db-check-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(dir, &copy).map_err(|e| StoreError::Io(copy.clone(), e))?;
            let copy_for_check = copy.clone();
            // sled may panic on some damaged files; on a copy that is just a
            // refusal.
            let checked = std::panic::catch_unwind(move || -> Result<u32, StoreError> {
                let db = open_sled(&copy_for_check)?;
                if !db.was_recovered() {
                    return Err(StoreError::Damaged(
                        "sled found no database in the files".into(),
                    ));
                }
                check(&db, false, mirrored)
            });
            let _ = std::fs::remove_dir_all(&copy);
            match checked {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StoreError::Damaged("sled could not read the files".into())),
            }
        }
        let db = open_sled(dir)?;
        let schema = check(&db, !exists, mirrored)?;
        let flush_seq = std::sync::Mutex::new(recorded_seq(&db)?);
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
            flush_seq,
            seq_file,
            schema,
            db,
            _lock: lock,
        };
        for tree in [ROLE, AGENTS] {
            store.db.open_tree(tree)?;
        }
        store.flush()?;
        Ok(store)
    }

    pub fn schema_version(&self) -> u32 {
        self.schema
    }

    /// The underlying database, for the role trees.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes every write so far durable, and mirrors the flush sequence
    /// beside the database (see `FLUSH_SEQ_KEY`).
    pub fn flush(&self) -> Result<(), StoreError> {
        // A poisoned lock still holds the last sequence written.
        let mut guard = self.flush_seq.lock().unwrap_or_else(|p| p.into_inner());
        *guard += 1;
        let seq = *guard;
        self.meta.insert(FLUSH_SEQ_KEY, codec::encode(&seq)?)?;
        self.db.flush()?;
        // After the flush: the mirror never claims more than the log holds.
        // No fsync: it guards against damage to the log, not power cuts.
        std::fs::write(&self.seq_file, format!("{seq}\n"))
            .map_err(|e| StoreError::Io(self.seq_file.clone(), e))?;
        Ok(())
    }

    /// Creates processes in one transaction (ids, names, specs) and flushes.
    pub fn create(&self, new: Vec<NewSpec>) -> Result<Vec<Spec>, StoreError> {
        let created = (&self.processes, &self.names, &self.meta)
            .transaction(|(p, n, m)| {
                let mut next_id: u64 = match m.get(NEXT_ID_KEY)? {
                    Some(v) => codec::decode(META, NEXT_ID_KEY, &v).map_err(abort)?,
                    None => 0,
                };
                let mut out = Vec::with_capacity(new.len());
                for item in &new {
                    let mut spec = item.spec.clone();
                    spec.id = next_id;
                    spec.name = pick_name(n, &spec.name, item.explicit_name)?;
                    put(p, &codec::id_key(spec.id), &spec)?;
                    put(n, spec.name.as_bytes(), &spec.id)?;
                    next_id += 1;
                    out.push(spec);
                }
                put(m, NEXT_ID_KEY, &next_id)?;
                Ok(out)
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(created)
    }

    /// Replaces the specs (same ids and names) in one transaction and flushes.
    pub fn update(&self, specs: &[Spec]) -> Result<(), StoreError> {
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
        self.flush()
    }

    /// Forgets a process: spec, name and runtime, in one transaction; flushes.
    pub fn remove(&self, id: u64) -> Result<(), StoreError> {
        (&self.processes, &self.names, &self.runtime)
            .transaction(|(p, n, r)| {
                let key = codec::id_key(id);
                let Some(v) = p.remove(&key)? else {
                    return Ok(());
                };
                let spec: Spec = codec::decode(PROCESSES, &key, &v).map_err(abort)?;
                n.remove(spec.name.as_bytes())?;
                r.remove(&key)?;
                Ok(())
            })
            .map_err(tx_err)?;
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
        self.runtime
            .insert(codec::id_key(id), codec::encode(observed)?)?;
        Ok(())
    }

    /// Appends to the bounded events log; durable at the next `flush`.
    pub fn push_event(&self, event: &Event) -> Result<(), StoreError> {
        let seq = self.event_seq.fetch_add(1, Ordering::Relaxed);
        self.events
            .insert(codec::id_key(seq), codec::encode(event)?)?;
        if seq >= EVENTS_LIMIT {
            self.events.remove(codec::id_key(seq - EVENTS_LIMIT))?;
        }
        Ok(())
    }

    /// The newest `limit` events of one process (or of all with `None`), oldest first.
    pub fn events(&self, id: Option<u64>, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        for item in self.events.iter().rev() {
            let (k, v) = item?;
            let event: Event = codec::decode(EVENTS, &k, &v)?;
            if id.is_none_or(|id| event.id == id) {
                out.push(event);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
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
