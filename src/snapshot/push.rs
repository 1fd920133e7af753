//! A snapshot's upload: the packs the registry does not hold (one `HEAD` for each new pack, a
//! few at a time; the OCI API has no batch call, and a pack already known to be there is not
//! asked about), the index, and a manifest that references the index and every pack the
//! snapshot uses, so that the registry's garbage collection never removes a pack a tagged
//! snapshot needs.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use oci_client::manifest::{OciDescriptor, OciImageManifest};

use super::delta::SeedIndexes;
use super::index::{self, Entry, Index, PackRef, ScanError};
use super::known::{KnownPacks, Records};
use super::pack::{self, Blob, PACK_TYPE, PackError, Planned};
use super::registry::{INDEX_TYPE, Repository, RepositoryError};
use crate::cache::stat_cache::StatCache;
use crate::task::InputFile;

/// The artifact type of a snapshot's manifest.
pub const SNAPSHOT_TYPE: &str = "application/vnd.buildr.inputs.v1";
/// OCI 1.1's empty config, for artifacts that are not images.
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// How many packs are made and sent at once: enough to keep a link busy, few enough that the
/// packs in memory stay within tens of MiB.
const IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Registry(#[from] RepositoryError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `REGISTRY/REPOSITORY@sha256:…`: the snapshot, pinned.
    pub reference: String,
    pub tag: String,
    /// The digest of the tree, as the cache's key digests it.
    pub tree: [u8; 32],
    pub entries: usize,
    pub packs: usize,
    /// The packs the registry lacked, and their bytes.
    pub packs_pushed: usize,
    pub bytes_pushed: u64,
    pub seconds: f64,
}

