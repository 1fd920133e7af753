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
use std::sync::Mutex;
use std::thread::JoinHandle;

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

/// The file's form: a sequence of these.
#[derive(Serialize, Deserialize)]
struct SavedEntry<P> {
    path: P,
    stat: Stat,
    digest: [u8; 32],
}

/// What is known of one path.
struct Known {
    stat: Stat,
    digest: [u8; 32],
    /// Recorded by this computation: only such entries are saved.
    seen: bool,
}

/// One table, by path bytes (hashing a `Path` walks its components: slow for 100,000 of
/// them), for what the last save held and what this computation saw: the two at once were
/// 25 MB for 100,000 files.
type Table = foldhash::HashMap<Box<[u8]>, Known>;

pub struct StatCache {
    file: PathBuf,
    table: Table,
    /// How many entries the last save held, and how many this computation saw.
    loaded: usize,
    seen: usize,
    /// The mtime of the file the table was read from: entries not older than it are racy.
    saved_at: (i64, i64),
    rehashed: bool,
}

/// Stat caches being read on threads of their own, by file: a run starts reading its own
/// while it collects its inputs (tens of MB for 100,000 files, a tenth of a second or more),
/// and [`StatCache::load`] takes it from here.
static PRELOADING: Mutex<Vec<(PathBuf, JoinHandle<StatCache>)>> = Mutex::new(Vec::new());

impl StatCache {
    /// Starts reading the stat cache kept in `file` on a thread of its own, unless that is under
    /// way; the next [`Self::load`] of `file` in this process takes what it read.
    pub fn preload(file: PathBuf) {
        let mut preloading = PRELOADING.lock().unwrap_or_else(|e| e.into_inner());
        if preloading.iter().any(|(preloaded, _)| *preloaded == file) {
            return;
        }
        let reading = file.clone();
        let started = std::thread::Builder::new()
            .name("stat-cache".into())
            .spawn(move || Self::read(reading));
        if let Ok(loading) = started {
            preloading.push((file, loading));
        }
    }

    /// The stat cache kept in `file` (as [`Self::preload`] read it, if it did); empty if there
    /// is none or it cannot be read.
    pub fn load(file: PathBuf) -> Self {
        let preloaded = {
            let mut preloading = PRELOADING.lock().unwrap_or_else(|e| e.into_inner());
            let at = preloading
                .iter()
                .position(|(preloaded, _)| *preloaded == file);
            at.map(|at| preloading.swap_remove(at).1)
        };
        match preloaded.map(JoinHandle::join) {
            Some(Ok(cache)) => cache,
            _ => Self::read(file),
        }
    }

    fn read(file: PathBuf) -> Self {
        let mut cache = Self {
            file,
            table: Table::default(),
            loaded: 0,
            seen: 0,
            saved_at: (i64::MIN, 0),
            rehashed: false,
        };
        let Ok(bytes) = std::fs::read(&cache.file) else {
            return cache;
        };
        let (Ok(meta), Ok(table)) = (std::fs::metadata(&cache.file), read_table(&bytes)) else {
            return cache;
        };
        cache.saved_at = (meta.mtime(), meta.mtime_nsec());
        cache.loaded = table.len();
        cache.table = table;
        cache
    }

    /// The digest remembered for `path` if its stat data is unchanged and not racy.
    pub fn lookup(&self, path: &Path, stat: &Stat) -> Option<[u8; 32]> {
        let known = self.table.get(path.as_os_str().as_bytes())?;
        let settled = stat.mtime < self.saved_at && stat.ctime < self.saved_at;
        (known.stat == *stat && settled).then_some(known.digest)
    }

    /// Records what `path` is now; `rehashed` when its content was read for it.
    pub fn record(&mut self, path: &Path, stat: Stat, digest: [u8; 32], rehashed: bool) {
        self.rehashed |= rehashed;
        let now = Known {
            stat,
            digest,
            seen: true,
        };
        let bytes = path.as_os_str().as_bytes();
        let before = match self.table.get_mut(bytes) {
            Some(known) => Some(std::mem::replace(known, now)),
            None => self.table.insert(bytes.into(), now),
        };
        if !before.is_some_and(|known| known.seen) {
            self.seen += 1;
        }
    }

