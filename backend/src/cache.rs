//! The shared caches (`cache2`, `cache`): uWSGI's cache, in memory every worker maps.
//!
//! The master makes each cache once (a memfd, so a reload's new master image maps the same
//! memory again: the cache survives reloads, as it survives a worker's death) before the
//! first fork. Every operation runs under the cache's process-shared, robust mutex: a
//! worker killed while holding it does not block the others. The layout is fixed at
//! creation: a hash index of item numbers, the items (key, value's blocks, expiry, LRU
//! clock), the keys, and the blocks the values live in (one per item, or runs of blocks
//! from a bitmap with `bitmap=1`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use ngx_wsgi_config::{CacheSpec, Config};

/// The caches made from the config, for the `uwsgi.cache_*` functions (which Python calls
/// without a way to pass them along) and the master's sweeps.
static CACHES: OnceLock<Vec<Cache>> = OnceLock::new();

/// The environment variable a reloading master passes its caches' memfds in.
const INHERITED_CACHES_ENV: &str = "NGX_WSGI_CACHES";

const MAGIC: u64 = 0x6e67_782d_6361_6368; // "ngx-cach"
const EMPTY: u32 = 0;
const TOMBSTONE: u32 = u32::MAX;

#[repr(C)]
struct Header {
    magic: u64,
    items: u64,
    blocks: u64,
    blocksize: u64,
    keysize: u64,
    bitmap: u64,
    used: u64,
    tombstones: u64,
    lru_clock: u64,
    hits: u64,
    misses: u64,
    full: u64,
    free_top: u64,
    lock: libc::pthread_mutex_t,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Item {
    used: u32,
    key_len: u32,
    value_len: u64,
    first_block: u64,
    nblocks: u64,
    /// Unix seconds after which the item is gone; 0: never.
    expires: u64,
    lru: u64,
    hash: u64,
}

/// Where each part of a cache's mapping starts.
#[derive(Clone, Copy)]
struct Layout {
    slots: usize,
    nslots: usize,
    items: usize,
    free: usize,
    keys: usize,
    bitmap: usize,
    blocks: usize,
    len: usize,
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl Layout {
    fn of(spec: &CacheSpec) -> anyhow::Result<Layout> {
        let items = usize::try_from(spec.items)?;
        let nslots = (items * 2).next_power_of_two();
        let blocks = usize::try_from(spec.blocks)?;
        let mut at = align8(std::mem::size_of::<Header>());
        let slots = at;
        at = align8(at + nslots * 4);
        let items_at = at;
        at += items * std::mem::size_of::<Item>();
        let free = at;
        at = align8(at + items * 4);
        let keys = at;
        at = align8(at + items * usize::try_from(spec.keysize)?);
        let bitmap = at;
        at = align8(at + blocks.div_ceil(8));
        let blocks_at = at;
        at = at
            .checked_add(
                blocks
                    .checked_mul(usize::try_from(spec.blocksize)?)
                    .context("cache size")?,
            )
            .context("cache size")?;
        Ok(Layout {
            slots,
            nslots,
            items: items_at,
            free,
            keys,
            bitmap,
            blocks: blocks_at,
            len: at,
        })
    }
}

/// One cache: its spec and its shared mapping.
pub struct Cache {
    spec: CacheSpec,
    base: NonNull<u8>,
    layout: Layout,
    memfd: OwnedFd,
}

// SAFETY: the mapping is shared memory touched only under the cache's process-shared mutex
// (or, for the header's fixed fields, only read); the struct itself is immutable.
unsafe impl Send for Cache {}
// SAFETY: as above.
unsafe impl Sync for Cache {}

/// How a write treats an existing key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// `cache_set`: only a new key.
    Set,
    /// `cache_update`: new or replaced.
    Update,
}

/// `cache_inc` and friends: the value as a 64-bit integer.
#[derive(Clone, Copy)]
pub enum Math {
    Inc,
    Dec,
    Mul,
    Div,
}

/// Why a write did not happen (uWSGI answers None for all of them).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Exists,
    KeyTooLong,
    ValueTooLarge,
    Full,
    NotANumber,
    DivisionByZero,
}

