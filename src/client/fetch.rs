//! Fetches the archive of modified files in chunks and extracts it as it arrives: the fetch and
//! the extraction overlap instead of taking turns. A broken fetch resumes from the bytes already
//! delivered. The fetch stops at the size the executor reported and refuses more; a chunk that
//! does not come within the idle timeout fails it.
//!
//! The extraction only stages files until its input ends (see [`crate::archive::extract`]), and
//! its input ([`Fetched`]) ends cleanly only once the whole archive matched the size and SHA-256
//! the executor reported; a fetch that fails or does not match makes the extraction's read fail,
//! so nothing is committed to the destination. What is extracted is what was verified.

use std::io::{self, Read, Seek};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::connect::Client;
use super::redial::Redial;
use super::{ClientError, Options};
use crate::archive::{self, Extracted};
use crate::rpc::{ArchiveInfo, FetchArchiveRequest};

/// How long a fetch waits for its next chunk by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks (1 MiB each, as the executor sends them) the fetch may run ahead of the extraction:
/// bounds the client's memory whatever the archive's size.
const CHUNKS_AHEAD: usize = 8;

/// What the fetch hands the extraction, in order.
#[derive(Debug)]
enum Piece {
    Bytes(Vec<u8>),
    /// The archive is whole: its size and SHA-256 are the ones the executor reported.
    Verified,
}

/// The extraction's end of a fetch: a `Read` over the archive's bytes as they arrive. It ends
/// (returns 0) only after [`Piece::Verified`]; if the fetch stops before that, reading fails.
struct Fetched {
    pieces: mpsc::Receiver<Piece>,
    current: Vec<u8>,
    pos: usize,
    verified: bool,
}

impl Fetched {
    fn new(pieces: mpsc::Receiver<Piece>) -> Self {
        Self {
            pieces,
            current: Vec::new(),
            pos: 0,
            verified: false,
        }
    }
}

impl Read for Fetched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.verified {
                return Ok(0);
            }
            match self.pieces.blocking_recv() {
                Some(Piece::Bytes(bytes)) => (self.current, self.pos) = (bytes, 0),
                Some(Piece::Verified) => self.verified = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the archive's fetch stopped before the whole archive was verified",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Fetches the archive `info` describes and sends its bytes to `pieces` in order (and writes
/// them to `kept`, when given), then [`Piece::Verified`] once size and SHA-256 match. Stops
/// early, with `Ok`, when the receiving end is gone (the extraction failed: its error is the
/// one to report).
async fn fetch_archive(
    client: &mut Client,
    run_id: &str,
    info: &ArchiveInfo,
    progress: &indicatif::ProgressBar,
    options: &Options,
    pieces: mpsc::Sender<Piece>,
    mut kept: Option<&mut tokio::fs::File>,
) -> Result<(), ClientError> {
    let io_error = |e: std::io::Error| ClientError::Io {
        what: "cannot write the fetched archive to a temporary file".to_string(),
        source: e,
    };
    let idle_timeout = options.fetch_idle_timeout;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let stalled = |offset| ClientError::FetchStalled {
        idle: idle_timeout,
        offset,
        size: info.size,
    };
    let mut redial = Redial::new("FetchArchive", options.reconnect);
    progress.set_length(info.size);
    while offset < info.size {
        let request = FetchArchiveRequest {
            run_id: run_id.to_string(),
            offset,
        };
        let call = tokio::time::timeout(idle_timeout, client.fetch_archive(request));
        let status = match call.await.map_err(|_| stalled(offset))? {
            Ok(response) => {
                let mut chunks = response.into_inner();
                loop {
                    let next = tokio::time::timeout(idle_timeout, chunks.message());
                    match next.await.map_err(|_| stalled(offset))? {
                        Ok(Some(chunk)) if chunk.offset == offset => {
                            let end = offset.saturating_add(chunk.data.len() as u64);
                            if end > info.size {
                                return Err(ClientError::ArchiveTooLong { size: info.size });
                            }
                            if let Some(file) = kept.as_deref_mut() {
                                file.write_all(&chunk.data).await.map_err(io_error)?;
                            }
                            hasher.update(&chunk.data);
                            offset = end;
                            if pieces.send(Piece::Bytes(chunk.data)).await.is_err() {
                                return Ok(());
                            }
                            progress.set_position(offset);
                            redial.connected();
                            if offset == info.size {
                                break tonic::Status::ok("");
                            }
                        }
                        Ok(Some(chunk)) => {
                            break tonic::Status::data_loss(format!(
                                "chunk at offset {} where {offset} was expected",
                                chunk.offset
                            ));
                        }
                        Ok(None) => break tonic::Status::ok(""),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        if status.code() == tonic::Code::Ok {
            break;
        }
        let delay = redial.lost(status)?;
        tracing::info!(offset, "resuming the archive fetch");
        tokio::time::sleep(delay).await;
    }
    if let Some(file) = kept {
        file.flush().await.map_err(io_error)?;
    }
    let sha256 = hex::encode(hasher.finalize());
    if offset != info.size || sha256 != info.sha256 {
        return Err(ClientError::ArchiveMismatch {
            expected_size: info.size,
            expected_sha256: info.sha256.clone(),
            size: offset,
            sha256,
        });
    }
    // The extraction may have ended already (an error of its own): that is reported instead.
    let _ = pieces.send(Piece::Verified).await;
    Ok(())
}

/// Fetches the archive `info` describes and extracts it into `options.out` at the same time.
/// Returns what was extracted and, when `options.keep_archive` asks, the verified archive,
/// rewound.
pub async fn fetch_and_extract(
    client: &mut Client,
    run_id: &str,
    info: &ArchiveInfo,
    options: &Options,
) -> Result<(Extracted, Option<std::fs::File>), ClientError> {
    let io_error = |what: &str, source| ClientError::Io {
        what: what.to_string(),
        source,
    };
    let mut kept = if options.keep_archive {
        let file = tempfile::tempfile()
            .map_err(|e| io_error("cannot create a temporary file for the archive", e))?;
        Some(tokio::fs::File::from_std(file))
    } else {
        None
    };
    let (pieces, received) = mpsc::channel(CHUNKS_AHEAD);
    let dest = options.out.clone();
    let extract_options = archive::ExtractOptions {
        deletions: options.deletions.clone(),
        links: options.links,
        progress: None,
    };
    let limits = options.limits;
    let extraction = tokio::task::spawn_blocking(move || {
        archive::extract_within(Fetched::new(received), &dest, &extract_options, limits)
            .map_err(|source| ClientError::Extract { dest, source })
    });

    let bar = crate::progress::bytes("fetch", info.size);
    let fetched = fetch_archive(client, run_id, info, &bar, options, pieces, kept.as_mut()).await;
    let extracted = extraction
        .await
        .expect("the extraction thread does not panic");
    bar.finish_and_clear();
    // A failed fetch made the extraction fail too; the fetch's error says why.
    fetched?;
    let extracted = extracted?;
    let kept = match kept {
        Some(file) => {
            let mut file = file.into_std().await;
            file.rewind()
                .map_err(|e| io_error("cannot rewind the fetched archive", e))?;
            Some(file)
        }
        None => None,
    };
    Ok((extracted, kept))
}
