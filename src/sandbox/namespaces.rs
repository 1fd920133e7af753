//! User, mount and network namespaces, entered by the task's process between fork and exec:
//! the credentials and the repository covered by empty read-only mounts, and (with
//! `egress = "none"`) a network of its own with only a loopback. Everything the child does is a
//! plain system call on data prepared before the fork: a forked child of the multi-threaded
//! executor must not allocate.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The namespaces one task enters, prepared before the fork.
#[derive(Debug)]
pub struct Namespaces {
    net: bool,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    hide_dirs: Vec<CString>,
    hide_files: Vec<CString>,
}

/// Which step of [`Namespaces::enter`] failed, for the one line that says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    User,
    Mount,
    Net,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Mount => "mount",
            Self::Net => "net",
        }
    }
}

impl Namespaces {
    /// The task keeps its own user and group ids inside; `hide` (existing paths) are covered.
    pub fn new<'a>(hide: impl IntoIterator<Item = &'a Path>, net: bool) -> Self {
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        let mut hide_dirs = Vec::new();
        let mut hide_files = Vec::new();
        let hide: Vec<&Path> = hide.into_iter().collect();
        // What is under a covered directory is gone already (and no longer a mount point).
        let outermost = hide.iter().filter(|path| {
            !hide
                .iter()
                .any(|other| other != *path && path.starts_with(other))
        });
        for path in outermost {
            let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
                continue;
            };
            match path.metadata() {
                Ok(meta) if meta.is_dir() => hide_dirs.push(c),
                Ok(_) => hide_files.push(c),
                Err(_) => {}
            }
        }
        Self {
            net,
            uid_map: format!("{uid} {uid} 1").into_bytes(),
            gid_map: format!("{gid} {gid} 1").into_bytes(),
            hide_dirs,
            hide_files,
        }
    }

    /// The names in force, for `-v`: `user,mount` or `user,mount,net`.
    pub fn names(&self) -> &'static str {
        if self.net {
            "user,mount,net"
        } else {
            "user,mount"
        }
    }

    /// Enters the namespaces. Only for a single-threaded process about to exec (a forked child).
    pub fn enter(&self) -> Result<(), (Step, io::Error)> {
        let mut flags = libc::CLONE_NEWUSER;
        check(unsafe { libc::unshare(flags) }).map_err(|e| (Step::User, e))?;
        write_file(c"/proc/self/setgroups", b"deny").map_err(|e| (Step::User, e))?;
        write_file(c"/proc/self/uid_map", &self.uid_map).map_err(|e| (Step::User, e))?;
        write_file(c"/proc/self/gid_map", &self.gid_map).map_err(|e| (Step::User, e))?;
        flags = libc::CLONE_NEWNS;
        check(unsafe { libc::unshare(flags) }).map_err(|e| (Step::Mount, e))?;
        self.hide().map_err(|e| (Step::Mount, e))?;
        if self.net {
            check(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map_err(|e| (Step::Net, e))?;
            loopback_up().map_err(|e| (Step::Net, e))?;
        }
        Ok(())
    }

    fn hide(&self) -> io::Result<()> {
        // Private: nothing mounted here propagates back to the host's mount namespace.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        for dir in &self.hide_dirs {
            check(unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"size=4k,mode=0500".as_ptr().cast(),
                )
            })?;
        }
        for file in &self.hide_files {
            check(unsafe {
                libc::mount(
                    c"/dev/null".as_ptr(),
                    file.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            })?;
        }
        Ok(())
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd)?;
    let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let result = if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    unsafe { libc::close(fd) };
    result
}

/// A new network namespace's loopback starts down: up, the task can serve and reach itself.
fn loopback_up() -> io::Result<()> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    let rc = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) };
    let result = check(rc);
    unsafe { libc::close(fd) };
    result
}