impl Cache {
    /// Makes a new, empty cache.
    fn create(spec: &CacheSpec) -> anyhow::Result<Cache> {
        let layout = Layout::of(spec)?;
        let name = std::ffi::CString::new(format!("ngx-wsgi-cache-{}", spec.name))?;
        let memfd =
            nix::sys::memfd::memfd_create(name.as_c_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .context("memfd_create")?;
        nix::unistd::ftruncate(&memfd, layout.len as i64).context("sizing the cache")?;
        let cache = Cache::map(spec.clone(), memfd, layout)?;
        cache.initialize()?;
        Ok(cache)
    }

    fn map(spec: CacheSpec, memfd: OwnedFd, layout: Layout) -> anyhow::Result<Cache> {
        let len = std::num::NonZeroUsize::new(layout.len).context("an empty cache")?;
        // SAFETY: a fresh shared mapping of the memfd, of its whole size; nothing else in
        // this process aliases it.
        let base = unsafe {
            nix::sys::mman::mmap(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &memfd,
                0,
            )
        }
        .context("mapping the cache")?;
        Ok(Cache {
            spec,
            base: base.cast(),
            layout,
            memfd,
        })
    }

    fn header(&self) -> *mut Header {
        self.base.as_ptr().cast()
    }

    /// A fresh cache's header, lock and free list.
    fn initialize(&self) -> anyhow::Result<()> {
        let header = self.header();
        // SAFETY: the mapping is new and zero-filled, and no other process has it yet;
        // `header` points at its start, aligned, with room for a Header.
        unsafe {
            (*header).magic = MAGIC;
            (*header).items = self.spec.items;
            (*header).blocks = self.spec.blocks;
            (*header).blocksize = self.spec.blocksize;
            (*header).keysize = self.spec.keysize;
            (*header).bitmap = u64::from(self.spec.bitmap);
        }
        // SAFETY: the lock's place in the new mapping, which no other process has yet.
        unsafe { crate::locks::init(&raw mut (*header).lock)? };
        self.lock().reset();
        Ok(())
    }

    /// Takes the cache's lock; a holder that died is forgiven (its write may be partial).
    fn lock(&self) -> Locked<'_> {
        // SAFETY: the mutex was made by locks::init in this mapping, which lives as long as
        // `self`.
        if unsafe { crate::locks::lock(&raw mut (*self.header()).lock) } {
            tracing::warn!(
                "cache \"{}\": a process died holding its lock; its last write may be incomplete",
                self.spec.name
            );
        }
        Locked { cache: self }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The largest value it takes.
    fn max_value(&self) -> u64 {
        match self.spec.bitmap {
            true => self.spec.blocks * self.spec.blocksize,
            false => self.spec.blocksize,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().get(key)
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.lock().find(key).is_some()
    }

    pub fn set(&self, key: &[u8], value: &[u8], expires: i64, mode: Write) -> Result<(), Refused> {
        if key.len() as u64 > self.spec.keysize {
            return Err(Refused::KeyTooLong);
        }
        if value.len() as u64 > self.max_value() {
            return Err(Refused::ValueTooLarge);
        }
        self.lock().write(key, value, expires_at(expires), mode)
    }

    pub fn delete(&self, key: &[u8]) -> bool {
        let mut locked = self.lock();
        match locked.find(key) {
            Some((slot, item)) => {
                locked.remove(slot, item);
                true
            }
            None => false,
        }
    }

    pub fn clear(&self) {
        self.lock().reset();
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.lock().keys()
    }

    /// `cache_inc` and friends: a missing key counts from 0.
    pub fn math(&self, key: &[u8], op: Math, amount: i64, expires: i64) -> Result<i64, Refused> {
        if key.len() as u64 > self.spec.keysize {
            return Err(Refused::KeyTooLong);
        }
        let mut locked = self.lock();
        let current = match locked.get(key) {
            Some(bytes) => i64::from_ne_bytes(bytes.try_into().map_err(|_| Refused::NotANumber)?),
            None => 0,
        };
        let next = match op {
            Math::Inc => current.wrapping_add(amount),
            Math::Dec => current.wrapping_sub(amount),
            Math::Mul => current.wrapping_mul(amount),
            Math::Div if amount == 0 => return Err(Refused::DivisionByZero),
            Math::Div => current.wrapping_div(amount),
        };
        locked.write(key, &next.to_ne_bytes(), expires_at(expires), Write::Update)?;
        Ok(next)
    }

    /// Removes expired items (the master, every `cache-expire-freq` seconds).
    pub fn sweep(&self) -> usize {
        self.lock().sweep(now())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// uWSGI's `expires` argument: seconds from now; 0 never; negative already gone.
fn expires_at(expires: i64) -> u64 {
    match expires {
        0 => 0,
        n if n < 0 => 1,
        n => now() + n as u64,
    }
}

fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A cache while its lock is held: the only way to its data.
struct Locked<'a> {
    cache: &'a Cache,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard took the lock in `Cache::lock`, on this thread.
        unsafe { crate::locks::unlock(&raw mut (*self.cache.header()).lock) };
    }
}

impl Locked<'_> {
    fn header(&mut self) -> &mut Header {
        // SAFETY: the lock is held: no other thread or process touches the cache.
        unsafe { &mut *self.cache.header() }
    }

    /// A part of the mapping as a slice of `T`, while the lock is held.
    fn part<T>(&mut self, offset: usize, len: usize) -> &mut [T] {
        // SAFETY: `offset` and `len` come from the cache's Layout, inside the mapping and
        // aligned for T; the lock is held, so nothing else aliases it.
        unsafe {
            std::slice::from_raw_parts_mut(self.cache.base.as_ptr().add(offset).cast::<T>(), len)
        }
    }

    fn slots(&mut self) -> &mut [u32] {
        let layout = self.cache.layout;
        self.part(layout.slots, layout.nslots)
    }

    fn items(&mut self) -> &mut [Item] {
        let (offset, items) = (self.cache.layout.items, self.cache.spec.items as usize);
        self.part(offset, items)
    }

    fn free_stack(&mut self) -> &mut [u32] {
        let (offset, items) = (self.cache.layout.free, self.cache.spec.items as usize);
        self.part(offset, items)
    }

    fn key_of(&mut self, item: usize) -> &mut [u8] {
        let keysize = self.cache.spec.keysize as usize;
        let offset = self.cache.layout.keys + item * keysize;
        self.part(offset, keysize)
    }

    fn bitmap(&mut self) -> &mut [u8] {
        let (offset, blocks) = (self.cache.layout.bitmap, self.cache.spec.blocks as usize);
        self.part(offset, blocks.div_ceil(8))
    }

    fn block_bytes(&mut self, first: u64, len: usize) -> &mut [u8] {
        let offset = self.cache.layout.blocks + (first * self.cache.spec.blocksize) as usize;
        self.part(offset, len)
    }

    /// Empties the cache.
    fn reset(&mut self) {
        let items = self.cache.spec.items as usize;
        self.slots().fill(EMPTY);
        for (index, item) in self.items().iter_mut().enumerate() {
            *item = Item {
                used: 0,
                key_len: 0,
                value_len: 0,
                first_block: index as u64,
                nblocks: 0,
                expires: 0,
                lru: 0,
                hash: 0,
            };
        }
        // Popped from the top: item 0 first.
        for (position, slot) in self.free_stack().iter_mut().enumerate() {
            *slot = (items - 1 - position) as u32;
        }
        self.bitmap().fill(0);
        let header = self.header();
        header.used = 0;
        header.tombstones = 0;
        header.free_top = items as u64;
    }

    /// The index slot and item number of a live key.
    fn find(&mut self, key: &[u8]) -> Option<(usize, usize)> {
        let hash = fnv1a(key);
        let mask = self.cache.layout.nslots - 1;
        let mut position = hash as usize & mask;
        for _ in 0..self.cache.layout.nslots {
            let slot = self.slots()[position];
            if slot == EMPTY {
                return None;
            }
            if slot != TOMBSTONE {
                let index = (slot - 1) as usize;
                let item = self.items()[index];
                if item.hash == hash && self.key_of(index)[..item.key_len as usize] == *key {
                    if item.expires != 0 && item.expires <= now() {
                        self.remove(position, index);
                        return None;
                    }
                    return Some((position, index));
                }
            }
            position = (position + 1) & mask;
        }
        None
    }

    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let Some((_, index)) = self.find(key) else {
            self.header().misses += 1;
            return None;
        };
        let header = self.header();
        header.hits += 1;
        header.lru_clock += 1;
        let clock = header.lru_clock;
        let item = &mut self.items()[index];
        item.lru = clock;
        let (first, len) = (item.first_block, item.value_len as usize);
        Some(self.block_bytes(first, len).to_vec())
    }

