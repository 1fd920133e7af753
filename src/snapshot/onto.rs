//! A workspace that holds a seed snapshot (a warm pod's, pulled by its pool's controller before
//! the pod was marked ready) brought to another snapshot by the difference alone: what the
//! seed has and the next does not is removed, what changed or is new is written from the packs
//! that hold it, and modes are set. Then the workspace is compared with the next index (paths,
//! kinds, modes, sizes, link targets), so that it equals a fresh copy exactly, or the apply fails
//! and the workspace is left empty.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashSet};

use super::apply::{Applied, ApplyError, apply, check_entries, empty, make_writable};
use super::index::{ContentDigest, Entry, Index, Kind};

/// What turns the seed's tree into the next one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Difference {
    /// Paths to remove (a directory with what it holds), outermost first.
    pub remove: Vec<String>,
    /// The entries to write, and the packs of the next snapshot that hold their contents.
    pub write: Index,
    /// Entries whose mode alone changed.
    pub modes: Vec<(String, u32)>,
}

/// The difference between the trees of `seed` and `next`.
pub fn difference(seed: &Index, next: &Index) -> Difference {
    let before: HashMap<&str, &Entry> = seed.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let after: HashSet<&str> = next.entries.iter().map(|e| e.path.as_str()).collect();
    let mut difference = Difference::default();
    for entry in &next.entries {
        match before.get(entry.path.as_str()) {
            None => difference.write.entries.push(entry.clone()),
            Some(old) if same_thing(old, entry) => {
                if old.mode != entry.mode {
                    difference.modes.push((entry.path.clone(), entry.mode));
                }
            }
            Some(_) => {
                difference.remove.push(entry.path.clone());
                difference.write.entries.push(entry.clone());
            }
        }
    }
    difference.remove.extend(
        seed.entries
            .iter()
            .filter(|entry| !after.contains(entry.path.as_str()))
            .map(|entry| entry.path.clone()),
    );
    difference.remove.sort();
    // What lies under a path that goes goes with it.
    let mut kept: Vec<String> = Vec::new();
    for path in std::mem::take(&mut difference.remove) {
        if !kept
            .last()
            .is_some_and(|outer| Path::new(&path).starts_with(outer))
        {
            kept.push(path);
        }
    }
    difference.remove = kept;
    let needed: HashSet<&ContentDigest> = difference
        .write
        .entries
        .iter()
        .filter_map(|entry| entry.digest.as_ref())
        .collect();
    difference.write.packs = next
        .packs
        .iter()
        .filter(|pack| pack.blobs.iter().any(|blob| needed.contains(blob)))
        .cloned()
        .collect();
    difference
}

/// Whether two entries of one path are the same thing: the same kind, and the same content or
/// target (the mode aside).
fn same_thing(old: &Entry, new: &Entry) -> bool {
    old.kind == new.kind
        && match new.kind {
            Kind::File => old.digest == new.digest,
            Kind::Symlink => old.target == new.target,
            Kind::Dir => true,
        }
}

/// Brings `into`, which holds the tree of a seed, to the tree of `next` by their `difference`
/// ([`difference`]), the contents read from `pack_file(digest)` (only the packs of
/// [`Difference::write`] are read). On an error `into` is left empty.
pub fn apply_onto(
    next: &Index,
    difference: &Difference,
    pack_file: impl Fn(&str) -> PathBuf,
    into: &Path,
) -> Result<Applied, ApplyError> {
    let began = std::time::Instant::now();
    check_entries(next)?;
    let applied = change(next, difference, pack_file, into).and_then(|applied| {
        tracing::debug!("difference applied at {:?}", began.elapsed());
        matches(next, into)?;
        tracing::debug!("workspace compared at {:?}", began.elapsed());
        Ok(applied)
    });
    if applied.is_err() {
        empty(into);
    }
    applied
}

