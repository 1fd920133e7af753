//! `.tar.s2` archives: the modified files of a task, written, listed and safely extracted.
//!
//! The format is a ustar/PAX tar stream in the Snappy framing format (what the `snap` crate
//! writes; Go's S2 reader reads it). Recorded deletions travel in PAX global headers with one
//! `BUILDR.deleted=<path>` record per path, which GNU tar skips when it extracts.
//!
//! Layout:
//! - [`frame`]: Snappy framing compressed on every core, blocks written in order.
//! - `writer`: [`Writer`], [`create_file`], [`sources_under`].
//! - `read`: [`list`] and the decompress-while-writing pipeline.
//! - `extract`: [`extract`], which trusts nothing (its module doc lists the rules).
//! - `names`: the path rules shared by writing and extraction.
//! - `hash`: [`Sha256Writer`], [`sha256_file`].
//! - `error`: [`ArchiveError`] and [`Refusal`].

mod error;
mod extract;
pub mod frame;
mod hash;
mod names;
mod read;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::{ArchiveError, Refusal};
pub use extract::extract;
pub use hash::{Sha256Writer, sha256_file};
pub use read::list;
pub use writer::{Writer, create_file, sources_under};

/// The archive file extension, without the leading dot.
pub const ARCHIVE_EXTENSION: &str = "tar.s2";

/// The PAX keyword of a recorded deletion, in a global extended header.
pub const DELETED_KEY: &str = "BUILDR.deleted";

/// One file to put in an archive: `source` on disk (file, directory or symlink; symlinks are
/// stored as symlinks, never followed), stored under `name` (relative, `/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub source: PathBuf,
    pub name: PathBuf,
}

/// What [`Writer::finish`] and [`create_file`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files, directories and symlinks stored.
    pub entries: u64,
    /// Deletions recorded.
    pub deleted: u64,
    /// Uncompressed file data bytes.
    pub bytes_in: u64,
    /// Archive bytes written.
    pub bytes_out: u64,
    /// Lower-hex SHA-256 of the archive bytes.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A recorded deletion.
    Deleted,
    /// Any other tar entry type (its type flag): hard links, devices, FIFOs, … which
    /// [`extract`] refuses. buildr never writes these.
    Other(char),
}

/// One entry as [`list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Data bytes (0 for everything but files).
    pub size: u64,
    pub link_target: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Apply recorded deletions (inside the destination only).
    pub apply_deletions: bool,
    /// Incremented by the file bytes written.
    pub progress: Option<indicatif::ProgressBar>,
}

/// What [`extract`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// File data bytes written.
    pub bytes: u64,
    /// The deletions recorded in the archive (applied only with `apply_deletions`).
    pub deleted: Vec<PathBuf>,
}

/// [`list`] of the archive file at `path`.
pub fn list_file(path: &Path) -> Result<Vec<Entry>, ArchiveError> {
    list(open(path)?)
}

/// [`extract`] of the archive file at `path`.
pub fn extract_file(
    path: &Path,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<Extracted, ArchiveError> {
    extract(open(path)?, dest, opts)
}

fn open(path: &Path) -> Result<File, ArchiveError> {
    File::open(path).map_err(|source| ArchiveError::OpenFile {
        path: path.to_path_buf(),
        source,
    })
}