    fn remove(&mut self, position: usize, index: usize) {
        self.slots()[position] = TOMBSTONE;
        let item = self.items()[index];
        if self.cache.spec.bitmap {
            self.free_blocks(item.first_block, item.nblocks);
        }
        self.items()[index].used = 0;
        let top = self.header().free_top as usize;
        self.free_stack()[top] = index as u32;
        let header = self.header();
        header.free_top += 1;
        header.used -= 1;
        header.tombstones += 1;
        // Too many tombstones make every miss walk far: rebuild the index.
        if header.tombstones as usize > self.cache.layout.nslots / 4 {
            self.rebuild_index();
        }
    }

    fn rebuild_index(&mut self) {
        self.slots().fill(EMPTY);
        let mask = self.cache.layout.nslots - 1;
        for index in 0..self.cache.spec.items as usize {
            let item = self.items()[index];
            if item.used == 0 {
                continue;
            }
            let mut position = item.hash as usize & mask;
            while self.slots()[position] != EMPTY {
                position = (position + 1) & mask;
            }
            self.slots()[position] = index as u32 + 1;
        }
        self.header().tombstones = 0;
    }

    fn free_blocks(&mut self, first: u64, count: u64) {
        let bitmap = self.bitmap();
        for block in first..first + count {
            bitmap[(block / 8) as usize] &= !(1 << (block % 8));
        }
    }

