//! Reading archives: listing, and the decompression pipeline extraction runs on.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tar::EntryType;

use super::error::ArchiveError;
use super::{DELETED_KEY, Entry, EntryKind};

/// Decompressed bytes handed from the decompressing thread to the consumer at a time.
const CHUNK: usize = 1 << 20;
/// Read buffer over the compressed input (the decoder reads chunk by chunk).
const INPUT_BUF: usize = 256 << 10;
/// Chunks in flight between the two threads.
const DEPTH: usize = 4;

/// Runs `consume` on a second thread over the decompressed stream while this thread reads and
/// decompresses `input`, so that decompression and file writing overlap. `input` itself never
/// leaves the calling thread (it needs not be `Send`).
pub(crate) fn pipelined<R, T, F>(input: R, consume: F) -> Result<T, ArchiveError>
where
    R: Read,
    T: Send,
    F: FnOnce(ChannelReader) -> Result<T, ArchiveError> + Send,
{
    let (data_tx, data_rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let reader = ChannelReader {
        rx: data_rx,
        recycle: free_tx,
        cur: Vec::new(),
        pos: 0,
    };
    std::thread::scope(|s| {
        let consumer = std::thread::Builder::new()
            .name("buildr-extract".into())
            .spawn_scoped(s, move || consume(reader))
            .expect("spawning the extraction thread");
        let mut decoder =
            snap::read::FrameDecoder::new(io::BufReader::with_capacity(INPUT_BUF, input));
        loop {
            let mut chunk = free_rx.try_recv().unwrap_or_default();
            chunk.resize(CHUNK, 0);
            let filled = match fill(&mut decoder, &mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    let _ = data_tx.send(Err(e));
                    break;
                }
            };
            if filled == 0 {
                break;
            }
            chunk.truncate(filled);
            // A send fails when the consumer is done (end of archive, or an error): stop.
            if data_tx.send(Ok(chunk)).is_err() {
                break;
            }
        }
        drop(data_tx);
        consumer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The consumer's end of [`pipelined`]: a `Read` over the chunks sent by the decompressor.
pub(crate) struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            let done = std::mem::take(&mut self.cur);
            if done.capacity() > 0 {
                let _ = self.recycle.try_send(done);
            }
            self.pos = 0;
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.cur = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
    }
}

/// The `BUILDR.deleted` records of a PAX global header entry.
pub(crate) fn deleted_records<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ArchiveError::ReadArchive)? {
        for ext in exts {
            let ext = ext.map_err(ArchiveError::ReadArchive)?;
            if ext.key_bytes() == DELETED_KEY.as_bytes() {
                out.push(PathBuf::from(std::ffi::OsStr::from_bytes(
                    ext.value_bytes(),
                )));
            }
        }
    }
    Ok(out)
}

/// Lists the entries of a `.tar.s2` stream, recorded deletions included, as stored (nothing
/// is checked or refused here; [`extract`](super::extract) does that).
pub fn list<R: Read>(input: R) -> Result<Vec<Entry>, ArchiveError> {
    let mut archive = tar::Archive::new(snap::read::FrameDecoder::new(
        io::BufReader::with_capacity(INPUT_BUF, input),
    ));
    let mut out = Vec::new();
    for entry in archive.entries().map_err(ArchiveError::ReadArchive)? {
        let mut entry = entry.map_err(ArchiveError::ReadArchive)?;
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() {
            for path in deleted_records(&mut entry)? {
                out.push(Entry {
                    path,
                    kind: EntryKind::Deleted,
                    mode: 0,
                    size: 0,
                    link_target: None,
                });
            }
            continue;
        }
        let kind = match ty {
            EntryType::Regular | EntryType::Continuous => EntryKind::File,
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink => EntryKind::Symlink,
            other => EntryKind::Other(other.as_byte() as char),
        };
        let path = entry
            .path()
            .map_err(ArchiveError::ReadArchive)?
            .into_owned();
        let link_target = entry
            .link_name()
            .map_err(ArchiveError::ReadArchive)?
            .map(|l| l.into_owned());
        let header = entry.header();
        out.push(Entry {
            path,
            kind,
            mode: header.mode().map_err(ArchiveError::ReadArchive)? & 0o7777,
            size: entry.size(),
            link_target,
        });
    }
    Ok(out)
}
