//! Where extraction keeps what it has read until the whole archive is verified: a private
//! directory inside the destination (the same file system, so putting a file in place is one
//! rename, as `rsync --delay-updates` does), holding staged files and symlinks under numbered
//! names, and a journal of the steps to apply, in archive order. The journal is on disk, so
//! memory stays bounded however many entries the archive holds. Dropping the staging removes
//! the directory and whatever is still in it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::tar_format::BLOCK;

/// The staging directory's name starts with this, in the destination.
pub(crate) const STAGING_PREFIX: &str = ".buildr-extract-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A staged file goes to its place.
    File,
    /// A staged symlink goes to its place.
    Symlink,
    /// A directory is created (its mode and mtime are set last).
    Dir,
    /// A recorded deletion.
    Delete,
}

#[derive(Debug)]
pub(crate) struct Record {
    pub step: Step,
    pub mode: u32,
    pub mtime: i64,
    /// The staged file or symlink's number (files and symlinks only).
    pub id: u64,
    /// Where it goes, relative to the destination (clean).
    pub path: PathBuf,
}

pub(crate) struct Staging {
    path: PathBuf,
    dir: OwnedFd,
    journal: BufWriter<File>,
    next_id: u64,
}

impl Staging {
    /// Creates the staging directory (0700) in `dest`, reached through `root`.
    pub(crate) fn create(root: BorrowedFd<'_>, dest: &Path) -> io::Result<Self> {
        let name = format!(
            "{STAGING_PREFIX}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        nix::sys::stat::mkdirat(root, name.as_str(), Mode::S_IRWXU)?;
        let dir = nix::fcntl::openat(
            root,
            name.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let staging = Staging {
            path: dest.join(&name),
            journal: BufWriter::with_capacity(64 << 10, create_in(&dir, "journal", 0o600)?),
            dir,
            next_id: 0,
        };
        Ok(staging)
    }

    pub(crate) fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// A fresh staged name.
    pub(crate) fn next_name(&mut self) -> (u64, String) {
        let id = self.next_id;
        self.next_id += 1;
        (id, id.to_string())
    }

    pub(crate) fn record(&mut self, r: &Record) -> io::Result<()> {
        let path = r.path.as_os_str().as_bytes();
        let step = match r.step {
            Step::File => 0u8,
            Step::Symlink => 1,
            Step::Dir => 2,
            Step::Delete => 3,
        };
        self.journal.write_all(&[step])?;
        self.journal.write_all(&r.mode.to_le_bytes())?;
        self.journal.write_all(&r.mtime.to_le_bytes())?;
        self.journal.write_all(&r.id.to_le_bytes())?;
        self.journal.write_all(&(path.len() as u32).to_le_bytes())?;
        self.journal.write_all(path)
    }

    /// Reads the journal from its start (it can be replayed several times).
    pub(crate) fn replay(&mut self) -> io::Result<Replay> {
        self.journal.flush()?;
        let mut file = self.journal.get_ref().try_clone()?;
        file.rewind()?;
        Ok(Replay(BufReader::with_capacity(64 << 10, file)))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Everything in it is ours; remove_dir_all does not follow symlinks.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Creates a new file `name` in `dir` with `mode` (the umask applies, as the kernel applies it
/// anyway), failing if anything is there, a symlink included.
pub(crate) fn create_in(dir: impl AsFd, name: &str, mode: u32) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )?;
    Ok(File::from(fd))
}

pub(crate) struct Replay(BufReader<File>);

impl Replay {
    pub(crate) fn next_record(&mut self) -> io::Result<Option<Record>> {
        let mut head = [0u8; 1 + 4 + 8 + 8 + 4];
        match self.0.read_exact(&mut head[..1]) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            other => other?,
        }
        self.0.read_exact(&mut head[1..])?;
        let word = |r: std::ops::Range<usize>| -> [u8; 8] {
            let mut w = [0u8; 8];
            w[..r.len()].copy_from_slice(&head[r]);
            w
        };
        let step = match head[0] {
            0 => Step::File,
            1 => Step::Symlink,
            2 => Step::Dir,
            _ => Step::Delete,
        };
        let len = u64::from_le_bytes(word(21..25)) as usize;
        // Journal paths were clean names of at most PATH_MAX bytes when written.
        let mut path = vec![0u8; len.min(16 * BLOCK)];
        self.0.read_exact(&mut path)?;
        Ok(Some(Record {
            step,
            mode: u64::from_le_bytes(word(1..5)) as u32,
            mtime: i64::from_le_bytes(word(5..13)),
            id: u64::from_le_bytes(word(13..21)),
            path: PathBuf::from(std::ffi::OsString::from_vec(path)),
        }))
    }
}
