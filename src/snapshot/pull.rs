//! A workspace built from a snapshot in the registry (a pod's side of inputs by content): the
//! index, then every pack it names, a few at a time, each written to a file as it arrives and
//! checked against its digest, then [`apply`]. The packs are removed afterwards; on any error
//! the workspace is left empty, so that the run can fall back to a whole copy into it.

use std::path::Path;

use futures::{StreamExt, TryStreamExt};

use super::apply::{Applied, ApplyError, Applying};
use super::host::pack_name;
use super::index::Index;
use super::registry::{Credentials, Repository, RepositoryError};

/// The exit status of `inputs-pull` that says the registry could not be reached or asked from
/// there (EX_TEMPFAIL): the run then copies the inputs whole. Any other failure stops the run.
pub const EXIT_UNREACHABLE: u8 = 75;

/// How many packs are pulled at once: enough to keep a link to the registry busy.
const IN_FLIGHT: usize = 8;
/// The largest pack held in memory while it is applied (packs of small files are at most
/// 4 MiB; a large file's pack goes to a file).
const IN_MEMORY: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("`{0}` is not a pinned snapshot (REGISTRY/REPOSITORY@sha256:…)")]
    BadReference(String),
    /// The registry could not be asked, or refused: the run falls back to a whole copy.
    #[error(transparent)]
    Unreachable(RepositoryError),
    #[error("the registry has no snapshot {0}")]
    NotFound(String),
    /// What the registry sent is not what the snapshot says: nothing was applied.
    #[error(transparent)]
    Refused(RepositoryError),
    /// The seed's index is not there or not one this binary reads (a pod seeded by another
    /// version): the run copies the inputs whole into the emptied workspace.
    #[error("cannot diff against the pod's seed: its index {} cannot be read ({why})", .path.display())]
    NoSeed {
        path: std::path::PathBuf,
        why: String,
    },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot use {}", .dir.display())]
    Packs {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    /// Whether the registry could not be reached or asked, or the seed cannot be diffed
    /// against: a reason to copy the inputs whole, where any other error is one the run stops
    /// on.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::NotFound(_) | Self::NoSeed { .. }
        )
    }
}

impl From<RepositoryError> for PullError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Tampered { .. } | RepositoryError::BadIndex { .. } => {
                Self::Refused(error)
            }
            RepositoryError::NoIndex(_) => Self::Refused(error),
            other => Self::Unreachable(other),
        }
    }
}

/// Where a pull lands, and what is there already.
#[derive(Debug, Clone, Copy)]
pub struct PullTo<'a> {
    /// The workspace: existing, and empty unless `onto` says what it holds.
    pub workspace: &'a Path,
    /// Where the packs are kept until they are applied (created, then removed).
    pub packs: &'a Path,
    /// The index of the seed snapshot the workspace holds (a warm pod's): only the difference
    /// is pulled and applied.
    pub onto: Option<&'a Path>,
    /// Where to keep the pulled snapshot's index, for a later pull onto it.
    pub keep_index: Option<&'a Path>,
}

/// Builds the workspace from the snapshot `reference` (`REGISTRY/REPOSITORY@sha256:…`) with
/// `credentials` (else Docker's). On any error the workspace is left empty (a seeded one too),
/// so that the run can fall back to a whole copy into it.
pub async fn pull(
    reference: &str,
    credentials: Option<Credentials>,
    to: PullTo<'_>,
) -> Result<Applied, PullError> {
    let pulled = pull_and_apply(reference, credentials, to).await;
    if pulled.is_err() {
        super::apply::empty(to.workspace);
    }
    pulled
}

