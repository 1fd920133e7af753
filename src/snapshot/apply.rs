//! A workspace built from a snapshot: its index and the packs it names, read from local files
//! (downloaded from the registry, or kept in a host's cache). The index and the packs come
//! from elsewhere and are untrusted, and a snapshot that fails any check leaves nothing:
//!
//! - before anything is written: every path is relative, made of plain components, and listed
//!   once; none lies under an entry that is not a directory (a symlink in the index cannot be
//!   written through); every file's content is in a pack the index names;
//! - as each content is written, its bytes are checked against its digest (one pass over the
//!   data, which is what makes a warm host's run cheap); a pack that does not hold what it says
//!   fails the apply, and what was written is removed.
//!
//! Files get the index's permission bits (without set-id bits), directories are created as the
//! index lists them (and the parents it leaves out, as a tar extraction does), symlinks keep
//! their targets, which only the task follows.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::index::{ContentDigest, Index, Kind};
use crate::archive::Sha256Writer;

/// Why a snapshot was not applied; nothing of it was written, unless the error is `Write`.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the snapshot's entry `{0}` is not a plain relative path")]
    BadPath(String),
    #[error("the snapshot lists `{0}` twice")]
    Duplicate(String),
    #[error("the snapshot's entry `{path}` lies under `{parent}`, which is not a directory")]
    UnderNonDirectory { path: String, parent: String },
    #[error("the snapshot's file `{0}` has no content digest")]
    NoDigest(String),
    #[error("no pack of the snapshot holds the content of `{0}`")]
    Missing(String),
    #[error("the pack {digest} is damaged or tampered with: {why}")]
    BadPack { digest: String, why: String },
    #[error("the workspace differs from the snapshot at `{path}` ({why})")]
    Differs { path: String, why: String },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Builds the tree of `index` under `into` (an existing, empty directory), the content of each
/// pack read from `pack_file(digest)`. On an error `into` is left empty.
pub fn apply(
    index: &Index,
    pack_file: impl Fn(&str) -> PathBuf,
    into: &Path,
) -> Result<Applied, ApplyError> {
    let applied = Applying::start(index, into).and_then(|applying| {
        for pack in &index.packs {
            let path = pack_file(&pack.digest);
            let file = File::open(&path).map_err(|source| ApplyError::Write { path, source })?;
            applying.pack(&pack.digest, file)?;
        }
        applying.finish()
    });
    if applied.is_err() {
        empty(into);
    }
    applied
}

/// An apply in steps, for packs that arrive one by one (a pull applies each as it comes, on a
/// thread of its own): [`Applying::start`] checks the index and makes its directories,
/// [`Applying::pack`] writes the contents one pack holds (from any thread, in any order), and
/// [`Applying::finish`] checks that every pack came, then makes the links and sets the
/// directories' modes. On an error, the caller empties the workspace ([`apply`] does).
pub struct Applying {
    into: PathBuf,
    /// For each pack: where each content it is to write goes (every path that holds it, with
    /// its mode). A content two packs hold is written from the first.
    assigned: HashMap<String, HashMap<ContentDigest, Vec<(String, u32)>>>,
    /// The links, and the directories with their modes, for the end.
    symlinks: Vec<(String, String)>,
    dirs: Vec<(String, u32)>,
    done: std::sync::Mutex<(Applied, HashSet<String>)>,
}

