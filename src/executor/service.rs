//! The gRPC adapter: validates requests, hands the work to [`Run`], and maps failures to status
//! codes. One executor runs one task.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::run::{Run, RunSpec};
use crate::rpc::executor_server::Executor;
use crate::rpc::{
    AcknowledgeRequest, AcknowledgeResponse, ArchiveChunk, ArchiveInfo, CancelRequest,
    CancelResponse, FetchArchiveRequest, ResumeRequest, StartTaskRequest, TaskEvent, TaskResult,
    start_task_request::Module, task_event::Event,
};

/// Size of one archive chunk on the wire.
const ARCHIVE_CHUNK: usize = 1024 * 1024;

/// An archive that fits in one chunk travels in the result message itself
/// ([`ArchiveInfo::content`]): a fetch would bring it in one chunk anyway, after one more round
/// trip. It is read from the file when the result is streamed, so that the event log (kept on
/// disk for resumes) holds it once, as the file.
const INLINE_ARCHIVE_MAX: u64 = ARCHIVE_CHUNK as u64;

type EventStream = Pin<Box<dyn Stream<Item = Result<TaskEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<ArchiveChunk, Status>> + Send>>;

/// What the executor was started with that bounds its runs.
pub struct Limits {
    pub state_dir: PathBuf,
    /// The only workspace a request may name (canonical).
    pub workspace: PathBuf,
    pub grace: Duration,
    /// The event log's cap (see [`EventLog`](super::event_log::EventLog)).
    pub max_log_bytes: u64,
    /// What confines each task.
    pub sandbox: crate::sandbox::Policy,
}

pub struct ExecutorService {
    limits: Limits,
    /// Environment every task gets below its own `env` (Secrets and ConfigMaps in a pod).
    task_env: BTreeMap<String, String>,
    run: Mutex<Option<Arc<Run>>>,
    /// Cancelled when the client acknowledges the result: the executor may exit.
    done: CancellationToken,
    /// When a client last called: an executor whose client never comes back ends itself.
    last_call: Mutex<Instant>,
}