    /// First fit: `count` free blocks in a row, marked used.
    fn take_blocks(&mut self, count: u64) -> Option<u64> {
        let blocks = self.cache.spec.blocks;
        let bitmap = self.bitmap();
        let used = |b: u64| bitmap[(b / 8) as usize] & (1 << (b % 8)) != 0;
        let mut run = 0;
        let mut block = 0;
        while block < blocks {
            if used(block) {
                run = 0;
            } else {
                run += 1;
                if run == count {
                    let first = block + 1 - count;
                    for b in first..=block {
                        bitmap[(b / 8) as usize] |= 1 << (b % 8);
                    }
                    return Some(first);
                }
            }
            block += 1;
        }
        None
    }

    /// An item number and blocks for a value of `len` bytes, making room as the cache's
    /// spec says when it is full.
    fn allocate(&mut self, len: usize) -> Result<(usize, u64, u64), Refused> {
        let count = (len as u64).div_ceil(self.cache.spec.blocksize).max(1);
        let mut swept = false;
        loop {
            if self.header().free_top > 0 {
                let top = self.header().free_top as usize - 1;
                let index = self.free_stack()[top] as usize;
                let blocks = match self.cache.spec.bitmap {
                    true => self.take_blocks(count),
                    false => Some(index as u64),
                };
                if let Some(first) = blocks {
                    self.header().free_top -= 1;
                    return Ok((index, first, count));
                }
            }
            if self.cache.spec.sweep_on_full && !swept {
                swept = true;
                if self.sweep(now()) > 0 {
                    continue;
                }
            }
            if self.cache.spec.purge_lru && self.header().used > 0 {
                self.evict_lru();
                continue;
            }
            self.header().full += 1;
            return Err(Refused::Full);
        }
    }

    fn evict_lru(&mut self) {
        let items = self.items();
        let oldest = (0..items.len())
            .filter(|i| items[*i].used != 0)
            .min_by_key(|i| items[*i].lru);
        if let Some(index) = oldest {
            let key_len = self.items()[index].key_len as usize;
            let key = self.key_of(index)[..key_len].to_vec();
            if let Some((position, index)) = self.find(&key) {
                self.remove(position, index);
            }
        }
    }

