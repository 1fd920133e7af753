//! Path rules shared by writing and extraction: what an entry name and a symlink target may be.

use std::path::{Component, Path, PathBuf};

use super::error::Refusal;

/// `p` as a relative path of normal components only (`.` components dropped).
pub(crate) fn clean_relative(p: &Path) -> Result<PathBuf, Refusal> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
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
