//! A warm pod's workspace brought from its seed to the run's tree by a difference that travels
//! in the run's own stream (exec), with the contents it writes in packs of its own: neither side
//! sends or fetches a whole index, and the registry is not asked for anything.
//!
//! The client holds the seed's index (kept when this machine pushed the seed's tag, else read
//! from the registry once and kept, see [`SeedIndexes`]) and its own scan of the tree, and sends
//! [`Delta`]: what to remove, write and re-mode, the digest of the seed's index it was made
//! against, and the digest of the tree it makes. The pod checks that its seed is that one, makes
//! the next index from the seed's and the difference, checks that it is the client's tree, then
//! applies the difference with every check of [`super::onto::apply_onto`]. A seed that is not
//! the one the client diffed against, or a result that is not the client's tree, applies
//! nothing: the run then copies the inputs whole.

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use super::apply::{Applied, ApplyError, empty};
use super::host::{PACKS_DIR, pack_name, read_bounded};
use super::index::{Entry, Index, PackRef};
use super::onto::{Difference, apply_onto, difference};
use super::registry::{Repository, RepositoryError};
use sha2::{Digest, Sha256};

/// The file of the difference in the directory the run's stream is unpacked into (its packs are
/// under [`PACKS_DIR`]).
pub const DELTA_FILE: &str = "delta";
/// How many seeds' indexes this machine keeps (about 9 MB each for 100,000 files).
const KEPT_SEEDS: usize = 4;

/// What turns a seed's tree into the run's, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The SHA-256 of the seed index's bytes (its blob's digest in the registry).
    pub seed: [u8; 32],
    /// The digest of the tree it makes, as the cache's key digests it.
    pub tree: [u8; 32],
    /// Paths to remove (a directory with what it holds), outermost first.
    pub remove: Vec<String>,
    /// The entries to write, in the tree's order.
    pub write: Vec<Entry>,
    /// Entries whose mode alone changed.
    pub modes: Vec<(String, u32)>,
    /// The packs that hold the written contents: sent alongside, under [`PACKS_DIR`].
    pub packs: Vec<PackRef>,
}

impl Delta {
    /// The difference from the seed `seed` (whose bytes have the digest `seed_digest`) to the
    /// tree `entries` (in the order the scan gives), without packs yet.
    pub fn between(seed: &Index, seed_digest: [u8; 32], entries: Vec<Entry>) -> Self {
        let next = Index {
            entries,
            packs: Vec::new(),
        };
        let Difference {
            remove,
            write,
            modes,
        } = difference(seed, &next);
        Self {
            seed: seed_digest,
            tree: next.tree_digest(),
            remove,
            write: write.entries,
            modes,
            packs: Vec::new(),
        }
    }

    /// The index of the tree this makes from `seed`: the seed's entries but those removed (and
    /// what lies under them), with their new modes, merged in order with the written ones;
    /// and every pack of both.
    pub fn next(&self, seed: Index) -> Index {
        let removed: HashSet<&str> = self.remove.iter().map(String::as_str).collect();
        let gone = |path: &str| {
            removed.contains(path)
                || path
                    .rmatch_indices('/')
                    .any(|(slash, _)| removed.contains(&path[..slash]))
        };
        let modes: HashMap<&str, u32> = self.modes.iter().map(|(p, m)| (p.as_str(), *m)).collect();
        let kept = seed.entries.into_iter().filter(|e| !gone(&e.path));
        let kept = kept.map(|mut entry| {
            if let Some(mode) = modes.get(entry.path.as_str()) {
                entry.mode = *mode;
            }
            entry
        });
        // Both are in the tree's order (paths compared component by component, as the inputs
        // are sorted): a merge keeps it, where a sort of 100,000 paths would cost a tenth of
        // a second.
        let mut entries = Vec::with_capacity(kept.size_hint().0 + self.write.len());
        let mut written = self.write.iter().cloned().peekable();
        for entry in kept {
            while let Some(next) = written.next_if(|w| in_order(w, &entry) == Ordering::Less) {
                entries.push(next);
            }
            entries.push(entry);
        }
        entries.extend(written);
        let mut packs = seed.packs;
        packs.extend(self.packs.iter().cloned());
        Index { entries, packs }
    }
}

fn in_order(a: &Entry, b: &Entry) -> Ordering {
    Path::new(&a.path).cmp(Path::new(&b.path))
}

