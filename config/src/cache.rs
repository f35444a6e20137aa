//! `cache2 = name=NAME,items=N,...` (and the older `cache = N`): the shared caches' specs.

use std::fmt;

use crate::{parse_size, ConfigError};

/// One cache, as `cache2` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub name: String,
    /// How many keys it holds.
    pub items: u64,
    /// The size of a block: a value takes one block (several with `bitmap`).
    pub blocksize: u64,
    /// How many blocks (default: one per item).
    pub blocks: u64,
    /// Values may span several blocks, allocated from a bitmap.
    pub bitmap: bool,
    /// When full, expired items are swept before a write fails.
    pub sweep_on_full: bool,
    /// When full, the least recently used items make room.
    pub purge_lru: bool,
    /// The longest key, in bytes.
    pub keysize: u64,
    /// No periodic sweep: expired items go when they are next looked up.
    pub lazy: bool,
}

/// The most memory one cache may take: a typo such as `items=10000000000` is an error,
/// not an allocation the machine cannot make.
const MAX_CACHE_BYTES: u64 = 64 << 30;

const KEYS: &str =
    "name, items, blocksize, blocks, bitmap, sweep_on_full, purge_lru, keysize, lazy";

impl CacheSpec {
    /// `cache = N` with `cache-blocksize`: uWSGI's first cache API, a cache named "default".
    pub fn legacy(items: u64, blocksize: u64) -> CacheSpec {
        CacheSpec {
            name: "default".into(),
            items,
            blocksize,
            blocks: items,
            bitmap: false,
            sweep_on_full: false,
            purge_lru: false,
            keysize: 2048,
            lazy: false,
        }
    }

    /// Parses a `cache2` value; `expected` says what is wrong for the error message.
    pub fn parse(option: &str, text: &str) -> Result<CacheSpec, ConfigError> {
        let bad = |expected: String| ConfigError::BadValue {
            name: option.into(),
            value: text.into(),
            expected,
        };
        let mut spec = CacheSpec {
            name: String::new(),
            items: 0,
            blocksize: 65536,
            blocks: 0,
            bitmap: false,
            sweep_on_full: false,
            purge_lru: false,
            keysize: 2048,
            lazy: false,
        };
        let number = |key: &str, value: &str| -> Result<u64, ConfigError> {
            parse_size(value)
                .map(|n| n as u64)
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "{key}= a number of at least 1 (e.g. 1000, 64k), not \"{value}\""
                    ))
                })
        };
        let flag = |key: &str, value: &str| -> Result<bool, ConfigError> {
            match value {
                "" | "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                other => Err(bad(format!("{key}= 1 or 0, not \"{other}\""))),
            }
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key.trim() {
                "name" => spec.name = value.trim().to_string(),
                "items" | "max_items" | "maxitems" => spec.items = number(key, value)?,
                "blocksize" => spec.blocksize = number(key, value)?,
                "blocks" => spec.blocks = number(key, value)?,
                "keysize" => spec.keysize = number(key, value)?,
                "bitmap" => spec.bitmap = flag(key, value)?,
                "sweep_on_full" => spec.sweep_on_full = flag(key, value)?,
                "purge_lru" => spec.purge_lru = flag(key, value)?,
                "lazy" => spec.lazy = flag(key, value)?,
                "store" | "store_sync" | "store_delete" => {
                    return Err(bad(format!(
                        "no {key}: persisting a cache to a file is not provided by ngx-wsgi (the cache \
                         lives in shared memory, and survives worker restarts and reloads)"
                    )))
                }
                "node" | "nodes" | "sync" | "udp" | "udp_servers" | "ignore_full" | "math_initial"
                | "hash" | "hashsize" | "hash_size" | "purge_lru_ttl" => {
                    return Err(bad(format!("no {key}: this cache2 key is not provided by ngx-wsgi ({KEYS} are)")))
                }
                other => return Err(bad(format!("cache2 keys: {KEYS}; \"{other}\" is not one"))),
            }
        }
        if spec.name.is_empty() {
            return Err(bad("a name: name=NAME,items=N".into()));
        }
        if spec.items == 0 {
            return Err(bad("items=N: how many keys the cache holds".into()));
        }
        if spec.blocks == 0 {
            spec.blocks = spec.items;
        }
        let bytes = spec
            .blocks
            .checked_mul(spec.blocksize)
            .and_then(|b| b.checked_add(spec.items.checked_mul(spec.keysize + 64)?));
        match bytes {
            Some(bytes) if bytes <= MAX_CACHE_BYTES => Ok(spec),
            _ => Err(bad(format!(
                "a cache of at most {} GiB (blocks x blocksize + items x keysize)",
                MAX_CACHE_BYTES >> 30
            ))),
        }
    }
}

impl fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "name={},items={},blocksize={},blocks={},keysize={}",
            self.name, self.items, self.blocksize, self.blocks, self.keysize
        )?;
        for (flag, key) in [
            (self.bitmap, "bitmap"),
            (self.sweep_on_full, "sweep_on_full"),
            (self.purge_lru, "purge_lru"),
            (self.lazy, "lazy"),
        ] {
            if flag {
                write!(f, ",{key}=1")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorials_cache2_line_parses() {
        let spec = CacheSpec::parse(
            "cache2",
            "name=my_site,items=10000,bitmap=1,blocksize=2000,sweep_on_full=1,lazy=1",
        )
        .unwrap();
        assert_eq!(
            (
                spec.name.as_str(),
                spec.items,
                spec.blocks,
                spec.blocksize,
                spec.bitmap
            ),
            ("my_site", 10000, 10000, 2000, true)
        );
        assert!(spec.sweep_on_full && spec.lazy && !spec.purge_lru);
        assert_eq!(CacheSpec::parse("cache2", &spec.to_string()).unwrap(), spec);
    }

    #[test]
    fn bad_specs_say_what_is_expected() {
        let error = |text: &str| CacheSpec::parse("cache2", text).unwrap_err().to_string();
        assert_eq!(
            error("name=a,items=10,colour=red"),
            "invalid value \"name=a,items=10,colour=red\" for option \"cache2\": expected cache2 keys: \
             name, items, blocksize, blocks, bitmap, sweep_on_full, purge_lru, keysize, lazy; \"colour\" is not one"
        );
        assert!(error("items=10").contains("expected a name: name=NAME,items=N"));
        assert!(error("name=a").contains("expected items=N"));
        assert!(error("name=a,items=ten").contains("items= a number of at least 1"));
        assert!(error("name=a,items=10,store=/tmp/c")
            .contains("persisting a cache to a file is not provided"));
        assert!(error("name=a,items=100000000,blocksize=1m").contains("at most 64 GiB"));
    }
}
