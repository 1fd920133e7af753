//! The archive errors: one variant per failing operation, each naming the path involved (quoted,
//! see [`Quoted`]) and never repeating its `#[source]`, which the caller prints after it.

use std::io;
use std::path::PathBuf;

use super::names::Quoted;

/// Why an entry (or a recorded deletion) of an archive is refused at extraction.
///
/// Every refusal aborts the extraction; see [`extract`](super::extract).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("absolute path")]
    AbsolutePath,
    #[error("path leaves the destination")]
    LeavesDestination,
    #[error("empty path")]
    EmptyPath,
    #[error("name longer than Linux accepts")]
    NameTooLong,
    #[error("name holds a NUL byte")]
    NulByte,
    #[error("its parent `{}` is a symlink; nothing is written through symlinks", Quoted(.0))]
    ThroughSymlink(PathBuf),
    #[error("its parent `{}` exists and is not a directory", Quoted(.0))]
    ParentNotDirectory(PathBuf),
    #[error("absolute symlink target `{}`", Quoted(.0))]
    AbsoluteLinkTarget(PathBuf),
    #[error("symlink target `{}` leaves the destination", Quoted(.0))]
    LinkLeavesDestination(PathBuf),
    #[error(
        "symlink target `{}` has `..` after a normal component; only `../../a/b`-shaped targets are accepted",
        Quoted(.0)
    )]
    NonCanonicalLinkTarget(PathBuf),
    #[error(
        "hard links are refused (this one points at `{}`); buildr archives never contain them",
        Quoted(.0)
    )]
    HardLink(PathBuf),
    #[error("{0} entries are refused")]
    Special(&'static str),
    #[error("unsupported tar entry type {0:?}")]
    Unsupported(char),
    #[error("it would replace a non-empty directory")]
    NonEmptyDirectory,
}

/// Which of the [`Limits`](super::Limits) an archive went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Bytes,
    Entries,
}

impl Limit {
    fn unit(self) -> &'static str {
        match self {
            Limit::Bytes => "bytes of file data",
            Limit::Entries => "entries (deletions and the directories it creates included)",
        }
    }

    /// The option of `buildr run` and `buildr archive extract` that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::Bytes => "--max-output-bytes",
            Limit::Entries => "--max-output-entries",
        }
    }
}

/// What is wrong with an archive's tar stream (see [`ArchiveError::Corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("it ends in the middle of an entry (truncated)")]
    Truncated,
    #[error("it ends without tar's end-of-archive marker (truncated)")]
    NoEndMarker,
    #[error("a header's checksum does not match")]
    Checksum,
    #[error("a header's {0} field is not a valid number")]
    Field(&'static str),
    #[error("a {what} of {size} bytes is over the limit of {limit} bytes")]
    TooBig {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("a PAX extended header record is malformed")]
    Pax,
    #[error("a lone zero block is followed by more entries")]
    LoneZeroBlock,
    #[error("data follows the end-of-archive marker")]
    AfterEnd,
    #[error("buildr's closing record is missing (entries are missing)")]
    MissingClosingRecord,
    #[error(
        "buildr's closing record does not match what precedes it (entries dropped, duplicated \
         or reordered): it counts {want_entries} entries and {want_deleted} deletions, \
         {got_entries} and {got_deleted} were read, and the SHA-256 {}",
        if *.hash_matches { "matches" } else { "differs" }
    )]
    ClosingMismatch {
        want_entries: u64,
        want_deleted: u64,
        got_entries: u64,
        got_deleted: u64,
        hash_matches: bool,
    },
    #[error("entries follow buildr's closing record")]
    AfterClosingRecord,
    #[error("unsupported buildr archive format `{}`", .0.escape_debug())]
    Format(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("failed to create archive file {}", Quoted(path))]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open archive file {}", Quoted(path))]
    OpenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {} to archive it", Quoted(path))]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} changed while it was archived: expected {expected} bytes, read {read}",
        Quoted(path)
    )]
    SourceChanged {
        path: PathBuf,
        expected: u64,
        read: u64,
    },
    #[error("cannot archive {}: {kind} files are not archived", Quoted(path))]
    UnsupportedSource { path: PathBuf, kind: &'static str },
    #[error("invalid archive name `{}`: {reason}", Quoted(name))]
    InvalidName { name: PathBuf, reason: Refusal },
    #[error("failed to walk {}", Quoted(path))]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write the archive stream")]
    WriteArchive(#[source] io::Error),
    #[error("failed to read the archive (corrupt, truncated or not a .tar.s2 stream)")]
    ReadArchive(#[source] io::Error),
    #[error("the archive is corrupt at byte {offset} of its tar stream: {problem}")]
    Corrupt { offset: u64, problem: Corruption },
    #[error("refusing entry `{}`: {reason}", Quoted(entry))]
    Refused { entry: PathBuf, reason: Refusal },
    #[error("refusing deletion of `{}`: {reason}", Quoted(entry))]
    RefusedDeletion { entry: PathBuf, reason: Refusal },
    #[error("failed to extract `{}` into {}", Quoted(entry), Quoted(dest))]
    Extract {
        entry: PathBuf,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to prepare {} for extraction", Quoted(dest))]
    Prepare {
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the archive is over the limit of {limit} {}; nothing was extracted (raise {} to accept it)",
        .what.unit(),
        .what.flag()
    )]
    OverLimit { what: Limit, limit: u64 },
    /// Plain I/O around an archive operation (e.g. a caller's pipe); the archive functions
    /// themselves report the operation-specific variants above.
    #[error("archive I/O failed")]
    Io(#[from] io::Error),
    #[error("failed to delete `{}` in {}", Quoted(entry), Quoted(dest))]
    Delete {
        entry: PathBuf,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
}