/// Pushes the snapshot of `entries` (as [`index::scan`] gives them, from `inputs`, sorted by
/// destination, as `collect_inputs` gives them) to `location`, tagged `tag` (by default `inputs-`
/// and the start of the index's digest). The packs it reuses are those `known` holds, and those
/// of the snapshot the tag names now. A tagged snapshot's index is kept in `seeds`, for runs
/// that take a pod seeded with it.
pub async fn push(
    location: &str,
    tag: Option<&str>,
    (inputs, entries): (&[InputFile], Vec<Entry>),
    known: &mut KnownPacks,
    seeds: Option<&SeedIndexes>,
) -> Result<Pushed, PushError> {
    let began = Instant::now();
    let repo = Repository::open(location).await?;
    if let Some(tag) = tag {
        repo.reference(tag)?;
        match repo.packs(tag).await {
            Ok(Some(previous)) => known.add(previous),
            Ok(None) => {}
            // A snapshot of an older format is replaced: its packs are asked about anew.
            Err(e @ (RepositoryError::NoIndex(_) | RepositoryError::BadIndex { .. })) => {
                tracing::debug!("the snapshot tagged {tag} is not reused: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::debug!("previous snapshot read at {:?}", began.elapsed());
    let planned = pack::plan(&entries, inputs, known.take());
    let sent: Vec<(PackRef, Option<u64>)> = futures::stream::iter(planned)
        .map(|planned| async {
            match planned {
                Planned::Known(pack) => Ok((pack, None)),
                Planned::New(blobs) => send_pack(&repo, blobs).await,
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let packs_pushed = sent.iter().filter(|(_, pushed)| pushed.is_some()).count();
    let bytes_pushed = sent.iter().filter_map(|(_, pushed)| *pushed).sum();
    let index = Index {
        entries,
        packs: sent.into_iter().map(|(pack, _)| pack).collect(),
    };
    tracing::debug!("packs sent at {:?}", began.elapsed());
    let index_bytes = index.to_bytes();
    let index_digest = pack::digest_of(&index_bytes);
    let index_size = index_bytes.len() as u64;
    let config_digest = pack::digest_of(EMPTY_CONFIG);
    let descriptor = |media_type: &str, digest: &str, size: u64| OciDescriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    };
    let layers = std::iter::once(descriptor(INDEX_TYPE, &index_digest, index_size))
        .chain(
            index
                .packs
                .iter()
                .map(|pack| descriptor(PACK_TYPE, &pack.digest, pack.size)),
        )
        .collect();
    let manifest = OciImageManifest {
        media_type: Some(MANIFEST_TYPE.to_string()),
        artifact_type: Some(SNAPSHOT_TYPE.to_string()),
        config: descriptor(EMPTY_CONFIG_TYPE, &config_digest, EMPTY_CONFIG.len() as u64),
        layers,
        ..OciImageManifest::default()
    };
    let body = serde_json::to_vec(&manifest).expect("a manifest always serializes");
    let manifest_digest = pack::digest_of(&body);
    if let (Some(seeds), Some(tag)) = (seeds, tag) {
        seeds.keep_tagged(&format!("{location}:{tag}"), &manifest_digest, &index_bytes);
    }
    repo.put_missing(&index_digest, index_bytes).await?;
    tracing::debug!("index sent at {:?}", began.elapsed());
    repo.put_missing(&config_digest, EMPTY_CONFIG.to_vec())
        .await?;
    let tag = match tag {
        Some(tag) => tag.to_string(),
        None => format!("inputs-{}", &index_digest["sha256:".len()..][..16]),
    };
    repo.put_manifest(&tag, body, MANIFEST_TYPE).await?;
    tracing::debug!("manifest sent at {:?}", began.elapsed());
    known.replace(index.packs.clone());
    Ok(Pushed {
        reference: format!("{location}@{manifest_digest}"),
        tag,
        tree: index.tree_digest(),
        entries: index.entries.len(),
        packs: index.packs.len(),
        packs_pushed,
        bytes_pushed,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// [`push`] with this machine's `records`, loaded (and saved by the push): a file the stat cache knows is
/// not read again, and the packs last pushed to `location` are not asked about. Without
/// records, every file is read and every pack asked about.
pub async fn push_recorded(
    location: &str,
    tag: Option<&str>,
    inputs: &[InputFile],
    records: Option<&Records>,
) -> Result<Pushed, PushError> {
    let entries = scan_recorded(inputs, records)?;
    push_scanned(location, tag, (inputs, entries), records).await
}

/// The entries of `inputs`, the stat cache of `records` used and saved ([`index::scan`]).
pub fn scan_recorded(
    inputs: &[InputFile],
    records: Option<&Records>,
) -> Result<Vec<Entry>, ScanError> {
    let file = records.map(|records| records.stat_cache.clone());
    let began = Instant::now();
    let stat_cache = StatCache::load(file.unwrap_or_default());
    tracing::debug!("the stat cache loaded in {:?}", began.elapsed());
    index::scan_and_save(inputs, stat_cache)
}

/// [`push`] of a tree scanned already, with this machine's `records` of the packs known to be
/// there and of the seeds' indexes.
pub async fn push_scanned(
    location: &str,
    tag: Option<&str>,
    scanned: (&[InputFile], Vec<Entry>),
    records: Option<&Records>,
) -> Result<Pushed, PushError> {
    let mut known = records
        .map(|records| KnownPacks::load(&records.cache_dir, location))
        .unwrap_or_default();
    let seeds = records.map(|records| SeedIndexes::in_cache(&records.cache_dir));
    push(location, tag, scanned, &mut known, seeds.as_ref()).await
}

/// Makes the pack of `blobs` (in a temporary file: a pack is never held in memory) and sends
/// it unless the registry has it: its reference, and its size when it was sent.
async fn send_pack(
    repo: &Repository,
    blobs: Vec<Blob>,
) -> Result<(PackRef, Option<u64>), PushError> {
    let held = blobs.iter().map(|blob| blob.digest).collect();
    let raw = blobs.iter().map(|blob| blob.size).sum();
    let built = tokio::task::spawn_blocking(move || {
        let file = tempfile::tempfile().map_err(PackError::Write)?;
        let built = pack::build(&blobs, std::io::BufWriter::new(file))?;
        let file = built
            .out
            .into_inner()
            .map_err(|e| PackError::Write(e.into_error()))?;
        Ok::<_, PushError>((file, built.digest, built.size))
    })
    .await
    .expect("making a pack does not panic")?;
    let (file, digest, size) = built;
    let pushed = repo.put_missing_file(&digest, file, size).await?;
    let pack = PackRef {
        digest,
        size,
        raw,
        blobs: held,
    };
    Ok((pack, pushed.then_some(size)))
}
