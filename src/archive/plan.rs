//! The refusals that depend on what is already in the destination, decided before the first
//! rename, so that a refused archive changes nothing: a file or symlink where a parent directory
//! goes, a symlink on the way, a non-empty directory where a file goes and, when deletions are
//! applied, a deletion through a symlink.
//!
//! A deletion may keep a directory (it holds a `.git`, or what the task was not given: see
//! `deletion`); whether it does is found out by walking the destination's directory without
//! changing it. A deletion that follows the archive's own entries (buildr writes deletions
//! first) is taken to keep its directory, since what it would keep may be those entries: a
//! refusal too many, never one too few.
//!
//! The journal is replayed against a model of the destination as the archive's earlier steps
//! leave it (a directory entry replaces a file, a deletion removes a path and what is under it,
//! a file needs its parents created). The model remembers only the paths the archive touches, by
//! a 128-bit hash (a truncated SHA-256), each with the step since which it holds: what a step
//! says about a path hides whatever the destination, or an earlier step, had beneath it. For the
//! rest the destination is consulted through [`Beneath`], which never follows a symlink.
//!
//! The model also tells which directories the extraction creates, the only ones whose mode it
//! sets (an existing directory keeps its own).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::SFlag;
use sha2::{Digest, Sha256};

use super::beneath::{Beneath, Unreachable};
use super::deletion::{self, Deletions};
use super::error::{ArchiveError, Limit, Refusal};
use super::staging::{Record, Step};

/// What a path is once the archive's earlier steps are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Is {
    Absent,
    Dir,
    File,
    Symlink,
}

/// What a step of the archive made of a path.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The step since which it holds; a path beneath it seen before that step is stale.
    since: u64,
    is: Is,
    /// A directory the extraction creates: nothing of the destination is beneath it.
    created: bool,
    /// A directory the archive put something into.
    filled: bool,
}

impl Seen {
    /// Whether what the destination has beneath this path no longer counts.
    fn hides_destination(&self) -> bool {
        self.is != Is::Dir || self.created
    }
}

/// One path of the walk from the destination down to an entry.
#[derive(Clone, Copy)]
struct Level {
    key: u128,
    is: Is,
    /// `is` comes from a step of the archive (else from the destination, or from a missing
    /// parent).
    seen: bool,
}

pub(crate) struct Plan {
    seen: HashMap<u128, Seen>,
    step: u64,
    /// How many more directories extraction may create for entries' parents.
    budget: u64,
    max_entries: u64,
    /// Whether a file, symlink or directory of the archive came before.
    placed: bool,
    /// For messages.
    dest: PathBuf,
}

fn refused(entry: &Path, reason: Refusal) -> ArchiveError {
    ArchiveError::Refused {
        entry: entry.to_path_buf(),
        reason,
    }
}

/// The hashes of every leading part of `rel` (a clean relative path): `a`, `a/b`, `a/b/c`.
fn prefix_keys(rel: &Path) -> Vec<u128> {
    let mut hasher = Sha256::new();
    let mut keys = Vec::new();
    for (i, c) in rel.components().enumerate() {
        if i > 0 {
            hasher.update(b"/");
        }
        hasher.update(c.as_os_str().as_bytes());
        let digest = hasher.clone().finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        keys.push(u128::from_le_bytes(key));
    }
    keys
}

/// The first `n` components of `rel`.
fn leading(rel: &Path, n: usize) -> PathBuf {
    rel.components().take(n).collect()
}

fn kind_of(mode: u32) -> Is {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => Is::Dir,
        SFlag::S_IFLNK => Is::Symlink,
        _ => Is::File,
    }
}

impl Plan {
    /// `entries`: what the archive held; together with the directories its entries need
    /// created they stay within `max_entries`.
    pub(crate) fn new(dest: &Path, entries: u64, max_entries: u64) -> Self {
        Plan {
            dest: dest.to_path_buf(),
            seen: HashMap::new(),
            step: 0,
            budget: max_entries.saturating_sub(entries),
            max_entries,
            placed: false,
        }
    }

