//! The snapshot beside the database (`OPM_HOME/db.snapshot`): every tree
//! that must survive (meta, processes, names, runtime, role, agents; not the
//! events log) as raw keys and values, with the flush sequence it covers.
//! It is rewritten atomically (`fsutil`) at every commit, after the database
//! itself is durable, so it always holds every acknowledged change; a damaged
//! database is rebuilt from it.
//!
//! Layout: `MAGIC`, format (u32 BE), body length (u64 BE), CRC-32 of the body
//! (u32 BE), body (bincode of `Snapshot`). Values keep their own codec
//! checksums inside.

use serde::{Deserialize, Serialize};

use super::{codec, META, SCHEMA_KEY};

const MAGIC: &[u8; 8] = b"opmsnap\n";
const FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4;

/// The trees a snapshot keeps, in the order it writes them.
pub const TREES: &[&str] = &[
    super::META,
    super::PROCESSES,
    super::NAMES,
    super::RUNTIME,
    super::ROLE,
    super::AGENTS,
];

/// One tree's entries, raw.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The flush sequence this snapshot covers: every write acknowledged up
    /// to it is inside.
    pub seq: u64,
    /// When it was written (ms since the epoch).
    pub written_ms: u64,
    /// Tree name and its entries.
    pub trees: Vec<(String, Entries)>,
}

impl Snapshot {
    pub fn tree(&self, name: &str) -> Option<&Entries> {
        self.trees.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// The schema version recorded in its `meta` tree.
    pub fn schema(&self) -> Option<u32> {
        let meta = self.tree(META)?;
        let (_, v) = meta.iter().find(|(k, _)| k.as_slice() == SCHEMA_KEY)?;
        codec::decode(META, SCHEMA_KEY, v).ok()
    }

    /// How many process definitions it holds.
    pub fn processes(&self) -> usize {
        self.tree(super::PROCESSES).map_or(0, Vec::len)
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let body = bincode::serialize(self).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_be_bytes());
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes and checks a snapshot; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err("not an opm snapshot".into());
        }
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let format = word(8);
        if format != FORMAT {
            return Err(format!("snapshot format {format}, this opm reads {FORMAT}"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[12..20]);
        let len = u64::from_be_bytes(len);
        let body = &bytes[HEADER..];
        if body.len() as u64 != len {
            return Err(format!("cut short: {} of {len} bytes", body.len()));
        }
        if crc32fast::hash(body) != word(20) {
            return Err("checksum mismatch".into());
        }
        bincode::deserialize(body).map_err(|e| e.to_string())
    }

    /// The snapshot at `path`: `Ok(None)` when there is none, `Err(why)`
    /// when it is there but unreadable or damaged.
    pub fn read(path: &std::path::Path) -> Result<Option<Snapshot>, String> {
        match std::fs::read(path) {
            Ok(bytes) => Snapshot::decode(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            seq: 7,
            written_ms: 1,
            trees: vec![
                (
                    META.to_string(),
                    vec![(SCHEMA_KEY.to_vec(), codec::encode(&3u32).expect("encode"))],
                ),
                (
                    super::super::PROCESSES.to_string(),
                    vec![(vec![0; 8], vec![1, 2, 3])],
                ),
            ],
        }
    }

    #[test]
    fn a_snapshot_round_trips_with_its_schema_and_count() {
        let s = sample();
        let back = Snapshot::decode(&s.encode().expect("encode")).expect("decode");
        assert_eq!(back, s);
        assert_eq!(back.schema(), Some(3));
        assert_eq!(back.processes(), 1);
    }

    #[test]
    fn a_flipped_byte_or_a_cut_is_refused() {
        let bytes = sample().encode().expect("encode");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(Snapshot::decode(&flipped).unwrap_err().contains("checksum"));
        assert!(Snapshot::decode(&bytes[..bytes.len() - 3])
            .unwrap_err()
            .contains("cut short"));
        assert!(Snapshot::decode(b"").is_err());
    }
}