    /// [`Self::save`] on a blocking thread of this process's runtime, when it has one (which
    /// waits for it before the process ends), so that what needs the scan need not wait for
    /// the write; at once otherwise. A save that fails only costs the next scan its speed.
    pub fn save_later(self) {
        let save = move || {
            if let Err(e) = self.save() {
                tracing::debug!("cannot save the stat cache: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(save)),
            Err(_) => save(),
        }
    }

    /// Writes what was recorded, atomically, if anything was rehashed or went away; otherwise
    /// leaves the file (and so its mtime, which racy entries are judged by) alone.
    pub fn save(self) -> Result<(), CacheError> {
        if !self.rehashed && self.seen == self.loaded {
            return Ok(());
        }
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let write_err = |source| CacheError::Write {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write_err)?;
        let temp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
        // Written as it is serialized: 100,000 entries are 10 MB of bytes.
        let out = std::io::BufWriter::new(temp);
        let out = postcard::to_io(&Seen(&self.table, self.seen), out)
            .map_err(|e| write_err(std::io::Error::other(e)))?;
        let temp = out.into_inner().map_err(|e| write_err(e.into_error()))?;
        temp.persist(&self.file).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}

/// The table the file's `bytes` hold, each entry read into its place (not into a list first:
/// for 100,000 files that was 11 MB more at once).
fn read_table(bytes: &[u8]) -> Result<Table, postcard::Error> {
    /// The fewest bytes an entry takes (an empty path, every integer of one byte), which
    /// bounds what a damaged file's count may reserve.
    const SMALLEST: usize = 1 + 7 + 32;
    struct Entries(usize);
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Table;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence of stat cache entries")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Table, A::Error> {
            let mut table = Table::default();
            table.reserve(seq.size_hint().unwrap_or(0).min(self.0));
            while let Some(entry) = seq.next_element::<SavedEntry<Box<[u8]>>>()? {
                let known = Known {
                    stat: entry.stat,
                    digest: entry.digest,
                    seen: false,
                };
                table.insert(entry.path, known);
            }
            Ok(table)
        }
    }
    let mut input = postcard::Deserializer::from_bytes(bytes);
    serde::Deserializer::deserialize_seq(&mut input, Entries(bytes.len() / SMALLEST))
}

/// The entries of a table this computation saw (how many it says), as a file holds them.
struct Seen<'a>(&'a Table, usize);

impl Serialize for Seen<'_> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = out.serialize_seq(Some(self.1))?;
        for (path, known) in self.0.iter().filter(|(_, known)| known.seen) {
            seq.serialize_element(&SavedEntry {
                path: &**path,
                stat: known.stat,
                digest: known.digest,
            })?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64) -> Stat {
        Stat {
            size,
            mtime: (1, 0),
            ctime: (1, 0),
            ino: 7,
            dev: 8,
        }
    }

    /// What one computation recorded, the next finds, in the file's form of earlier releases
    /// (a list of path bytes, stat data, digest); what it did not see is dropped.
    #[test]
    fn what_was_seen_is_saved_and_found_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stat");
        let old = [
            (b"/r/a".to_vec(), stat(1), [1; 32]),
            (b"/r/gone".to_vec(), stat(2), [2; 32]),
        ];
        let old: Vec<SavedEntry<Vec<u8>>> = old
            .into_iter()
            .map(|(path, stat, digest)| SavedEntry { path, stat, digest })
            .collect();
        std::fs::write(&file, postcard::to_stdvec(&old).unwrap()).unwrap();

        let mut cache = StatCache::load(file.clone());
        assert_eq!(cache.lookup(Path::new("/r/a"), &stat(1)), Some([1; 32]));
        assert_eq!(
            cache.lookup(Path::new("/r/a"), &stat(3)),
            None,
            "another size"
        );
        cache.record(Path::new("/r/a"), stat(1), [1; 32], false);
        cache.record(Path::new("/r/new"), stat(4), [4; 32], true);
        cache.save().unwrap();

        let cache = StatCache::load(file);
        assert_eq!(cache.lookup(Path::new("/r/a"), &stat(1)), Some([1; 32]));
        assert_eq!(cache.lookup(Path::new("/r/new"), &stat(4)), Some([4; 32]));
        assert_eq!(cache.lookup(Path::new("/r/gone"), &stat(2)), None);
        assert_eq!(cache.loaded, 2);
    }

    /// A stat cache read ahead is the one the next load of its file takes, once; any other
    /// load reads its file.
    #[test]
    fn a_preloaded_stat_cache_is_the_file_s_and_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stat");
        let mut cache = StatCache::load(file.clone());
        cache.record(Path::new("/r/a"), stat(1), [1; 32], true);
        cache.save().unwrap();
        let preloading = |file: &Path| {
            let preloading = PRELOADING.lock().unwrap();
            preloading.iter().filter(|(f, _)| f == file).count()
        };

        StatCache::preload(file.clone());
        StatCache::preload(file.clone());
        StatCache::preload(dir.path().join("another"));
        assert_eq!(preloading(&file), 1);
        let preloaded = StatCache::load(file.clone());
        assert_eq!(preloaded.lookup(Path::new("/r/a"), &stat(1)), Some([1; 32]));
        assert_eq!(preloaded.loaded, 1);
        assert_eq!(preloading(&file), 0, "taken");
        assert_eq!(preloading(&dir.path().join("another")), 1);
        let read = StatCache::load(file);
        assert_eq!(read.lookup(Path::new("/r/a"), &stat(1)), Some([1; 32]));
    }
}
