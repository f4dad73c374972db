//! The journal beside the snapshot (`OPM_HOME/db.journal`): what each
//! commit changed since the snapshot was written, appended and
//! `fdatasync`ed. A commit costs the size of its change, not of the whole
//! store: at 1,000 processes the snapshot is about 0.5 MB (2 MB with the
//! callers' environments), a start changes a few kilobytes.
//!
//! The snapshot is the base; the journal holds the commits after it. When
//! the journal has grown as large as the base, the next commit writes a
//! new base and starts an empty journal (`Store::commit_upto`), so the
//! two together stay under twice the store's size.
//!
//! Layout: `MAGIC`, format (u32 BE), the base's sequence (u64 BE); then
//! records, each its body's length (u32 BE), the body's CRC-32 (u32 BE)
//! and the body (bincode of `Record`). A record names the sequence it
//! extends (`prev_seq`): replaying stops at the first record that does not
//! follow the state reached, or that is cut short or damaged (a commit
//! killed while it appended was never acknowledged). What was reached is
//! then compared with the acknowledged sequence (`db.seq`) like a
//! snapshot's own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::snapshot::{self, Snapshot};

const MAGIC: &[u8; 8] = b"opmjrnl\n";
const FORMAT: u32 = 1;
pub const HEADER: usize = 8 + 4 + 8;
const RECORD_HEAD: usize = 4 + 4;

/// One commit's changes: every key written or removed since the last
/// record, with its value at the commit (`None`: removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The sequence of the state this record extends.
    pub prev_seq: u64,
    /// The commit's sequence.
    pub seq: u64,
    pub written_ms: u64,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub tree: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The first bytes of a journal that extends the base of sequence `base_seq`.
pub fn header(base_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_be_bytes());
    out.extend_from_slice(&base_seq.to_be_bytes());
    out
}

