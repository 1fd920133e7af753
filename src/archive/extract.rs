//! Safe extraction: every entry is checked before anything is written, and nothing is ever
//! written, followed or deleted outside the destination.
//!
//! The rules, enforced per entry:
//! - names must be relative with no `..` (`.` components are dropped);
//! - every parent directory below the destination must be a real directory: one that is a
//!   symlink refuses the entry (the "symlink, then a file through it" attack), a missing one
//!   is created;
//! - a regular file is created with `O_CREAT | O_EXCL | O_NOFOLLOW`; whatever is in its place
//!   (a file, a symlink, an empty directory) is removed first, never written through;
//! - symlink targets must be relative and of the shape `../../a/b` without climbing above the
//!   destination (see [`check_link_target`]);
//! - hard links, character and block devices, FIFOs, sockets, GNU sparse files and unknown entry
//!   types are refused.
//!
//! A refused entry aborts the extraction with [`ArchiveError::Refused`], naming the entry and
//! the reason. Entries before it may already be extracted (inside the destination). Nothing
//! here guards against another process changing the destination at the same time.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tar::EntryType;

use super::error::{ArchiveError, Refusal};
use super::names::{check_link_target, clean_relative};
use super::read::{ChannelReader, deleted_records, pipelined};
use super::{ExtractOptions, Extracted};

/// Copy buffer between the tar stream and a file.
const COPY_BUF: usize = 256 << 10;

/// Extracts a `.tar.s2` stream into `dest` (created if missing), trusting nothing in it.
///
/// Existing files at an entry's path are replaced (removed, then created anew: a symlink or
/// hard link there is never written through); a non-empty directory in the way is an error.
/// Permission bits are restored without setuid/setgid (directories keep the sticky bit);
/// mtimes of files, directories and symlinks are restored; owners are not.
///
/// Recorded deletions are returned in [`Extracted::deleted`]. With
/// [`ExtractOptions::apply_deletions`] they are applied in stream order: a file or symlink is
/// removed, a directory is removed with everything under it, a missing path is fine. Hostile
/// deletion records (absolute, `..`, through a symlink) are refused whether applied or not.
///
/// Decompression runs on this thread while another thread writes files.
pub fn extract<R: Read>(
    input: R,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<Extracted, ArchiveError> {
    fs::create_dir_all(dest).map_err(|source| ArchiveError::Extract {
        entry: PathBuf::from("."),
        path: dest.to_path_buf(),
        source,
    })?;
    let umask = current_umask();
    pipelined(input, |reader| {
        let mut x = Extractor {
            dest,
            opts,
            umask,
            known_dirs: HashSet::new(),
            deferred_dirs: Vec::new(),
            out: Extracted::default(),
            buf: vec![0; COPY_BUF],
        };
        x.run(reader)?;
        x.finish_dirs();
        Ok(x.out)
    })
}

/// The process umask, from /proc (reading it with umask(2) would race other threads).
/// The target a link entry names (empty if it names none).
fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Result<PathBuf, ArchiveError> {
    Ok(entry
        .link_name()
        .map_err(ArchiveError::ReadArchive)?
        .map(|t| t.into_owned())
        .unwrap_or_default())
}

fn current_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

struct Extractor<'a> {
    dest: &'a Path,
    opts: &'a ExtractOptions,
    umask: Option<u32>,
    /// Directories (relative to dest) known to be real directories during this extraction:
    /// saves re-checking parents of every file. Cleared whenever anything is removed.
    known_dirs: HashSet<PathBuf>,
    /// Directory modes and mtimes, applied at the end (a read-only directory would block its
    /// own entries; writing entries changes its mtime).
    deferred_dirs: Vec<(PathBuf, u32, u64)>,
    out: Extracted,
    buf: Vec<u8>,
}

fn refused(entry: &Path, reason: Refusal) -> ArchiveError {
    ArchiveError::Refused {
        entry: entry.to_path_buf(),
        reason,
    }
}