/// Why a difference was not applied; the workspace is left empty.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the difference sent is damaged: {0}")]
    Damaged(#[source] postcard::Error),
    /// The pod's seed is not the one the client diffed against, cannot be read, or does not
    /// make the client's tree with the difference: the run copies the inputs whole.
    #[error("cannot diff against the pod's seed: {0}")]
    OtherSeed(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl DeltaError {
    /// Whether the run may copy the inputs whole instead (the seed is not the expected one),
    /// where any other error stops it.
    pub fn is_other_seed(&self) -> bool {
        matches!(self, Self::OtherSeed(_))
    }
}

/// Brings the workspace `to`, which holds the seed whose index is `seed_index`, to the tree of
/// the difference in `dir` (as the run's stream unpacked it). On any error `to` is left empty,
/// so that the run can copy the inputs whole into it.
pub fn apply_sent(dir: &Path, seed_index: &Path, to: &Path) -> Result<Applied, DeltaError> {
    let applied = apply_checked(dir, seed_index, to);
    if applied.is_err() {
        empty(to);
    }
    applied
}

fn apply_checked(dir: &Path, seed_index: &Path, to: &Path) -> Result<Applied, DeltaError> {
    let began = std::time::Instant::now();
    let delta_file = dir.join(DELTA_FILE);
    let bytes = read_bounded(&delta_file).map_err(|source| DeltaError::Read {
        path: delta_file,
        source,
    })?;
    let delta: Delta = postcard::from_bytes(&bytes).map_err(DeltaError::Damaged)?;
    let other =
        |why: String| DeltaError::OtherSeed(format!("its index {} {why}", seed_index.display()));
    let seed = read_bounded(seed_index).map_err(|e| other(format!("cannot be read ({e})")))?;
    if sha256_of(&seed) != delta.seed {
        return Err(other(
            "has another digest than the one diffed against".to_string(),
        ));
    }
    let seed = Index::from_bytes(&seed).map_err(|e| other(format!("cannot be read ({e})")))?;
    let next = delta.next(seed);
    if next.tree_digest() != delta.tree {
        return Err(other(
            "and the difference do not make the tree sent".to_string(),
        ));
    }
    tracing::debug!(
        "next index of {} entries made in {:?}",
        next.entries.len(),
        began.elapsed()
    );
    let Delta {
        remove,
        write,
        modes,
        packs,
        ..
    } = delta;
    let difference = Difference {
        remove,
        write: Index {
            entries: write,
            packs,
        },
        modes,
    };
    let packs_dir = dir.join(PACKS_DIR);
    let pack_file = |digest: &str| packs_dir.join(pack_name(digest));
    Ok(apply_onto(&next, &difference, pack_file, to)?)
}

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The indexes of the seeds this machine knows, by their snapshot's manifest digest, in the
/// user's cache directory: a pool's seed is usually the tag this machine (or CI) pushed, and a
/// run that takes a seeded pod diffs against its index.
#[derive(Debug, Clone)]
pub struct SeedIndexes {
    dir: PathBuf,
    /// Which snapshot each tag this machine pushed named then, one file per tag.
    tags: PathBuf,
}

/// A seed's index, and the SHA-256 of its bytes.
pub struct SeedIndex {
    pub index: Index,
    pub digest: [u8; 32],
}

impl SeedIndexes {
    pub fn in_cache(cache_dir: &Path) -> Self {
        Self {
            dir: cache_dir.join("inputs").join("seeds"),
            tags: cache_dir.join("inputs").join("seed-tags"),
        }
    }

    fn file(&self, manifest: &str) -> PathBuf {
        self.dir.join(pack_name(manifest))
    }

    fn tag_file(&self, seed: &str) -> PathBuf {
        let id = crate::archive::sha256_hex(seed.as_bytes());
        self.tags.join(&id[..32])
    }

    /// [`Self::keep`], and remembers that the seed `seed` (`REGISTRY/REPOSITORY:TAG`) names
    /// that snapshot now, for [`Self::preload`].
    pub fn keep_tagged(&self, seed: &str, manifest: &str, bytes: &[u8]) {
        self.keep(manifest, bytes);
        let file = self.tag_file(seed);
        let temp = file.with_extension("incoming");
        let remembered = fs::create_dir_all(&self.tags)
            .and_then(|()| fs::write(&temp, manifest))
            .and_then(|()| fs::rename(&temp, &file));
        if let Err(e) = remembered {
            tracing::debug!("cannot remember the tag {seed} in {}: {e}", file.display());
        }
    }

    /// Starts reading, on a thread of its own, the index of the snapshot the seed `seed`
    /// (`REGISTRY/REPOSITORY:TAG`) named when this machine last pushed it: what a pod of a pool
    /// seeded with the tag most likely holds. None when this machine does not know the tag.
    pub fn preload(&self, seed: &str) -> Option<PreloadedSeed> {
        let manifest = fs::read_to_string(self.tag_file(seed)).ok()?;
        let file = self.file(&manifest);
        let reading = tokio::task::spawn_blocking(move || {
            let bytes = fs::read(file).ok()?;
            SeedIndex::of(bytes).ok()
        });
        Some(PreloadedSeed {
            manifest,
            reading: std::sync::Mutex::new(Some(reading)),
        })
    }

    /// Keeps `bytes`, the index of the snapshot whose manifest is `manifest`, and forgets all
    /// but the most recent few (best effort: a seed not kept is read from the registry).
    pub fn keep(&self, manifest: &str, bytes: &[u8]) {
        let temp = self.dir.join(format!(".{}.incoming", pack_name(manifest)));
        let kept = fs::create_dir_all(&self.dir)
            .and_then(|()| fs::write(&temp, bytes))
            .and_then(|()| fs::rename(&temp, self.file(manifest)));
        if let Err(e) = kept {
            tracing::debug!(
                "cannot keep the seed's index in {}: {e}",
                self.dir.display()
            );
            return;
        }
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        kept.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, old) in kept.iter().skip(KEPT_SEEDS) {
            let _ = fs::remove_file(old);
        }
    }

    /// The index of the seed `pinned` (`REGISTRY/REPOSITORY@sha256:…`): the one kept here,
    /// else the registry's (then kept).
    pub async fn get(
        &self,
        pinned: &str,
        preloaded: Option<&PreloadedSeed>,
    ) -> Result<SeedIndex, RepositoryError> {
        let (location, manifest) = pinned
            .split_once('@')
            .ok_or_else(|| RepositoryError::NoIndex(pinned.to_string()))?;
        if let Some((reading, of)) = preloaded.and_then(PreloadedSeed::take) {
            // Another seed's index is let go of before this one is read: two at once would
            // hold twice the memory (a tag moved since the pod was seeded).
            if let (Ok(Some(seed_index)), true) = (reading.await, of == manifest) {
                return Ok(seed_index);
            }
        }
        let file = self.file(manifest);
        let read = tokio::task::spawn_blocking(move || fs::read(file)).await;
        let bytes = match read.expect("reading a file does not panic") {
            Ok(bytes) => bytes,
            Err(_) => {
                let repo = Repository::open(location).await?;
                let (bytes, _) = repo
                    .index_bytes(manifest)
                    .await?
                    .ok_or_else(|| RepositoryError::NoIndex(pinned.to_string()))?;
                self.keep(manifest, &bytes);
                bytes
            }
        };
        tokio::task::spawn_blocking(move || SeedIndex::of(bytes))
            .await
            .expect("reading an index does not panic")
            .map_err(|e| RepositoryError::BadIndex {
                snapshot: pinned.to_string(),
                reason: e.to_string(),
            })
    }
}

impl SeedIndex {
    /// The index whose bytes are `bytes`.
    fn of(bytes: Vec<u8>) -> Result<Self, super::index::BadIndex> {
        let digest = sha256_of(&bytes);
        Index::from_bytes(&bytes).map(|index| Self { index, digest })
    }
}

/// A seed's index being read before the run takes its pod ([`SeedIndexes::preload`]).
pub struct PreloadedSeed {
    /// The digest of the snapshot's manifest.
    manifest: String,
    reading: std::sync::Mutex<Option<tokio::task::JoinHandle<Option<SeedIndex>>>>,
}

impl std::fmt::Debug for PreloadedSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreloadedSeed({})", self.manifest)
    }
}

