//! A tar stream reader that trusts nothing: every header is bounded before it is read into
//! memory, every field is parsed without panicking, the stream must end with tar's
//! end-of-archive marker, and a buildr archive must end with its closing record.
//!
//! Understood: ustar and GNU headers, GNU long names and link targets (`L`, `K`), PAX per-entry
//! headers (`path`, `linkpath`, `size`, `mtime`) and global headers (buildr's `BUILDR.*`
//! records, others ignored). Everything else is an entry of another type, for the caller to
//! refuse.
//!
//! A buildr archive starts with a global header holding `BUILDR.format` and ends with one
//! holding `BUILDR.entries`, `BUILDR.deletions` and `BUILDR.sha256` (the SHA-256 of every tar
//! byte before that header), then an empty GNU volume header, then the end-of-archive marker:
//! a chunk dropped, duplicated or reordered anywhere is caught at the closing record.
//! Archives from other tools have neither and are read as plain tar.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::error::{ArchiveError, Corruption};
use super::names::MAX_PATH;
use super::tar_format::{
    BLOCK, LINKNAME, MAGIC, MODE, MTIME, NAME, PREFIX, SIZE, TYPEFLAG, checksum_ok, field_str,
    parse_numeric, parse_pax,
};
use super::{
    DELETED_PREFIX, DELETIONS_KEY, ENTRIES_KEY, FORMAT_KEY, FORMAT_VERSION, MAX_EXTENDED_HEADER,
    SHA256_KEY,
};

/// What an entry's type flag says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
    /// Any other type flag (GNU sparse, volume headers, unknown ones).
    Other(u8),
}

impl Kind {
    fn from_flag(flag: u8, name: &[u8]) -> Kind {
        match flag {
            // Old tars mark directories only by the trailing slash.
            b'0' | 0 | b'7' if name.ends_with(b"/") => Kind::Dir,
            b'0' | 0 | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => Kind::Other(other),
        }
    }

    /// Types whose size field says nothing about data that follows (as Go's reader does).
    fn has_data(self) -> bool {
        matches!(self, Kind::File | Kind::Other(_))
    }
}

/// One entry's header, overrides from PAX and GNU headers applied.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub path: PathBuf,
    pub kind: Kind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Seconds since the epoch (clamped to what an `i64` holds).
    pub mtime: i64,
    /// Data bytes that follow (0 for types without data).
    pub size: u64,
    pub link: Option<PathBuf>,
}

pub(crate) enum Item {
    Entry(Header),
    /// A recorded deletion (a buildr `BUILDR.deleted.N` record).
    Deleted(PathBuf),
}

/// Overrides that extended headers set for the next entry.
#[derive(Default)]
struct Overrides {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
    sparse: bool,
}

