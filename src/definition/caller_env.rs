//! The caller's environment (`caller_env`), kept once per distinct content.
//!
//! Every process started from one shell carries the same environment, a
//! kilobyte or more of it; decoded once per process, a thousand processes
//! held a thousand copies (about 20 MiB of the daemon's heap). So every
//! decoding of one (a stored record, an API body, a process file) goes
//! through `intern`, which hands back the one shared copy of equal content.
//! On the wire and in the store it is the plain map it always was.
//!
//! The pool holds its own reference to each copy; when it has grown, it
//! drops those nobody else holds any more, so it stays within about twice
//! the environments in use and never leaks. Part of `definition`, a leaf:
//! it imports nothing of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An environment (variable → value), shared: equal environments decoded
/// anywhere in the daemon are one allocation (see `intern`).
pub type CallerEnv = Arc<BTreeMap<String, String>>;

/// The pool's size below which it is never pruned.
const MIN_PRUNE_AT: usize = 16;

struct Pool {
    envs: BTreeSet<CallerEnv>,
    /// The size at which the next insertion first drops the unused copies.
    prune_at: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    envs: BTreeSet::new(),
    prune_at: MIN_PRUNE_AT,
});

/// The shared copy of `env`: the one already in use if an equal one is,
/// else `env`, kept for the next equal one.
pub fn intern(env: BTreeMap<String, String>) -> CallerEnv {
    // A panic while the lock was held left the set whole (an insert or a
    // retain either happened or did not), so a poisoned lock is taken
    // anyway, as everywhere in opm (`crate::sync`).
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = pool.envs.get(&env) {
        return shared.clone();
    }
    if pool.envs.len() >= pool.prune_at {
        // Only the pool holds a copy whose count is 1, and only under this
        // lock is it handed out again: none is dropped while wanted.
        pool.envs.retain(|e| Arc::strong_count(e) > 1);
        pool.prune_at = (pool.envs.len() * 2).max(MIN_PRUNE_AT);
    }
    let env = Arc::new(env);
    pool.envs.insert(env.clone());
    env
}

/// Encodes an optional environment as the plain map (or none), decodes it
/// interned: `#[serde(with = "caller_env")]` on an `Option<CallerEnv>`.
pub fn serialize<S: Serializer>(env: &Option<CallerEnv>, s: S) -> Result<S::Ok, S::Error> {
    env.as_deref().serialize(s)
}

/// See `serialize`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CallerEnv>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.map(intern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The shape before: a plain optional map.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Before {
        caller_env: Option<BTreeMap<String, String>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Now {
        #[serde(with = "super")]
        caller_env: Option<CallerEnv>,
    }

    #[test]
    fn equal_environments_are_one_copy_and_different_ones_are_not() {
        let a = intern(env(&[("HOME", "/h-equal"), ("PATH", "/bin")]));
        let b = intern(env(&[("HOME", "/h-equal"), ("PATH", "/bin")]));
        let c = intern(env(&[("HOME", "/h-other"), ("PATH", "/bin")]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(a, b);
    }

    #[test]
    fn json_and_bincode_shapes_are_those_of_the_plain_map_and_decodes_share() {
        let map = env(&[
            ("LANG", "C.UTF-8"),
            ("PATH", "/usr/bin:/bin"),
            ("ROUND", "trip"),
        ]);
        let before = Before {
            caller_env: Some(map.clone()),
        };
        let now = Now {
            caller_env: Some(Arc::new(map.clone())),
        };
        // JSON: the same text either way, and each reads the other's.
        let text = serde_json::to_string(&before).unwrap();
        assert_eq!(
            text,
            r#"{"caller_env":{"LANG":"C.UTF-8","PATH":"/usr/bin:/bin","ROUND":"trip"}}"#
        );
        assert_eq!(serde_json::to_string(&now).unwrap(), text);
        assert_eq!(serde_json::from_str::<Before>(&text).unwrap(), before);
        let one: Now = serde_json::from_str(&text).unwrap();
        let two: Now = serde_json::from_str(&text).unwrap();
        assert_eq!(one, now);
        assert!(Arc::ptr_eq(
            one.caller_env.as_ref().unwrap(),
            two.caller_env.as_ref().unwrap()
        ));
        // bincode (the store's codec): the same bytes, each reads the other's.
        let bytes = bincode::serialize(&before).unwrap();
        assert_eq!(bincode::serialize(&now).unwrap(), bytes);
        assert_eq!(bincode::deserialize::<Before>(&bytes).unwrap(), before);
        let three: Now = bincode::deserialize(&bytes).unwrap();
        assert!(Arc::ptr_eq(
            one.caller_env.as_ref().unwrap(),
            three.caller_env.as_ref().unwrap()
        ));
        // None and null as before.
        let none = Before { caller_env: None };
        let text = serde_json::to_string(&none).unwrap();
        let read: Now = serde_json::from_str(&text).unwrap();
        assert_eq!(read.caller_env, None);
        assert_eq!(serde_json::to_string(&read).unwrap(), text);
        let bytes = bincode::serialize(&none).unwrap();
        assert_eq!(bincode::serialize(&read).unwrap(), bytes);
        assert_eq!(bincode::deserialize::<Now>(&bytes).unwrap(), read);
    }

    #[test]
    fn the_pool_drops_the_copies_nobody_holds_once_grown() {
        let unique = |i: usize| env(&[("PRUNE_TEST", &i.to_string())]);
        let kept = intern(unique(usize::MAX));
        for i in 0..10 * MIN_PRUNE_AT {
            drop(intern(unique(i)));
        }
        // Bounded: pruned whenever it reached its threshold, and the
        // threshold stays within twice what survives (other tests' copies
        // may be alive meanwhile, so no exact count).
        let pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            pool.envs.len() <= pool.prune_at && pool.prune_at < 10 * MIN_PRUNE_AT,
            "{} copies kept, next prune at {}",
            pool.envs.len(),
            pool.prune_at
        );
        // One nobody holds is gone; one still held is never dropped: it is
        // still the shared one.
        assert!(!pool.envs.contains(&unique(0)));
        assert!(pool.envs.contains(&*kept));
        drop(pool);
        assert!(Arc::ptr_eq(&kept, &intern(unique(usize::MAX))));
    }
}