fn change(
    next: &Index,
    difference: &Difference,
    pack_file: impl Fn(&str) -> PathBuf,
    into: &Path,
) -> Result<Applied, ApplyError> {
    let write = |path: PathBuf| move |source| ApplyError::Write { path, source };
    // A read-only directory of the seed must be writable to change what it holds: each parent
    // of a changed path is opened (itself only: what lies under it stays as it is).
    let changed = difference
        .remove
        .iter()
        .chain(difference.write.entries.iter().map(|e| &e.path));
    let opened: BTreeSet<&str> = changed
        .filter_map(|path| Path::new(path).parent()?.to_str())
        .filter(|parent| !parent.is_empty())
        .collect();
    for parent in opened.iter().filter(|parent| a_directory(into, parent)) {
        let _ = fs::set_permissions(into.join(parent), fs::Permissions::from_mode(0o700));
    }
    for path in &difference.remove {
        let full = into.join(path);
        let removed = match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {
                let _ = make_writable(&full);
                fs::remove_dir_all(&full)
            }
            Ok(_) => fs::remove_file(&full),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(write(full))?;
    }
    let applied = apply(&difference.write, pack_file, into)?;
    for (path, mode) in &difference.modes {
        let full = into.join(path);
        fs::set_permissions(&full, fs::Permissions::from_mode(mode & 0o1777))
            .map_err(write(full))?;
    }
    // The directories opened above closed again, as the next tree has them, deepest first.
    let closing = next.entries.iter().rev().filter(|e| e.kind == Kind::Dir);
    let closing =
        closing.filter(|e| opened.contains(e.path.as_str()) && a_directory(into, &e.path));
    for entry in closing {
        let full = into.join(&entry.path);
        fs::set_permissions(&full, fs::Permissions::from_mode(entry.mode & 0o1777))
            .map_err(write(full))?;
    }
    Ok(applied)
}

/// Whether `relative` is a directory of `into` reached through directories only: a mode is
/// never set through a symlink of the seed's tree, which may point anywhere.
fn a_directory(into: &Path, relative: &str) -> bool {
    let mut ancestors: Vec<&Path> = Path::new(relative).ancestors().collect();
    ancestors.pop(); // the empty path: `into` itself
    ancestors
        .iter()
        .all(|ancestor| fs::symlink_metadata(into.join(ancestor)).is_ok_and(|meta| meta.is_dir()))
}

/// Whether `into` holds exactly the tree of `next`: every path, its kind, its permission bits,
/// a file's size, a link's target; and nothing else. Paths are handled as bytes in one reused
/// buffer: a `PathBuf` and a `Path` hash for each of 100,000 entries cost more than the
/// `lstat`s, which are made on every core.
fn matches(next: &Index, into: &Path) -> Result<(), ApplyError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = next.entries.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let checks: Vec<_> = next
            .entries
            .chunks(chunk)
            .map(|entries| scope.spawn(move || entries_match(entries, into)))
            .collect();
        checks
            .into_iter()
            .try_for_each(|check| check.join().expect("a comparison does not panic"))
    })?;
    nothing_else(next, into)
}

fn differs(path: &[u8], why: &str) -> ApplyError {
    ApplyError::Differs {
        path: String::from_utf8_lossy(path).into_owned(),
        why: why.to_string(),
    }
}

/// `into` joined with `relative`, in `buffer` (which holds `into` and a slash first).
fn joined(buffer: &mut Vec<u8>, root: usize, relative: &[u8]) -> PathBuf {
    buffer.truncate(root);
    buffer.extend_from_slice(relative);
    PathBuf::from(OsStr::from_bytes(buffer))
}

fn with_slash(into: &Path) -> Vec<u8> {
    let mut buffer = into.as_os_str().as_bytes().to_vec();
    buffer.push(b'/');
    buffer
}