    fn write(
        &mut self,
        key: &[u8],
        value: &[u8],
        expires: u64,
        mode: Write,
    ) -> Result<(), Refused> {
        if let Some((position, index)) = self.find(key) {
            if mode == Write::Set {
                return Err(Refused::Exists);
            }
            // In place when the value fits the item's blocks (always, without bitmap).
            let item = self.items()[index];
            let room = match self.cache.spec.bitmap {
                true => item.nblocks * self.cache.spec.blocksize,
                false => self.cache.spec.blocksize,
            };
            if value.len() as u64 <= room {
                self.block_bytes(item.first_block, value.len())
                    .copy_from_slice(value);
                let header = self.header();
                header.lru_clock += 1;
                let clock = header.lru_clock;
                let item = &mut self.items()[index];
                item.value_len = value.len() as u64;
                item.expires = expires;
                item.lru = clock;
                return Ok(());
            }
            self.remove(position, index);
        }
        let (index, first, nblocks) = self.allocate(value.len())?;
        let hash = fnv1a(key);
        self.block_bytes(first, value.len()).copy_from_slice(value);
        self.key_of(index)[..key.len()].copy_from_slice(key);
        let header = self.header();
        header.lru_clock += 1;
        header.used += 1;
        let clock = header.lru_clock;
        self.items()[index] = Item {
            used: 1,
            key_len: key.len() as u32,
            value_len: value.len() as u64,
            first_block: first,
            nblocks,
            expires,
            lru: clock,
            hash,
        };
        let mask = self.cache.layout.nslots - 1;
        let mut position = hash as usize & mask;
        loop {
            let slot = self.slots()[position];
            if slot == EMPTY || slot == TOMBSTONE {
                if slot == TOMBSTONE {
                    self.header().tombstones -= 1;
                }
                self.slots()[position] = index as u32 + 1;
                return Ok(());
            }
            position = (position + 1) & mask;
        }
    }

    fn keys(&mut self) -> Vec<Vec<u8>> {
        let now = now();
        (0..self.cache.spec.items as usize)
            .filter_map(|index| {
                let item = self.items()[index];
                (item.used != 0 && (item.expires == 0 || item.expires > now))
                    .then_some(item.key_len as usize)
                    .map(|len| self.key_of(index)[..len].to_vec())
            })
            .collect()
    }

    fn sweep(&mut self, now: u64) -> usize {
        let expired: Vec<Vec<u8>> = (0..self.cache.spec.items as usize)
            .filter_map(|index| {
                let item = self.items()[index];
                (item.used != 0 && item.expires != 0 && item.expires <= now)
                    .then_some(item.key_len as usize)
                    .map(|len| self.key_of(index)[..len].to_vec())
            })
            .collect();
        for key in &expired {
            // find() removes an expired item as it meets it.
            self.find(key);
        }
        expired.len()
    }
}

/// Makes the config's caches (or maps those a reloading master passed), in the master
/// before the first fork.
pub fn install(config: &Config) -> anyhow::Result<()> {
    let mut inherited: Vec<(String, RawFd)> = std::env::var(INHERITED_CACHES_ENV)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (fd, name) = line.split_once(' ')?;
            Some((name.to_string(), fd.parse().ok()?))
        })
        .collect();
    // SAFETY: the master is single-threaded here.
    unsafe { std::env::remove_var(INHERITED_CACHES_ENV) };
    let mut caches = Vec::new();
    for spec in config.caches() {
        if caches.iter().any(|c: &Cache| c.spec.name == spec.name) {
            bail!("two caches are named \"{}\"", spec.name);
        }
        let kept = inherited
            .iter()
            .position(|(name, _)| *name == spec.name)
            .map(|i| inherited.swap_remove(i).1)
            .and_then(|fd| reuse(&spec, fd));
        let cache = match kept {
            Some(cache) => {
                tracing::info!("cache \"{}\": kept across the reload", spec.name);
                cache
            }
            None => Cache::create(&spec).with_context(|| format!("cache \"{}\"", spec.name))?,
        };
        tracing::info!(
            "cache \"{}\": {} items, {} blocks of {} bytes ({} KiB)",
            spec.name,
            spec.items,
            spec.blocks,
            spec.blocksize,
            cache.layout.len >> 10
        );
        caches.push(cache);
    }
    for (_, fd) in inherited {
        // SAFETY: a memfd the previous image passed and no cache of this config uses.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let _ = CACHES.set(caches);
    Ok(())
}

