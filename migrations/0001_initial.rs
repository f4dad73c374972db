//! Schema 1: the trees exist and `meta.schema` says 1. Nothing to convert.

use crate::store::StoreError;

pub const VERSION: u32 = 1;

pub fn up(_db: &sled::Db) -> Result<crate::store::migrate::Rewritten, StoreError> {
    Ok(Vec::new())
}
