//! Cache entries on disk, one file each: `<dir>/entries/<key>.entry`.
//!
//! An entry is written to a temporary file beside its place and renamed there once complete, so
//! a reader sees a whole entry or none, and two runs storing the same key at once each rename a
//! whole entry (the last one stays). Its layout:
//!
//! ```text
//! "BUILDRC1"  record length, output length, archive length (u64 little-endian each)
//! record (JSON)  recorded output (see super::record)  result archive (.tar.s2, may be empty)
//! SHA-256 of all the bytes before it, 64 lower-case hex digits
//! ```
//!
//! Every read checks the SHA-256 first: a damaged entry is reported and deleted, never used.
//! A hit sets the entry's mtime, which is what least-recently-used eviction goes by once the
//! entries' total size passes the bound.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{CacheError, Key, Record};
use crate::archive::Sha256Writer;

const MAGIC: &[u8; 8] = b"BUILDRC1";
const HEADER: u64 = 8 + 3 * 8;
const TRAILER: u64 = 64;
const ENTRY_EXTENSION: &str = "entry";
/// How entries being written start their names; one older than [`ABANDONED_AFTER`] was left by
/// a run that died, and `prune` deletes it.
const PARTIAL_PREFIX: &str = ".partial-";
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);
/// The bound when `BUILDR_CACHE_MAX` is not set: 5 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 5 << 30;

/// The cache directory and its size bound.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    max_bytes: u64,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Entry),
    Miss,
    /// The entry was there but damaged; it has been deleted.
    Corrupt {
        path: PathBuf,
        reason: String,
    },
}

/// A verified entry, open.
pub struct Entry {
    pub record: Record,
    file: File,
    output: (u64, u64),
    archive: (u64, u64),
}

impl Entry {
    /// The recorded output (see [`super::record::read_chunk`]).
    pub fn output(&self) -> io::Result<impl Read + use<>> {
        self.section(self.output)
    }

    /// The result archive, if the run changed anything.
    pub fn archive(&self) -> io::Result<Option<impl Read + use<>>> {
        if self.archive.1 == 0 {
            return Ok(None);
        }
        self.section(self.archive).map(Some)
    }

    fn section(&self, (start, len): (u64, u64)) -> io::Result<io::Take<File>> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(start))?;
        Ok(file.take(len))
    }
}

/// What `info` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub entries: usize,
    pub bytes: u64,
    pub oldest_use: Option<SystemTime>,
}

/// Which files of the entries directory to list.
#[derive(Clone, Copy)]
enum Listed {
    Entries,
    Partial,
}

/// One entry file and what eviction and pruning go by.
struct Stored {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

impl Store {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self { dir, max_bytes }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn entries_dir(&self) -> PathBuf {
        self.dir.join("entries")
    }

    fn entry_path(&self, key: &Key) -> PathBuf {
        self.entries_dir().join(format!("{key}.{ENTRY_EXTENSION}"))
    }

    /// Refuses a cache directory that is not this user's own, or that others can write to:
    /// whoever can write an entry there decides what a replay writes into the repository.
    pub fn check_private(&self) -> Result<(), CacheError> {
        use std::os::unix::fs::MetadataExt;
        for dir in [self.dir.clone(), self.entries_dir()] {
            let meta = match fs::symlink_metadata(&dir) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CacheError::Read { path: dir, source }),
            };
            let me = nix::unistd::geteuid().as_raw();
            let reason = if !meta.is_dir() {
                Some("is not a directory".to_string())
            } else if meta.uid() != me {
                Some(format!(
                    "belongs to uid {}, not to you (uid {me})",
                    meta.uid()
                ))
            } else if meta.mode() & 0o022 != 0 {
                Some(format!(
                    "can be written by others (mode {:o})",
                    meta.mode() & 0o777
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(CacheError::NotPrivate { dir, reason });
            }
        }
        Ok(())
    }