/// A cache the previous master image made, if its geometry is still the config's.
fn reuse(spec: &CacheSpec, fd: RawFd) -> Option<Cache> {
    // SAFETY: the previous image listed this memfd as one of its caches and exec'd us with
    // it open; nothing else here owns it.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &memfd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let layout = Layout::of(spec).ok()?;
    let size = nix::sys::stat::fstat(&memfd).ok()?.st_size as usize;
    if size != layout.len {
        tracing::info!("cache \"{}\": its size changed: made anew", spec.name);
        return None;
    }
    let cache = Cache::map(spec.clone(), memfd, layout).ok()?;
    // SAFETY: the header is at the start of the mapping; read only.
    let header = unsafe { &*cache.header() };
    let same = header.magic == MAGIC
        && header.items == spec.items
        && header.blocks == spec.blocks
        && header.blocksize == spec.blocksize
        && header.keysize == spec.keysize
        && header.bitmap == u64::from(spec.bitmap);
    same.then_some(cache)
}

/// Leaves the caches' memfds open across a reload's exec and names them for the next image.
pub fn export_for_exec() -> anyhow::Result<()> {
    let Some(caches) = CACHES.get() else {
        return Ok(());
    };
    let mut lines = Vec::new();
    for cache in caches {
        nix::fcntl::fcntl(
            &cache.memfd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .context("fcntl(F_SETFD) on a cache")?;
        lines.push(format!("{} {}", cache.memfd.as_raw_fd(), cache.spec.name));
    }
    // SAFETY: the master is single-threaded; the image we exec reads it.
    unsafe { std::env::set_var(INHERITED_CACHES_ENV, lines.join("\n")) };
    Ok(())
}

/// The cache named `name`, or the first one (uWSGI's default cache).
pub fn by_name(name: Option<&str>) -> Result<&'static Cache, String> {
    let caches = CACHES.get().map(Vec::as_slice).unwrap_or_default();
    match name {
        None | Some("") => caches
            .first()
            .ok_or_else(|| "no cache is configured: add cache2 = name=NAME,items=N".to_string()),
        Some(name) if name.contains('@') => Err(format!(
            "cache \"{name}\": caches on other servers are not provided by ngx-wsgi"
        )),
        Some(name) => caches
            .iter()
            .find(|c| c.spec.name == name)
            .ok_or_else(|| format!("no cache named \"{name}\": add cache2 = name={name},items=N")),
    }
}

/// The stats JSON's `caches`, with uWSGI's keys.
pub fn stats_json() -> serde_json::Value {
    let caches = CACHES.get().into_iter().flatten().map(|cache| {
        let mut locked = cache.lock();
        let header = locked.header();
        serde_json::json!({
            "name": cache.spec.name, "hash": "fnv1a", "hashsize": cache.layout.nslots,
            "keysize": cache.spec.keysize, "max_items": cache.spec.items,
            "blocks": cache.spec.blocks, "blocksize": cache.spec.blocksize,
            "items": header.used, "hits": header.hits, "miss": header.misses,
            "full": header.full, "last_modified_at": 0,
        })
    });
    serde_json::Value::Array(caches.collect())
}

/// The stats JSON's `locks` for the caches, as uWSGI names them: `{"cache_NAME": 0}`, 1
/// while a process holds that cache's lock.
pub fn lock_entries() -> Vec<serde_json::Value> {
    CACHES
        .get()
        .into_iter()
        .flatten()
        .map(|cache| {
            // SAFETY: the mutex was made by locks::init in this mapping, which lives as
            // long as the cache.
            let held = unsafe { crate::locks::is_held(&raw mut (*cache.header()).lock) };
            serde_json::json!({ format!("cache_{}", cache.spec.name): u8::from(held) })
        })
        .collect()
}