impl Applying {
    /// Checks `index` and makes its directories under `into` (existing, empty).
    pub fn start(index: &Index, into: &Path) -> Result<Self, ApplyError> {
        check_entries(index)?;
        let write = |path: PathBuf| move |source| ApplyError::Write { path, source };
        // Directories first (sorted, so parents before children), then contents, then links:
        // no file or link is ever written under a path the index does not make a directory.
        let dirs: Vec<(String, u32)> = index
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Dir)
            .map(|e| (e.path.clone(), e.mode))
            .collect();
        for (dir, _) in &dirs {
            let path = into.join(dir);
            fs::create_dir_all(&path).map_err(write(path))?;
        }
        // The parents an index of mapped inputs leaves out, as a tar extraction makes them:
        // each once, here, and not for every file as it is written (two system calls each).
        let listed: HashSet<&str> = dirs.iter().map(|(dir, _)| dir.as_str()).collect();
        let mut made = HashSet::new();
        for entry in index.entries.iter().filter(|e| e.kind != Kind::Dir) {
            let Some((parent, _)) = entry.path.rsplit_once('/') else {
                continue;
            };
            if !listed.contains(parent) && made.insert(parent) {
                let path = into.join(parent);
                fs::create_dir_all(&path).map_err(write(path))?;
            }
        }
        // Where each content goes: every path that holds it.
        let mut destinations: HashMap<ContentDigest, Vec<(String, u32)>> = HashMap::new();
        for entry in index.entries.iter().filter(|e| e.kind == Kind::File) {
            // check_entries made sure that every file has a digest.
            let Some(digest) = entry.digest else { continue };
            destinations
                .entry(digest)
                .or_default()
                .push((entry.path.clone(), entry.mode & 0o777));
        }
        let mut assigned = HashMap::new();
        for pack in &index.packs {
            let mine: HashMap<ContentDigest, Vec<(String, u32)>> = pack
                .blobs
                .iter()
                .filter_map(|blob| destinations.remove_entry(blob))
                .collect();
            assigned.insert(pack.digest.clone(), mine);
        }
        let symlinks = index
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Symlink)
            .map(|e| (e.path.clone(), e.target.clone().unwrap_or_default()))
            .collect();
        let done = Applied {
            dirs: dirs.len() as u64,
            ..Applied::default()
        };
        Ok(Self {
            into: into.to_path_buf(),
            assigned,
            symlinks,
            dirs,
            done: std::sync::Mutex::new((done, HashSet::new())),
        })
    }

    /// Writes what the pack `digest` (its `.tar.s2` bytes from `pack`) is to write, each content
    /// checked against its digest as it is written.
    pub fn pack(&self, digest: &str, pack: impl Read) -> Result<(), ApplyError> {
        let write = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ApplyError::Write { path, source }
        };
        let bad = |why: String| ApplyError::BadPack {
            digest: digest.to_string(),
            why,
        };
        let empty = HashMap::new();
        let mine = self.assigned.get(digest).unwrap_or(&empty);
        let mut left: HashSet<&ContentDigest> = mine.keys().collect();
        let mut applied = Applied::default();
        let mut archive = tar::Archive::new(snap::read::FrameDecoder::new(pack));
        for blob in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut blob = blob.map_err(|e| bad(e.to_string()))?;
            let name = blob.path().map_err(|e| bad(e.to_string()))?;
            let name = name.to_string_lossy().into_owned();
            let Some(content) = ContentDigest::from_hex(&name) else {
                continue;
            };
            let (Some(paths), true) = (mine.get(&content), left.remove(&content)) else {
                continue;
            };
            let (first, mode) = &paths[0];
            let target = self.into.join(first);
            let (written, size) = write_file(&mut blob, &target, *mode).map_err(write(&target))?;
            if written != name {
                return Err(bad(format!("its blob {name} holds other bytes")));
            }
            for (other, mode) in &paths[1..] {
                let copy = self.into.join(other);
                fs::copy(&target, &copy).map_err(write(&copy))?;
                fs::set_permissions(&copy, fs::Permissions::from_mode(*mode))
                    .map_err(write(&copy))?;
            }
            applied.files += paths.len() as u64;
            applied.bytes += size * paths.len() as u64;
        }
        if let Some(missing) = left.iter().next() {
            let path = mine[*missing].first().map(|(path, _)| path.clone());
            return Err(ApplyError::Missing(
                path.unwrap_or_else(|| missing.to_string()),
            ));
        }
        // A poisoned lock is a panic on another pack's thread; the counts are still usable.
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.0.files += applied.files;
        done.0.bytes += applied.bytes;
        done.1.insert(digest.to_string());
        Ok(())
    }

    /// Checks that every pack with something to write came, then makes the links and sets the
    /// directories' modes.
    pub fn finish(self) -> Result<Applied, ApplyError> {
        let (mut applied, came) = self.done.into_inner().unwrap_or_else(|p| p.into_inner());
        for (pack, mine) in &self.assigned {
            if let Some(paths) = mine.values().next().filter(|_| !came.contains(pack)) {
                let path = paths.first().map_or(pack.as_str(), |(path, _)| path);
                return Err(ApplyError::Missing(path.to_string()));
            }
        }
        let write = |path: PathBuf| move |source| ApplyError::Write { path, source };
        for (link, target) in &self.symlinks {
            let path = self.into.join(link);
            std::os::unix::fs::symlink(target, &path).map_err(write(path))?;
            applied.symlinks += 1;
        }
        // Last, so that a read-only directory was still writable while it was filled; deepest
        // first, for the same reason.
        for (dir, mode) in self.dirs.iter().rev() {
            let path = self.into.join(dir);
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o1777))
                .map_err(write(path))?;
        }
        Ok(applied)
    }
}

