//! How a recorded deletion is applied: a task reports a deleted directory as the directory, but
//! the destination may hold more there than the task ever had (a submodule's `.git`, ignored
//! files that were never sent). Only what the [`Deletions`] allow goes; whatever else is there
//! stays, and so do the directories that hold it.
//!
//! A directory is walked one descriptor at a time from its parent's, opening each with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (see `beneath`) and removing entries
//! relative to it, so nothing is followed and nothing outside the deleted path is reached.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::SFlag;
use nix::unistd::UnlinkatFlags;

use super::Kept;
use super::beneath::open_dir_in;
use super::names::is_git_path;

/// Which recorded deletions [`extract`](super::extract) applies. Every one of them is reported
/// in [`Extracted::deleted`](super::Extracted::deleted) either way, and none removes a `.git`
/// (in any case, at any depth).
#[derive(Debug, Clone, Default)]
pub enum Deletions {
    /// None.
    #[default]
    Off,
    /// Only to the paths the task was given: a deleted file that was one of them, and under a
    /// deleted directory only those of them it holds. Anything else there (ignored files, a
    /// `.git`) stays, with the directories on its way, counted in
    /// [`Extracted::kept`](super::Extracted::kept).
    Inputs(InputPaths),
    /// To everything under a deleted directory but a `.git`, which stays with the directories
    /// on its way: for an archive whose task's inputs are unknown (`buildr archive extract`).
    All,
}

impl Deletions {
    pub fn applied(&self) -> bool {
        !matches!(self, Deletions::Off)
    }

    /// What happens to `rel` (a clean relative path) under a deletion.
    fn fate(&self, rel: &Path, is_dir: bool) -> Fate {
        if is_git_path(rel) {
            return Fate::Keep;
        }
        let given = match self {
            Deletions::Off => return Fate::Keep,
            Deletions::All => true,
            Deletions::Inputs(inputs) => inputs.contains(rel),
        };
        match (given, is_dir) {
            (true, false) => Fate::Remove,
            (true, true) => Fate::Empty,
            // A parent the task's workspace made for a mapping's `to`: its inputs go.
            (false, true) if self.inputs_beneath(rel) => Fate::Empty,
            (false, _) => Fate::Keep,
        }
    }

    fn inputs_beneath(&self, dir: &Path) -> bool {
        match self {
            Deletions::Inputs(inputs) => inputs.any_beneath(dir),
            Deletions::Off | Deletions::All => false,
        }
    }
}

/// The paths a task was given, relative to its workspace (which is what the paths of the
/// archive it sends back are relative to). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct InputPaths(Arc<[PathBuf]>);

impl InputPaths {
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut paths: Vec<PathBuf> = paths.into_iter().collect();
        // Ordered component by component (as `Path` orders), what lies beneath a directory
        // comes right after it: `a`, `a/b`, `a/c`, `a.txt`.
        paths.sort_unstable();
        paths.dedup();
        InputPaths(paths.into())
    }

    fn contains(&self, rel: &Path) -> bool {
        self.0.binary_search_by(|p| p.as_path().cmp(rel)).is_ok()
    }

    fn any_beneath(&self, dir: &Path) -> bool {
        let after = self.0.partition_point(|p| p.as_path() <= dir);
        self.0.get(after).is_some_and(|p| p.starts_with(dir))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Remove,
    /// A directory: what it holds is decided path by path; it goes once empty.
    Empty,
    Keep,
}

/// Whether [`remove`] removes, or only finds out whether anything would stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Apply,
    /// Changes nothing and stops at the first path that would stay.
    DryRun,
}

/// A directory being emptied, and whether anything in it stays.
struct Frame {
    dir: OwnedFd,
    rel: PathBuf,
    names: std::vec::IntoIter<OsString>,
    keeps: bool,
}

fn is_dir_at(at: BorrowedFd<'_>, name: &OsStr) -> Result<Option<bool>, Errno> {
    match nix::sys::stat::fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR,
        )),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens the directory `name` in `at` without following a link, and lists it through its
/// descriptor's /proc link (sorted, so that the first path kept is the same on every run).
fn open_frame(at: BorrowedFd<'_>, name: &OsStr, rel: PathBuf) -> io::Result<Frame> {
    let dir = open_dir_in(at, name)?;
    let listing = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string());
    let mut names = std::fs::read_dir(listing)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_unstable();
    Ok(Frame {
        dir,
        rel,
        names: names.into_iter(),
        keeps: false,
    })
}

