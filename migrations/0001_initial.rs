//! Schema 1: the trees exist and `meta.schema` says 1. Nothing to convert.

use crate::store::StoreError;

pub const VERSION: u32 = 1;

pub fn up(_db: &sled::Db) -> Result<Vec<(sled::IVec, Vec<u8>)>, StoreError> {
    Ok(Vec::new())
}