/// The master's periodic sweep of the caches that are not `lazy`.
pub fn sweep_all() {
    for cache in CACHES.get().into_iter().flatten().filter(|c| !c.spec.lazy) {
        let removed = cache.sweep();
        if removed > 0 {
            tracing::debug!(
                "cache \"{}\": {removed} expired items removed",
                cache.name()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(spec: &str) -> Cache {
        Cache::create(&CacheSpec::parse("cache2", spec).unwrap()).unwrap()
    }

    #[test]
    fn set_get_update_delete() {
        let c = cache("name=t,items=4,blocksize=16");
        assert_eq!(c.get(b"a"), None);
        c.set(b"a", b"one", 0, Write::Set).unwrap();
        assert_eq!(c.set(b"a", b"two", 0, Write::Set), Err(Refused::Exists));
        assert_eq!(c.get(b"a").as_deref(), Some(&b"one"[..]));
        c.set(b"a", b"two", 0, Write::Update).unwrap();
        assert_eq!(c.get(b"a").as_deref(), Some(&b"two"[..]));
        assert_eq!(
            c.set(b"b", &[0; 17], 0, Write::Set),
            Err(Refused::ValueTooLarge)
        );
        assert!(c.delete(b"a") && !c.delete(b"a") && !c.exists(b"a"));
    }

    #[test]
    fn full_caches_refuse_sweep_or_evict_as_their_spec_says() {
        let plain = cache("name=t,items=2,blocksize=8");
        plain.set(b"a", b"1", 0, Write::Set).unwrap();
        plain.set(b"b", b"2", 0, Write::Set).unwrap();
        assert_eq!(plain.set(b"c", b"3", 0, Write::Set), Err(Refused::Full));
        let lru = cache("name=t,items=2,blocksize=8,purge_lru=1");
        lru.set(b"a", b"1", 0, Write::Set).unwrap();
        lru.set(b"b", b"2", 0, Write::Set).unwrap();
        lru.get(b"a");
        lru.set(b"c", b"3", 0, Write::Set).unwrap();
        assert_eq!(
            (lru.exists(b"a"), lru.exists(b"b"), lru.exists(b"c")),
            (true, false, true)
        );
        let sweep = cache("name=t,items=2,blocksize=8,sweep_on_full=1");
        sweep.set(b"a", b"1", -1, Write::Set).unwrap();
        sweep.set(b"b", b"2", 0, Write::Set).unwrap();
        sweep.set(b"c", b"3", 0, Write::Set).unwrap();
        assert_eq!(sweep.keys().len(), 2);
    }

    #[test]
    fn bitmap_values_span_blocks_and_free_them() {
        let c = cache("name=t,items=4,blocks=4,blocksize=4,bitmap=1");
        c.set(b"big", &[7; 12], 0, Write::Set).unwrap();
        assert_eq!(c.set(b"more", &[1; 8], 0, Write::Set), Err(Refused::Full));
        c.delete(b"big");
        c.set(b"more", &[1; 8], 0, Write::Set).unwrap();
        c.set(b"rest", &[2; 8], 0, Write::Set).unwrap();
        assert_eq!(c.get(b"more").unwrap(), vec![1; 8]);
        assert_eq!(c.get(b"rest").unwrap(), vec![2; 8]);
    }

    #[test]
    fn math_counts_from_zero_and_many_deletes_keep_lookups_working() {
        let c = cache("name=t,items=8,blocksize=8");
        assert_eq!(c.math(b"n", Math::Inc, 5, 0), Ok(5));
        assert_eq!(c.math(b"n", Math::Mul, 3, 0), Ok(15));
        assert_eq!(c.math(b"n", Math::Div, 0, 0), Err(Refused::DivisionByZero));
        c.set(b"s", b"text", 0, Write::Set).unwrap();
        assert_eq!(c.math(b"s", Math::Inc, 1, 0), Err(Refused::NotANumber));
        for round in 0..1000u32 {
            let key = round.to_string();
            c.set(key.as_bytes(), b"v", 0, Write::Set).unwrap();
            assert!(c.exists(key.as_bytes()));
            assert!(c.delete(key.as_bytes()));
        }
        assert_eq!(c.get(b"n").unwrap(), 15i64.to_ne_bytes());
    }
}
