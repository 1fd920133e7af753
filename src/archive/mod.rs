//! `.tar.s2` archives: the modified files of a task, written, listed and safely extracted.
//!
//! The format is a ustar/PAX tar stream in the Snappy framing format (what the `snap` crate
//! writes; Go's S2 reader reads it). Names that are long or not ASCII travel as PAX `path` and
//! `linkpath` records, as GNU tar and Go write them. buildr adds PAX global headers that GNU tar
//! skips silently when it extracts:
//! - first, `BUILDR.format=1`;
//! - then the recorded deletions, one `BUILDR.deleted.<n>=<path>` record per path with `n`
//!   counting from 0 across the archive. PAX keeps one value per key (Go's `archive/tar` and
//!   Python's `tarfile` keep the last of repeated keys, and Python merges successive global
//!   headers), so every deletion has a key of its own;
//! - last, the closing record: `BUILDR.entries`, `BUILDR.deletions` and `BUILDR.sha256`, the
//!   SHA-256 of all the tar bytes before it. A reader that saw `BUILDR.format` requires it.
//!   An empty GNU volume header follows it, because Python's `tarfile` fails on an archive
//!   whose last header is a PAX header; GNU tar skips it silently.
//!
//! Layout:
//! - [`frame`]: Snappy framing compressed on every core, blocks written in order.
//! - `writer`: [`Writer`], [`create_file`], [`sources_under`].
//! - `tar_format`: header fields, checksums and PAX records, as bytes.
//! - `tar_reader`: the bounded, verifying tar parser that listing and extraction share.
//! - `read`: [`list`] and the decompress-while-writing pipeline.
//! - `extract`: [`extract`], which trusts nothing (its module doc lists the rules).
//! - `staging`: where extraction keeps files until the archive is verified.
//! - `plan`: the refusals that depend on the destination, decided before anything is renamed.
//! - `beneath`: path resolution beneath the destination that never follows a symlink.
//! - `deletion`: [`Deletions`], and how a deleted directory is emptied of only what may go.
//! - `names`: the path rules shared by writing and extraction, and [`Quoted`] names.
//! - `hash`: [`Sha256Writer`], [`sha256_file`], [`sha256_hex`].
//! - `error`: [`ArchiveError`], [`Refusal`] and [`Corruption`].

mod beneath;
mod deletion;
mod error;
mod extract;
mod file_writers;
pub mod frame;
mod hash;
mod names;
mod plan;
mod read;
mod staging;
mod tar_format;
mod tar_reader;
mod tree_hash;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use deletion::{Deletions, InputPaths};
pub use error::{ArchiveError, Corruption, Limit, Refusal};
pub use extract::{extract, extract_within};
pub use hash::{Sha256Writer, sha256_file, sha256_hex};
pub use names::{MAX_NAME, MAX_PATH, Quoted, is_git_path};
pub use read::{list, list_each};
pub use tree_hash::TreeHasher;
pub use writer::{Writer, create_file, create_new_file, sources_under};

/// The archive file extension, without the leading dot.
pub const ARCHIVE_EXTENSION: &str = "tar.s2";

/// The PAX keyword that marks a buildr archive, in its first global header, and its value.
pub const FORMAT_KEY: &str = "BUILDR.format";
pub const FORMAT_VERSION: &str = "1";
/// The PAX keywords of recorded deletions, in global headers: this prefix and a number.
pub const DELETED_PREFIX: &str = "BUILDR.deleted.";
/// The PAX keywords of the closing record.
pub const ENTRIES_KEY: &str = "BUILDR.entries";
pub const DELETIONS_KEY: &str = "BUILDR.deletions";
pub const SHA256_KEY: &str = "BUILDR.sha256";
/// The largest PAX or GNU extended header read into memory; larger ones are refused.
pub const MAX_EXTENDED_HEADER: usize = 1 << 20;

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
    /// The digest of the tree the archive holds ([`TreeHasher`]), when the writer was asked
    /// for it ([`Writer::hashing_tree`]).
    pub tree: Option<[u8; 32]>,
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