/// Every pack of `index` into the empty `workspace`, each applied as soon as it has come (on a
/// thread of its own) while the next ones come: a pack small enough is held in memory, a
/// larger one (a large file's) is written to `packs` first.
async fn pull_all(
    repo: &Repository,
    index: &std::sync::Arc<Index>,
    packs: &Path,
    workspace: &Path,
) -> Result<Applied, PullError> {
    let (started, workspace_dir) = (index.clone(), workspace.to_path_buf());
    let applying = tokio::task::spawn_blocking(move || Applying::start(&started, &workspace_dir))
        .await
        .expect("an apply does not panic")?;
    let applying = std::sync::Arc::new(applying);
    // After a failure no pack is started, but those under way are waited for: an apply left
    // running on its thread would write into the workspace after it is emptied.
    let failed = std::sync::atomic::AtomicBool::new(false);
    let pulled: Vec<Result<(), PullError>> = futures::stream::iter(&index.packs)
        .map(|pack| {
            let applying = applying.clone();
            let failed = &failed;
            async move {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
                let pulled = pull_pack(repo, pack, packs, applying).await;
                if pulled.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                pulled
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    pulled.into_iter().collect::<Result<(), _>>()?;
    let applying = std::sync::Arc::into_inner(applying).expect("every pack's apply is done");
    let applied = tokio::task::spawn_blocking(move || applying.finish())
        .await
        .expect("an apply does not panic")?;
    Ok(applied)
}

/// One pack, fetched and applied.
async fn pull_pack(
    repo: &Repository,
    pack: &super::index::PackRef,
    packs: &Path,
    applying: std::sync::Arc<Applying>,
) -> Result<(), PullError> {
    let digest = pack.digest.clone();
    let applied = if pack.size <= IN_MEMORY {
        let bytes = repo.blob(&pack.digest, pack.size).await?;
        tokio::task::spawn_blocking(move || applying.pack(&digest, &bytes[..])).await
    } else {
        let file = packs.join(pack_name(&pack.digest));
        repo.blob_to_file(&pack.digest, pack.size, &file).await?;
        tokio::task::spawn_blocking(move || {
            let opened = std::fs::File::open(&file).map_err(|source| ApplyError::Write {
                path: file.clone(),
                source,
            })?;
            applying.pack(&digest, opened)?;
            let _ = std::fs::remove_file(&file);
            Ok(())
        })
        .await
    };
    applied.expect("an apply does not panic")?;
    Ok(())
}

async fn pull_and_apply(
    reference: &str,
    credentials: Option<Credentials>,
    to: PullTo<'_>,
) -> Result<Applied, PullError> {
    let (location, digest) = reference
        .split_once('@')
        .filter(|(_, digest)| digest.starts_with("sha256:"))
        .ok_or_else(|| PullError::BadReference(reference.to_string()))?;
    let began = std::time::Instant::now();
    // The seed's index is read while the snapshot's is fetched.
    let seed = to
        .onto
        .map(Path::to_path_buf)
        .map(|path| tokio::task::spawn_blocking(move || read_index(&path)));
    let repo = Repository::open_as(location, credentials).await?;
    let (index, _) = repo
        .index(digest)
        .await?
        .ok_or_else(|| PullError::NotFound(reference.to_string()))?;
    let index = std::sync::Arc::new(index);
    tracing::debug!(
        "index of {} entries fetched in {:?}",
        index.entries.len(),
        began.elapsed()
    );
    let seed = match seed {
        Some(reading) => Some(reading.await.expect("reading an index does not panic")?),
        None => None,
    };
    let packs = to.packs;
    let kept = |source| PullError::Packs {
        dir: packs.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(packs).map_err(kept)?;
    let pulled = async {
        match seed {
            Some(seed) => {
                // The difference is small: its packs are fetched, then applied onto the seed.
                let difference = super::onto::difference(&seed, &index);
                drop(seed);
                futures::stream::iter(&difference.write.packs)
                    .map(|pack| {
                        let file = packs.join(pack_name(&pack.digest));
                        let repo = &repo;
                        async move { repo.blob_to_file(&pack.digest, pack.size, &file).await }
                    })
                    .buffer_unordered(IN_FLIGHT)
                    .try_collect::<()>()
                    .await?;
                let (dir, workspace) = (packs.to_path_buf(), to.workspace.to_path_buf());
                let next = index.clone();
                let applied = tokio::task::spawn_blocking(move || {
                    let pack_file = |digest: &str| dir.join(pack_name(digest));
                    super::onto::apply_onto(&next, &difference, pack_file, &workspace)
                })
                .await
                .expect("an apply does not panic")?;
                Ok::<_, PullError>(applied)
            }
            None => pull_all(&repo, &index, packs, to.workspace).await,
        }
    };
    let result = pulled.await;
    let removed = std::fs::remove_dir_all(packs).map_err(kept);
    let applied = result?;
    removed?;
    if let Some(path) = to.keep_index {
        std::fs::write(path, index.to_bytes()).map_err(|source| PullError::Packs {
            dir: path.to_path_buf(),
            source,
        })?;
    }
    Ok(applied)
}

/// The index of the seed a workspace holds, as its pull kept it.
fn read_index(path: &Path) -> Result<Index, PullError> {
    let no_seed = |why: String| PullError::NoSeed {
        path: path.to_path_buf(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| no_seed(e.to_string()))?;
    Index::from_bytes(&bytes).map_err(|e| no_seed(e.to_string()))
}
