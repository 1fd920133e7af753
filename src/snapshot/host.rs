//! The host's side of inputs sent by content (the ssh backend): the snapshot arrives in the
//! private run directory as its index and the packs the host lacked; the packs it reuses are
//! read from the user's pack cache. A task of the same user could change a cached file: the
//! apply checks every content as it writes it, so a changed pack fails the run's inputs (which
//! then go whole) and is removed from the cache. The packs that came are kept for the next run.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::apply::{Applied, ApplyError, apply};
use super::index::Index;

/// The file of the index in the snapshot's directory, and the directory of its packs.
pub const INDEX_FILE: &str = "index";
pub const PACKS_DIR: &str = "packs";
/// The most an index may weigh (100,000 entries take about 9 MB).
const MAX_INDEX: u64 = 256 << 20;
/// How long a cached pack no run used is kept.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read the snapshot's index {}", .path.display())]
    ReadIndex {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the snapshot's index is damaged: {0}")]
    BadIndex(#[source] super::index::BadIndex),
    #[error("the pack {digest} was neither sent nor in the cache {}", .cache.display())]
    NotCached { digest: String, cache: PathBuf },
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// The bytes of a file that came from the other side (an index, a difference), refused past
/// what an index may weigh.
pub(super) fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_INDEX)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The file name of a pack: its hex digest.
pub fn pack_name(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Builds the workspace `to` (existing, empty) from the snapshot in `dir`, the packs not sent
/// taken from `cache`; then keeps the sent packs in `cache`. On an error the workspace is left
/// empty, so that the run can fall back to a whole copy into it.
pub fn apply_sent(dir: &Path, cache: Option<&Path>, to: &Path) -> Result<Applied, HostError> {
    let index_path = dir.join(INDEX_FILE);
    let read = |source| HostError::ReadIndex {
        path: index_path.clone(),
        source,
    };
    let bytes = read_bounded(&index_path).map_err(read)?;
    let index = Index::from_bytes(&bytes).map_err(HostError::BadIndex)?;
    let packs = dir.join(PACKS_DIR);
    let sent = |digest: &str| packs.join(pack_name(digest));
    let cached = |digest: &str| cache.map(|cache| cache.join(pack_name(digest)));
    for pack in &index.packs {
        if !sent(&pack.digest).is_file() && !cached(&pack.digest).is_some_and(|c| c.is_file()) {
            return Err(HostError::NotCached {
                digest: pack.digest.clone(),
                cache: cache.map(Path::to_path_buf).unwrap_or_default(),
            });
        }
    }
    let pack_file = |digest: &str| match cached(digest) {
        Some(cached) if !sent(digest).is_file() => cached,
        _ => sent(digest),
    };
    let applied = match apply(&index, pack_file, to) {
        Ok(applied) => applied,
        Err(error) => {
            // A cached pack that is not what its name says is of no use to any run.
            if let ApplyError::BadPack { digest, .. } = &error
                && !sent(digest).is_file()
                && let Some(cached) = cached(digest)
            {
                let _ = fs::remove_file(cached);
            }
            return Err(error.into());
        }
    };
    // Checked by the apply: kept for the next run (best effort: a full cache only costs a copy).
    if let Some(cache) = cache {
        for pack in &index.packs {
            let name = pack_name(&pack.digest);
            if sent(&pack.digest).is_file() {
                let temp = cache.join(format!(".{name}.incoming"));
                let _ = fs::copy(sent(&pack.digest), &temp)
                    .and_then(|_| fs::rename(&temp, cache.join(name)));
            }
        }
        keep_used(cache, &index);
    }
    Ok(applied)
}

/// Marks the packs `index` uses as just used, and removes from `cache` those no run has used
/// for [`UNUSED_FOR`]: the cache serves every repository the user runs, so what one snapshot
/// does not use may be another's.
fn keep_used(cache: &Path, index: &Index) {
    let now = std::time::SystemTime::now();
    for pack in &index.packs {
        let path = cache.join(pack_name(&pack.digest));
        let _ = fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(now));
    }
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let unused = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > UNUSED_FOR);
        if unused {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::apply::tests::{snapshot_of, tree};

    /// A run directory holding the snapshot of a tree, every pack sent.
    fn sent() -> (tempfile::TempDir, Index) {
        let (repo, dir) = (tree(), tempfile::tempdir().unwrap());
        fs::create_dir(dir.path().join(PACKS_DIR)).unwrap();
        let index = snapshot_of(repo.path(), &dir.path().join(PACKS_DIR));
        fs::write(dir.path().join(INDEX_FILE), index.to_bytes()).unwrap();
        (dir, index)
    }

    #[test]
    fn sent_packs_are_kept_and_serve_the_next_run_and_a_damaged_one_is_dropped() {
        let cache = tempfile::tempdir().unwrap();
        let (first, index) = sent();
        let to = tempfile::tempdir().unwrap();
        apply_sent(first.path(), Some(cache.path()), to.path()).unwrap();
        let kept = cache.path().join(pack_name(&index.packs[0].digest));
        assert!(kept.is_file());

        // The next run is sent the index alone.
        let (second, _) = sent();
        fs::remove_dir_all(second.path().join(PACKS_DIR)).unwrap();
        let to = tempfile::tempdir().unwrap();
        let applied = apply_sent(second.path(), Some(cache.path()), to.path()).unwrap();
        assert_eq!(applied.files, 5);
        assert!(to.path().join("src/deep/er/b.rs").is_file());

        // A cached pack changed: refused, the workspace left empty, the pack dropped.
        fs::write(&kept, "not the pack it was").unwrap();
        let (third, _) = sent();
        fs::remove_dir_all(third.path().join(PACKS_DIR)).unwrap();
        let to = tempfile::tempdir().unwrap();
        let error = apply_sent(third.path(), Some(cache.path()), to.path()).unwrap_err();
        assert!(error.to_string().contains("tampered"), "{error}");
        assert_eq!(fs::read_dir(to.path()).unwrap().count(), 0);
        assert!(!kept.exists());
    }

    #[test]
    fn packs_unused_for_a_week_leave_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let old = cache.path().join("0".repeat(64));
        fs::write(&old, "a pack nobody used").unwrap();
        let week_ago = std::time::SystemTime::now() - UNUSED_FOR - UNUSED_FOR / 7;
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(week_ago)
            .unwrap();
        let (dir, index) = sent();
        apply_sent(
            dir.path(),
            Some(cache.path()),
            tempfile::tempdir().unwrap().path(),
        )
        .unwrap();
        assert!(!old.exists());
        assert!(
            cache
                .path()
                .join(pack_name(&index.packs[0].digest))
                .is_file()
        );
    }
}