/// Checks every entry's path and place, and that every file's content is in a named pack.
pub(super) fn check_entries(index: &Index) -> Result<(), ApplyError> {
    let held: HashSet<&ContentDigest> = index.packs.iter().flat_map(|pack| &pack.blobs).collect();
    // Paths are compared as text, so only the one spelling of each is accepted (no empty
    // component: `a//b` and `a/b/` would be `a/b` to the file system).
    let mut seen = HashSet::new();
    for entry in &index.entries {
        let path = entry.path.as_str();
        let plain = path
            .split('/')
            .all(|component| !matches!(component, "" | "." | ".."));
        if !plain {
            return Err(ApplyError::BadPath(entry.path.clone()));
        }
        if !seen.insert(path) {
            return Err(ApplyError::Duplicate(entry.path.clone()));
        }
        if entry.kind == Kind::File {
            let digest = entry
                .digest
                .as_ref()
                .ok_or_else(|| ApplyError::NoDigest(entry.path.clone()))?;
            if !held.contains(digest) {
                return Err(ApplyError::Missing(entry.path.clone()));
            }
        }
    }
    let not_dirs: HashSet<&str> = index
        .entries
        .iter()
        .filter(|entry| entry.kind != Kind::Dir)
        .map(|entry| entry.path.as_str())
        .collect();
    for entry in &index.entries {
        let path = entry.path.as_str();
        let mut parents = path.rmatch_indices('/').map(|(slash, _)| &path[..slash]);
        if let Some(parent) = parents.find(|parent| not_dirs.contains(parent)) {
            return Err(ApplyError::UnderNonDirectory {
                path: entry.path.clone(),
                parent: parent.to_string(),
            });
        }
    }
    Ok(())
}

/// Writes `content` to a new file at `path` with `mode`: the hex digest and size of what was
/// written.
fn write_file(content: &mut impl Read, path: &Path, mode: u32) -> io::Result<(String, u64)> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut hashing = Sha256Writer::new(file);
    io::copy(content, &mut hashing)?;
    let (file, hex, size) = hashing.finish();
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok((hex, size))
}

/// Removes everything under `dir`, which stays.
pub(super) fn empty(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // A read-only directory the apply made must be writable to be removed.
        let _ = make_writable(&path);
        let _ = match entry.file_type() {
            Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
    }
}