    /// Decides whether the journal's next step `r` would be refused once the ones before it
    /// are applied, and records what it does, with `deletions` applied.
    pub(crate) fn check(
        &mut self,
        beneath: &mut Beneath,
        r: &Record,
        deletions: &Deletions,
    ) -> Result<(), ArchiveError> {
        self.step += 1;
        let is_delete = r.step == Step::Delete;
        if is_delete && !deletions.applied() {
            return Ok(());
        }
        let levels = match self.walk(beneath, &r.path) {
            Ok(levels) => levels,
            Err(Unreachable::Refused(reason)) if is_delete => {
                // A deletion beneath a file is already done; beneath a symlink it is refused.
                return match reason {
                    Refusal::ParentNotDirectory(_) => Ok(()),
                    reason => Err(ArchiveError::RefusedDeletion {
                        entry: r.path.clone(),
                        reason,
                    }),
                };
            }
            Err(Unreachable::Refused(reason)) => return Err(refused(&r.path, reason)),
            // The walk reports a missing parent as absent levels, never as this.
            Err(Unreachable::Missing(_)) => return Err(self.io(&r.path)(Errno::ENOENT.into())),
            Err(Unreachable::Io(source)) => return Err(self.io(&r.path)(source)),
        };
        let (last, parents) = levels.split_last().expect("a clean path has a component");
        match r.step {
            Step::Delete => {
                if parents.iter().all(|l| l.is == Is::Dir) {
                    if last.is == Is::Dir && self.deletion_keeps(beneath, &r.path, deletions)? {
                        // A directory of the destination, not empty: what stays is its own.
                        let seen = Seen {
                            since: self.step,
                            is: Is::Dir,
                            created: false,
                            filled: true,
                        };
                        self.seen.insert(last.key, seen);
                    } else {
                        self.set(last.key, Is::Absent, false);
                    }
                }
                return Ok(());
            }
            Step::File | Step::Symlink => {
                if last.is == Is::Dir && self.non_empty(beneath, &r.path, last)? {
                    return Err(refused(&r.path, Refusal::NonEmptyDirectory));
                }
                let is = if r.step == Step::File {
                    Is::File
                } else {
                    Is::Symlink
                };
                self.set(last.key, is, false);
            }
            Step::Dir => {
                if last.is != Is::Dir {
                    self.set(last.key, Is::Dir, true);
                }
            }
        }
        self.placed = true;
        for level in parents.iter().filter(|l| l.is == Is::Absent) {
            if self.budget == 0 {
                return Err(ArchiveError::OverLimit {
                    what: Limit::Entries,
                    limit: self.max_entries,
                });
            }
            self.budget -= 1;
            self.set(level.key, Is::Dir, true);
        }
        if let Some(parent) = parents.last() {
            self.fill(parent);
        }
        Ok(())
    }

    /// Whether deleting the directory at `rel` (one as the earlier steps leave it) keeps it.
    fn deletion_keeps(
        &self,
        beneath: &mut Beneath,
        rel: &Path,
        deletions: &Deletions,
    ) -> Result<bool, ArchiveError> {
        if self.placed {
            return Ok(true);
        }
        let (parent, name) = match beneath.parent(rel, false) {
            Ok(found) => found,
            // A directory of the archive's own.
            Err(Unreachable::Missing(_)) => return Ok(true),
            Err(Unreachable::Refused(reason)) => return Err(refused(rel, reason)),
            Err(Unreachable::Io(source)) => return Err(self.io(rel)(source)),
        };
        let kept = deletion::remove(parent, name, rel, deletions, deletion::Mode::DryRun)
            .map_err(self.io(rel))?;
        Ok(kept.count > 0)
    }

    /// Whether the directory at `rel` is, as the archive found it, a directory it created.
    pub(crate) fn created_dir(&self, rel: &Path) -> bool {
        let mut hidden_since = None;
        let mut found = None;
        for key in prefix_keys(rel) {
            found = self.valid(key, hidden_since);
            if let Some(seen) = found
                && seen.hides_destination()
            {
                hidden_since = Some(seen.since);
            }
        }
        found.is_some_and(|s| s.is == Is::Dir && s.created)
    }

    fn io(&self, rel: &Path) -> impl Fn(std::io::Error) -> ArchiveError + use<> {
        let (entry, dest) = (rel.to_path_buf(), self.dest.clone());
        move |source| ArchiveError::Extract {
            entry: entry.clone(),
            dest: dest.clone(),
            source,
        }
    }

    fn set(&mut self, key: u128, is: Is, created: bool) {
        let seen = Seen {
            since: self.step,
            is,
            created,
            filled: false,
        };
        self.seen.insert(key, seen);
    }

    /// Marks the parent directory at `level` as holding something of the archive's.
    fn fill(&mut self, level: &Level) {
        // An absent parent was recorded as created just before.
        if level.seen || level.is == Is::Absent {
            if let Some(seen) = self.seen.get_mut(&level.key) {
                seen.filled = true;
            }
            return;
        }
        // The destination's own directory (a record there, if any, is stale).
        let seen = Seen {
            since: self.step,
            is: Is::Dir,
            created: false,
            filled: true,
        };
        self.seen.insert(level.key, seen);
    }

