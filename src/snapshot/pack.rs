//! The packs a snapshot's file contents travel in, as restic and Bazel's remote caches keep
//! blobs: a pack, once in the registry, is never rewritten. A snapshot uses the packs already
//! known to be there for the contents they hold ([`plan`]'s `known`: the packs of the last
//! snapshot pushed to or pulled from that repository), and puts only the contents none holds
//! into new packs. A one-file change is one small new pack; a rename or a mode change is none.
//! A known pack whose contents the tree mostly no longer uses (less than half its bytes) is
//! not reused: its live contents are packed again, so that a pull never downloads mostly dead
//! bytes.
//!
//! New contents go in path order; a pack is cut after a content whose digest starts with a
//! zero nibble once the pack holds [`MIN_PACK`] (cut points that depend on the contents), at
//! [`MAX_PACK`] in any case; a content of [`MAX_PACK`] or more is a pack of its own.
//!
//! A pack is a tar stream (entries named by the content's hex digest, mode 0644, owner 0,
//! time 0: nothing but the contents decides its bytes) in Snappy's framing format, which S2
//! readers read too (`.tar.s2`). The same contents therefore always make the same pack, with
//! the same digest.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use foldhash::{HashMap, HashMapExt, HashSet};

use sha2::{Digest, Sha256};

use super::index::{ContentDigest, Entry, Kind, PackRef};
use crate::archive::{Sha256Writer, sha256_hex};
use crate::task::InputFile;

/// A pack is cut, where the contents allow, once it holds this much.
pub const MIN_PACK: u64 = 1 << 20;
/// A pack holds at most about this much; a larger content is a pack of its own.
pub const MAX_PACK: u64 = 4 << 20;

/// The media type of a pack in a registry.
pub const PACK_TYPE: &str = "application/vnd.buildr.inputs.pack.v1.tar+s2";

/// One content to pack: its digest, size, and a file that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: ContentDigest,
    pub size: u64,
    pub source: PathBuf,
}

/// How a snapshot's contents travel: in a pack the registry already has, or in a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Known(PackRef),
    New(Vec<Blob>),
}

/// The packs for `entries` (as [`super::index::scan`] gives them, from `inputs`, in the same
/// order), reusing the `known` packs that are mostly live (taken, not copied: their lists of
/// contents are most of a snapshot's memory).
pub fn plan(entries: &[Entry], inputs: &[InputFile], known: Vec<PackRef>) -> Vec<Planned> {
    let mut needed: HashMap<ContentDigest, (u64, &PathBuf)> = HashMap::new();
    let mut order = Vec::new();
    for (entry, input) in entries.iter().zip(inputs) {
        if let (Kind::File, Some(digest)) = (entry.kind, entry.digest)
            && needed.insert(digest, (entry.size, &input.source)).is_none()
        {
            order.push(digest);
        }
    }
    // A known pack is reused when at least half of the bytes it holds are still needed.
    let reused = |pack: &PackRef| {
        let live: u64 = pack
            .blobs
            .iter()
            .filter_map(|blob| needed.get(blob).map(|(size, _)| *size))
            .sum();
        live > 0 && live * 2 >= pack.raw
    };
    let reused: Vec<PackRef> = known.into_iter().filter(reused).collect();
    let covered: HashSet<&ContentDigest> = reused.iter().flat_map(|pack| &pack.blobs).collect();
    let mut new = Vec::new();
    let mut current: Vec<Blob> = Vec::new();
    let mut held = 0u64;
    for digest in order {
        if covered.contains(&digest) {
            continue;
        }
        let (size, source) = needed[&digest];
        let blob = Blob {
            digest,
            size,
            source: source.clone(),
        };
        if size >= MAX_PACK {
            new.push(Planned::New(vec![blob]));
            continue;
        }
        held += size;
        let cut_here = digest.0[0] >> 4 == 0;
        current.push(blob);
        if held >= MAX_PACK || (held >= MIN_PACK && cut_here) {
            new.push(Planned::New(std::mem::take(&mut current)));
            held = 0;
        }
    }
    if !current.is_empty() {
        new.push(Planned::New(current));
    }
    drop(covered);
    reused.into_iter().map(Planned::Known).chain(new).collect()
}

/// Why a pack could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot read the input {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the input {} changed while it was packed; run again", .0.display())]
    Changed(PathBuf),
    #[error("cannot write a pack")]
    Write(#[source] io::Error),
}

/// A pack written out: where to, its digest (`sha256:<hex>`) and its size.
pub struct Built<W> {
    pub out: W,
    pub digest: String,
    pub size: u64,
}

/// Writes the pack holding `blobs` to `out`, each content checked against its digest as it is
/// read (an input that changed since it was digested is refused, not packed as another). A
/// pack is never held in memory: a large file is a pack of its own.
pub fn build<W: Write>(blobs: &[Blob], out: W) -> Result<Built<W>, PackError> {
    let written = |source| PackError::Write(source);
    let mut tar = tar::Builder::new(snap::write::FrameEncoder::new(Sha256Writer::new(out)));
    for blob in blobs {
        let read = |source| PackError::Read {
            path: blob.source.clone(),
            source,
        };
        let mut header = tar::Header::new_ustar();
        header.set_size(blob.size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        let name = blob.digest.hex();
        let file = std::fs::File::open(&blob.source).map_err(read)?;
        let mut checked = Checked::new(file.take(blob.size));
        tar.append_data(&mut header, &name, &mut checked)
            .map_err(read)?;
        if checked.digest() != blob.digest || checked.read != blob.size {
            return Err(PackError::Changed(blob.source.clone()));
        }
    }
    let encoder = tar.into_inner().map_err(written)?;
    let hashing = encoder.into_inner().map_err(|e| written(e.into_error()))?;
    let (out, hex, size) = hashing.finish();
    Ok(Built {
        digest: format!("sha256:{hex}"),
        size,
        out,
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// A reader that hashes and counts what goes through it.
struct Checked<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Checked<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    fn digest(&self) -> ContentDigest {
        ContentDigest(self.hasher.clone().finalize().into())
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
