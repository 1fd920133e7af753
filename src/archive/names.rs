//! Path rules shared by writing and extraction: what an entry name and a symlink target may be,
//! and how a name is shown.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::error::Refusal;

/// Longest path Linux accepts (`PATH_MAX` less its NUL): longer names and link targets are
/// refused rather than read into memory.
pub const MAX_PATH: usize = 4095;
/// Longest file name component Linux file systems accept (`NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// `p` as a relative path of normal components only (`.` components dropped), within what
/// Linux accepts.
pub(crate) fn clean_relative(p: &Path) -> Result<PathBuf, Refusal> {
    check_bytes(p)?;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) if s.len() > MAX_NAME => return Err(Refusal::NameTooLong),
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::LeavesDestination),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::AbsolutePath),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Refusal::EmptyPath);
    }
    Ok(out)
}

/// Whether `p` has a `.git` component at any depth, in any letter case.
///
/// Nothing a task produces belongs there (its inputs leave `.git` out), and a file under a
/// repository's `.git` runs code or redirects history: a hook, `core.fsmonitor` in a config, a
/// `.git` file pointing elsewhere. Git itself refuses such tree entries, and on file systems that
/// ignore case it treats `.GIT` as `.git` (its `verify_path`), so case is ignored here too.
pub fn is_git_path(p: &Path) -> bool {
    p.components()
        .any(|c| c.as_os_str().as_bytes().eq_ignore_ascii_case(b".git"))
}

/// Refuses what no Linux path can hold: a NUL byte, or more than [`MAX_PATH`] bytes.
pub(crate) fn check_bytes(p: &Path) -> Result<(), Refusal> {
    let bytes = p.as_os_str().as_bytes();
    if bytes.contains(&0) {
        Err(Refusal::NulByte)
    } else if bytes.len() > MAX_PATH {
        Err(Refusal::NameTooLong)
    } else {
        Ok(())
    }
}

/// A path as it is shown in messages and listings: escaped as [`crate::printable::Printable`]
/// escapes text, and bytes that are not UTF-8 as `\xNN`, so a name can neither drive the
/// terminal nor break a line.
pub struct Quoted<'a>(pub &'a Path);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.as_os_str().as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                crate::printable::write_char(f, c)?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Checks that a symlink at `entry` (already clean) pointing at `target` stays inside the
/// destination.
///
/// Only targets of the shape `../../a/b` are accepted: some leading `..`, no more than the link's
/// directory is deep, then normal components. A `..` after a normal component is refused even
/// when it looks harmless, because that component may itself be a symlink (created by an earlier
/// entry) and then the kernel's `..` is not the lexical one. With this rule, and with every
/// parent directory checked to be a real directory, every link the extraction creates resolves
/// inside the destination.
pub(crate) fn check_link_target(entry: &Path, target: &Path) -> Result<(), Refusal> {
    let depth = entry.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut seen_normal = false;
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refusal::AbsoluteLinkTarget(target.to_path_buf()));
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if seen_normal {
                    return Err(Refusal::NonCanonicalLinkTarget(target.to_path_buf()));
                }
                ups += 1;
                if ups > depth {
                    return Err(Refusal::LinkLeavesDestination(target.to_path_buf()));
                }
            }
            Component::Normal(_) => seen_normal = true,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean() {
        assert_eq!(
            clean_relative(Path::new("./a//b/./c")).unwrap(),
            Path::new("a/b/c")
        );
        assert_eq!(clean_relative(Path::new("/a")), Err(Refusal::AbsolutePath));
        assert_eq!(
            clean_relative(Path::new("a/../b")),
            Err(Refusal::LeavesDestination)
        );
        assert_eq!(clean_relative(Path::new("./")), Err(Refusal::EmptyPath));
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(clean_relative(Path::new(&long)), Err(Refusal::NameTooLong));
    }

    #[test]
    fn git_paths_at_any_depth_and_in_any_case() {
        for p in [
            ".git",
            ".git/hooks/pre-commit",
            "sub/.git/config",
            "a/.GIT",
            "x/.Git/y",
        ] {
            assert!(is_git_path(Path::new(p)), "{p}");
        }
        for p in ["git", ".gitignore", "a/.github/x", "a.git/b", ".git2"] {
            assert!(!is_git_path(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn quoting() {
        use std::ffi::OsStr;
        let q = |b: &[u8]| Quoted(Path::new(OsStr::from_bytes(b))).to_string();
        assert_eq!(q(b"plain/\xc3\xbc name"), "plain/\u{fc} name");
        assert_eq!(q(b"a\x1b[31mb\x07\nc"), "a\\u{1b}[31mb\\u{7}\\nc");
        assert_eq!(q(b"bad\xffbyte\\"), "bad\\xffbyte\\\\");
    }

    #[test]
    fn link_targets() {
        let ok = |e: &str, t: &str| check_link_target(Path::new(e), Path::new(t)).is_ok();
        assert!(ok("a", "b"));
        assert!(ok("a/b", "../c/d"));
        assert!(ok("a/b/c", "../../x"));
        assert!(ok("a", "./b"));
        assert!(!ok("a", "../x"));
        assert!(!ok("a/b", "../../x"));
        assert!(!ok("a", "/etc"));
        assert!(!ok("a/b", "c/../../x"));
        assert!(!ok("a", "b/.."));
    }
}