/// A record as it is appended: length, checksum, body.
pub fn encode(record: &Record) -> Result<Vec<u8>, String> {
    let body = bincode::serialize(record).map_err(|e| e.to_string())?;
    let len = u32::try_from(body.len()).map_err(|_| "a journal record over 4 GiB".to_string())?;
    let mut out = Vec::with_capacity(RECORD_HEAD + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// What replaying a journal onto its base did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replay {
    /// Records applied.
    pub applied: usize,
    /// Why it stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Applies the journal's records that follow `snap` onto it, in order,
/// and moves its sequence to the last one applied. Never fails: a journal
/// that is damaged, from another base or cut short gives what could be
/// applied, and says why it stopped.
pub fn replay(snap: &mut Snapshot, bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        out.stopped = Some("not an opm journal".into());
        return out;
    }
    let format = word(bytes, 8);
    if format != FORMAT {
        out.stopped = Some(format!("journal format {format}, this opm reads {FORMAT}"));
        return out;
    }
    let mut trees: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    let mut at = HEADER;
    while at < bytes.len() {
        let record = match read_record(bytes, at) {
            Ok((record, next)) => {
                at = next;
                record
            }
            Err(why) => {
                out.stopped = Some(format!("at byte {at}: {why}"));
                break;
            }
        };
        if record.seq <= snap.seq {
            // Already in the base (a new base was written, its journal not
            // yet replaced, when the daemon stopped).
            continue;
        }
        if record.prev_seq != snap.seq {
            out.stopped = Some(format!(
                "at byte {at}: a record extending sequence {} after {}",
                record.prev_seq, snap.seq
            ));
            break;
        }
        if let Some(c) = record
            .changes
            .iter()
            .find(|c| !snapshot::TREES.contains(&c.tree.as_str()))
        {
            out.stopped = Some(format!(
                "at byte {at}: a change to unknown tree {:?}",
                c.tree
            ));
            break;
        }
        if trees.is_empty() {
            trees = std::mem::take(&mut snap.trees)
                .into_iter()
                .map(|(name, entries)| (name, entries.into_iter().collect()))
                .collect();
        }
        for change in record.changes {
            let tree = trees.entry(change.tree).or_default();
            match change.value {
                Some(v) => {
                    tree.insert(change.key, v);
                }
                None => {
                    tree.remove(&change.key);
                }
            }
        }
        snap.seq = record.seq;
        snap.written_ms = record.written_ms;
        out.applied += 1;
    }
    if !trees.is_empty() {
        snap.trees = snapshot::TREES
            .iter()
            .filter_map(|name| {
                trees
                    .remove(*name)
                    .map(|t| (name.to_string(), t.into_iter().collect()))
            })
            .collect();
    }
    out
}

fn read_record(bytes: &[u8], at: usize) -> Result<(Record, usize), String> {
    if bytes.len() - at < RECORD_HEAD {
        return Err("a record cut short".into());
    }
    let len = word(bytes, at) as usize;
    let body_at = at + RECORD_HEAD;
    if bytes.len() - body_at < len {
        return Err("a record cut short".into());
    }
    let body = &bytes[body_at..body_at + len];
    if crc32fast::hash(body) != word(bytes, at + 4) {
        return Err("a record's checksum does not match".into());
    }
    let record = bincode::deserialize(body).map_err(|e| e.to_string())?;
    Ok((record, body_at + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{META, PROCESSES, RUNTIME};

    fn base() -> Snapshot {
        Snapshot {
            seq: 4,
            written_ms: 1,
            trees: vec![
                (META.to_string(), vec![(b"next_id".to_vec(), vec![2])]),
                (
                    PROCESSES.to_string(),
                    vec![(vec![0], b"a".to_vec()), (vec![1], b"b".to_vec())],
                ),
            ],
        }
    }

    fn change(tree: &str, key: &[u8], value: Option<&[u8]>) -> Change {
        Change {
            tree: tree.into(),
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    fn journal(base_seq: u64, records: &[Record]) -> Vec<u8> {
        let mut out = header(base_seq);
        for r in records {
            out.extend(encode(r).expect("encode"));
        }
        out
    }

    fn records() -> Vec<Record> {
        vec![
            Record {
                prev_seq: 4,
                seq: 6,
                written_ms: 2,
                changes: vec![
                    change(PROCESSES, &[2], Some(b"c")),
                    change(PROCESSES, &[0], None),
                    change(RUNTIME, &[2], Some(b"pid")),
                ],
            },
            Record {
                prev_seq: 6,
                seq: 9,
                written_ms: 3,
                changes: vec![change(PROCESSES, &[1], Some(b"b2"))],
            },
        ]
    }

    fn tree<'a>(s: &'a Snapshot, name: &str) -> Vec<(&'a [u8], &'a [u8])> {
        s.tree(name)
            .map(|e| {
                e.iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn records_are_applied_in_order_onto_the_base() {
        let mut s = base();
        let r = replay(&mut s, &journal(4, &records()));
        assert_eq!(
            r,
            Replay {
                applied: 2,
                stopped: None
            }
        );
        assert_eq!(s.seq, 9);
        assert_eq!(s.written_ms, 3);
        assert_eq!(
            tree(&s, PROCESSES),
            vec![(&[1u8][..], &b"b2"[..]), (&[2], b"c")]
        );
        assert_eq!(tree(&s, RUNTIME), vec![(&[2u8][..], &b"pid"[..])]);
        assert_eq!(tree(&s, META), vec![(&b"next_id"[..], &[2u8][..])]);
        // The snapshot's tree order is kept.
        let names: Vec<&str> = s.trees.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [META, PROCESSES, RUNTIME]);
    }

    #[test]
    fn a_cut_or_damaged_tail_stops_the_replay_after_what_is_whole() {
        let whole = journal(4, &records());
        for cut in 1..30 {
            let mut s = base();
            let r = replay(&mut s, &whole[..whole.len() - cut]);
            assert_eq!(r.applied, 1, "cut {cut}");
            assert!(r.stopped.is_some());
            assert_eq!(s.seq, 6);
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut s = base();
        let r = replay(&mut s, &flipped);
        assert_eq!(r.applied, 1);
        assert!(r.stopped.unwrap().contains("checksum"));
    }

    #[test]
    fn records_the_base_holds_are_skipped_and_a_gap_stops_the_replay() {
        // A new base (sequence 6) was written, the old journal still there.
        let mut s = base();
        s.seq = 6;
        let r = replay(&mut s, &journal(4, &records()));
        assert_eq!(r.applied, 1);
        assert_eq!(s.seq, 9);
        // A journal of another base: its first record does not follow.
        let mut s = base();
        s.seq = 5;
        let r = replay(&mut s, &journal(4, &records()));
        assert_eq!(r.applied, 0);
        assert!(r.stopped.unwrap().contains("extending sequence 4 after 5"));
        assert_eq!(s, Snapshot { seq: 5, ..base() });
    }

    #[test]
    fn garbage_or_an_unknown_tree_applies_nothing() {
        let mut s = base();
        assert!(replay(&mut s, b"garbage").stopped.is_some());
        assert_eq!(s, base());
        let bad = Record {
            prev_seq: 4,
            seq: 5,
            written_ms: 2,
            changes: vec![change("elsewhere", &[1], None)],
        };
        let r = replay(&mut s, &journal(4, &[bad]));
        assert_eq!(r.applied, 0);
        assert_eq!(s, base());
    }
}