    /// What the archive's steps left at `key`, if it still counts (not hidden by a later step
    /// on a path above it).
    fn valid(&self, key: u128, hidden_since: Option<u64>) -> Option<Seen> {
        self.seen
            .get(&key)
            .copied()
            .filter(|s| hidden_since.is_none_or(|h| s.since >= h))
    }

    /// Every level from the destination down to `rel`, as the earlier steps leave it. A parent
    /// that is a file or a symlink is refused, naming it, as committing would.
    fn walk(&self, beneath: &mut Beneath, rel: &Path) -> Result<Vec<Level>, Unreachable> {
        let keys = prefix_keys(rel);
        let n = keys.len();
        let mut levels = Vec::with_capacity(n);
        let mut hidden_since = None;
        // The levels above the first one a step hides are the destination's: asked below.
        let mut ask = n;
        for (i, &key) in keys.iter().enumerate() {
            let level = match self.valid(key, hidden_since) {
                Some(seen) => {
                    if i + 1 < n && seen.is == Is::File {
                        return Err(Unreachable::Refused(Refusal::ParentNotDirectory(leading(
                            rel,
                            i + 1,
                        ))));
                    }
                    if i + 1 < n && seen.is == Is::Symlink {
                        return Err(Unreachable::Refused(Refusal::ThroughSymlink(leading(
                            rel,
                            i + 1,
                        ))));
                    }
                    if seen.hides_destination() && hidden_since.is_none() {
                        ask = ask.min(i);
                    }
                    if seen.hides_destination() {
                        hidden_since = Some(seen.since);
                    }
                    Level {
                        key,
                        is: seen.is,
                        seen: true,
                    }
                }
                None if hidden_since.is_some() => Level {
                    key,
                    is: Is::Absent,
                    seen: false,
                },
                None => Level {
                    key,
                    is: Is::Dir,
                    seen: false,
                },
            };
            levels.push(level);
        }
        if ask == 0 {
            return Ok(levels);
        }
        // Levels 0..ask: their parents must be directories (reached without following links),
        // and the last of them is whatever is there.
        let target = if ask == n { rel } else { &leading(rel, ask) };
        let (parent, name) = match beneath.parent(target, false) {
            Ok(found) => found,
            Err(Unreachable::Missing(first)) => {
                let from = first.components().count() - 1;
                return Ok(mark_absent(levels, from));
            }
            Err(e) => return Err(e),
        };
        let asked = &mut levels[ask - 1];
        if !asked.seen {
            asked.is = match nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => kind_of(st.st_mode),
                Err(Errno::ENOENT) => Is::Absent,
                Err(e) => return Err(Unreachable::Io(e.into())),
            };
        }
        if ask < n {
            // A parent of a level the archive accounts for.
            let path = || leading(rel, ask);
            match asked.is {
                Is::Dir => {}
                Is::Absent => return Ok(mark_absent(levels, ask - 1)),
                Is::Symlink => return Err(Unreachable::Refused(Refusal::ThroughSymlink(path()))),
                Is::File => {
                    return Err(Unreachable::Refused(Refusal::ParentNotDirectory(path())));
                }
            }
        }
        Ok(levels)
    }

    /// Whether the directory at `rel` (level `last`) holds anything once the earlier steps
    /// are applied.
    fn non_empty(&self, beneath: &Beneath, rel: &Path, last: &Level) -> Result<bool, ArchiveError> {
        let seen = last.seen.then(|| self.seen.get(&last.key)).flatten();
        if seen.is_some_and(|s| s.filled) {
            return Ok(true);
        }
        if seen.is_some_and(|s| s.created) {
            return Ok(false);
        }
        // The destination's own directory: anything in it the archive did not delete.
        let io = self.io(rel);
        let dir = beneath.open_dir_for_update(rel).map_err(|e| io(e.into()))?;
        let listing = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string());
        for child in std::fs::read_dir(listing).map_err(&io)? {
            let child = child.map_err(&io)?;
            let key = *prefix_keys(&rel.join(child.file_name()))
                .last()
                .expect("a child has a name");
            if self.seen.get(&key).is_none_or(|s| s.is != Is::Absent) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Marks the levels from `from` down as absent (beneath a missing parent), except those a step
/// of the archive accounts for.
fn mark_absent(mut levels: Vec<Level>, from: usize) -> Vec<Level> {
    for level in levels[from..].iter_mut().filter(|l| !l.seen) {
        level.is = Is::Absent;
    }
    levels
}
