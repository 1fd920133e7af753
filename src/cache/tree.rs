//! The digest of a task's input tree: every entry [`collect_inputs`](crate::task::collect_inputs)
//! gives the inputs archive, by its name in the workspace, its kind, its permission bits (as
//! the archive stores them), and its content (files) or target (symlinks). Timestamps, owners
//! and the archive's encoding are left out, and the entries come sorted by name, so the digest
//! depends on what a workspace would hold and on nothing else.
//!
//! File contents are hashed on every core, and only when the stat cache does not know them.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::CacheError;
use super::stat_cache::{Stat, StatCache};
use crate::task::InputFile;

/// One input as the digest sees it.
enum Seen {
    File {
        mode: u32,
        digest: [u8; 32],
        stat: Stat,
        rehashed: bool,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        mode: u32,
        target: Vec<u8>,
    },
    /// A FIFO, socket or device: the inputs archive refuses it, and so the run fails.
    Other,
}

/// What [`digest`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeDigest {
    pub sha256: [u8; 32],
    pub entries: usize,
    /// Files whose content was read (the others' digests came from the stat cache).
    pub rehashed: usize,
}

/// The digest of `inputs` (sorted by destination, as `collect_inputs` returns them). Updates
/// `stat_cache` with what it saw.
pub fn digest(inputs: &[InputFile], stat_cache: &mut StatCache) -> Result<TreeDigest, CacheError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = inputs.len().div_ceil(workers).max(1);
    let cache = &*stat_cache;
    let seen: Vec<Vec<Seen>> = std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    // One read buffer per thread, not per file.
                    let mut buf = vec![0u8; 256 << 10];
                    part.iter().map(|i| see(i, cache, &mut buf)).collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hashing threads do not panic"))
            .collect::<Result<_, _>>()
    })?;

    let mut hasher = Sha256::new();
    let mut rehashed = 0;
    for (input, seen) in inputs.iter().zip(seen.into_iter().flatten()) {
        let name = input.dest.as_os_str().as_bytes();
        let field = |hasher: &mut Sha256, bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        match seen {
            Seen::File {
                mode,
                digest,
                stat,
                rehashed: read,
            } => {
                hasher.update(b"f");
                field(&mut hasher, name);
                hasher.update(mode.to_le_bytes());
                hasher.update(digest);
                stat_cache.record(&input.source, stat, digest, read);
                rehashed += usize::from(read);
            }
            Seen::Dir { mode } => {
                hasher.update(b"d");
                field(&mut hasher, name);
                hasher.update(mode.to_le_bytes());
            }
            Seen::Symlink { mode, target } => {
                hasher.update(b"l");
                field(&mut hasher, name);
                hasher.update(mode.to_le_bytes());
                field(&mut hasher, &target);
            }
            Seen::Other => {
                hasher.update(b"o");
                field(&mut hasher, name);
            }
        }
    }
    Ok(TreeDigest {
        sha256: hasher.finalize().into(),
        entries: inputs.len(),
        rehashed,
    })
}

/// The SHA-256 of one file outside the tree (the executor binary), through `stat_cache` as
/// the tree's files are: read only when its stat data changed.
pub fn file_digest(path: &Path, stat_cache: &mut StatCache) -> Result<[u8; 32], CacheError> {
    let read_err = |source| CacheError::Read {
        path: path.to_path_buf(),
        source,
    };
    let stat = Stat::of(&std::fs::metadata(path).map_err(read_err)?);
    if let Some(digest) = stat_cache.lookup(path, &stat) {
        stat_cache.record(path, stat, digest, false);
        return Ok(digest);
    }
    let digest = hash_file(path, &mut vec![0u8; 256 << 10]).map_err(read_err)?;
    stat_cache.record(path, stat, digest, true);
    Ok(digest)
}

fn see(input: &InputFile, cache: &StatCache, buf: &mut [u8]) -> Result<Seen, CacheError> {
    let read_err = |source| CacheError::Read {
        path: input.source.clone(),
        source,
    };
    let meta = std::fs::symlink_metadata(&input.source).map_err(read_err)?;
    // The archive stores `mode & 0o7777`: so does the key.
    let mode = meta.mode() & 0o7777;
    let kind = meta.file_type();
    Ok(if kind.is_file() {
        let stat = Stat::of(&meta);
        match cache.lookup(&input.source, &stat) {
            Some(digest) => Seen::File {
                mode,
                digest,
                stat,
                rehashed: false,
            },
            None => Seen::File {
                mode,
                digest: hash_file(&input.source, buf).map_err(read_err)?,
                stat,
                rehashed: true,
            },
        }
    } else if kind.is_dir() {
        Seen::Dir { mode }
    } else if kind.is_symlink() {
        let target = std::fs::read_link(&input.source).map_err(read_err)?;
        Seen::Symlink {
            mode,
            target: target.as_os_str().as_bytes().to_vec(),
        }
    } else {
        Seen::Other
    })
}

/// SHA-256 of a file's content; never through a symlink swapped in since the lstat.
fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut hasher = Sha256::new();
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