impl ExecutorService {
    pub fn new(
        limits: Limits,
        task_env: BTreeMap<String, String>,
        done: CancellationToken,
    ) -> Self {
        Self {
            limits,
            task_env,
            run: Mutex::new(None),
            done,
            last_call: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.last_call.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Resolves once no client has called for `timeout` while no task runs: before a first
    /// task, or after the result (counted from the result, however long the task ran).
    pub async fn abandoned(&self, timeout: Duration) {
        let mut waited_for_result = false;
        loop {
            if !waited_for_result && let Some(run) = self.current() {
                run.log.finished().await;
                self.touch();
                waited_for_result = true;
            }
            let idle = self
                .last_call
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }

    /// Stops the running task, if any (the executor is shutting down).
    pub fn cancel_all(&self) {
        if let Some(run) = self.current() {
            run.cancel();
        }
    }

    /// Resolves when the current run, if any, has its result.
    pub async fn finished(&self) {
        if let Some(run) = self.current() {
            run.log.finished().await;
        }
    }

    fn current(&self) -> Option<Arc<Run>> {
        self.run.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn find(&self, run_id: &str) -> Result<Arc<Run>, Status> {
        match self.current() {
            Some(run) if run.id == run_id => Ok(run),
            Some(run) => Err(Status::not_found(format!(
                "run `{run_id}` is not known here; this executor runs `{}`",
                run.id
            ))),
            None => Err(Status::not_found(format!(
                "run `{run_id}` is not known here"
            ))),
        }
    }

    /// The run with this id: the existing one on a retried start, or a new one.
    fn start_or_attach(&self, request: &StartTaskRequest) -> Result<Arc<Run>, Status> {
        let mut slot = self.run.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(run) = slot.as_ref() {
            return if run.id == request.run_id {
                Ok(run.clone())
            } else {
                Err(Status::failed_precondition(format!(
                    "this executor already runs `{}`; one executor runs one task",
                    run.id
                )))
            };
        }
        let mut spec = run_spec(request, &self.limits)?;
        for (key, value) in &self.task_env {
            spec.env.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let run = Run::start(spec, &self.limits)
            .map_err(|e| Status::internal(format!("cannot start the run: {e}")))?;
        *slot = Some(run.clone());
        Ok(run)
    }
}

fn run_spec(request: &StartTaskRequest, limits: &Limits) -> Result<RunSpec, Status> {
    if request.run_id.is_empty()
        || !request
            .run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Status::invalid_argument(
            "run_id must be non-empty and made of letters, digits, `-` and `_`",
        ));
    }
    let Some(Module::Command(command)) = &request.module else {
        return Err(Status::invalid_argument(
            "the request carries no module this executor can run (expected `command`)",
        ));
    };
    if command.argv.is_empty() {
        return Err(Status::invalid_argument("the command is empty"));
    }
    let workspace = PathBuf::from(
        request
            .workspace
            .as_ref()
            .map(|w| w.root.as_str())
            .unwrap_or_default(),
    );
    if !workspace.is_absolute() || !workspace.is_dir() {
        return Err(Status::invalid_argument(format!(
            "the workspace root `{}` is not an existing absolute directory",
            workspace.display()
        )));
    }
    // The executor was given its workspace at start: a request cannot point it elsewhere
    // (`.../ws/../elsewhere` included, hence the canonical comparison).
    if workspace.canonicalize().ok().as_ref() != Some(&limits.workspace) {
        return Err(Status::permission_denied(format!(
            "this executor serves the workspace {} only; the request names `{}`",
            limits.workspace.display(),
            workspace.display()
        )));
    }
    // The event log and the archive would otherwise count as files the task wrote.
    // (The workspace equals `limits.workspace`, canonical, by the check above.)
    if let Ok(state) = limits.state_dir.canonicalize()
        && state.starts_with(&limits.workspace)
    {
        return Err(Status::invalid_argument(format!(
            "the executor's state directory {} is inside the workspace {}",
            state.display(),
            limits.workspace.display()
        )));
    }
    let workdir = PathBuf::from(&command.workdir);
    if !is_inside(&workdir) {
        return Err(Status::invalid_argument(format!(
            "the working directory `{}` must be relative and stay inside the workspace",
            workdir.display()
        )));
    }
    let timeout = match &command.timeout {
        Some(timeout) => Some(
            Duration::try_from(*timeout)
                .map_err(|_| Status::invalid_argument("the timeout is negative"))?,
        ),
        None => None,
    };
    Ok(RunSpec {
        run_id: request.run_id.clone(),
        argv: command.argv.clone(),
        env: command.env.clone().into_iter().collect(),
        workspace,
        workdir,
        timeout,
        output_filters: command.output_filters.clone(),
    })
}

fn is_inside(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn follow(run: Arc<Run>, after: u64) -> EventStream {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move { run.log.follow(after, tx).await });
    let events = ReceiverStream::new(rx)
        .map(|event| event.map_err(|e| Status::data_loss(format!("event log: {e}"))));
    Box::pin(futures::StreamExt::then(events, |event| async move {
        let mut event = event?;
        if let Some(Event::Result(TaskResult {
            archive: Some(info),
            ..
        })) = &mut event.event
        {
            inline_archive(info).await;
        }
        Ok(event)
    }))
}

/// Puts a small archive into its result message. One that cannot be read is left out: the
/// client then fetches it, and that fetch says what is wrong with it.
async fn inline_archive(info: &mut ArchiveInfo) {
    if info.path.is_empty() || info.size > INLINE_ARCHIVE_MAX {
        return;
    }
    match tokio::fs::read(&info.path).await {
        Ok(content) => info.content = Some(content),
        Err(e) => tracing::warn!("cannot read the archive {} to inline it: {e}", info.path),
    }
}

#[tonic::async_trait]
impl Executor for ExecutorService {
    type StartTaskStream = EventStream;
    type ResumeStream = EventStream;
    type FetchArchiveStream = ChunkStream;

    async fn start_task(
        &self,
        request: Request<StartTaskRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.touch();
        let span = tracing::info_span!("executor", run_id = %request.get_ref().run_id);
        crate::telemetry::adopt_remote_parent(
            &span,
            request.metadata(),
            &request.get_ref().trace_context,
        );
        let _entered = span.enter();
        let request = request.into_inner();
        let run = self.start_or_attach(&request)?;
        Ok(Response::new(follow(run, request.after_sequence)))
    }

    async fn resume(
        &self,
        request: Request<ResumeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.touch();
        let request = request.into_inner();
        let run = self.find(&request.run_id)?;
        tracing::info!(run_id = %request.run_id, after = request.after_sequence, "client resumed");
        Ok(Response::new(follow(run, request.after_sequence)))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        self.touch();
        let request = request.into_inner();
        let run = self.find(&request.run_id)?;
        tracing::info!(run_id = %request.run_id, reason = %request.reason, "cancel requested");
        run.cancel();
        Ok(Response::new(CancelResponse {}))
    }

    async fn fetch_archive(
        &self,
        request: Request<FetchArchiveRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        self.touch();
        let request = request.into_inner();
        let run = self.find(&request.run_id)?;
        let info = run
            .archive()
            .ok_or_else(|| Status::failed_precondition("the archive is not written yet"))?;
        if request.offset > info.size {
            return Err(Status::out_of_range(format!(
                "offset {} is past the archive's end ({} bytes)",
                request.offset, info.size
            )));
        }
        let mut file = tokio::fs::File::open(&info.path)
            .await
            .map_err(|e| Status::internal(format!("cannot open the archive: {e}")))?;
        file.seek(std::io::SeekFrom::Start(request.offset))
            .await
            .map_err(|e| Status::internal(format!("cannot seek in the archive: {e}")))?;
        let (tx, rx) = mpsc::channel(4);
        let mut offset = request.offset;
        tokio::spawn(async move {
            loop {
                let mut data = vec![0u8; ARCHIVE_CHUNK];
                let n = match file.read(&mut data).await {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("archive read: {e}"))))
                            .await;
                        return;
                    }
                };
                data.truncate(n);
                let chunk = ArchiveChunk { offset, data };
                offset += n as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        self.touch();
        let request = request.into_inner();
        self.find(&request.run_id)?;
        tracing::info!(run_id = %request.run_id, "result acknowledged");
        self.done.cancel();
        Ok(Response::new(AcknowledgeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{CommandModule, Workspace};

    fn request(workspace: &Path, workdir: &str) -> StartTaskRequest {
        StartTaskRequest {
            run_id: "r1".to_string(),
            module: Some(Module::Command(CommandModule {
                argv: vec!["true".to_string()],
                workdir: workdir.to_string(),
                ..Default::default()
            })),
            workspace: Some(Workspace {
                root: workspace.display().to_string(),
            }),
            ..Default::default()
        }
    }

    fn limits(workspace: &Path, state_dir: &Path) -> Limits {
        Limits {
            state_dir: state_dir.to_path_buf(),
            workspace: workspace.canonicalize().unwrap(),
            grace: Duration::from_secs(1),
            max_log_bytes: 1 << 20,
            sandbox: crate::sandbox::Policy::unconfined(),
        }
    }

    #[test]
    fn a_request_is_checked_before_anything_runs() {
        let workspace = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = workspace.path().join("state");
        std::fs::create_dir(&inside).unwrap();
        let ok = limits(workspace.path(), elsewhere.path());

        assert!(run_spec(&request(workspace.path(), "."), &ok).is_ok());
        for (req, state) in [
            (request(workspace.path(), "../up"), elsewhere.path()),
            (request(workspace.path(), "/abs"), elsewhere.path()),
            (request(Path::new("relative"), "."), elsewhere.path()),
            (request(workspace.path(), "."), inside.as_path()),
        ] {
            let status = run_spec(&req, &limits(workspace.path(), state)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        }
        let mut empty = request(workspace.path(), ".");
        empty.module = None;
        assert_eq!(
            run_spec(&empty, &ok).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // Another directory, or this one's parent by way of `..`: not this executor's.
        let sneaky = workspace.path().join("state/../..");
        for other in [elsewhere.path(), sneaky.as_path()] {
            let status = run_spec(&request(other, "."), &ok).unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        }
    }
}