impl Extractor<'_> {
    fn io_err(&self, entry: &Path) -> impl FnOnce(io::Error) -> ArchiveError + use<> {
        let entry = entry.to_path_buf();
        let path = self.dest.join(&entry);
        move |source| ArchiveError::Extract {
            entry,
            path,
            source,
        }
    }

    fn run(&mut self, reader: ChannelReader) -> Result<(), ArchiveError> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(ArchiveError::ReadArchive)? {
            let mut entry = entry.map_err(ArchiveError::ReadArchive)?;
            let ty = entry.header().entry_type();
            if ty.is_pax_global_extensions() {
                for d in deleted_records(&mut entry)? {
                    let rel =
                        clean_relative(&d).map_err(|reason| ArchiveError::RefusedDeletion {
                            entry: d.clone(),
                            reason,
                        })?;
                    if self.opts.apply_deletions {
                        self.delete(&rel)?;
                    }
                    self.out.deleted.push(rel);
                }
                continue;
            }
            let raw = entry
                .path()
                .map_err(ArchiveError::ReadArchive)?
                .into_owned();
            let rel = match clean_relative(&raw) {
                Ok(rel) => rel,
                // `./` itself: the destination, nothing to do.
                Err(Refusal::EmptyPath) if ty == EntryType::Directory => continue,
                Err(reason) => return Err(refused(&raw, reason)),
            };
            let header = entry.header();
            let mode = header.mode().map_err(ArchiveError::ReadArchive)?;
            let mtime = header.mtime().map_err(ArchiveError::ReadArchive)?;
            match ty {
                EntryType::Regular | EntryType::Continuous => {
                    self.file(&rel, &mut entry, mode & 0o777, mtime)?;
                }
                EntryType::Directory => self.dir(&rel, mode & 0o1777, mtime)?,
                EntryType::Symlink => {
                    self.symlink(&rel, &link_target(&entry)?, mtime)?;
                }
                EntryType::Link => {
                    return Err(refused(&raw, Refusal::HardLink(link_target(&entry)?)));
                }
                EntryType::Char => return Err(refused(&raw, Refusal::Special("character device"))),
                EntryType::Block => return Err(refused(&raw, Refusal::Special("block device"))),
                EntryType::Fifo => return Err(refused(&raw, Refusal::Special("FIFO"))),
                other => {
                    return Err(refused(&raw, Refusal::Unsupported(other.as_byte() as char)));
                }
            }
        }
        Ok(())
    }

    /// Makes sure every parent of `rel` is a real directory, creating missing ones.
    fn ensure_parent(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        if self.known_dirs.contains(parent) {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let full = self.dest.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refused(rel, Refusal::ThroughSymlink(cur)));
                }
                Ok(_) => return Err(refused(rel, Refusal::ParentNotDirectory(cur))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(self.io_err(&cur))?;
                }
                Err(e) => return Err(self.io_err(&cur)(e)),
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Removes whatever is at `rel` (never following a symlink) so that an entry can take its
    /// place; a non-empty directory is refused.
    fn remove_existing(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        let full = self.dest.join(rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err(rel)(e)),
        };
        self.known_dirs.clear();
        let result = if meta.is_dir() {
            fs::remove_dir(&full)
        } else {
            fs::remove_file(&full)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                Err(refused(rel, Refusal::NonEmptyDirectory))
            }
            Err(e) => Err(self.io_err(rel)(e)),
        }
    }

    fn file<R: Read>(
        &mut self,
        rel: &Path,
        entry: &mut tar::Entry<'_, R>,
        mode: u32,
        mtime: u64,
    ) -> Result<(), ArchiveError> {
        self.ensure_parent(rel)?;
        let full = self.dest.join(rel);
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&full)
        };
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(rel)?;
                open().map_err(self.io_err(rel))?
            }
            Err(e) => return Err(self.io_err(rel)(e)),
        };
        let size = entry.size();
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::ReadArchive(e)),
            };
            file.write_all(&self.buf[..n]).map_err(self.io_err(rel))?;
            written += n as u64;
            if let Some(p) = &self.opts.progress {
                p.inc(n as u64);
            }
        }
        if written != size {
            return Err(ArchiveError::ReadArchive(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry `{}` is truncated", rel.display()),
            )));
        }
        // The umask trimmed the mode at creation: put the archived bits back.
        if self.umask.is_none_or(|u| mode & u != 0) {
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(self.io_err(rel))?;
        }
        file.set_modified(to_time(mtime))
            .map_err(self.io_err(rel))?;
        self.out.files += 1;
        self.out.bytes += size;
        Ok(())
    }

    fn dir(&mut self, rel: &Path, mode: u32, mtime: u64) -> Result<(), ArchiveError> {
        self.ensure_parent(rel)?;
        if !self.known_dirs.contains(rel) {
            let full = self.dest.join(rel);
            match fs::create_dir(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let is_real_dir = fs::symlink_metadata(&full)
                        .map_err(self.io_err(rel))?
                        .is_dir();
                    if !is_real_dir {
                        self.remove_existing(rel)?;
                        fs::create_dir(&full).map_err(self.io_err(rel))?;
                    }
                }
                Err(e) => return Err(self.io_err(rel)(e)),
            }
            self.known_dirs.insert(rel.to_path_buf());
        }
        self.deferred_dirs.push((rel.to_path_buf(), mode, mtime));
        self.out.dirs += 1;
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &Path, mtime: u64) -> Result<(), ArchiveError> {
        check_link_target(rel, target).map_err(|reason| refused(rel, reason))?;
        self.ensure_parent(rel)?;
        let full = self.dest.join(rel);
        match symlink(target, &full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(rel)?;
                symlink(target, &full).map_err(self.io_err(rel))?;
            }
            Err(e) => return Err(self.io_err(rel)(e)),
        }
        let t = nix::sys::time::TimeSpec::new(mtime as i64, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &full,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.io_err(rel)(e.into()))?;
        self.out.symlinks += 1;
        Ok(())
    }

    /// Applies one recorded deletion (already a clean relative path).
    fn delete(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        let del_err = |source| ArchiveError::Delete {
            entry: rel.to_path_buf(),
            path: self.dest.join(rel),
            source,
        };
        // Every parent must be a real directory; a missing one means nothing to delete.
        let mut cur = self.dest.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                cur.push(c);
                match fs::symlink_metadata(&cur) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        let at = cur.strip_prefix(self.dest).unwrap_or(&cur).to_path_buf();
                        return Err(ArchiveError::RefusedDeletion {
                            entry: rel.to_path_buf(),
                            reason: Refusal::ThroughSymlink(at),
                        });
                    }
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(del_err(e)),
                }
            }
        }
        let full = self.dest.join(rel);
        self.known_dirs.clear();
        let result = match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&full),
            Ok(_) => fs::remove_file(&full),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(del_err(e)),
        }
    }

    /// Sets directory modes and mtimes, deepest first. A directory that is no longer a real
    /// directory reached through real directories (a later entry replaced it) is skipped.
    fn finish_dirs(&mut self) {
        let mut dirs = std::mem::take(&mut self.deferred_dirs);
        dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mode, mtime) in dirs {
            if !self.parents_are_real_dirs(&rel) {
                continue;
            }
            let Ok(dir) = File::options()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
                .open(self.dest.join(&rel))
            else {
                continue;
            };
            let _ = dir.set_permissions(fs::Permissions::from_mode(mode));
            let _ = dir.set_modified(to_time(mtime));
        }
    }

    fn parents_are_real_dirs(&self, rel: &Path) -> bool {
        let mut cur = self.dest.to_path_buf();
        let Some(parent) = rel.parent() else {
            return true;
        };
        parent.components().all(|c| {
            cur.push(c);
            fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir())
        })
    }
}

fn to_time(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}