/// Whether each of `entries` is in `into` as it says.
fn entries_match(entries: &[Entry], into: &Path) -> Result<(), ApplyError> {
    let mut buffer = with_slash(into);
    let root = buffer.len();
    for entry in entries {
        let path = entry.path.as_bytes();
        let full = joined(&mut buffer, root, path);
        let meta = fs::symlink_metadata(&full).map_err(|_| differs(path, "missing"))?;
        let (kind, mask) = match entry.kind {
            Kind::File => (meta.is_file(), 0o777),
            Kind::Dir => (meta.is_dir(), 0o1777),
            Kind::Symlink => (meta.file_type().is_symlink(), 0),
        };
        if !kind {
            return Err(differs(path, "another kind"));
        }
        if meta.mode() & mask != entry.mode & mask {
            return Err(differs(path, "another mode"));
        }
        if entry.kind == Kind::File && meta.size() != entry.size {
            return Err(differs(path, "another size"));
        }
        if entry.kind == Kind::Symlink
            && fs::read_link(&full).ok().as_deref() != entry.target.as_deref().map(Path::new)
        {
            return Err(differs(path, "another target"));
        }
    }
    Ok(())
}

/// Whether `into` holds nothing `next` does not list, every entry it lists being there: when
/// the tree counts as many entries as the index, there is nothing else; otherwise each is
/// looked up, to name what is not listed.
fn nothing_else(next: &Index, into: &Path) -> Result<(), ApplyError> {
    let unreadable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ApplyError::Write { path, source }
    };
    let mut count = 0;
    let mut stack = vec![into.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(unreadable(&dir))?.flatten() {
            count += 1;
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    if count == next.entries.len() {
        return Ok(());
    }
    let mut buffer = with_slash(into);
    let root = buffer.len();
    let listed: HashSet<&[u8]> = next.entries.iter().map(|e| e.path.as_bytes()).collect();
    // Parents an index of mapped inputs leaves out are made as a copy makes them.
    let a_parent = |dir: &[u8]| {
        listed
            .iter()
            .any(|path| path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
    };
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let full = joined(&mut buffer, root, &dir);
        for entry in fs::read_dir(&full).map_err(unreadable(&full))?.flatten() {
            let mut relative = dir.clone();
            if !relative.is_empty() {
                relative.push(b'/');
            }
            relative.extend_from_slice(entry.file_name().as_bytes());
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            let expected = listed.contains(relative.as_slice()) || (is_dir && a_parent(&relative));
            if !expected {
                return Err(differs(&relative, "not in the snapshot"));
            }
            if is_dir {
                stack.push(relative);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::PackRef;

    fn file(path: &str, digest: &str, mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            kind: Kind::File,
            mode,
            digest: Some(content(digest)),
            size: 1,
            target: None,
        }
    }

    /// A content digest named by `name`.
    fn content(name: &str) -> ContentDigest {
        ContentDigest(<sha2::Sha256 as sha2::Digest>::digest(name).into())
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_string(),
            kind: Kind::Dir,
            mode: 0o755,
            digest: None,
            size: 0,
            target: None,
        }
    }

    fn pack(digest: &str, blobs: &[&str]) -> PackRef {
        PackRef {
            digest: digest.to_string(),
            size: 1,
            raw: 1,
            blobs: blobs.iter().map(|b| content(b)).collect(),
        }
    }

    #[test]
    fn the_difference_is_what_changed_and_only_its_packs() {
        let seed = Index {
            entries: vec![
                dir("gone"),
                file("gone/a", "sha256:1", 0o644),
                file("kept", "sha256:2", 0o644),
                file("moded", "sha256:3", 0o644),
                file("edited", "sha256:4", 0o644),
                file("was-file", "sha256:5", 0o644),
            ],
            packs: vec![pack(
                "p1",
                &["sha256:1", "sha256:2", "sha256:3", "sha256:4", "sha256:5"],
            )],
        };
        let next = Index {
            entries: vec![
                file("edited", "sha256:6", 0o644),
                file("kept", "sha256:2", 0o644),
                file("moded", "sha256:3", 0o755),
                file("new", "sha256:2", 0o644),
                dir("was-file"),
            ],
            packs: vec![
                pack(
                    "p1",
                    &["sha256:1", "sha256:2", "sha256:3", "sha256:4", "sha256:5"],
                ),
                pack("p2", &["sha256:6"]),
            ],
        };
        let difference = difference(&seed, &next);
        assert_eq!(difference.remove, ["edited", "gone", "was-file"]);
        let written: Vec<&str> = difference
            .write
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(written, ["edited", "new", "was-file"]);
        assert_eq!(difference.modes, [("moded".to_string(), 0o755)]);
        // "new" holds a content of the seed's pack: that pack is read again, the rest is not.
        let packs: Vec<&str> = difference
            .write
            .packs
            .iter()
            .map(|p| p.digest.as_str())
            .collect();
        assert_eq!(packs, ["p1", "p2"]);
        let same = difference_of_same(&next);
        assert_eq!(
            same,
            Difference {
                write: Index::default(),
                ..Difference::default()
            }
        );
    }

    #[test]
    fn a_seeded_workspace_brought_to_the_next_tree_equals_it_and_a_stray_file_fails_it() {
        use crate::snapshot::apply::tests::{listing, snapshot_of, tree};
        use crate::snapshot::host::pack_name;
        let (repo, packs, into) = (
            tree(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let seed = snapshot_of(repo.path(), packs.path());
        apply(&seed, |d| packs.path().join(pack_name(d)), into.path()).unwrap();

        // Inside a read-only directory, an edit; elsewhere a removal, a new file, a mode, a
        // link retargeted, a file become a directory.
        let root = repo.path();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("locked/inside"), "edited\n").unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::remove_dir_all(root.join("src/deep")).unwrap();
        fs::write(root.join("new.txt"), "new\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("new.txt", root.join("link")).unwrap();
        fs::remove_file(root.join("same.txt")).unwrap();
        fs::create_dir(root.join("same.txt")).unwrap();
        fs::write(root.join("same.txt/now"), "a directory\n").unwrap();
        let next = snapshot_of(repo.path(), packs.path());

        let pack_file = |d: &str| packs.path().join(pack_name(d));
        let applied = apply_onto(&next, &difference(&seed, &next), pack_file, into.path()).unwrap();
        assert_eq!(listing(into.path()), listing(repo.path()));
        assert_eq!(applied.files, 3, "only what changed is written");

        // A file the seed did not have, found in the workspace: the apply fails, and leaves
        // the workspace empty for a whole copy.
        fs::write(into.path().join("stray"), "not in any snapshot\n").unwrap();
        let error =
            apply_onto(&next, &difference(&next, &next), pack_file, into.path()).unwrap_err();
        assert!(
            error.to_string().contains("`stray` (not in the snapshot)"),
            "{error}"
        );
        assert_eq!(fs::read_dir(into.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_link_of_the_seed_become_a_directory_changes_nothing_it_pointed_to() {
        use crate::snapshot::apply::tests::{listing, snapshot_of, tree};
        use crate::snapshot::host::pack_name;
        let (repo, packs, into, outside) = (
            tree(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let root = repo.path();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        let seed = snapshot_of(root, packs.path());
        apply(&seed, |d| packs.path().join(pack_name(d)), into.path()).unwrap();

        // The link becomes a directory with a file in it: its parent is opened for the file.
        fs::remove_file(root.join("out")).unwrap();
        fs::create_dir(root.join("out")).unwrap();
        fs::write(root.join("out/built"), "x\n").unwrap();
        let next = snapshot_of(root, packs.path());
        let pack_file = |d: &str| packs.path().join(pack_name(d));
        apply_onto(&next, &difference(&seed, &next), pack_file, into.path()).unwrap();

        assert_eq!(listing(into.path()), listing(root));
        let mode = fs::metadata(outside.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755, "the link's target keeps its mode");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    fn difference_of_same(index: &Index) -> Difference {
        super::difference(index, index)
    }
}