/// What extraction does with a symlink whose target may resolve outside the destination
/// (absolute, or climbing above it). Extraction never writes through any symlink whatever the
/// policy, so this is about what the links point at once they are in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkPolicy {
    /// Refuse the archive.
    #[default]
    Refuse,
    /// Leave the link out and list it in [`Extracted::skipped_links`]; extract the rest.
    Skip,
    /// Create it as it is (a sandbox's inputs: the task's world is its own).
    Allow,
}

#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Which recorded deletions are applied (inside the destination only).
    pub deletions: Deletions,
    /// Symlinks that point outside the destination.
    pub links: LinkPolicy,
    /// Incremented by the file bytes written.
    pub progress: Option<indicatif::ProgressBar>,
}

/// What extraction accepts at most; an archive over either is refused before anything is
/// applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total file data bytes.
    pub max_bytes: u64,
    /// Entries, deletions and the directories extraction creates for them, together.
    pub max_entries: u64,
}

/// 20 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 20 << 30;
pub const DEFAULT_MAX_ENTRIES: u64 = 2_000_000;

impl Limits {
    /// No bound: for the user's own inputs going into a workspace, where the trust runs the
    /// other way (the caps are for what a task sends back).
    pub const NONE: Limits = Limits {
        max_bytes: u64::MAX,
        max_entries: u64::MAX,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Entries and deletions left out because their path is under `.git` (see [`is_git_path`]),
/// and symlinks whose target goes into one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub count: u64,
    /// The first one, in archive order.
    pub first: Option<PathBuf>,
}

impl LeftOut {
    /// Counts `path`, left out.
    pub fn add(&mut self, path: &Path) {
        self.count += 1;
        self.first.get_or_insert_with(|| path.to_path_buf());
    }
}

/// `left out 3 paths under or linking into .git (the first: `.git/hooks/pre-commit`): …`, one
/// line.
impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "left out {} path{} under or linking into .git",
            self.count,
            if self.count == 1 { "" } else { "s" }
        )?;
        if let Some(first) = &self.first {
            write!(f, " (the first: `{}`)", Quoted(first))?;
        }
        f.write_str(": a task's results never go into a repository's .git")
    }
}

/// Paths under deleted directories that stay, with the directories on their way: a `.git`, and
/// what the task was not given (see [`Deletions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    pub count: u64,
    /// The first one, in the order deletions are applied.
    pub first: Option<PathBuf>,
}

impl Kept {
    /// Counts `path`, kept.
    fn add(&mut self, path: &Path) {
        self.count += 1;
        self.first.get_or_insert_with(|| path.to_path_buf());
    }

    /// Counts what `other` kept, after what this one did.
    fn extend(&mut self, other: Kept) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// `kept 2 paths under deleted directories (the first: `vendor/lib/.git`): …`, one line.
impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kept {} path{} under deleted directories, and the directories that hold them",
            self.count,
            if self.count == 1 { "" } else { "s" }
        )?;
        if let Some(first) = &self.first {
            write!(f, " (the first: `{}`)", Quoted(first))?;
        }
        f.write_str(": a deletion never removes a .git, nor what the task was not given")
    }
}

/// A symlink [`LinkPolicy::Skip`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLink {
    pub path: PathBuf,
    pub target: PathBuf,
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
    /// Symlinks left out under [`LinkPolicy::Skip`].
    pub skipped_links: Vec<SkippedLink>,
    /// Entries and deletions left out because they are under `.git`, and symlinks into one.
    pub git_left_out: LeftOut,
    /// What applied deletions left in place under the directories they removed.
    pub kept: Kept,
}

impl Extracted {
    /// One warning line about the paths under or linking into `.git` that were left out, and
    /// one about the paths deletions kept, for each that happened.
    pub fn left_alone_warnings(&self) -> Vec<String> {
        let git = (self.git_left_out.count > 0).then(|| self.git_left_out.to_string());
        let kept = (self.kept.count > 0).then(|| self.kept.to_string());
        git.into_iter()
            .chain(kept)
            .map(|warning| format!("buildr: warning: {warning}"))
            .collect()
    }
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
