//! Inputs sent by content to a host that keeps packs (the ssh backend): the tree's index and
//! only the packs the host lacks travel, in one tar stream into the run directory; the host's
//! binary then builds the workspace from them and its cached packs ([`crate::snapshot::host`]).
//! Which packs the host has is what its cache lists now, of those this machine knows the
//! contents of (the packs it sent there before, recorded per host).

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::PathBuf;

use super::executor_command::quote;
use super::upload::{self, Destination, Layout, RemoteCommand, UploadError};
use crate::cache::stat_cache::StatCache;
use crate::snapshot::KnownPacks;
use crate::snapshot::host::{INDEX_FILE, PACKS_DIR, pack_name};
use crate::snapshot::index::{Entry, Index, PackRef, ScanError, scan_and_save};
use crate::snapshot::pack::{self, PackError, Planned};
use crate::task::InputFile;

/// What the inputs sent by content are called in errors.
const SNAPSHOT: &str = "the inputs by content";

/// The host's pack cache, as its probe found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPacks {
    /// The private directory the packs are kept in.
    pub dir: String,
    /// The packs in it (hex digests).
    pub present: HashSet<String>,
}

/// Where the inputs go on the other side.
#[derive(Clone, Copy)]
pub struct There<'a> {
    pub layout: &'a Layout,
    /// Where the index and the packs are unpacked, in the private run directory.
    pub snapshot_dir: &'a str,
    pub packs: &'a HostPacks,
    /// Named in errors.
    pub to: &'a Destination,
}

/// What a send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The digest of the tree sent, as the cache's key digests it.
    pub tree: [u8; 32],
    pub packs: usize,
    pub packs_sent: usize,
    pub bytes_sent: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ByContentError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Packing(#[from] PackingError),
    #[error(transparent)]
    Upload(#[from] UploadError<E>),
}

/// Sends `inputs` by content into `snapshot_dir` on the other side, whose binary then builds
/// the workspace; `known` says which packs were sent to this host before, and learns the
/// packs of this snapshot.
pub async fn send<R: RemoteCommand>(
    remote: &R,
    there: There<'_>,
    inputs: &[InputFile],
    stat_cache_file: Option<PathBuf>,
    known: &mut KnownPacks,
) -> Result<Sent, ByContentError<R::Error>> {
    let There {
        layout,
        snapshot_dir,
        packs: host,
        to,
    } = there;
    let there: Vec<PackRef> = known
        .packs()
        .iter()
        .filter(|pack| host.present.contains(pack_name(&pack.digest)))
        .cloned()
        .collect();
    let inputs = inputs.to_vec();
    let prepared = tokio::task::spawn_blocking(move || prepare(&inputs, stat_cache_file, there))
        .await
        .expect("making the packs does not panic")?;
    let sent = Sent {
        tree: prepared.index.tree_digest(),
        packs: prepared.index.packs.len(),
        packs_sent: prepared.made.new.len(),
        bytes_sent: prepared.made.new.iter().map(|(_, size)| size).sum(),
    };
    let (dir, workspace, cache) = (
        quote(snapshot_dir),
        quote(&layout.workspace),
        quote(&host.dir),
    );
    let script = format!(
        "{}umask 077; mkdir -p {dir} && tar -xf - -C {dir} && \
         exec {binary} inputs-apply --snapshot {dir} --cache {cache} --to {workspace}",
        upload::wait_for_binary(layout),
        binary = quote(&layout.binary),
    );
    let packs = prepared.index.packs.clone();
    remote
        .run(script, move |stdin| {
            write_stream(stdin, (INDEX_FILE, &prepared.index_bytes), &prepared.made)
        })
        .await
        .map_err(|source| UploadError::Failed {
            what: SNAPSHOT,
            to: to.clone(),
            source,
        })?;
    known.replace(packs);
    Ok(sent)
}

/// The index, and the new packs made in a local temporary directory.
struct Prepared {
    index: Index,
    index_bytes: Vec<u8>,
    made: MadePacks,
}

fn prepare<E: std::error::Error + 'static>(
    inputs: &[InputFile],
    stat_cache_file: Option<PathBuf>,
    there: Vec<PackRef>,
) -> Result<Prepared, ByContentError<E>> {
    let stat_cache = StatCache::load(stat_cache_file.unwrap_or_default());
    let entries = scan_and_save(inputs, stat_cache)?;
    let (packs, made) = make_packs(&entries, inputs, there)?;
    let index = Index { entries, packs };
    Ok(Prepared {
        index_bytes: index.to_bytes(),
        index,
        made,
    })
}

/// New packs, made in a local temporary directory to travel in a stream ([`write_stream`]).
pub struct MadePacks {
    /// Each new pack's file name (hex digest) and size, in `dir`.
    pub new: Vec<(String, u64)>,
    dir: tempfile::TempDir,
}

/// Why packs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PackingError {
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("cannot make the packs in a local temporary directory")]
    Local(#[from] io::Error),
}

/// The packs of `entries` (read from `inputs`, in the same order): those of `there` the plan
/// reuses ([`pack::plan`]), and new ones made for the rest.
pub fn make_packs(
    entries: &[Entry],
    inputs: &[InputFile],
    there: Vec<PackRef>,
) -> Result<(Vec<PackRef>, MadePacks), PackingError> {
    let dir = tempfile::Builder::new().prefix("buildr-packs-").tempdir()?;
    let mut packs = Vec::new();
    let mut new = Vec::new();
    for planned in pack::plan(entries, inputs, there) {
        match planned {
            Planned::Known(pack) => packs.push(pack),
            Planned::New(blobs) => {
                let making = dir.path().join("pack.incoming");
                let file = std::fs::File::create(&making)?;
                let built = pack::build(&blobs, std::io::BufWriter::new(file))?;
                let name = pack_name(&built.digest).to_string();
                built.out.into_inner().map_err(|e| e.into_error())?;
                std::fs::rename(&making, dir.path().join(&name))?;
                new.push((name, built.size));
                packs.push(PackRef {
                    digest: built.digest,
                    size: built.size,
                    raw: blobs.iter().map(|blob| blob.size).sum(),
                    blobs: blobs.into_iter().map(|blob| blob.digest).collect(),
                });
            }
        }
    }
    Ok((packs, MadePacks { new, dir }))
}

/// The tar stream: the file `name` holding `bytes` (an index, or a difference), then the new
/// packs under `packs/`.
pub fn write_stream<W: Write>(
    out: W,
    (name, bytes): (&str, &[u8]),
    made: &MadePacks,
) -> io::Result<W> {
    let out = crate::progress::Counted::new(out, crate::progress::stream("inputs"));
    let mut tar = tar::Builder::new(out);
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    tar.append_data(&mut header, name, bytes)?;
    for (pack, size) in &made.new {
        let mut header = tar::Header::new_gnu();
        header.set_size(*size);
        header.set_mode(0o600);
        let file = std::fs::File::open(made.dir.path().join(pack))?;
        tar.append_data(&mut header, format!("{PACKS_DIR}/{pack}"), file)?;
    }
    tar.into_inner().map(crate::progress::Counted::into_inner)
}
