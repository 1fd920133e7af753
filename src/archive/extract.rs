//! Safe extraction, in two phases, so that a corrupt archive leaves the destination as it was
//! and nothing is ever written, followed or deleted outside it.
//!
//! 1. **Stage.** The whole stream is read and verified (Snappy CRCs, tar checksums, bounded
//!    headers, the end-of-archive marker and, in a buildr archive, the closing record) while
//!    files and symlinks are written under numbered names into a private staging directory
//!    inside the destination (see `staging`). Per-entry rules are checked here: names must be
//!    relative with no `..` and fit Linux limits; hard links, devices, FIFOs, sparse files and
//!    unknown types are refused; symlinks whose target may resolve outside the destination
//!    follow [`LinkPolicy`]. Nothing outside the staging directory changes in this phase.
//!    Paths with a `.git` component (in any case) are left out, deletions included, and so are
//!    symlinks whose target has one (whatever resolves through it lands in a `.git`), all
//!    counted in [`Extracted::git_left_out`]. The [`Limits`] are checked as the stream is read:
//!    past either, the archive is refused before more is staged.
//! 2. **Plan.** The journal is replayed against the destination as the archive's own earlier
//!    steps leave it (see `plan`): every refusal that depends on what is already there (a file
//!    or a symlink where a parent directory goes, a non-empty directory where a file goes, a
//!    deletion through a symlink, a directory that a deletion keeps where a file goes) is
//!    decided here, so a refused archive changes nothing.
//! 3. **Commit.** The journal is replayed in archive order: directories are created, staged
//!    entries are renamed into place, deletions applied as [`Deletions`] allow (see
//!    `deletion`). Every parent is reached with
//!    `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (see `beneath`), so a symlink on the
//!    way, whoever put it there, refuses the entry, and an existing entry is replaced by the
//!    rename (a symlink or hard link there is replaced, never written through). Modes of the
//!    directories extraction created, and directory mtimes, come last.
//!
//! Modes get the user's umask, as `tar` gives them for a user who is not root: an archive
//! cannot make anything group- or world-writable that the umask keeps private, and a directory
//! that existed before keeps its mode.
//!
//! The commit phase still checks every step: what another process changes in the destination
//! between the plan and the commit is refused there, leaving the entries before it in place.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

use super::beneath::{Beneath, Unreachable};
use super::deletion::{self, Deletions};
use super::error::{ArchiveError, Limit, Refusal};
use super::file_writers::{self, FileWriters, HANDED_OFF, StagedFile};
use super::names::{check_bytes, check_link_target, clean_relative, is_git_path};
use super::plan::Plan;
use super::read::{ChannelReader, pipelined};
use super::staging::{Record, Staging, Step, create_in};
use super::tar_reader::{Header, Item, Kind, TarReader};
use super::{ExtractOptions, Extracted, Kept, Limits, LinkPolicy, SkippedLink};

/// Copy buffer between the tar stream and a file.
const COPY_BUF: usize = 256 << 10;

