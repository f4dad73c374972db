//! How opm treats a poisoned lock, decided once: it takes the lock anyway.
//!
//! A std lock is poisoned when a thread panicked while holding it. opm's
//! locks guard caches, handles and small records that each writer leaves
//! whole between statements (a field set, a map entry inserted), never a
//! multi-step invariant half done, and the daemon must keep serving its
//! processes after one request's panic rather than panic on every later
//! request. So recovering the guard (`PoisonError::into_inner`) is right
//! here; a lock whose data could be left half-written must not use these.
//! A leaf module: it imports nothing from the crate.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `lock`, `read` and `write` that recover a poisoned lock (see the module).
pub trait LockExt {
    type Target: ?Sized;
    /// The mutex's guard, poisoned or not.
    fn lock_or_recover(&self) -> MutexGuard<'_, Self::Target>;
}

impl<T: ?Sized> LockExt for Mutex<T> {
    type Target = T;
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `read` and `write` of an `RwLock`, recovering a poisoned lock.
pub trait RwLockExt {
    type Target: ?Sized;
    /// A read guard, poisoned or not.
    fn read_or_recover(&self) -> RwLockReadGuard<'_, Self::Target>;
    /// A write guard, poisoned or not.
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, Self::Target>;
}

impl<T: ?Sized> RwLockExt for RwLock<T> {
    type Target = T;
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_still_taken_with_its_last_value() {
        let m = Arc::new(Mutex::new(1));
        let rw = Arc::new(RwLock::new(1));
        let (m2, rw2) = (m.clone(), rw.clone());
        let _ = std::thread::spawn(move || {
            let mut a = m2.lock().unwrap();
            let mut b = rw2.write().unwrap();
            *a = 2;
            *b = 2;
            panic!("poison both while holding them");
        })
        .join();
        assert!(m.is_poisoned() && rw.is_poisoned());
        assert_eq!(*m.lock_or_recover(), 2);
        assert_eq!(*rw.read_or_recover(), 2);
        *rw.write_or_recover() = 3;
        assert_eq!(*rw.read_or_recover(), 3);
    }
}
