//! Remembers each input file's content digest by its stat data (size, mtime, ctime, inode,
//! device), so that computing the key of an unchanged tree reads no file: the idea of git's
//! index. Only an accelerator: a missing or unreadable stat cache means rehashing everything.
//!
//! A file changed within the same timestamp tick as its entry was saved would keep the same
//! stat data; as git does with "racily clean" entries, an entry is trusted only when the file's
//! mtime and ctime are older than the stat cache file's own mtime, and rehashed otherwise.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CacheError;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stat {
    pub fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SavedEntry {
    path: Vec<u8>,
    stat: Stat,
    digest: [u8; 32],
}

pub struct StatCache {
    file: PathBuf,
    /// What the last save held, by path bytes (hashing a `Path` walks its components: slow
    /// for 100,000 of them).
    known: foldhash::HashMap<Vec<u8>, (Stat, [u8; 32])>,
    /// How many entries the last save held (`known` gives its paths up to `seen`).
    loaded: usize,
    /// The mtime of the file `known` was read from: entries not older than it are racy.
    saved_at: (i64, i64),
    /// What this computation saw, which replaces `known` on save.
    seen: Vec<SavedEntry>,
    rehashed: bool,
}

impl StatCache {
    /// The stat cache kept in `file`; empty if there is none or it cannot be read.
    pub fn load(file: PathBuf) -> Self {
        let mut cache = Self {
            file,
            known: foldhash::HashMap::default(),
            loaded: 0,
            saved_at: (i64::MIN, 0),
            seen: Vec::new(),
            rehashed: false,
        };
        let Ok(bytes) = std::fs::read(&cache.file) else {
            return cache;
        };
        let (Ok(meta), Ok(entries)) = (
            std::fs::metadata(&cache.file),
            postcard::from_bytes::<Vec<SavedEntry>>(&bytes),
        ) else {
            return cache;
        };
        cache.saved_at = (meta.mtime(), meta.mtime_nsec());
        cache.loaded = entries.len();
        cache.known = entries
            .into_iter()
            .map(|e| (e.path, (e.stat, e.digest)))
            .collect();
        cache
    }

    /// The digest remembered for `path` if its stat data is unchanged and not racy.
    pub fn lookup(&self, path: &Path, stat: &Stat) -> Option<[u8; 32]> {
        let (known, digest) = self.known.get(path.as_os_str().as_bytes())?;
        let settled = stat.mtime < self.saved_at && stat.ctime < self.saved_at;
        (known == stat && settled).then_some(*digest)
    }

    /// Records what `path` is now; `rehashed` when its content was read for it.
    pub fn record(&mut self, path: &Path, stat: Stat, digest: [u8; 32], rehashed: bool) {
        self.rehashed |= rehashed;
        if self.seen.capacity() == 0 {
            self.seen.reserve(self.loaded);
        }
        // The path the last save held moves over: 100,000 of them are not held twice.
        let bytes = path.as_os_str().as_bytes();
        let path = match self.known.remove_entry(bytes) {
            Some((path, _)) => path,
            None => bytes.to_vec(),
        };
        self.seen.push(SavedEntry { path, stat, digest });
    }

    /// Writes what was recorded, atomically, if anything was rehashed or went away; otherwise
    /// leaves the file (and so its mtime, which racy entries are judged by) alone.
    pub fn save(mut self) -> Result<(), CacheError> {
        if !self.rehashed && self.seen.len() == self.loaded {
            return Ok(());
        }
        // Freed before the file's bytes are made: for 100,000 files, 15 MB of table.
        self.known = foldhash::HashMap::default();
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let write_err = |source| CacheError::Write {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write_err)?;
        // Sized first: a growing buffer would hold up to twice the bytes at once.
        let bytes = postcard::experimental::serialized_size(&self.seen)
            .and_then(|size| postcard::to_extend(&self.seen, Vec::with_capacity(size)))
            .map_err(|e| write_err(std::io::Error::other(e)))?;
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
        std::io::Write::write_all(&mut temp, &bytes).map_err(write_err)?;
        temp.persist(&self.file).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}
