//! Typed access to the string-keyed trees the role system keeps (`role`,
//! `agents`): records go in and come out as values, encoded and checked by
//! `codec`, so no caller outside the store handles a raw sled tree.

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use super::{codec, Dirty, StoreError};

/// One string-keyed tree of records.
pub struct Records {
    name: &'static str,
    tree: sled::Tree,
    dirty: Arc<Dirty>,
}

/// A stored value not decoded yet: decode it as the current record type,
/// or, when that fails, as an older one.
pub struct Stored {
    tree: &'static str,
    key: Vec<u8>,
    bytes: sled::IVec,
}

impl Stored {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        codec::decode(self.tree, &self.key, &self.bytes)
    }
}

impl Records {
    pub(super) fn open(
        db: &sled::Db,
        name: &'static str,
        dirty: Arc<Dirty>,
    ) -> Result<Records, StoreError> {
        Ok(Records {
            name,
            tree: db.open_tree(name)?,
            dirty,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => codec::decode(self.name, key.as_bytes(), &v).map(Some),
        }
    }

    /// The record under `key`, undecoded (so it can fall back to an older type).
    pub fn get_stored(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        Ok(self.tree.get(key.as_bytes())?.map(|bytes| Stored {
            tree: self.name,
            key: key.as_bytes().to_vec(),
            bytes,
        }))
    }

    /// Every record whose key starts with `prefix`, with its key, each
    /// handed to `each` undecoded (so it can fall back to an older type).
    pub fn scan(
        &self,
        prefix: &str,
        mut each: impl FnMut(&str, Stored) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            each(
                &key,
                Stored {
                    tree: self.name,
                    key: k.to_vec(),
                    bytes: v,
                },
            )?;
        }
        Ok(())
    }

    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.tree.insert(key.as_bytes(), codec::encode(value)?)?;
        self.dirty.mark(self.name, key.as_bytes());
        Ok(())
    }

    /// Writes many records at once (one sled batch).
    pub fn put_all<'a, T: Serialize + 'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, &'a T)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut keys = Vec::new();
        for (key, value) in items {
            batch.insert(key.as_bytes(), codec::encode(value)?);
            keys.push(key);
        }
        self.tree.apply_batch(batch)?;
        for key in keys {
            self.dirty.mark(self.name, key.as_bytes());
        }
        Ok(())
    }

    pub fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.tree.remove(key.as_bytes())?;
        self.dirty.mark(self.name, key.as_bytes());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_scan_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open");
        let r = Records::open(&db, "role", Arc::default()).expect("tree");
        r.put("revoked:a", &1u64).expect("put");
        r.put_all([("revoked:b", &2u64), ("link", &3u64)])
            .expect("put all");
        assert_eq!(r.get::<u64>("link").expect("get"), Some(3));
        let mut seen = Vec::new();
        r.scan("revoked:", |k, v| {
            seen.push((k.to_string(), v.decode::<u64>()?));
            Ok(())
        })
        .expect("scan");
        assert_eq!(seen, vec![("revoked:a".into(), 1), ("revoked:b".into(), 2)]);
        r.remove("link").expect("remove");
        assert_eq!(r.get::<u64>("link").expect("get"), None);
    }
}
