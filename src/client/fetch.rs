//! Fetches the archive of modified files in chunks. A broken fetch resumes from the bytes
//! already written; the whole file is then checked against the size and SHA-256 the executor
//! reported, and removed if it does not match.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::ClientError;
use super::connect::Client;
use super::redial::Redial;
use super::session::Reconnect;
use crate::rpc::{ArchiveInfo, FetchArchiveRequest};

pub async fn fetch_archive(
    client: &mut Client,
    run_id: &str,
    info: &ArchiveInfo,
    to: &Path,
    progress: &indicatif::ProgressBar,
    reconnect: Reconnect,
) -> Result<(), ClientError> {
    let io_error = |e: std::io::Error| ClientError::Io {
        what: format!("cannot write {}", to.display()),
        source: e,
    };
    let mut file = tokio::fs::File::create(to).await.map_err(io_error)?;
    let mut offset = 0u64;
    let mut redial = Redial::new("FetchArchive", reconnect);
    progress.set_length(info.size);
    while offset < info.size {
        let request = FetchArchiveRequest {
            run_id: run_id.to_string(),
            offset,
        };
        let status = match client.fetch_archive(request).await {
            Ok(response) => {
                let mut chunks = response.into_inner();
                loop {
                    match chunks.message().await {
                        Ok(Some(chunk)) if chunk.offset == offset => {
                            file.write_all(&chunk.data).await.map_err(io_error)?;
                            offset += chunk.data.len() as u64;
                            progress.set_position(offset);
                            redial.connected();
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
    drop(file);
    verify(to, info).await
}

async fn verify(path: &Path, info: &ArchiveInfo) -> Result<(), ClientError> {
    let owned = path.to_path_buf();
    let (size, sha256) = tokio::task::spawn_blocking(move || {
        let size = std::fs::metadata(&owned)?.len();
        Ok::<_, std::io::Error>((size, crate::archive::sha256_file(&owned)?))
    })
    .await
    .expect("the hashing thread does not panic")
    .map_err(|e| ClientError::Io {
        what: format!("cannot read {}", path.display()),
        source: e,
    })?;
    if size != info.size || sha256 != info.sha256 {
        let _ = std::fs::remove_file(path);
        return Err(ClientError::ArchiveMismatch {
            expected_size: info.size,
            expected_sha256: info.sha256.clone(),
            size,
            sha256,
        });
    }
    Ok(())
}
