//! Fetches the archive of modified files in chunks, into an unnamed temporary file that nobody
//! else can open, hashing it as it is written. A broken fetch resumes from the bytes already
//! written. The fetch stops at the size the executor reported and refuses more; a chunk that
//! does not come within the idle timeout fails it. The file is then checked against the reported
//! size and SHA-256, and handed back open, rewound, for extraction: what is extracted is what was
//! verified, never a path opened again.

use std::io::Seek;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::ClientError;
use super::connect::Client;
use super::redial::Redial;
use super::session::Reconnect;
use crate::rpc::{ArchiveInfo, FetchArchiveRequest};

/// How long a fetch waits for its next chunk by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn fetch_archive(
    client: &mut Client,
    run_id: &str,
    info: &ArchiveInfo,
    progress: &indicatif::ProgressBar,
    reconnect: Reconnect,
    idle_timeout: Duration,
) -> Result<std::fs::File, ClientError> {
    let io_error = |e: std::io::Error| ClientError::Io {
        what: "cannot write the fetched archive to a temporary file".to_string(),
        source: e,
    };
    let mut file = tokio::fs::File::from_std(tempfile::tempfile().map_err(io_error)?);
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let stalled = |offset| ClientError::FetchStalled {
        idle: idle_timeout,
        offset,
        size: info.size,
    };
    let mut redial = Redial::new("FetchArchive", reconnect);
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
                            file.write_all(&chunk.data).await.map_err(io_error)?;
                            hasher.update(&chunk.data);
                            offset = end;
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
    file.flush().await.map_err(io_error)?;
    let sha256 = hex::encode(hasher.finalize());
    if offset != info.size || sha256 != info.sha256 {
        return Err(ClientError::ArchiveMismatch {
            expected_size: info.size,
            expected_sha256: info.sha256.clone(),
            size: offset,
            sha256,
        });
    }
    let mut file = file.into_std().await;
    file.rewind().map_err(io_error)?;
    Ok(file)
}
