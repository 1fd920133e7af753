//! Reading archives: listing, and the decompression pipeline extraction runs on.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::error::ArchiveError;
use super::tar_reader::{Item, Kind, TarReader};
use super::{Entry, EntryKind};

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
pub(super) fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// Lists the entries of a `.tar.s2` stream, recorded deletions included, as stored (names are
/// not checked here; [`extract`](super::extract) does that). The stream itself is verified as
/// extraction verifies it: a truncated or corrupt archive is an error.
pub fn list<R: Read>(input: R) -> Result<Vec<Entry>, ArchiveError> {
    let mut out = Vec::new();
    list_each(input, |entry| {
        out.push(entry);
        Ok(())
    })?;
    Ok(out)
}

/// [`list`], handing each entry to `each` as it is read, so that memory stays bounded however
/// many entries the archive holds. An error from `each` stops the listing.
pub fn list_each<R: Read>(
    input: R,
    mut each: impl FnMut(Entry) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut reader = TarReader::new(snap::read::FrameDecoder::new(io::BufReader::with_capacity(
        INPUT_BUF, input,
    )));
    while let Some(item) = reader.next_item()? {
        each(match item {
            Item::Deleted(path) => Entry {
                path,
                kind: EntryKind::Deleted,
                mode: 0,
                size: 0,
                link_target: None,
            },
            Item::Entry(h) => Entry {
                kind: match h.kind {
                    Kind::File => EntryKind::File,
                    Kind::Dir => EntryKind::Dir,
                    Kind::Symlink => EntryKind::Symlink,
                    Kind::HardLink => EntryKind::Other('1'),
                    Kind::Char => EntryKind::Other('3'),
                    Kind::Block => EntryKind::Other('4'),
                    Kind::Fifo => EntryKind::Other('6'),
                    Kind::Other(flag) => EntryKind::Other(char::from(flag)),
                },
                path: h.path,
                mode: h.mode,
                size: h.size,
                link_target: h.link,
            },
        })?;
    }
    Ok(())
}
