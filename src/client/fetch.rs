//! Fetches the archive of modified files in chunks and extracts it as it arrives: the fetch and
//! the extraction overlap instead of taking turns. A broken fetch resumes from the bytes already
//! delivered. The fetch stops at the size the executor reported and refuses more; a chunk that
//! does not come within the idle timeout fails it. A small archive comes in the result message
//! itself ([`Source::Inline`]) and goes through the same checks ([`Received`]) into the same
//! extraction: only the round trip of the fetch is saved.
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

/// The archive's bytes on their way to the extraction, checked as they come whether they were
/// fetched or came in the result message: never past the size the executor reported, and, once
/// all are in, exactly that size and SHA-256 ([`Received::verify`]) before the extraction may
/// commit anything.
struct Received<'a> {
    info: &'a ArchiveInfo,
    hasher: Sha256,
    offset: u64,
    pieces: mpsc::Sender<Piece>,
    /// Where the bytes are kept too, when the caller asked for the archive.
    kept: Option<&'a mut tokio::fs::File>,
}

impl<'a> Received<'a> {
    fn new(
        info: &'a ArchiveInfo,
        pieces: mpsc::Sender<Piece>,
        kept: Option<&'a mut tokio::fs::File>,
    ) -> Self {
        Self {
            info,
            hasher: Sha256::new(),
            offset: 0,
            pieces,
            kept,
        }
    }

    /// Takes the next bytes of the archive and hands them to the extraction. `Ok(false)` when
    /// the extraction has stopped reading (it failed: its error is the one to report).
    async fn take(&mut self, data: Vec<u8>) -> Result<bool, ClientError> {
        let end = self.offset.saturating_add(data.len() as u64);
        if end > self.info.size {
            return Err(ClientError::ArchiveTooLong {
                size: self.info.size,
            });
        }
        if let Some(file) = self.kept.as_deref_mut() {
            file.write_all(&data).await.map_err(kept_error)?;
        }
        self.hasher.update(&data);
        self.offset = end;
        Ok(self.pieces.send(Piece::Bytes(data)).await.is_ok())
    }

    fn is_complete(&self) -> bool {
        self.offset == self.info.size
    }

    /// Checks that the whole archive arrived, as reported, and only then lets the extraction
    /// end (and commit).
    async fn verify(self) -> Result<(), ClientError> {
        if let Some(file) = self.kept {
            file.flush().await.map_err(kept_error)?;
        }
        let sha256 = hex::encode(self.hasher.finalize());
        if self.offset != self.info.size || sha256 != self.info.sha256 {
            return Err(ClientError::ArchiveMismatch {
                expected_size: self.info.size,
                expected_sha256: self.info.sha256.clone(),
                size: self.offset,
                sha256,
            });
        }
        // The extraction may have ended already (an error of its own): that is reported instead.
        let _ = self.pieces.send(Piece::Verified).await;
        Ok(())
    }
}

fn kept_error(e: std::io::Error) -> ClientError {
    ClientError::Io {
        what: "cannot keep the archive in a temporary file".to_string(),
        source: e,
    }
}

/// Fetches the archive `received` expects, in chunks from offset 0 and resuming after a lost
/// connection, handing each to `received`, until it has the reported size or the executor has
/// nothing more. `Ok(false)` when it stopped early because the extraction stopped reading.
async fn fetch_archive(
    client: &mut Client,
    run_id: &str,
    progress: &indicatif::ProgressBar,
    options: &Options,
    received: &mut Received<'_>,
) -> Result<bool, ClientError> {
    let idle_timeout = options.fetch_idle_timeout;
    let size = received.info.size;
    let stalled = |offset| ClientError::FetchStalled {
        idle: idle_timeout,
        offset,
        size,
    };
    let mut redial = Redial::new("FetchArchive", options.reconnect);
    progress.set_length(size);
    while !received.is_complete() {
        let request = FetchArchiveRequest {
            run_id: run_id.to_string(),
            offset: received.offset,
        };
        let call = tokio::time::timeout(idle_timeout, client.fetch_archive(request));
        let status = match call.await.map_err(|_| stalled(received.offset))? {
            Ok(response) => {
                let mut chunks = response.into_inner();
                loop {
                    let next = tokio::time::timeout(idle_timeout, chunks.message());
                    match next.await.map_err(|_| stalled(received.offset))? {
                        Ok(Some(chunk)) if chunk.offset == received.offset => {
                            if !received.take(chunk.data).await? {
                                return Ok(false);
                            }
                            progress.set_position(received.offset);
                            redial.connected();
                            if received.is_complete() {
                                break tonic::Status::ok("");
                            }
                        }
                        Ok(Some(chunk)) => {
                            break tonic::Status::data_loss(format!(
                                "chunk at offset {} where {} was expected",
                                chunk.offset, received.offset
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
        tracing::info!(offset = received.offset, "resuming the archive fetch");
        tokio::time::sleep(delay).await;
    }
    Ok(true)
}

/// Where the archive's bytes come from.
pub enum Source<'a> {
    /// Fetched from the executor in chunks (FetchArchive).
    Fetch {
        client: &'a mut Client,
        run_id: &'a str,
    },
    /// Carried in the result message itself ([`ArchiveInfo::content`]).
    Inline(Vec<u8>),
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
    receive_and_extract(Source::Fetch { client, run_id }, info, options).await
}

/// Extracts the archive `info` describes, from `source`, into `options.out`, with the same
/// checks and the same extraction whichever way its bytes come. Returns what was extracted and,
/// when `options.keep_archive` asks, the verified archive, rewound.
pub async fn receive_and_extract(
    source: Source<'_>,
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
    let (pieces, pieces_out) = mpsc::channel(CHUNKS_AHEAD);
    let dest = options.out.clone();
    let extract_options = archive::ExtractOptions {
        deletions: options.deletions.clone(),
        links: options.links,
        progress: None,
    };
    let limits = options.limits;
    let extraction = tokio::task::spawn_blocking(move || {
        archive::extract_within(Fetched::new(pieces_out), &dest, &extract_options, limits)
            .map_err(|source| ClientError::Extract { dest, source })
    });

    let mut received = Received::new(info, pieces, kept.as_mut());
    let delivered = match source {
        Source::Fetch { client, run_id } => {
            let bar = crate::progress::bytes("fetch", info.size);
            let fetched = fetch_archive(client, run_id, &bar, options, &mut received).await;
            bar.finish_and_clear();
            fetched
        }
        Source::Inline(content) => received.take(content).await,
    };
    // Checked once the source has given all it had, unless the extraction stopped reading
    // first: its own error is the one to report then.
    let delivered = match delivered {
        Ok(true) => received.verify().await,
        stopped => {
            // Ends the extraction's input unverified, so that its read fails (if it has not
            // failed already), rather than waiting for more.
            drop(received);
            stopped.map(|_| ())
        }
    };
    let extracted = extraction
        .await
        .expect("the extraction thread does not panic");
    // A failed delivery made the extraction fail too; the delivery's error says why.
    delivered?;
    let extracted = extracted?;
    let kept = match kept {
        Some(file) => {
            let mut file = file.into_std().await;
            file.rewind()
                .map_err(|e| io_error("cannot rewind the kept archive", e))?;
            Some(file)
        }
        None => None,
    };
    Ok((extracted, kept))
}
