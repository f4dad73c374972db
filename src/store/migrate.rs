//! The migrations runner: reads `meta.schema`, refuses a newer schema, and
//! runs the pending numbered steps of `migrations/` in order. Each step's
//! rewritten `processes` and `runtime` entries and the new version number
//! are written in one sled transaction, so a crash mid-way leaves the
//! previous schema whole.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{codec, StoreError, META, PROCESSES, RUNTIME, SCHEMA_KEY};

#[path = "../../migrations/0001_initial.rs"]
pub mod m0001_initial;
#[path = "../../migrations/0002_restart_policy.rs"]
pub mod m0002_restart_policy;
#[path = "../../migrations/0003_watch.rs"]
pub mod m0003_watch;
#[path = "../../migrations/0004_definition.rs"]
pub mod m0004_definition;
#[path = "../../migrations/0005_readiness.rs"]
pub mod m0005_readiness;

/// What a step rewrites: (tree, key, new value), the tree `processes` or `runtime`.
pub type Rewritten = Vec<(&'static str, sled::IVec, Vec<u8>)>;

type Step = fn(&sled::Db) -> Result<Rewritten, StoreError>;

/// Every step, in order. The last one's version is the binary's schema.
pub const STEPS: &[(u32, Step)] = &[
    (m0001_initial::VERSION, m0001_initial::up),
    (m0002_restart_policy::VERSION, m0002_restart_policy::up),
    (m0003_watch::VERSION, m0003_watch::up),
    (m0004_definition::VERSION, m0004_definition::up),
    (m0005_readiness::VERSION, m0005_readiness::up),
];

pub const CURRENT: u32 = m0005_readiness::VERSION;

/// Decodes every `processes` value as `Old` and re-encodes it converted:
/// the body of a step that changes the spec's shape.
pub fn rewrite_processes<Old, New>(
    db: &sled::Db,
    convert: impl Fn(Old) -> New,
) -> Result<Rewritten, StoreError>
where
    Old: serde::de::DeserializeOwned,
    New: serde::Serialize,
{
    rewrite_tree(db, PROCESSES, convert)
}

/// Decodes every value of `tree` as `Old` and re-encodes it converted.
pub fn rewrite_tree<Old, New>(
    db: &sled::Db,
    tree: &'static str,
    convert: impl Fn(Old) -> New,
) -> Result<Rewritten, StoreError>
where
    Old: serde::de::DeserializeOwned,
    New: serde::Serialize,
{
    let values = db.open_tree(tree)?;
    let mut rewritten = Vec::new();
    for item in values.iter() {
        let (key, value) = item?;
        let old: Old = codec::decode(tree, &key, &value)?;
        rewritten.push((tree, key, codec::encode(&convert(old))?));
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
    let runtime = db.open_tree(RUNTIME)?;
    let mut applied = Vec::new();
    for (version, step) in STEPS.iter().filter(|(v, _)| *v > from) {
        let rewritten = step(db)?;
        let version_bytes = codec::encode(version)?;
        (&processes, &runtime, &meta)
            .transaction(|(p, r, m)| {
                for (tree, key, value) in &rewritten {
                    let t = if *tree == RUNTIME { r } else { p };
                    t.insert(key, value.as_slice())?;
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
