//! The action cache: a run whose inputs, command and environment have not changed is replayed
//! from a stored result instead of being run again (`cache = true` in a task, `--cache`).
//!
//! - [`key`]: the cache key, a SHA-256 over everything a result can depend on that buildr sees.
//! - [`tree`]: the digest of the input tree, exactly as the inputs archive carries it.
//! - `stat_cache`: remembers each input file's digest by its stat data, so that an unchanged
//!   tree is not read again (as git's index does).
//! - [`store`]: entries on disk under `$XDG_CACHE_HOME/buildr`, written atomically, verified
//!   when read, bounded by size with least-recently-used eviction.
//! - [`record`]: what a run leaves to replay: its output chunks in order, its result.
//! - [`oci`]: the shared cache: results pushed to and pulled from an OCI registry.
//! - [`sign`]: the shared cache's signatures: writers sign, readers trust listed public keys.
//! - [`action`]: the cache in a run: its key, the lookup order, the replay of a hit, what is
//!   stored and pushed; and the disk cache's size bound.

pub mod action;
pub mod key;
pub mod oci;
pub mod record;
pub mod sign;
pub mod stat_cache;
pub mod store;
pub mod tree;

use std::path::PathBuf;

pub use key::{Key, KeyParts};
pub use record::{Record, Recorder, Stream};
pub use stat_cache::StatCache;
pub use store::{Entry, Lookup, Store};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the cache under {}: {source} (check its permissions and free space, or run without --cache)", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the cache directory {} {reason}: it must be yours and writable by you alone (`chmod go-w {}`, or set XDG_CACHE_HOME to a directory of your own)",
        dir.display(), dir.display()
    )]
    NotPrivate { dir: PathBuf, reason: String },
    #[error(
        "the result takes {bytes} bytes, more than the cache's bound of {max} (BUILDR_CACHE_MAX); it is not stored"
    )]
    TooLarge { bytes: u64, max: u64 },
    #[error(
        "neither XDG_CACHE_HOME nor HOME is set to an absolute path: cannot place the cache (set XDG_CACHE_HOME)"
    )]
    NoCacheDir,
}

/// Where the cache lives: `$XDG_CACHE_HOME/buildr`, else `~/.cache/buildr`. Relative values are
/// ignored, as the XDG base directory specification says.
pub fn default_dir() -> Result<PathBuf, CacheError> {
    let absolute = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .map(|dir| dir.join("buildr"))
        .ok_or(CacheError::NoCacheDir)
}
