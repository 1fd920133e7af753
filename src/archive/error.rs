//! The archive errors: one variant per failing operation, each naming the path involved.

use std::io;
use std::path::PathBuf;

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
    #[error("its parent `{0}` is a symlink; nothing is written through symlinks")]
    ThroughSymlink(PathBuf),
    #[error("its parent `{0}` exists and is not a directory")]
    ParentNotDirectory(PathBuf),
    #[error("absolute symlink target `{0}`")]
    AbsoluteLinkTarget(PathBuf),
    #[error("symlink target `{0}` leaves the destination")]
    LinkLeavesDestination(PathBuf),
    #[error(
        "symlink target `{0}` has `..` after a normal component; only `../../a/b`-shaped targets are accepted"
    )]
    NonCanonicalLinkTarget(PathBuf),
    #[error(
        "hard links are refused (this one points at `{0}`); buildr archives never contain them"
    )]
    HardLink(PathBuf),
    #[error("{0} entries are refused")]
    Special(&'static str),
    #[error("unsupported tar entry type {0:?}")]
    Unsupported(char),
    #[error("it would replace a non-empty directory")]
    NonEmptyDirectory,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("failed to create archive file {}", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open archive file {}", path.display())]
    OpenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {} to archive it", path.display())]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} changed while it was archived: expected {expected} bytes, read {read}", path.display())]
    SourceChanged {
        path: PathBuf,
        expected: u64,
        read: u64,
    },
    #[error("cannot archive {}: {kind} files are not archived", path.display())]
    UnsupportedSource { path: PathBuf, kind: &'static str },
    #[error("invalid archive name `{}`: {reason}", name.display())]
    InvalidName { name: PathBuf, reason: Refusal },
    #[error("failed to walk {}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write the archive stream")]
    WriteArchive(#[source] io::Error),
    #[error("failed to read the archive (corrupt, truncated or not a .tar.s2 stream)")]
    ReadArchive(#[source] io::Error),
    #[error("refusing entry `{}`: {reason}", entry.display())]
    Refused { entry: PathBuf, reason: Refusal },
    #[error("refusing deletion of `{}`: {reason}", entry.display())]
    RefusedDeletion { entry: PathBuf, reason: Refusal },
    #[error("failed to extract `{}` into {}", entry.display(), path.display())]
    Extract {
        entry: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Plain I/O around an archive operation (e.g. a caller's pipe); the archive functions
    /// themselves report the operation-specific variants above.
    #[error("archive I/O failed")]
    Io(#[from] io::Error),
    #[error("failed to delete `{}` ({})", entry.display(), path.display())]
    Delete {
        entry: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