/// Extracts a `.tar.s2` stream into `dest` (created if missing), trusting nothing in it, within
/// the default [`Limits`].
pub fn extract<R: Read>(
    input: R,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<Extracted, ArchiveError> {
    extract_within(input, dest, opts, Limits::default())
}

/// Extracts a `.tar.s2` stream into `dest` (created if missing), trusting nothing in it and
/// refusing it whole past `limits`.
///
/// Existing files at an entry's path are replaced; a non-empty directory in the way is an
/// error. Permission bits are restored without setuid/setgid (directories keep the sticky bit)
/// and with the umask applied; an existing directory keeps its mode. Mtimes of files,
/// directories and symlinks are restored; owners are not. Paths under `.git` are left out.
///
/// Recorded deletions are returned in [`Extracted::deleted`]. [`ExtractOptions::deletions`]
/// says which are applied, in stream order: a file or symlink is removed, a directory loses
/// what may go and goes once empty (what stays is counted in [`Extracted::kept`]), a missing
/// path is fine. Hostile deletion records (absolute, `..`, through a symlink) are refused
/// whether applied or not.
///
/// Decompression runs on this thread while another thread stages files, handing the bytes of
/// files up to 1 MiB to writer threads that create them.
pub fn extract_within<R: Read>(
    input: R,
    dest: &Path,
    opts: &ExtractOptions,
    limits: Limits,
) -> Result<Extracted, ArchiveError> {
    let existed = fs::symlink_metadata(dest).is_ok();
    fs::create_dir_all(dest).map_err(|source| ArchiveError::Prepare {
        dest: dest.to_path_buf(),
        source,
    })?;
    let result = extract_into(input, dest, opts, limits);
    if result.is_err() && !existed {
        // Leave no trace: the destination did not exist before (removed only if empty).
        let _ = fs::remove_dir(dest);
    }
    result
}

fn extract_into<R: Read>(
    input: R,
    dest: &Path,
    opts: &ExtractOptions,
    limits: Limits,
) -> Result<Extracted, ArchiveError> {
    let prepare = |source| ArchiveError::Prepare {
        dest: dest.to_path_buf(),
        source,
    };
    let beneath = Beneath::open(dest).map_err(prepare)?;
    let mut staging = Staging::create(beneath.root(), dest).map_err(prepare)?;
    let umask = current_umask();
    let (out, items) = pipelined(input, |reader| {
        let writers = FileWriters::start(staging.dir()).map_err(prepare)?;
        let mut stager = Stager {
            staging: &mut staging,
            dest,
            opts,
            limits,
            umask,
            buf: vec![0; COPY_BUF],
            items: 0,
            data_bytes: 0,
            out: Extracted::default(),
            writers,
        };
        stager.run(reader)?;
        stager
            .writers
            .finish()
            .map_err(|(rel, e)| write_err(&rel, dest)(e))?;
        Ok((stager.out, stager.items))
    })?;
    let mut commit = Commit {
        beneath,
        staging: &mut staging,
        plan: Plan::new(dest, items, limits.max_entries),
        dest,
        kept: Kept::default(),
    };
    commit.run(&opts.deletions)?;
    Ok(Extracted {
        kept: commit.kept,
        ..out
    })
}

/// The process umask, from /proc (reading it with umask(2) would race other threads); the
/// usual 022 if /proc does not say.
fn current_umask() -> u32 {
    let read = || {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
    };
    read().unwrap_or(0o022)
}

fn refused(entry: &Path, reason: Refusal) -> ArchiveError {
    ArchiveError::Refused {
        entry: entry.to_path_buf(),
        reason,
    }
}

fn write_err<E: Into<std::io::Error>>(
    entry: &Path,
    dest: &Path,
) -> impl FnOnce(E) -> ArchiveError + use<E> {
    let (entry, dest) = (entry.to_path_buf(), dest.to_path_buf());
    move |e| ArchiveError::Extract {
        entry,
        dest,
        source: e.into(),
    }
}

fn time(secs: i64) -> TimeSpec {
    TimeSpec::new(secs, 0)
}

/// Phase 1: reads and verifies the stream, staging files and symlinks, journaling every step.
struct Stager<'a> {
    staging: &'a mut Staging,
    dest: &'a Path,
    opts: &'a ExtractOptions,
    limits: Limits,
    umask: u32,
    buf: Vec<u8>,
    /// Entries and deletions read, `.git` ones included.
    items: u64,
    /// File data bytes announced, `.git` ones included.
    data_bytes: u64,
    out: Extracted,
    writers: FileWriters,
}