pub(super) fn make_writable(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(path)?.flatten() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::stat_cache::StatCache;
    use crate::snapshot::host::pack_name;
    use crate::snapshot::index::{Entry, PackRef, scan};
    use crate::snapshot::pack::{self, Planned};
    use crate::task::collect_inputs;

    /// A snapshot of `repo` made as a push makes it, its packs written under `packs`.
    pub(in crate::snapshot) fn snapshot_of(repo: &Path, packs: &Path) -> Index {
        let inputs = collect_inputs(repo, &[]).unwrap();
        let mut stat_cache = StatCache::load(PathBuf::new());
        let entries = scan(&inputs, &mut stat_cache).unwrap();
        let mut refs = Vec::new();
        for planned in pack::plan(&entries, &inputs, Vec::new()) {
            let Planned::New(blobs) = planned else {
                unreachable!("nothing is known")
            };
            let built = pack::build(&blobs, Vec::new()).unwrap();
            fs::write(packs.join(pack_name(&built.digest)), &built.out).unwrap();
            refs.push(PackRef {
                digest: built.digest,
                size: built.size,
                raw: blobs.iter().map(|b| b.size).sum(),
                blobs: blobs.into_iter().map(|b| b.digest).collect(),
            });
        }
        Index {
            entries,
            packs: refs,
        }
    }

    pub(in crate::snapshot) fn tree() -> tempfile::TempDir {
        let repo = tempfile::tempdir().unwrap();
        fill_tree(repo.path());
        repo
    }

    /// What a tree must keep through a copy: modes, links, an empty and a read-only directory.
    pub(crate) fn fill_tree(root: &Path) {
        fs::create_dir_all(root.join("src/deep/er")).unwrap();
        fs::write(root.join("src/a.rs"), "fn a() {}\n").unwrap();
        fs::write(root.join("src/deep/er/b.rs"), "fn b() {}\n").unwrap();
        fs::write(root.join("same.txt"), "fn a() {}\n").unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        fs::create_dir(root.join("locked")).unwrap();
        fs::write(root.join("locked/inside"), "kept\n").unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("src/a.rs", root.join("link")).unwrap();
    }

    /// Every path under `root`, its mode, and its content or target.
    pub(crate) fn listing(root: &Path) -> Vec<(String, u32, String)> {
        let mut out = Vec::new();
        for entry in walkdir(root) {
            let meta = fs::symlink_metadata(&entry).unwrap();
            let name = entry.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.is_symlink() {
                fs::read_link(&entry).unwrap().display().to_string()
            } else if meta.is_file() {
                fs::read_to_string(&entry).unwrap()
            } else {
                String::new()
            };
            out.push((name, meta.permissions().mode() & 0o7777, what));
        }
        out.sort();
        out
    }

    fn walkdir(root: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if fs::symlink_metadata(&path).unwrap().is_dir() {
                    stack.push(path.clone());
                }
                found.push(path);
            }
        }
        found
    }

    #[test]
    fn the_workspace_equals_the_tree() {
        let (repo, packs, into) = (
            tree(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let index = snapshot_of(repo.path(), packs.path());
        let applied = apply(&index, |d| packs.path().join(pack_name(d)), into.path()).unwrap();
        assert_eq!(listing(into.path()), listing(repo.path()));
        assert_eq!((applied.files, applied.symlinks), (5, 1));
    }

    /// `index` changed by `hostile` is refused with `said`, and nothing is written.
    fn refused(hostile: impl FnOnce(&mut Index, &Path), said: &str) {
        let (repo, packs, into) = (
            tree(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let mut index = snapshot_of(repo.path(), packs.path());
        hostile(&mut index, packs.path());
        let error = apply(&index, |d| packs.path().join(pack_name(d)), into.path()).unwrap_err();
        assert!(error.to_string().contains(said), "{error}");
        assert_eq!(fs::read_dir(into.path()).unwrap().count(), 0);
    }

    fn file_entry(path: &str, like: &Index) -> Entry {
        Entry {
            path: path.to_string(),
            ..like
                .entries
                .iter()
                .find(|e| e.kind == Kind::File)
                .unwrap()
                .clone()
        }
    }

    #[test]
    fn a_hostile_or_damaged_snapshot_applies_nothing() {
        refused(
            |index, _| index.entries.push(file_entry("../escaped", index)),
            "not a plain relative path",
        );
        // An absolute path of the test's own: were it ever let through (the tests run as root),
        // it lands in a temporary directory, not over a system file.
        refused(
            |index, packs| {
                let absolute = packs.join("escaped").display().to_string();
                index.entries.push(file_entry(&absolute, index))
            },
            "not a plain relative path",
        );
        refused(
            |index, _| index.entries.push(file_entry("link/through", index)),
            "lies under `link`",
        );
        refused(
            |index, _| index.entries.push(file_entry("src/a.rs", index)),
            "lists `src/a.rs` twice",
        );
        // Another spelling of a path the index holds: the same file to the file system.
        for respelled in ["src//a.rs", "src/a.rs/", "./src/a.rs"] {
            refused(
                |index, _| index.entries.push(file_entry(respelled, index)),
                "not a plain relative path",
            );
        }
        refused(
            |index, _| {
                let entry = index
                    .entries
                    .iter_mut()
                    .find(|e| e.kind == Kind::File)
                    .unwrap();
                entry.digest = Some(ContentDigest([0; 32]));
            },
            "no pack of the snapshot holds",
        );
        refused(
            |index, packs| {
                // The pack's blobs, each holding other bytes than its name says.
                let mut tar = tar::Builder::new(snap::write::FrameEncoder::new(Vec::new()));
                for name in &index.packs[0].blobs {
                    let mut header = tar::Header::new_ustar();
                    header.set_size(4);
                    tar.append_data(&mut header, name.hex(), &b"evil"[..])
                        .unwrap();
                }
                let forged = tar.into_inner().unwrap().into_inner().unwrap();
                fs::write(packs.join(pack_name(&index.packs[0].digest)), forged).unwrap();
            },
            "damaged or tampered with",
        );
    }
}
