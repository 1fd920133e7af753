//! The packs this machine knows to be in a repository: those of the last snapshot it pushed
//! there, kept in the user's cache directory (one file per repository), so that the next push
//! reuses them without asking the registry about each.

use std::path::PathBuf;

use super::index::PackRef;

/// This machine's records that let inputs go by content: the stat cache of the repository the
/// inputs come from (a file whose size, time and inode did not change is not read again) and
/// the cache directory the known packs are kept in.
#[derive(Debug, Clone)]
pub struct Records {
    pub stat_cache: PathBuf,
    pub cache_dir: PathBuf,
}

impl Records {
    /// Those of `repo`, in the user's cache directory; none when it has none.
    pub fn of(repo: &std::path::Path) -> Option<Self> {
        let store = crate::cache::action::store().ok()?;
        let repo = std::path::absolute(repo).ok()?;
        Some(Self {
            stat_cache: store.stat_cache_file(&repo),
            cache_dir: store.dir().to_path_buf(),
        })
    }
}

/// The packs known to be in one repository, and the file they are kept in.
#[derive(Debug, Default)]
pub struct KnownPacks {
    file: Option<PathBuf>,
    packs: Vec<PackRef>,
}

impl KnownPacks {
    /// Those recorded for `location` under `cache_dir`; none when nothing was, or the record
    /// cannot be read (then the registry is asked about every pack).
    pub fn load(cache_dir: &std::path::Path, location: &str) -> Self {
        let id = crate::archive::sha256_hex(location.as_bytes());
        let file = cache_dir
            .join("inputs")
            .join(format!("{}.packs", &id[..32]));
        let packs = std::fs::read(&file)
            .ok()
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_default();
        Self {
            file: Some(file),
            packs,
        }
    }

    pub fn packs(&self) -> &[PackRef] {
        &self.packs
    }

    /// Takes the packs out, for a push to plan with (it gives those of its snapshot back
    /// through [`Self::replace`]).
    pub fn take(&mut self) -> Vec<PackRef> {
        std::mem::take(&mut self.packs)
    }

    /// Adds `packs`, seen in the registry.
    pub fn add(&mut self, packs: Vec<PackRef>) {
        for pack in packs {
            if !self.packs.iter().any(|known| known.digest == pack.digest) {
                self.packs.push(pack);
            }
        }
    }

    /// Keeps only `packs` (those of the snapshot just pushed, which its manifest keeps in the
    /// registry), and records them.
    pub fn replace(&mut self, packs: Vec<PackRef>) {
        self.packs = packs;
        let Some(file) = &self.file else { return };
        let saved = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let temp = file.with_extension("tmp");
                std::fs::write(&temp, postcard::to_stdvec(&self.packs).unwrap_or_default())?;
                std::fs::rename(temp, file)
            });
        if let Err(e) = saved {
            tracing::debug!("cannot record the known packs in {}: {e}", file.display());
        }
    }
}
