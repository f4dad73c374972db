//! The migrations runner: reads `meta.schema`, refuses a newer schema, and
//! runs the pending numbered steps of `migrations/` in order. Each step's
//! rewritten `processes` entries and the new version number are written in
//! one sled transaction, so a crash mid-way leaves the previous schema whole.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{codec, StoreError, META, PROCESSES, SCHEMA_KEY};

#[path = "../../migrations/0001_initial.rs"]
pub mod m0001_initial;
#[path = "../../migrations/0002_restart_policy.rs"]
pub mod m0002_restart_policy;
#[path = "../../migrations/0003_watch.rs"]
pub mod m0003_watch;
#[path = "../../migrations/0004_definition.rs"]
pub mod m0004_definition;

type Step = fn(&sled::Db) -> Result<Vec<(sled::IVec, Vec<u8>)>, StoreError>;

/// Every step, in order. The last one's version is the binary's schema.
pub const STEPS: &[(u32, Step)] = &[
    (m0001_initial::VERSION, m0001_initial::up),
    (m0002_restart_policy::VERSION, m0002_restart_policy::up),
    (m0003_watch::VERSION, m0003_watch::up),
    (m0004_definition::VERSION, m0004_definition::up),
];

pub const CURRENT: u32 = m0004_definition::VERSION;

/// Decodes every `processes` value as `Old` and re-encodes it converted:
/// the body of a step that changes the spec's shape.
pub fn rewrite_processes<Old, New>(
    db: &sled::Db,
    convert: impl Fn(Old) -> New,
) -> Result<Vec<(sled::IVec, Vec<u8>)>, StoreError>
where
    Old: serde::de::DeserializeOwned,
    New: serde::Serialize,
{
    let processes = db.open_tree(PROCESSES)?;
    let mut rewritten = Vec::new();
    for item in processes.iter() {
        let (key, value) = item?;
        let old: Old = codec::decode(PROCESSES, &key, &value)?;
        rewritten.push((key, codec::encode(&convert(old))?));
    }
    Ok(rewritten)
}

/// The recorded schema version, `None` for a database that has none.
pub fn recorded(db: &sled::Db) -> Result<Option<u32>, StoreError> {
    let meta = db.open_tree(META)?;
    match meta.get(SCHEMA_KEY)? {
        None => Ok(None),
        Some(v) => Ok(Some(codec::decode(META, SCHEMA_KEY, &v)?)),
    }
}

/// Writes the schema version of a fresh database.
pub fn initialize(db: &sled::Db) -> Result<(), StoreError> {
    db.open_tree(META)?
        .insert(SCHEMA_KEY, codec::encode(&CURRENT)?)?;
    Ok(())
}

/// Runs every step above `from`; returns the versions it applied.
pub fn run(db: &sled::Db, from: u32) -> Result<Vec<u32>, StoreError> {
    if from > CURRENT {
        return Err(StoreError::Newer {
            found: from,
            supported: CURRENT,
        });
    }
    let meta = db.open_tree(META)?;
    let processes = db.open_tree(PROCESSES)?;
    let mut applied = Vec::new();
    for (version, step) in STEPS.iter().filter(|(v, _)| *v > from) {
        let rewritten = step(db)?;
        let version_bytes = codec::encode(version)?;
        (&processes, &meta)
            .transaction(|(p, m)| {
                for (key, value) in &rewritten {
                    p.insert(key, value.as_slice())?;
                }
                m.insert(SCHEMA_KEY, version_bytes.as_slice())?;
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Sled(e),
            })?;
        applied.push(*version);
    }
    if !applied.is_empty() {
        db.flush()?;
    }
    Ok(applied)
}
