//! How values are laid out in sled: `[codec version u8][crc32 u32 BE][bincode]`.
//! The checksum turns a damaged value into a clear refusal instead of a
//! wrong process definition. Keys of id-keyed trees are big-endian u64 so
//! that sled's order is numeric order.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

const CODEC_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let payload = bincode::serialize(value).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(CODEC_VERSION);
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(tree: &str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let damaged = |why: &str| StoreError::Damaged(format!("tree {tree:?}, key {key:02x?}: {why}"));
    if bytes.len() < 5 {
        return Err(damaged("value too short"));
    }
    if bytes[0] != CODEC_VERSION {
        return Err(damaged(&format!("unknown value encoding {}", bytes[0])));
    }
    let crc = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[5..];
    if crc32fast::hash(payload) != crc {
        return Err(damaged("checksum mismatch"));
    }
    bincode::deserialize(payload).map_err(|e| damaged(&e.to_string()))
}

pub fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn key_id(tree: &str, key: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Damaged(format!("tree {tree:?}: key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips() {
        let v = ("api".to_string(), 42u64);
        let bytes = encode(&v).expect("encode");
        let back: (String, u64) = decode("t", b"k", &bytes).expect("decode");
        assert_eq!(back, v);
    }

    #[test]
    fn a_flipped_bit_is_reported_as_damage() {
        let mut bytes = encode(&"hello".to_string()).expect("encode");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = decode::<String>("t", b"k", &bytes).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn ids_sort_numerically_as_keys() {
        assert!(id_key(2) < id_key(10));
    }
}