impl PreloadedSeed {
    /// The read under way (once), and the digest of the manifest of the snapshot it is of.
    fn take(&self) -> Option<(tokio::task::JoinHandle<Option<SeedIndex>>, &str)> {
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        Some((reading.take()?, self.manifest.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::index::Kind;

    const SEED: &str = "registry.test/team/inputs:main";

    /// The bytes of an index of `dirs` directories, and the manifest digest it is kept under.
    fn index_of(dirs: &[&str]) -> (Vec<u8>, String) {
        let entries = dirs
            .iter()
            .map(|dir| Entry {
                path: dir.to_string(),
                kind: Kind::Dir,
                mode: 0o755,
                digest: None,
                size: 0,
                target: None,
            })
            .collect();
        let bytes = Index {
            entries,
            packs: Vec::new(),
        }
        .to_bytes();
        let manifest = format!("sha256:{}", crate::archive::sha256_hex(&bytes));
        (bytes, manifest)
    }

    fn paths(seed: &SeedIndex) -> Vec<&str> {
        seed.index.entries.iter().map(|e| e.path.as_str()).collect()
    }

    /// A tag this machine pushed is read before the pod is taken, and used when the pod holds
    /// that snapshot; a pod that holds another (the tag moved since it was seeded) gets its own.
    #[tokio::test]
    async fn the_seed_a_tag_named_is_read_ahead_and_used_only_for_a_pod_that_holds_it() {
        let cache = tempfile::tempdir().unwrap();
        let seeds = SeedIndexes::in_cache(cache.path());
        let (old, old_manifest) = index_of(&["old"]);
        let (new, new_manifest) = index_of(&["new"]);
        seeds.keep_tagged(SEED, &old_manifest, &old);
        seeds.keep_tagged(SEED, &new_manifest, &new);

        let preloaded = seeds.preload(SEED).expect("the tag was pushed from here");
        let pinned = format!("registry.test/team/inputs@{new_manifest}");
        let got = seeds.get(&pinned, Some(&preloaded)).await.unwrap();
        assert_eq!(paths(&got), ["new"]);
        assert_eq!(got.digest, sha256_of(&new));

        let preloaded = seeds.preload(SEED).unwrap();
        let pinned = format!("registry.test/team/inputs@{old_manifest}");
        let got = seeds.get(&pinned, Some(&preloaded)).await.unwrap();
        assert_eq!(paths(&got), ["old"], "the pod's own seed, not the tag's");

        assert!(seeds.preload("registry.test/team/inputs:other").is_none());
    }
}
