//! Shared memory: what the master maps before the first fork, so that every process it
//! forks sees the same bytes (the stats counters, the locks, the signal table, the spooler
//! table).

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use anyhow::Context;
use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

/// A fresh anonymous shared mapping of `len` bytes: zero-filled, page-aligned, never
/// unmapped (it lives as long as the processes that share it).
pub fn map(len: NonZeroUsize, what: &str) -> anyhow::Result<NonNull<c_void>> {
    // SAFETY: a new anonymous mapping aliases nothing in this process.
    let mapped = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    };
    mapped.with_context(|| format!("mmap for {what}"))
}
