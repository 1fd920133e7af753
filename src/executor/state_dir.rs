//! The executor's state directory (event log, archive): private to the user who runs it. A
//! shared one let another user plant a symlink that redirected the archive write, so a directory
//! another user owns, or that others can write to, or that is a symlink, is refused; without
//! `--state-dir` the executor makes a fresh private one per run.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create the state directory {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing the state directory {}: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
}

/// A fresh private (0700) directory under the system's temporary directory.
pub fn fresh() -> Result<PathBuf, StateDirError> {
    tempfile::Builder::new()
        .prefix("buildr-executor-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map(tempfile::TempDir::keep)
        .map_err(|source| StateDirError::Create {
            path: std::env::temp_dir(),
            source,
        })
}

/// Creates `path` (0700) if it is missing, and checks that it is a real directory that this
/// user owns and no one else can write to.
pub fn prepare(path: &Path) -> Result<(), StateDirError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(StateDirError::Create {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let unsafe_dir = |reason: String| StateDirError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|source| StateDirError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(unsafe_dir("it is a symlink or not a directory".to_string()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "others can write to it (mode {:o}); use a private directory (chmod 700)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}