pub(crate) struct TarReader<R> {
    inner: R,
    /// Every byte read so far, for the closing record.
    hash: Sha256,
    offset: u64,
    /// Data (then padding) of the current entry not yet read.
    data_left: u64,
    pad_left: u64,
    /// The stream began with buildr's format record: the closing record is required.
    buildr: bool,
    closed: bool,
    entries: u64,
    deletions: u64,
    pending: VecDeque<PathBuf>,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            hash: Sha256::new(),
            offset: 0,
            data_left: 0,
            pad_left: 0,
            buildr: false,
            closed: false,
            entries: 0,
            deletions: 0,
            pending: VecDeque::new(),
            done: false,
        }
    }

    fn corrupt(&self, problem: Corruption) -> ArchiveError {
        ArchiveError::Corrupt {
            offset: self.offset,
            problem,
        }
    }

    /// The next entry or deletion, after skipping what is left of the previous entry's data;
    /// `None` at a verified end of the archive.
    pub(crate) fn next_item(&mut self) -> Result<Option<Item>, ArchiveError> {
        if let Some(path) = self.pending.pop_front() {
            return Ok(Some(Item::Deleted(path)));
        }
        if self.done {
            return Ok(None);
        }
        self.skip_data()?;
        let mut over = Overrides::default();
        loop {
            let start = self.offset;
            let mut block = [0u8; BLOCK];
            if !self.read_block(&mut block)? {
                return Err(self.corrupt(Corruption::NoEndMarker));
            }
            if block.iter().all(|&b| b == 0) {
                self.end_of_archive()?;
                return Ok(None);
            }
            if !checksum_ok(&block) {
                self.offset = start;
                return Err(self.corrupt(Corruption::Checksum));
            }
            let flag = block[TYPEFLAG];
            if self.closed {
                // Only the empty volume header that lets Python's tarfile end on a member.
                if flag == b'V' && self.field(&block, SIZE, "size")? == 0 {
                    continue;
                }
                return Err(self.corrupt(Corruption::AfterClosingRecord));
            }
            // The closing record's hash covers everything before its own header.
            let before = (flag == b'g').then(|| self.hash.clone());
            self.hash.update(&block[..]);
            let size = self.field(&block, SIZE, "size")?;
            match flag {
                b'x' => {
                    let data = self.extended(size, "PAX extended header")?;
                    self.per_entry_pax(&data, &mut over)?;
                }
                b'g' => {
                    let before = before.unwrap_or_default();
                    let data = self.extended(size, "PAX global header")?;
                    self.global_pax(&data, start, before)?;
                    if let Some(path) = self.pending.pop_front() {
                        return Ok(Some(Item::Deleted(path)));
                    }
                }
                b'L' | b'K' => {
                    let mut data = self.extended(size, "GNU long name")?;
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    data.truncate(end);
                    self.check_name_len(data.len())?;
                    if flag == b'L' {
                        over.path = Some(data);
                    } else {
                        over.link = Some(data);
                    }
                }
                _ => return self.entry(&block, flag, size, over).map(Some),
            }
        }
    }

    fn entry(
        &mut self,
        block: &[u8; BLOCK],
        flag: u8,
        size: u64,
        over: Overrides,
    ) -> Result<Item, ArchiveError> {
        let path = match over.path {
            Some(p) => p,
            None => {
                let name = field_str(&block[NAME]);
                let prefix = field_str(&block[PREFIX]);
                // Only POSIX ustar has the prefix field; GNU headers keep times there.
                if &block[MAGIC] == b"ustar\0" && !prefix.is_empty() {
                    [prefix, b"/", name].concat()
                } else {
                    name.to_vec()
                }
            }
        };
        let link = over
            .link
            .unwrap_or_else(|| field_str(&block[LINKNAME]).to_vec());
        let kind = if over.sparse {
            Kind::Other(b'S')
        } else {
            Kind::from_flag(flag, &path)
        };
        let mode = self.field(block, MODE, "mode")? as u32 & 0o7777;
        let mtime = match over.mtime {
            Some(t) => t,
            None => i64::try_from(self.field(block, MTIME, "mtime")?).unwrap_or(i64::MAX),
        };
        let size = if kind.has_data() {
            over.size.unwrap_or(size)
        } else {
            0
        };
        self.start_data(size);
        self.entries += 1;
        let to_path = |b: Vec<u8>| PathBuf::from(std::ffi::OsString::from_vec(b));
        Ok(Item::Entry(Header {
            path: to_path(path),
            kind,
            mode,
            mtime,
            size,
            link: (!link.is_empty()).then(|| to_path(link)),
        }))
    }

    /// Reads the current entry's data into `buf`; 0 once it is all read.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        let want = buf
            .len()
            .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => return Err(self.corrupt(Corruption::Truncated)),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::ReadArchive(e)),
            }
        };
        self.hash.update(&buf[..n]);
        self.offset += n as u64;
        self.data_left -= n as u64;
        Ok(n)
    }

    fn start_data(&mut self, size: u64) {
        self.data_left = size;
        self.pad_left = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    }

    fn skip_data(&mut self) -> Result<(), ArchiveError> {
        let mut buf = [0u8; 8192];
        while self.read_data(&mut buf)? > 0 {}
        while self.pad_left > 0 {
            let n = self.pad_left.min(BLOCK as u64) as usize;
            self.data_left = n as u64;
            self.pad_left -= n as u64;
            while self.read_data(&mut buf[..n])? > 0 {}
        }
        Ok(())
    }

    /// The data of an extended header, refused beyond [`MAX_EXTENDED_HEADER`].
    fn extended(&mut self, size: u64, what: &'static str) -> Result<Vec<u8>, ArchiveError> {
        if size > MAX_EXTENDED_HEADER as u64 {
            return Err(self.corrupt(Corruption::TooBig {
                what,
                size,
                limit: MAX_EXTENDED_HEADER as u64,
            }));
        }
        self.start_data(size);
        let mut data = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < data.len() {
            filled += self.read_data(&mut data[filled..])?;
        }
        self.skip_data()?;
        Ok(data)
    }

    fn per_entry_pax(&mut self, data: &[u8], over: &mut Overrides) -> Result<(), ArchiveError> {
        let records = parse_pax(data).ok_or_else(|| self.corrupt(Corruption::Pax))?;
        for (key, value) in records {
            match key {
                b"path" => {
                    self.check_name_len(value.len())?;
                    over.path = Some(value.to_vec());
                }
                b"linkpath" => {
                    self.check_name_len(value.len())?;
                    over.link = Some(value.to_vec());
                }
                b"size" => {
                    over.size = Some(
                        decimal(value).ok_or_else(|| self.corrupt(Corruption::Field("size")))?,
                    );
                }
                b"mtime" => {
                    over.mtime = Some(
                        pax_time(value).ok_or_else(|| self.corrupt(Corruption::Field("mtime")))?,
                    );
                }
                k if k.starts_with(b"GNU.sparse.") => over.sparse = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// buildr's records in a global header at `start`; `before` hashed everything before it.
    fn global_pax(&mut self, data: &[u8], start: u64, before: Sha256) -> Result<(), ArchiveError> {
        let records = parse_pax(data).ok_or_else(|| self.corrupt(Corruption::Pax))?;
        let mut closing = (None, None, None);
        for (key, value) in records {
            if key == FORMAT_KEY.as_bytes() && start == 0 {
                if value != FORMAT_VERSION.as_bytes() {
                    let found = String::from_utf8_lossy(value).into_owned();
                    return Err(self.corrupt(Corruption::Format(found)));
                }
                self.buildr = true;
            } else if key.starts_with(DELETED_PREFIX.as_bytes()) {
                self.check_name_len(value.len())?;
                self.deletions += 1;
                self.pending
                    .push_back(PathBuf::from(std::ffi::OsStr::from_bytes(value)));
            } else if key == ENTRIES_KEY.as_bytes() {
                closing.0 = decimal(value);
            } else if key == DELETIONS_KEY.as_bytes() {
                closing.1 = decimal(value);
            } else if key == SHA256_KEY.as_bytes() {
                closing.2 = Some(value.to_vec());
            }
        }
        match closing {
            (None, None, None) => Ok(()),
            (Some(want_entries), Some(want_deleted), Some(sha)) => {
                let hash_matches = hex::encode(before.finalize()).as_bytes() == sha.as_slice();
                if !hash_matches || want_entries != self.entries || want_deleted != self.deletions {
                    self.offset = start;
                    return Err(self.corrupt(Corruption::ClosingMismatch {
                        want_entries,
                        want_deleted,
                        got_entries: self.entries,
                        got_deleted: self.deletions,
                        hash_matches,
                    }));
                }
                self.closed = true;
                Ok(())
            }
            _ => Err(self.corrupt(Corruption::Pax)),
        }
    }

    /// After the first zero block: the second one, then nothing but zeros to the end (tar pads
    /// to its record size), read through so that every compressed chunk is checked.
    fn end_of_archive(&mut self) -> Result<(), ArchiveError> {
        let mut block = [0u8; BLOCK];
        if !self.read_block(&mut block)? {
            return Err(self.corrupt(Corruption::NoEndMarker));
        }
        if block.iter().any(|&b| b != 0) {
            return Err(self.corrupt(Corruption::LoneZeroBlock));
        }
        if self.buildr && !self.closed {
            return Err(self.corrupt(Corruption::MissingClosingRecord));
        }
        let mut buf = [0u8; 8192];
        loop {
            let n = match self.inner.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::ReadArchive(e)),
            };
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(self.corrupt(Corruption::AfterEnd));
            }
            self.offset += n as u64;
        }
        self.done = true;
        Ok(())
    }

    /// Reads one whole block (the caller hashes it); false at a clean end of input before it.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, ArchiveError> {
        match super::read::fill(&mut self.inner, block).map_err(ArchiveError::ReadArchive)? {
            0 => Ok(false),
            BLOCK => {
                self.offset += BLOCK as u64;
                Ok(true)
            }
            _ => Err(self.corrupt(Corruption::Truncated)),
        }
    }

    fn field(
        &self,
        block: &[u8; BLOCK],
        range: std::ops::Range<usize>,
        name: &'static str,
    ) -> Result<u64, ArchiveError> {
        parse_numeric(&block[range]).ok_or_else(|| self.corrupt(Corruption::Field(name)))
    }

    fn check_name_len(&self, len: usize) -> Result<(), ArchiveError> {
        if len > MAX_PATH {
            return Err(self.corrupt(Corruption::TooBig {
                what: "name",
                size: len as u64,
                limit: MAX_PATH as u64,
            }));
        }
        Ok(())
    }
}

fn decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A PAX time, `[-]SECONDS[.FRACTION]`, as whole seconds.
fn pax_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let whole = text.split('.').next()?;
    whole.parse().ok()
}
