//! Locks shared by every worker: the caches' own, and uWSGI's user locks (`locks = N`,
//! `uwsgi.lock(n)`): robust, process-shared pthread mutexes in shared memory, so a worker
//! killed while holding one does not block the others.

use std::ptr::NonNull;
use std::sync::OnceLock;

use anyhow::{bail, Context};

/// Makes a process-shared, robust mutex at `mutex`.
///
/// # Safety
/// `mutex` must point at writable memory for a `pthread_mutex_t`, shared with the other
/// processes before they use it, and not in use by anyone yet.
pub unsafe fn init(mutex: *mut libc::pthread_mutex_t) -> anyhow::Result<()> {
    // SAFETY: `attr` is initialized before use and destroyed after; `mutex` is as the
    // caller promises.
    let rc = unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        let rc = libc::pthread_mutex_init(mutex, &attr);
        libc::pthread_mutexattr_destroy(&mut attr);
        rc
    };
    if rc != 0 {
        bail!(
            "pthread_mutex_init: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

/// Takes the mutex; true when its last holder died holding it (the mutex is made
/// consistent again, and the data it guards may be half-written).
///
/// # Safety
/// `mutex` must have been made by [`init`] and stay mapped.
pub unsafe fn lock(mutex: *mut libc::pthread_mutex_t) -> bool {
    // SAFETY: as the caller promises.
    let rc = unsafe { libc::pthread_mutex_lock(mutex) };
    if rc == libc::EOWNERDEAD {
        // SAFETY: we hold the mutex now, as EOWNERDEAD says.
        unsafe { libc::pthread_mutex_consistent(mutex) };
        return true;
    }
    false
}

/// # Safety
/// `mutex` must have been made by [`init`], and be held by this thread.
pub unsafe fn unlock(mutex: *mut libc::pthread_mutex_t) {
    // SAFETY: as the caller promises.
    unsafe { libc::pthread_mutex_unlock(mutex) };
}

/// uWSGI's user locks: lock 0 always, and `locks = N` more.
struct UserLocks {
    base: NonNull<libc::pthread_mutex_t>,
    count: usize,
}

// SAFETY: the mutexes are made for use from any thread of any process.
unsafe impl Send for UserLocks {}
// SAFETY: as above.
unsafe impl Sync for UserLocks {}

static USER_LOCKS: OnceLock<UserLocks> = OnceLock::new();

/// Makes lock 0 and `extra` more, in the master before the first fork.
pub fn install(extra: u64) -> anyhow::Result<()> {
    let count = usize::try_from(extra)?.checked_add(1).context("locks")?;
    let len = count
        .checked_mul(std::mem::size_of::<libc::pthread_mutex_t>())
        .and_then(std::num::NonZeroUsize::new)
        .context("locks")?;
    let base = crate::shm::map(len, "the locks")?.cast::<libc::pthread_mutex_t>();
    for n in 0..count {
        // SAFETY: slot `n` is inside the new mapping, aligned (page-aligned base), unused.
        unsafe { init(base.as_ptr().add(n))? };
    }
    let _ = USER_LOCKS.set(UserLocks { base, count });
    Ok(())
}

fn user_lock(n: u64) -> Result<*mut libc::pthread_mutex_t, String> {
    let locks = USER_LOCKS.get().ok_or("no locks in this process")?;
    match usize::try_from(n) {
        // SAFETY: `n` is below the count the mapping was made for.
        Ok(n) if n < locks.count => Ok(unsafe { locks.base.as_ptr().add(n) }),
        _ => Err(format!(
            "there is no lock {n}: locks are 0 to {} (set locks = N for more)",
            locks.count - 1
        )),
    }
}

/// `uwsgi.lock(n)`: waits for user lock `n`.
pub fn lock_user(n: u64) -> Result<(), String> {
    let mutex = user_lock(n)?;
    // SAFETY: made by `init` in `install`; the mapping is never unmapped.
    if unsafe { lock(mutex) } {
        tracing::warn!("lock {n}: a process died holding it");
    }
    Ok(())
}

/// `uwsgi.unlock(n)`.
pub fn unlock_user(n: u64) -> Result<(), String> {
    let mutex = user_lock(n)?;
    // SAFETY: made by `init`; unlocking a mutex this thread does not hold is refused by
    // the robust mutex (EPERM), not undefined.
    match unsafe { libc::pthread_mutex_unlock(mutex) } {
        0 => Ok(()),
        _ => Err(format!("lock {n} is not held by this thread")),
    }
}

/// `uwsgi.is_locked(n)`: whether anyone holds user lock `n`.
pub fn is_locked_user(n: u64) -> Result<bool, String> {
    let mutex = user_lock(n)?;
    // SAFETY: made by `init` in `install`; the mapping is never unmapped.
    Ok(unsafe { is_held(mutex) })
}

/// Whether anyone holds the mutex (taken and released at once to see).
///
/// # Safety
/// `mutex` must have been made by [`init`] and stay mapped.
pub unsafe fn is_held(mutex: *mut libc::pthread_mutex_t) -> bool {
    // SAFETY: as the caller promises; a lock taken here is released at once.
    match unsafe { libc::pthread_mutex_trylock(mutex) } {
        0 => {
            // SAFETY: just taken by this thread.
            unsafe { unlock(mutex) };
            false
        }
        libc::EOWNERDEAD => {
            // SAFETY: held by this thread now; made consistent, then released.
            unsafe {
                libc::pthread_mutex_consistent(mutex);
                unlock(mutex);
            }
            false
        }
        _ => true,
    }
}

/// The stats JSON's `locks` for the user locks, as uWSGI names them: `{"user N": 0}`, 1
/// while someone holds it (uWSGI gives the holder's pid, which a robust mutex does not tell).
pub fn stats_entries() -> Vec<serde_json::Value> {
    let count = USER_LOCKS.get().map_or(0, |l| l.count as u64);
    (0..count)
        .map(|n| serde_json::json!({ format!("user {n}"): u8::from(is_locked_user(n).unwrap_or(false)) }))
        .collect()
}
