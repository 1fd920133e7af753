//! The digest of a task's input tree: every entry [`collect_inputs`](crate::task::collect_inputs)
//! gives the inputs archive, by its name in the workspace, its kind, its permission bits (as
//! the archive stores them), and its content (files) or target (symlinks), encoded by
//! [`TreeHasher`] as the inputs archive's own pass encodes what it sends. Timestamps, owners
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
use crate::archive::TreeHasher;
use crate::task::InputFile;

/// One input as the digest sees it (and an input snapshot's index, [`crate::snapshot`]).
pub enum Seen {
    File {
        mode: u32,
        digest: [u8; 32],
        size: u64,
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

/// Every input of `inputs`, as [`see_all`] gives them, and how many files were read.
pub struct SeenAll {
    pub seen: Vec<Seen>,
    /// Files whose content was read (the others' digests came from the stat cache).
    pub rehashed: usize,
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
    let SeenAll { seen, rehashed } = see_all(inputs, stat_cache)?;
    let mut hasher = TreeHasher::new();
    for (input, seen) in inputs.iter().zip(seen) {
        let name = input.dest.as_os_str().as_bytes();
        match seen {
            Seen::File { mode, digest, .. } => hasher.file(name, mode, &digest),
            Seen::Dir { mode } => hasher.dir(name, mode),
            Seen::Symlink { mode, target } => hasher.symlink(name, mode, &target),
            Seen::Other => hasher.other(name),
        }
    }
    Ok(TreeDigest {
        sha256: hasher.finish(),
        entries: inputs.len(),
        rehashed,
    })
}

/// Each of `inputs` as it is on disk, files' contents hashed on every core unless
/// `stat_cache` knows them; updates `stat_cache` with what it saw.
pub fn see_all(inputs: &[InputFile], stat_cache: &mut StatCache) -> Result<SeenAll, CacheError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = inputs.len().div_ceil(workers).max(1);
    let cache = &*stat_cache;
    // Each thread fills its part of both lists in place: parts gathered, then copied into one
    // list, held 100,000 entries twice over.
    let mut seen: Vec<Seen> = std::iter::repeat_with(|| Seen::Other)
        .take(inputs.len())
        .collect();
    let mut stats: Vec<Option<(Stat, bool)>> = vec![None; inputs.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .zip(seen.chunks_mut(chunk).zip(stats.chunks_mut(chunk)))
            .map(|(part, (seen_part, stats_part))| {
                scope.spawn(move || {
                    // One read buffer per thread, not per file.
                    let mut buf = vec![0u8; 256 << 10];
                    let outs = seen_part.iter_mut().zip(stats_part);
                    for (input, (seen, stat)) in part.iter().zip(outs) {
                        (*seen, *stat) = see(input, cache, &mut buf)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("hashing threads do not panic"))
    })?;
    let mut rehashed = 0;
    for ((input, one), stat) in inputs.iter().zip(&seen).zip(stats) {
        if let (Seen::File { digest, .. }, Some((stat, read))) = (one, stat) {
            stat_cache.record(&input.source, stat, *digest, read);
            rehashed += usize::from(read);
        }
    }
    Ok(SeenAll { seen, rehashed })
}

/// An input seen, and for a file its stat data and whether its content was read.
type Looked = (Seen, Option<(Stat, bool)>);

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

fn see(input: &InputFile, cache: &StatCache, buf: &mut [u8]) -> Result<Looked, CacheError> {
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
        let (digest, read) = match cache.lookup(&input.source, &stat) {
            Some(digest) => (digest, false),
            None => (hash_file(&input.source, buf).map_err(read_err)?, true),
        };
        let size = meta.len();
        (Seen::File { mode, digest, size }, Some((stat, read)))
    } else if kind.is_dir() {
        (Seen::Dir { mode }, None)
    } else if kind.is_symlink() {
        let target = std::fs::read_link(&input.source).map_err(read_err)?;
        let target = target.as_os_str().as_bytes().to_vec();
        (Seen::Symlink { mode, target }, None)
    } else {
        (Seen::Other, None)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::task::collect_inputs;

    /// The key's digest of the inputs on disk and the inputs archive's digest of what it sent
    /// are one encoding: equal for the same tree, so that a run can tell whether what it sent
    /// is what its key describes; and unequal once a file changed.
    #[test]
    fn the_keys_digest_is_the_one_the_inputs_archive_takes_of_what_it_sends() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        std::fs::create_dir_all(root.join("src/empty")).unwrap();
        std::fs::write(root.join("src/main.c"), "int main() { return 0; }\n").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("src/main.c", root.join("link")).unwrap();
        let inputs = collect_inputs(root, &[]).unwrap();
        let stats = tempfile::tempdir().unwrap();
        let mut stat_cache = StatCache::load(stats.path().join("stat"));
        let keyed = digest(&inputs, &mut stat_cache).unwrap().sha256;
        let sent = |inputs: &[InputFile]| {
            crate::backend::inputs::write_inputs(inputs, Vec::new())
                .unwrap()
                .1
                .tree
                .unwrap()
        };
        assert_eq!(sent(&inputs), keyed);
        std::fs::write(root.join("src/main.c"), "int main() { return 1; }\n").unwrap();
        assert_ne!(sent(&inputs), keyed);
    }
}