    /// Where the stat cache of the repository at `repo` (absolute) is kept.
    pub fn stat_cache_file(&self, repo: &Path) -> PathBuf {
        let id =
            crate::archive::sha256_hex(std::os::unix::ffi::OsStrExt::as_bytes(repo.as_os_str()));
        self.dir.join("stat").join(&id[..32])
    }

    /// The entry of `key`, verified, and marked as just used.
    pub fn lookup(&self, key: &Key) -> Result<Lookup, CacheError> {
        let path = self.entry_path(key);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Miss),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        match verify(file) {
            Ok(entry) => {
                // For eviction: least recently used goes first. Best effort.
                let _ = entry.file.set_modified(SystemTime::now());
                Ok(Lookup::Hit(entry))
            }
            Err(reason) => {
                let _ = fs::remove_file(&path);
                Ok(Lookup::Corrupt { path, reason })
            }
        }
    }

    /// Stores a run under `key`, then evicts the least recently used entries while the cache
    /// is over its bound. `output` and `archive` are read from their current position. Returns
    /// how many entries were evicted.
    pub fn put(
        &self,
        key: &Key,
        record: &Record,
        output: &mut File,
        archive: Option<&mut File>,
    ) -> Result<usize, CacheError> {
        let dir = self.entries_dir();
        let write_err = |source| CacheError::Write {
            dir: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(write_err)?;
        let record_json = serde_json::to_vec(record).expect("a record always serializes");
        let output_len = remaining(output).map_err(write_err)?;
        let archive_len = match &archive {
            Some(file) => remaining(file).map_err(write_err)?,
            None => 0,
        };
        // Evicting every other entry would not make room for one larger than the bound.
        let bytes = HEADER + TRAILER + record_json.len() as u64 + output_len + archive_len;
        if bytes > self.max_bytes {
            return Err(CacheError::TooLarge {
                bytes,
                max: self.max_bytes,
            });
        }
        let temp = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(&dir)
            .map_err(write_err)?;
        let mut out = Sha256Writer::new(BufWriter::new(temp));
        let write = |out: &mut Sha256Writer<_>| -> io::Result<()> {
            out.write_all(MAGIC)?;
            for len in [record_json.len() as u64, output_len, archive_len] {
                out.write_all(&len.to_le_bytes())?;
            }
            out.write_all(&record_json)?;
            copy_exactly(output, out, output_len)?;
            if let Some(archive) = archive {
                copy_exactly(archive, out, archive_len)?;
            }
            Ok(())
        };
        write(&mut out).map_err(write_err)?;
        let (mut buffered, sha256, _) = out.finish();
        buffered.write_all(sha256.as_bytes()).map_err(write_err)?;
        let temp = buffered
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        temp.persist(self.entry_path(key))
            .map_err(|e| write_err(e.error))?;
        self.evict()
    }

    /// Deletes the least recently used entries until the total is within the bound.
    fn evict(&self) -> Result<usize, CacheError> {
        let mut stored = self.stored()?;
        let mut total: u64 = stored.iter().map(|s| s.bytes).sum();
        stored.sort_by_key(|s| s.used);
        let mut evicted = 0;
        for entry in stored {
            if total <= self.max_bytes {
                break;
            }
            // Another run may have evicted it already.
            if fs::remove_file(&entry.path).is_ok() {
                evicted += 1;
            }
            total -= entry.bytes;
        }
        Ok(evicted)
    }

    pub fn info(&self) -> Result<Info, CacheError> {
        let stored = self.stored()?;
        Ok(Info {
            entries: stored.len(),
            bytes: stored.iter().map(|s| s.bytes).sum(),
            oldest_use: stored.iter().map(|s| s.used).min(),
        })
    }

    /// Deletes every entry, or those not used for `older_than`; returns how many and their
    /// total size. Also deletes what runs that died left half-written.
    pub fn prune(&self, older_than: Option<Duration>) -> Result<(usize, u64), CacheError> {
        let now = SystemTime::now();
        let older = |file: &Stored, age: Duration| {
            now.duration_since(file.used)
                .is_ok_and(|since| since >= age)
        };
        for partial in self.listed(Listed::Partial)? {
            if older(&partial, ABANDONED_AFTER) {
                let _ = fs::remove_file(&partial.path);
            }
        }
        let (mut count, mut bytes) = (0, 0);
        for entry in self.stored()? {
            if older_than.is_none_or(|age| older(&entry, age))
                && fs::remove_file(&entry.path).is_ok()
            {
                count += 1;
                bytes += entry.bytes;
            }
        }
        Ok((count, bytes))
    }

    fn stored(&self) -> Result<Vec<Stored>, CacheError> {
        self.listed(Listed::Entries)
    }

    fn listed(&self, which: Listed) -> Result<Vec<Stored>, CacheError> {
        let dir = self.entries_dir();
        let read_err = |source| CacheError::Read {
            path: dir.clone(),
            source,
        };
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut stored = Vec::new();
        for item in listing {
            let item = item.map_err(read_err)?;
            let path = item.path();
            let wanted = match which {
                Listed::Entries => path.extension().is_some_and(|e| e == ENTRY_EXTENSION),
                Listed::Partial => item
                    .file_name()
                    .to_string_lossy()
                    .starts_with(PARTIAL_PREFIX),
            };
            if !wanted {
                continue;
            }
            // Gone since the listing: evicted or pruned by another run.
            let Ok(meta) = item.metadata() else { continue };
            stored.push(Stored {
                path,
                bytes: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(stored)
    }
}

/// Checks an entry file's layout and hash, and reads its record.
fn verify(mut file: File) -> Result<Entry, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut header = [0u8; HEADER as usize];
    file.read_exact(&mut header)
        .map_err(|_| "shorter than its header".to_string())?;
    if &header[..8] != MAGIC {
        return Err("not a buildr cache entry".to_string());
    }
    let len = |i: usize| {
        u64::from_le_bytes(
            header[8 + 8 * i..16 + 8 * i]
                .try_into()
                .expect("the slice is 8 bytes"),
        )
    };
    let (record_len, output_len, archive_len) = (len(0), len(1), len(2));
    let expected = [record_len, output_len, archive_len]
        .iter()
        .try_fold(HEADER + TRAILER, |sum, len| sum.checked_add(*len));
    if expected != Some(size) {
        return Err(format!(
            "{size} bytes where its header says {}",
            expected.map_or("more than 2^64".to_string(), |n| n.to_string())
        ));
    }
    let mut hasher = Sha256::new();
    hasher.update(header);
    let body = size - HEADER - TRAILER;
    let mut record_json = Vec::new();
    (&mut file)
        .take(record_len)
        .read_to_end(&mut record_json)
        .map_err(|e| e.to_string())?;
    hasher.update(&record_json);
    let hashed = io::copy(&mut (&mut file).take(body - record_len), &mut hasher)
        .map_err(|e| e.to_string())?;
    let mut trailer = [0u8; TRAILER as usize];
    file.read_exact(&mut trailer).map_err(|e| e.to_string())?;
    if hashed != body - record_len || hex::encode(hasher.finalize()).as_bytes() != trailer {
        return Err("its SHA-256 does not match its content".to_string());
    }
    let record = serde_json::from_slice(&record_json).map_err(|e| format!("its record: {e}"))?;
    let output_start = HEADER + record_len;
    Ok(Entry {
        record,
        file,
        output: (output_start, output_len),
        archive: (output_start + output_len, archive_len),
    })
}

/// Bytes from `file`'s position to its end.
fn remaining(file: &File) -> io::Result<u64> {
    let mut file = file;
    let position = file.stream_position()?;
    Ok(file.metadata()?.len().saturating_sub(position))
}

/// Copies exactly `len` bytes: a source that changed size under us is an error, not an entry
/// whose header lies.
fn copy_exactly(from: &mut File, to: &mut impl Write, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut from.take(len), to)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("expected {len} bytes to store, found {copied}"),
        ));
    }
    Ok(())
}
