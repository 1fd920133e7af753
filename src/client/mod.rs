//! The client side of a run, shared by every backend: once a backend has an executor listening,
//! everything from here on (readiness, events, resume, cancel, archive fetch, extraction) is the
//! same code.
//!
//! - [`connect`]: channels to an executor, trace context on every call, readiness
//! - [`session`]: follows events to the result, resuming after a lost connection
//! - [`fetch`]: resumable, verified archive download
//! - [`render`]: events on the console

pub mod connect;
pub mod fetch;
pub mod render;
pub mod session;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::archive::{self, Extracted};
use crate::rpc::{AcknowledgeRequest, StartTaskRequest, TaskResult};
pub use connect::Target;
pub use session::{EventSink, Reconnect};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the executor did not become ready within {waited:?} (last error: {last_error})")]
    NotReady {
        waited: Duration,
        last_error: String,
    },
    #[error(
        "lost the executor and could not reconnect within {after:?} (last error: {last_error})"
    )]
    ConnectionLost { after: Duration, last_error: String },
    #[error("{call} failed: {}", status.message())]
    Rpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("interrupted; stopped waiting for the task")]
    Interrupted,
    #[error(
        "the fetched archive does not match what the executor reported: {size} bytes, sha256 {sha256} \
         (expected {expected_size} bytes, sha256 {expected_sha256})"
    )]
    ArchiveMismatch {
        expected_size: u64,
        expected_sha256: String,
        size: u64,
        sha256: String,
    },
    #[error("cannot extract the modified files")]
    Extract {
        dest: PathBuf,
        #[source]
        source: archive::ArchiveError,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the client side of a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where modified files are extracted.
    pub out: PathBuf,
    /// Apply the task's deletions to `out` too.
    pub apply_deletions: bool,
    /// What to do with modified symlinks that point outside `out`.
    pub links: archive::LinkPolicy,
    /// How long the executor may take to answer its health check.
    pub ready_timeout: Duration,
    pub reconnect: Reconnect,
}

/// How a run ended, as far as the client saw it.
#[derive(Debug)]
pub struct Outcome {
    pub result: TaskResult,
    /// The user pressed Ctrl-C (the task was asked to cancel).
    pub interrupted: bool,
    pub extracted: Option<Extracted>,
    pub resumes: u32,
}

/// Drives a run on an executor reachable through `channel`: waits for it, starts the task,
/// follows its events, fetches and extracts the archive, and acknowledges the result.
pub async fn execute(
    channel: tonic::transport::Channel,
    request: StartTaskRequest,
    options: &Options,
    sink: &mut dyn EventSink,
    interrupts: &mut mpsc::Receiver<()>,
) -> Result<Outcome, ClientError> {
    connect::wait_ready(&channel, options.ready_timeout).await?;
    let mut client = connect::client(channel);
    let run_id = request.run_id.clone();
    let finished = session::follow(&mut client, request, sink, interrupts, options.reconnect)
        .instrument(tracing::info_span!("task"))
        .await?;

    let extracted = match finished.result.archive.clone() {
        Some(info) if !info.path.is_empty() => Some(
            fetch_and_extract(&mut client, &run_id, &info, options)
                .instrument(tracing::info_span!("archive", bytes = info.size))
                .await?,
        ),
        _ => None,
    };
    let ack = client.acknowledge(AcknowledgeRequest {
        run_id: run_id.clone(),
    });
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), ack).await {
        tracing::debug!("acknowledge got no answer: {e}");
    }
    Ok(Outcome {
        result: finished.result,
        interrupted: finished.interrupted,
        extracted,
        resumes: finished.resumes,
    })
}

async fn fetch_and_extract(
    client: &mut connect::Client,
    run_id: &str,
    info: &crate::rpc::ArchiveInfo,
    options: &Options,
) -> Result<Extracted, ClientError> {
    let local = tempfile::Builder::new()
        .prefix("buildr-archive-")
        .suffix(&format!(".{}", archive::ARCHIVE_EXTENSION))
        .tempfile()
        .map_err(|e| ClientError::Io {
            what: "cannot create a temporary file for the archive".to_string(),
            source: e,
        })?;
    let bar = crate::progress::bytes("fetch", info.size);
    fetch::fetch_archive(client, run_id, info, local.path(), &bar, options.reconnect).await?;
    bar.finish_and_clear();

    let dest = options.out.clone();
    let apply_deletions = options.apply_deletions;
    let links = options.links;
    let size = info.size;
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(local.path()).map_err(|e| ClientError::Io {
            what: format!("cannot open {}", local.path().display()),
            source: e,
        })?;
        let bar = crate::progress::bytes("extract", size);
        let options = archive::ExtractOptions {
            apply_deletions,
            links,
            progress: None,
        };
        let extracted = archive::extract(bar.wrap_read(file), &dest, &options)
            .map_err(|source| ClientError::Extract { dest, source });
        bar.finish_and_clear();
        extracted
    })
    .await
    .expect("the extraction thread does not panic")
}