impl Stager<'_> {
    fn run(&mut self, reader: ChannelReader) -> Result<(), ArchiveError> {
        let mut tar = TarReader::new(reader);
        while let Some(item) = tar.next_item()? {
            self.items += 1;
            if self.items > self.limits.max_entries {
                return Err(ArchiveError::OverLimit {
                    what: Limit::Entries,
                    limit: self.limits.max_entries,
                });
            }
            match item {
                Item::Deleted(d) => {
                    let rel =
                        clean_relative(&d).map_err(|reason| ArchiveError::RefusedDeletion {
                            entry: d.clone(),
                            reason,
                        })?;
                    if self.left_out(&rel) {
                        continue;
                    }
                    self.journal(Step::Delete, 0, 0, 0, &rel)?;
                    self.out.deleted.push(rel);
                }
                Item::Entry(h) => self.entry(h, &mut tar)?,
            }
        }
        Ok(())
    }

    fn entry(&mut self, h: Header, tar: &mut TarReader<ChannelReader>) -> Result<(), ArchiveError> {
        let rel = match clean_relative(&h.path) {
            Ok(rel) => rel,
            // `./` itself: the destination, nothing to do.
            Err(Refusal::EmptyPath) if h.kind == Kind::Dir => return Ok(()),
            Err(reason) => return Err(refused(&h.path, reason)),
        };
        if h.kind == Kind::File {
            self.data_bytes = self.data_bytes.saturating_add(h.size);
            if self.data_bytes > self.limits.max_bytes {
                return Err(ArchiveError::OverLimit {
                    what: Limit::Bytes,
                    limit: self.limits.max_bytes,
                });
            }
        }
        if self.left_out(&rel) {
            // Its data, if any, is skipped by the next read.
            return Ok(());
        }
        let link = h.link.clone().unwrap_or_default();
        match h.kind {
            Kind::File => self.file(&rel, &h, tar),
            Kind::Dir => {
                self.out.dirs += 1;
                self.journal(Step::Dir, h.mode & 0o1777 & !self.umask, h.mtime, 0, &rel)
            }
            Kind::Symlink => self.symlink(&rel, link, h.mtime),
            Kind::HardLink => Err(refused(&h.path, Refusal::HardLink(link))),
            Kind::Char => Err(refused(&h.path, Refusal::Special("character device"))),
            Kind::Block => Err(refused(&h.path, Refusal::Special("block device"))),
            Kind::Fifo => Err(refused(&h.path, Refusal::Special("FIFO"))),
            Kind::Other(flag) => Err(refused(&h.path, Refusal::Unsupported(char::from(flag)))),
        }
    }

    /// Leaves out a path under `.git`, counting it: nothing a task produces belongs there, and
    /// a hook or a config there would run code in the user's repository.
    fn left_out(&mut self, rel: &Path) -> bool {
        if !is_git_path(rel) {
            return false;
        }
        self.out.git_left_out.add(rel);
        true
    }

    fn journal(
        &mut self,
        step: Step,
        mode: u32,
        mtime: i64,
        id: u64,
        rel: &Path,
    ) -> Result<(), ArchiveError> {
        let record = Record {
            step,
            mode,
            mtime,
            id,
            path: rel.to_path_buf(),
        };
        self.staging
            .record(&record)
            .map_err(write_err(rel, self.dest))
    }

    fn file(
        &mut self,
        rel: &Path,
        h: &Header,
        tar: &mut TarReader<ChannelReader>,
    ) -> Result<(), ArchiveError> {
        // Created with the umask applied, as the kernel applies it anyway.
        let mode = h.mode & 0o777 & !self.umask;
        let (id, name) = self.staging.next_name();
        if h.size <= HANDED_OFF {
            let mut data = vec![0; h.size as usize];
            let mut filled = 0;
            while filled < data.len() {
                match tar.read_data(&mut data[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            self.progress(data.len());
            let file = StagedFile {
                name,
                rel: rel.to_path_buf(),
                mode,
                mtime: h.mtime,
                data,
            };
            self.writers
                .write(file)
                .map_err(|(rel, e)| write_err(&rel, self.dest)(e))?;
        } else {
            let mut file =
                create_in(self.staging.dir(), &name, mode).map_err(write_err(rel, self.dest))?;
            loop {
                let n = tar.read_data(&mut self.buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&self.buf[..n])
                    .map_err(write_err(rel, self.dest))?;
                self.progress(n);
            }
            file_writers::set_mtime(&file, h.mtime).map_err(write_err(rel, self.dest))?;
        }
        self.out.files += 1;
        self.out.bytes += h.size;
        self.journal(Step::File, mode, h.mtime, id, rel)
    }

    fn progress(&self, bytes: usize) {
        if let Some(p) = &self.opts.progress {
            p.inc(bytes as u64);
        }
    }

    fn symlink(&mut self, rel: &Path, target: PathBuf, mtime: i64) -> Result<(), ArchiveError> {
        check_bytes(&target).map_err(|reason| refused(rel, reason))?;
        // `rel` has no `.git` component, so the link resolves into a `.git` exactly when its
        // target names one (lexically; above the destination too, which may sit in a
        // repository): the user's next tool that writes the link would write the hook.
        if is_git_path(&target) {
            self.out.git_left_out.add(rel);
            return Ok(());
        }
        if let Err(reason) = check_link_target(rel, &target) {
            match self.opts.links {
                LinkPolicy::Refuse => return Err(refused(rel, reason)),
                LinkPolicy::Skip => {
                    self.out.skipped_links.push(SkippedLink {
                        path: rel.to_path_buf(),
                        target,
                    });
                    return Ok(());
                }
                LinkPolicy::Allow => {}
            }
        }
        let (id, name) = self.staging.next_name();
        let dir = self.staging.dir();
        nix::unistd::symlinkat(&target, dir, name.as_str()).map_err(write_err(rel, self.dest))?;
        nix::sys::stat::utimensat(
            dir,
            name.as_str(),
            &TimeSpec::UTIME_OMIT,
            &time(mtime),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(write_err(rel, self.dest))?;
        self.out.symlinks += 1;
        self.journal(Step::Symlink, 0, mtime, id, rel)
    }
}

/// The parent directory of `rel` beneath the destination (created if missing) and `rel`'s name.
fn reach<'b, 'r>(
    beneath: &'b mut Beneath,
    rel: &'r Path,
    dest: &Path,
) -> Result<(BorrowedFd<'b>, &'r std::ffi::OsStr), ArchiveError> {
    beneath.parent(rel, true).map_err(|e| match e {
        Unreachable::Refused(reason) => refused(rel, reason),
        Unreachable::Missing(_) => write_err(rel, dest)(Errno::ENOENT),
        Unreachable::Io(source) => write_err(rel, dest)(source),
    })
}

/// Phase 2: puts the verified entries in place, beneath the destination, following no link.
struct Commit<'a> {
    beneath: Beneath,
    staging: &'a mut Staging,
    plan: Plan,
    dest: &'a Path,
    /// What the deletions applied so far kept.
    kept: Kept,
}

impl Commit<'_> {
    fn run(&mut self, deletions: &Deletions) -> Result<(), ArchiveError> {
        let journal_err = |source| ArchiveError::Prepare {
            dest: self.dest.to_path_buf(),
            source,
        };
        let mut journal = self.staging.replay().map_err(journal_err)?;
        while let Some(r) = journal.next_record().map_err(journal_err)? {
            self.plan.check(&mut self.beneath, &r, deletions)?;
        }
        let mut journal = self.staging.replay().map_err(journal_err)?;
        while let Some(r) = journal.next_record().map_err(journal_err)? {
            match r.step {
                Step::File | Step::Symlink => self.place(&r)?,
                Step::Dir => self.make_dir(&r)?,
                Step::Delete if deletions.applied() => self.delete(&r.path, deletions)?,
                Step::Delete => {}
            }
        }
        // Directory modes and mtimes last: entries placed in a directory change its mtime, and
        // a read-only one would have kept them out. A directory that a later entry replaced is
        // no longer reachable as one and is left alone; one that existed keeps its mode.
        let mut journal = self.staging.replay().map_err(journal_err)?;
        while let Some(r) = journal.next_record().map_err(journal_err)? {
            if r.step == Step::Dir
                && let Ok(fd) = self.beneath.open_dir_for_update(&r.path)
            {
                if self.plan.created_dir(&r.path) {
                    let _ = nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(r.mode));
                }
                let _ = nix::sys::stat::futimens(&fd, &TimeSpec::UTIME_OMIT, &time(r.mtime));
            }
        }
        Ok(())
    }

    /// Renames a staged file or symlink into place; whatever is there is replaced, an empty
    /// directory included.
    fn place(&mut self, r: &Record) -> Result<(), ArchiveError> {
        let staged = r.id.to_string();
        let staging = self.staging.dir();
        let dest = self.dest;
        let (parent, name) = reach(&mut self.beneath, &r.path, dest)?;
        match nix::fcntl::renameat(staging, staged.as_str(), parent, name) {
            Ok(()) => return Ok(()),
            Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => {
                match nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
                    Ok(()) => {}
                    Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                        return Err(refused(&r.path, Refusal::NonEmptyDirectory));
                    }
                    Err(e) => return Err(write_err(&r.path, dest)(e)),
                }
                nix::fcntl::renameat(staging, staged.as_str(), parent, name)
                    .map_err(write_err(&r.path, dest))?;
            }
            Err(e) => return Err(write_err(&r.path, dest)(e)),
        }
        self.beneath.forget();
        Ok(())
    }

    /// Creates a directory, replacing a file or symlink in its place; an existing directory
    /// stays as it is.
    fn make_dir(&mut self, r: &Record) -> Result<(), ArchiveError> {
        let dest = self.dest;
        let mode = Mode::from_bits_truncate((r.mode | 0o700) & 0o777);
        let (parent, name) = reach(&mut self.beneath, &r.path, dest)?;
        let err = |e: Errno| write_err(&r.path, dest)(e);
        match nix::sys::stat::mkdirat(parent, name, mode) {
            Ok(()) => return Ok(()),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(e)),
        }
        let st =
            nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(err)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            return Ok(());
        }
        nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(err)?;
        nix::sys::stat::mkdirat(parent, name, mode).map_err(err)?;
        self.beneath.forget();
        Ok(())
    }

    /// Applies one recorded deletion (a clean relative path) as `deletions` allow: a missing
    /// path, or one under a file, is already gone; one under a symlink is refused.
    fn delete(&mut self, rel: &Path, deletions: &Deletions) -> Result<(), ArchiveError> {
        let dest = self.dest;
        let del_err = |source: std::io::Error| ArchiveError::Delete {
            entry: rel.to_path_buf(),
            dest: dest.to_path_buf(),
            source,
        };
        let (parent, name) = match self.beneath.parent(rel, false) {
            Ok(found) => found,
            Err(Unreachable::Missing(_) | Unreachable::Refused(Refusal::ParentNotDirectory(_))) => {
                return Ok(());
            }
            Err(Unreachable::Refused(reason)) => {
                return Err(ArchiveError::RefusedDeletion {
                    entry: rel.to_path_buf(),
                    reason,
                });
            }
            Err(Unreachable::Io(e)) => return Err(del_err(e)),
        };
        let result = deletion::remove(parent, name, rel, deletions, deletion::Mode::Apply);
        self.beneath.forget();
        self.kept.extend(result.map_err(del_err)?);
        Ok(())
    }
}
