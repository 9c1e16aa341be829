//! Locking that survives a panic elsewhere: every structure Baton guards
//! with a mutex is left consistent before anything that could panic, so a
//! poisoned lock is still safe to use.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
