//! Path resolution beneath the destination that never follows a symlink: every directory is
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the destination's own
//! descriptor, and every entry is then created, renamed or removed relative to its parent's
//! descriptor. A symlink anywhere on the way (planted before, created by the archive, or put
//! there by another process meanwhile) makes the kernel refuse, so extraction only ever creates
//! links and never writes through one, whatever they point at.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::error::Refusal;

/// Why a parent directory could not be reached.
pub(crate) enum Unreachable {
    /// The entry is refused (a symlink or a non-directory on the way).
    Refused(Refusal),
    /// A parent is missing (and was not to be created): the first one missing.
    Missing(PathBuf),
    Io(io::Error),
}

pub(crate) struct Beneath {
    root: OwnedFd,
    /// The last parent opened: consecutive entries mostly share one.
    last: Option<(PathBuf, OwnedFd)>,
}

/// RESOLVE_NO_SYMLINKS refuses a symlink as any component, the last one included (ELOOP); no
/// O_NOFOLLOW, which with O_PATH would open the link itself instead.
fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// Opens `rel` beneath `at` as a directory (`O_PATH`), without following symlinks.
fn open_dir(at: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Errno> {
    openat2(at, rel, how(OFlag::O_PATH | OFlag::O_DIRECTORY))
}

/// Opens the directory `name` in `at` to list and remove what it holds, without following a
/// link (one there is refused: ELOOP).
pub(crate) fn open_dir_in(at: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat2(at, name, how(OFlag::O_RDONLY | OFlag::O_DIRECTORY))
}

impl Beneath {
    /// Opens the destination itself (which may be reached through symlinks: it is the caller's).
    pub(crate) fn open(dest: &Path) -> io::Result<Self> {
        let root = nix::fcntl::open(
            dest,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath { root, last: None })
    }

    pub(crate) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Forgets the cached parent (after anything was removed or replaced).
    pub(crate) fn forget(&mut self) {
        self.last = None;
    }

    /// The parent directory of `rel` (a clean relative path) and `rel`'s last component. With
    /// `create`, missing directories on the way are created.
    pub(crate) fn parent<'a>(
        &mut self,
        rel: &'a Path,
        create: bool,
    ) -> Result<(BorrowedFd<'_>, &'a OsStr), Unreachable> {
        let name = rel.file_name().unwrap_or(rel.as_os_str());
        let parent = rel.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() {
            return Ok((self.root.as_fd(), name));
        }
        let cached = self.last.as_ref().is_some_and(|(p, _)| p == parent);
        if !cached {
            let fd = match open_dir(self.root.as_fd(), parent) {
                Ok(fd) => fd,
                Err(_) => self.walk(parent, create)?,
            };
            self.last = Some((parent.to_path_buf(), fd));
        }
        let (_, fd) = self.last.as_ref().expect("set just above");
        Ok((fd.as_fd(), name))
    }

    /// Opens `parent` one component at a time, to create what is missing and to name the
    /// component that is in the way.
    fn walk(&self, parent: &Path, create: bool) -> Result<OwnedFd, Unreachable> {
        let mut at: Option<OwnedFd> = None;
        let mut so_far = PathBuf::new();
        for component in parent.components() {
            so_far.push(component);
            let dir = at.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let step = Path::new(component.as_os_str());
            let opened = match open_dir(dir, step) {
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(dir, step, Mode::from_bits_truncate(0o777)) {
                        Ok(()) | Err(Errno::EEXIST) => open_dir(dir, step),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            at = Some(match opened {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Err(Unreachable::Missing(so_far)),
                Err(Errno::ELOOP) => {
                    return Err(Unreachable::Refused(Refusal::ThroughSymlink(so_far)));
                }
                Err(Errno::ENOTDIR) => {
                    return Err(Unreachable::Refused(Refusal::ParentNotDirectory(so_far)));
                }
                Err(e) => return Err(Unreachable::Io(e.into())),
            });
        }
        // `parent` is not empty, so the loop ran at least once.
        at.ok_or_else(|| Unreachable::Missing(parent.to_path_buf()))
    }

    /// Opens the directory `rel` itself for reading (to set its mode and times), beneath the
    /// root and without following symlinks.
    pub(crate) fn open_dir_for_update(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        openat2(
            self.root.as_fd(),
            rel,
            how(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
        )
    }
}
