//! What a snapshot holds, as the workspace would: each entry by its path in the workspace, its
//! kind, its permission bits, and its content's digest (files) or target (symlinks), and the
//! packs that hold the contents. Serialized as JSON with entries sorted by path, so that the
//! same tree always gives the same bytes, and so the same digest.

use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};

use crate::archive::TreeHasher;
use crate::cache::stat_cache::StatCache;
use crate::cache::tree::{Seen, see_all};
use crate::task::InputFile;

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path in the workspace.
    pub path: String,
    pub kind: Kind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// `sha256:<hex>` of a file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A file's size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// A symlink's target, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A pack: its digest and size as the registry stores it, and the contents it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    pub digest: String,
    pub size: u64,
    /// The bytes of the contents it holds, uncompressed.
    pub raw: u64,
    /// The content digests it holds, in the order it holds them.
    pub blobs: Vec<String>,
}

/// A snapshot's index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub entries: Vec<Entry>,
    pub packs: Vec<PackRef>,
}

impl Index {
    /// The canonical bytes of the index.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index always serializes")
    }

    /// The digest of the tree it describes, as the cache's key digests the same tree
    /// ([`crate::cache::tree`]), so that a run can say its inputs went as keyed.
    pub fn tree_digest(&self) -> [u8; 32] {
        let mut hasher = TreeHasher::new();
        for entry in &self.entries {
            let name = entry.path.as_bytes();
            match entry.kind {
                Kind::File => {
                    let mut content = [0u8; 32];
                    let hex = entry.digest.as_deref().unwrap_or_default();
                    let _ = hex::decode_to_slice(hex.trim_start_matches("sha256:"), &mut content);
                    hasher.file(name, entry.mode, &content);
                }
                Kind::Dir => hasher.dir(name, entry.mode),
                Kind::Symlink => hasher.symlink(
                    name,
                    entry.mode,
                    entry.target.as_deref().unwrap_or_default().as_bytes(),
                ),
            }
        }
        hasher.finish()
    }
}

/// Why the tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("the input {} is not a file, a directory or a symlink", .0.display())]
    Special(std::path::PathBuf),
    #[error("the input path {} is not UTF-8, which an index cannot hold", .0.display())]
    NotUtf8(std::path::PathBuf),
    #[error(transparent)]
    Digest(#[from] crate::cache::CacheError),
}

/// The entries of `inputs` (sorted by destination, as `collect_inputs` gives them), as the
/// cache's key sees them ([`see_all`]: contents hashed on every core, unchanged files known
/// from `stat_cache`).
pub fn scan(inputs: &[InputFile], stat_cache: &mut StatCache) -> Result<Vec<Entry>, ScanError> {
    let seen = see_all(inputs, stat_cache)?.seen;
    inputs
        .iter()
        .zip(seen)
        .map(|(input, seen)| {
            let utf8 = |bytes: &[u8], of: &std::path::Path| {
                std::str::from_utf8(bytes)
                    .map(str::to_string)
                    .map_err(|_| ScanError::NotUtf8(of.to_path_buf()))
            };
            let path = utf8(input.dest.as_os_str().as_bytes(), &input.dest)?;
            let (kind, mode, digest, size, target) = match seen {
                Seen::File { mode, digest, size } => {
                    let digest = format!("sha256:{}", hex::encode(digest));
                    (Kind::File, mode, Some(digest), size, None)
                }
                Seen::Dir { mode } => (Kind::Dir, mode, None, 0, None),
                Seen::Symlink { mode, target } => {
                    let target = utf8(&target, &input.source)?;
                    (Kind::Symlink, mode, None, 0, Some(target))
                }
                Seen::Other => return Err(ScanError::Special(input.source.clone())),
            };
            Ok(Entry {
                path,
                kind,
                mode,
                digest,
                size,
                target,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::collect_inputs;

    #[test]
    fn the_tree_digest_is_the_cache_keys() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::write(root.join("src/deep/a.rs"), "fn a() {}\n").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("run.sh", root.join("link")).unwrap();
        let inputs = collect_inputs(root, &[]).unwrap();
        let mut stat_cache = StatCache::load(std::path::PathBuf::new());
        let index = Index {
            entries: scan(&inputs, &mut stat_cache).unwrap(),
            packs: Vec::new(),
        };
        let keyed = crate::cache::tree::digest(&inputs, &mut stat_cache).unwrap();
        assert_eq!(index.tree_digest(), keyed.sha256);
    }
}