/// Removes `name` in `parent` (the path `rel`) as `deletions` allow: a file or link goes, a
/// directory is emptied of what may go and then goes unless something stayed. Returns what
/// stayed (with [`Mode::DryRun`], at most the first path that would). A missing path is gone
/// already.
pub(crate) fn remove(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
    deletions: &Deletions,
    mode: Mode,
) -> io::Result<Kept> {
    let mut kept = Kept::default();
    let apply = mode == Mode::Apply;
    let Some(is_dir) = is_dir_at(parent, name)? else {
        return Ok(kept);
    };
    match deletions.fate(rel, is_dir) {
        Fate::Keep => {
            kept.add(rel);
            return Ok(kept);
        }
        Fate::Remove if apply => {
            unlink(parent, name, UnlinkatFlags::NoRemoveDir)?;
            return Ok(kept);
        }
        Fate::Remove => return Ok(kept),
        Fate::Empty => {}
    }
    let mut frames = vec![open_frame(parent, name, rel.to_path_buf())?];
    while let Some(top) = frames.last_mut() {
        let Some(child) = top.names.next() else {
            let done = frames.pop().expect("the loop holds a frame");
            let at = frames.last().map_or(parent, |f| f.dir.as_fd());
            let child = done.rel.file_name().expect("a clean path has a name");
            if done.keeps {
                if let Some(up) = frames.last_mut() {
                    up.keeps = true;
                }
            } else if apply {
                unlink(at, child, UnlinkatFlags::RemoveDir)?;
            }
            continue;
        };
        let child_rel = top.rel.join(&child);
        let Some(is_dir) = is_dir_at(top.dir.as_fd(), &child)? else {
            continue;
        };
        match deletions.fate(&child_rel, is_dir) {
            Fate::Keep => {
                kept.add(&child_rel);
                top.keeps = true;
                if !apply {
                    return Ok(kept);
                }
            }
            Fate::Remove if apply => unlink(top.dir.as_fd(), &child, UnlinkatFlags::NoRemoveDir)?,
            Fate::Remove => {}
            Fate::Empty => {
                let frame = open_frame(top.dir.as_fd(), &child, child_rel)?;
                frames.push(frame);
            }
        }
    }
    Ok(kept)
}

/// Removes `name` in `at`; already gone is fine.
fn unlink(at: BorrowedFd<'_>, name: &OsStr, flags: UnlinkatFlags) -> Result<(), Errno> {
    match nix::unistd::unlinkat(at, name, flags) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_beneath_a_directory_are_found_whatever_sorts_between() {
        let inputs = InputPaths::new(
            ["a.txt", "a/b/c", "a-b", "a", "z"]
                .into_iter()
                .map(PathBuf::from),
        );
        assert!(inputs.contains(Path::new("a/b/c")));
        assert!(!inputs.contains(Path::new("a/b")));
        assert!(inputs.any_beneath(Path::new("a")));
        assert!(inputs.any_beneath(Path::new("a/b")));
        assert!(!inputs.any_beneath(Path::new("a/b/c")));
        assert!(!inputs.any_beneath(Path::new("a-b")));
        assert!(!inputs.any_beneath(Path::new("y")));
        assert!(!inputs.any_beneath(Path::new("z")));
    }

    #[test]
    fn a_git_path_is_never_removed_even_when_given() {
        let given = Deletions::Inputs(InputPaths::new([PathBuf::from("sub/.git")]));
        for deletions in [given, Deletions::All] {
            assert_eq!(deletions.fate(Path::new("sub/.git"), false), Fate::Keep);
            assert_eq!(deletions.fate(Path::new("sub/.Git"), true), Fate::Keep);
        }
        let given = Deletions::Inputs(InputPaths::new([PathBuf::from("d/x")]));
        assert_eq!(given.fate(Path::new("d"), true), Fate::Empty);
        assert_eq!(given.fate(Path::new("d/x"), false), Fate::Remove);
        assert_eq!(given.fate(Path::new("d/.env"), false), Fate::Keep);
        assert_eq!(given.fate(Path::new("e"), true), Fate::Keep);
    }
}
