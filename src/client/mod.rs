//! The client side of a run, shared by every backend: once a backend has an executor listening,
//! everything from here on (readiness, events, resume, cancel, archive fetch, extraction) is the
//! same code.
//!
//! - [`connect`]: channels to an executor, trace context on every call, readiness
//! - [`session`]: follows events to the result, resuming after a lost connection
//! - [`fetch`]: resumable, verified archive download (or the small archive the result carries)
//! - `redial`: the reconnection policy both of those follow
//! - [`render`]: events on the console

pub mod connect;
pub mod fetch;
mod redial;
pub mod render;
pub mod session;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::archive::{self, Extracted};
use crate::rpc::{
    AcknowledgeRequest, CommandModule, StartTaskRequest, TaskResult, Workspace,
    start_task_request::Module,
};
use crate::task::Task;
use crate::timeline::Timeline;
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
    /// The way to the executor is refused for good (a port-forward the API server forbids).
    #[error("cannot connect to the executor: {reason}")]
    Denied { reason: String },
    #[error("{call} failed: {}", status.message())]
    Rpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("interrupted; stopped waiting for the task")]
    Interrupted,
    #[error(
        "the task is too big to send: its start request (command, script and environment) is \
         {size} bytes, over gRPC's limit of {limit} bytes; put large scripts or data in a file \
         among the task's inputs"
    )]
    RequestTooBig { size: usize, limit: usize },
    #[error(
        "the archive received does not match what the executor reported: {size} bytes, sha256 {sha256} \
         (expected {expected_size} bytes, sha256 {expected_sha256})"
    )]
    ArchiveMismatch {
        expected_size: u64,
        expected_sha256: String,
        size: u64,
        sha256: String,
    },
    #[error(
        "the archive fetch stalled: nothing arrived for {idle:?} at byte {offset} of {size}; \
         the executor or the connection to it hangs"
    )]
    FetchStalled {
        idle: Duration,
        offset: u64,
        size: u64,
    },
    #[error(
        "the executor sent more than the {size} bytes it reported for the archive; nothing \
         was extracted"
    )]
    ArchiveTooLong { size: u64 },
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

/// The largest message a gRPC server decodes by default (tonic's limit, which the executor
/// keeps).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// How the client side of a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where modified files are extracted.
    pub out: PathBuf,
    /// Which of the task's deletions are applied to `out` too.
    pub deletions: archive::Deletions,
    /// The run's secret, which every call carries (see [`crate::secret`]).
    pub secret: Option<crate::secret::Secret>,
    /// What to do with modified symlinks that point outside `out`.
    pub links: archive::LinkPolicy,
    /// The most the archive may bring back.
    pub limits: archive::Limits,
    /// How long the archive fetch waits for its next chunk.
    pub fetch_idle_timeout: Duration,
    /// How long the executor may take to answer its health check.
    pub ready_timeout: Duration,
    pub reconnect: Reconnect,
    /// Hand back the verified archive (in [`Outcome::archive`]) once extracted, for the cache.
    pub keep_archive: bool,
}

/// How a run ended, as far as the client saw it.
#[derive(Debug)]
pub struct Outcome {
    pub result: TaskResult,
    /// The user pressed Ctrl-C (the task was asked to cancel).
    pub interrupted: bool,
    pub extracted: Option<Extracted>,
    /// The verified archive that was extracted, rewound, when [`Options::keep_archive`] asked.
    pub archive: Option<std::fs::File>,
    pub resumes: u32,
    /// How long each step on the client's side took (ready, task, fetch).
    pub timeline: Timeline,
}

/// The request that starts `task` in a workspace at `workspace_root` on the executor's side.
pub fn start_request(task: &Task, run_id: &str, workspace_root: &str) -> StartTaskRequest {
    StartTaskRequest {
        run_id: run_id.to_string(),
        module: Some(Module::Command(CommandModule {
            argv: task.argv(),
            env: task.env.clone().into_iter().collect(),
            workdir: task.workdir.clone(),
            timeout: task
                .timeout
                .and_then(|t| prost_types::Duration::try_from(t).ok()),
            output_filters: task.outputs.clone(),
        })),
        workspace: Some(Workspace {
            root: workspace_root.to_string(),
        }),
        trace_context: crate::telemetry::current_context_headers(),
        after_sequence: 0,
    }
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
    // The executor would refuse it with tonic's words after the start; say it in ours, before.
    let size = prost::Message::encoded_len(&request);
    if size > MAX_REQUEST_BYTES {
        return Err(ClientError::RequestTooBig {
            size,
            limit: MAX_REQUEST_BYTES,
        });
    }
    let mut timeline = Timeline::default();
    let mut step = Instant::now();
    let secret = options.secret.as_ref();
    connect::wait_ready(&channel, secret, options.ready_timeout).await?;
    timeline.record("connect", &mut step);
    let mut client = connect::client(channel, secret);
    let run_id = request.run_id.clone();
    let finished = session::follow(&mut client, request, sink, interrupts, options.reconnect)
        .instrument(tracing::info_span!("task"))
        .await?;
    timeline.record("task", &mut step);

    let mut result = finished.result;
    let (extracted, archive) = match result.archive.as_mut() {
        Some(info) if !info.path.is_empty() => {
            // Out of the result, which the caller keeps: the archive is extracted, or kept.
            let (source, phase) = match info.content.take() {
                Some(content) => (fetch::Source::Inline(content), "extract"),
                None => (
                    fetch::Source::Fetch {
                        client: &mut client,
                        run_id: &run_id,
                    },
                    "fetch and extract",
                ),
            };
            let (extracted, archive) = fetch::receive_and_extract(source, info, options)
                .instrument(tracing::info_span!("archive", bytes = info.size))
                .await?;
            timeline.record(phase, &mut step);
            (Some(extracted), archive)
        }
        _ => (None, None),
    };
    let ack = client.acknowledge(AcknowledgeRequest {
        run_id: run_id.clone(),
    });
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), ack).await {
        tracing::debug!("acknowledge got no answer: {e}");
    }
    Ok(Outcome {
        result,
        interrupted: finished.interrupted,
        extracted,
        archive,
        resumes: finished.resumes,
        timeline,
    })
}
