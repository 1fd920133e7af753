//! Finds what a task changed in its workspace, twice: a `notify` watcher records every path
//! written while the task runs, and a snapshot of the tree's metadata taken before is compared
//! with one taken after. A watcher overflow, a missed event or a watch limit therefore loses
//! nothing; the watcher in turn catches rewrites that leave size and times as they were.
//!
//! Paths under a `.git` (see [`is_git_path`]) are never reported, only counted: nothing a task
//! legitimately produces lives there, and the client leaves them out anyway.

use std::collections::{BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::archive::{LeftOut, is_git_path};

/// What the task did to the workspace, as paths relative to its root, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Created or modified files and symlinks, and created directories (or ones whose mode
    /// changed), so that empty new directories come back too.
    pub modified: Vec<PathBuf>,
    /// Paths that existed before and are gone; a deleted directory is listed, not its contents.
    pub deleted: Vec<PathBuf>,
    /// Paths under `.git` that would have been in either list.
    pub git_left_out: LeftOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink(PathBuf),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: Kind,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

/// Metadata of every path under a root (not following symlinks), by relative path. Keyed by
/// the path's bytes: a `Path` hashes component by component, which for 100,000 paths cost
/// more than their `lstat`s.
#[derive(Debug, Default)]
pub struct Snapshot(foldhash::HashMap<OsString, Meta>);

impl Snapshot {
    pub fn take(root: &Path) -> io::Result<Self> {
        let mut entries = foldhash::HashMap::default();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            let read = match fs::read_dir(root.join(&dir)) {
                Ok(read) => read,
                // Removed while we walked: the next comparison sees it gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in read {
                let entry = entry?;
                let relative = dir.join(entry.file_name());
                let Ok(meta) = entry.metadata() else { continue };
                let kind = if meta.is_dir() {
                    pending.push(relative.clone());
                    Kind::Dir
                } else if meta.is_file() {
                    Kind::File
                } else if meta.file_type().is_symlink() {
                    Kind::Symlink(fs::read_link(entry.path()).unwrap_or_default())
                } else {
                    Kind::Other
                };
                entries.insert(
                    relative.into_os_string(),
                    Meta {
                        kind,
                        mode: meta.mode(),
                        size: meta.size(),
                        mtime: (meta.mtime(), meta.mtime_nsec()),
                        ctime: (meta.ctime(), meta.ctime_nsec()),
                        ino: meta.ino(),
                    },
                );
            }
        }
        Ok(Self(entries))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares this (before) with `after`, adding the paths the watcher saw written.
    pub fn changes(&self, after: &Snapshot, touched: &HashSet<PathBuf>) -> Changes {
        let touched: foldhash::HashSet<&OsStr> =
            touched.iter().map(|path| path.as_os_str()).collect();
        let mut modified = BTreeSet::new();
        let mut git = BTreeSet::new();
        for (key, now) in &after.0 {
            let path = Path::new(key);
            let changed = match (&now.kind, self.0.get(key)) {
                (_, None) => true,
                // A directory's times move whenever a child changes; its mode is its own.
                (Kind::Dir, Some(was)) => was.kind != Kind::Dir || was.mode != now.mode,
                (Kind::Other, _) => false,
                (_, Some(was)) => was != now || touched.contains(key.as_os_str()),
            };
            if changed && now.kind != Kind::Other {
                let list = if is_git_path(path) {
                    &mut git
                } else {
                    &mut modified
                };
                list.insert(path.to_path_buf());
            }
        }
        let gone: foldhash::HashSet<&OsStr> = self
            .0
            .keys()
            .filter(|path| !after.0.contains_key(*path))
            .map(OsString::as_os_str)
            .collect();
        let deleted: BTreeSet<PathBuf> = gone
            .iter()
            .map(Path::new)
            .filter(|path| {
                !path
                    .ancestors()
                    .skip(1)
                    .any(|a| gone.contains(a.as_os_str()))
            })
            .map(Path::to_path_buf)
            .collect();
        let (git_deleted, deleted): (Vec<_>, Vec<_>) =
            deleted.into_iter().partition(|p| is_git_path(p));
        git.extend(git_deleted);
        let mut git_left_out = LeftOut::default();
        for path in &git {
            git_left_out.add(path);
        }
        Changes {
            modified: modified.into_iter().collect(),
            deleted,
            git_left_out,
        }
    }
}

/// Records the paths written under a root while it lives.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    touched: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Watcher {
    pub fn start(root: &Path) -> notify::Result<Self> {
        let touched = Arc::new(Mutex::new(HashSet::new()));
        let sink = touched.clone();
        let base = root.to_path_buf();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if !is_write(&event.kind) {
                    return;
                }
                let mut touched = sink.lock().unwrap_or_else(|e| e.into_inner());
                for path in event.paths {
                    if let Ok(relative) = path.strip_prefix(&base) {
                        touched.insert(relative.to_path_buf());
                    }
                }
            })?;
        watcher.watch(root, RecursiveMode::Recursive)?;
        Ok(Self {
            _watcher: watcher,
            touched,
        })
    }

    /// Stops watching and returns the paths seen written.
    pub fn finish(self) -> HashSet<PathBuf> {
        let Self { _watcher, touched } = self;
        drop(_watcher);
        std::mem::take(&mut *touched.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn is_write(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_created_modified_deleted_and_leaves_unchanged_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("same"), "same").unwrap();
        fs::write(root.join("edit"), "before").unwrap();
        fs::write(root.join("chmod"), "x").unwrap();
        fs::create_dir_all(root.join("gone/deep")).unwrap();
        fs::write(root.join("gone/deep/f"), "f").unwrap();
        let before = Snapshot::take(root).unwrap();

        fs::write(root.join("edit"), "after!").unwrap();
        fs::set_permissions(root.join("chmod"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(root.join("new/empty")).unwrap();
        fs::remove_dir_all(root.join("gone")).unwrap();
        let after = Snapshot::take(root).unwrap();

        let changes = before.changes(&after, &HashSet::new());
        let names: Vec<_> = changes
            .modified
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect();
        assert_eq!(names, ["chmod", "edit", "new", "new/empty"]);
        assert_eq!(changes.deleted, [PathBuf::from("gone")]);
    }

    #[test]
    fn paths_under_git_are_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("sub/.git")).unwrap();
        fs::write(root.join("sub/.git/config"), "old").unwrap();
        fs::create_dir(root.join(".GIT")).unwrap();
        let before = Snapshot::take(root).unwrap();

        fs::create_dir_all(root.join(".git/hooks")).unwrap();
        fs::write(root.join(".git/hooks/pre-commit"), "#!/bin/sh\n").unwrap();
        fs::remove_dir_all(root.join("sub/.git")).unwrap();
        fs::remove_dir(root.join(".GIT")).unwrap();
        fs::write(root.join("built"), "x").unwrap();
        let after = Snapshot::take(root).unwrap();

        let touched = HashSet::from([PathBuf::from(".git/hooks/pre-commit")]);
        let changes = before.changes(&after, &touched);
        assert_eq!(changes.modified, [PathBuf::from("built")]);
        assert!(changes.deleted.is_empty(), "{:?}", changes.deleted);
        // `.git`, `.git/hooks`, `.git/hooks/pre-commit`, `.GIT` and `sub/.git`.
        assert_eq!(changes.git_left_out.count, 5);
        assert_eq!(changes.git_left_out.first, Some(PathBuf::from(".GIT")));
    }

    #[test]
    fn a_rewrite_the_metadata_cannot_show_is_caught_by_the_watcher_set() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), "x").unwrap();
        let before = Snapshot::take(dir.path()).unwrap();
        let after = Snapshot::take(dir.path()).unwrap();
        let touched = HashSet::from([PathBuf::from("f")]);
        assert_eq!(
            before.changes(&after, &touched).modified,
            [PathBuf::from("f")]
        );
    }
}
