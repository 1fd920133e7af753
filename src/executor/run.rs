//! One run of one task: watch the workspace, run the process, collect what changed into a
//! `.tar.s2` archive and finish the event log with the result. Knows nothing of gRPC: the
//! service reads the event log and the archive location.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Level};

use super::changes::{Changes, Snapshot, Watcher};
use super::event_log::EventLog;
use super::process::{self, Exit, Stream};
use super::service::Limits;
use crate::archive;
use crate::rpc::{ArchiveInfo, TaskLog, TaskOutput, TaskResult, task_event::Event};
use crate::sandbox::{Confinement, Mode, Net, Places, Policy, Support};

/// What the client asked to run, checked and resolved to paths.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub run_id: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The workspace root; the watcher and the archive cover everything below it.
    pub workspace: PathBuf,
    /// Where the task starts, relative to the workspace.
    pub workdir: PathBuf,
    pub timeout: Option<Duration>,
    pub output_filters: Vec<String>,
}

pub struct Run {
    pub id: String,
    pub log: Arc<EventLog>,
    cancel: CancellationToken,
    archive: Mutex<Option<ArchiveInfo>>,
}

impl Run {
    /// Starts the run in the background; its events go to a log under the state directory,
    /// capped at `limits.max_log_bytes`.
    pub fn start(spec: RunSpec, limits: &Limits) -> io::Result<Arc<Self>> {
        let state_dir = &limits.state_dir;
        let grace = limits.grace;
        let sandbox = limits.sandbox.clone();
        let log = Arc::new(EventLog::create(
            &state_dir.join(format!("{}.events", spec.run_id)),
            limits.max_log_bytes,
        )?);
        let run = Arc::new(Self {
            id: spec.run_id.clone(),
            log,
            cancel: CancellationToken::new(),
            archive: Mutex::new(None),
        });
        let archive_path =
            state_dir.join(format!("{}.{}", spec.run_id, archive::ARCHIVE_EXTENSION));
        let driver = run.clone();
        let span = tracing::info_span!("task", run_id = %spec.run_id);
        tokio::spawn(
            async move {
                let result = driver.drive(spec, &sandbox, &archive_path, grace).await;
                if let Err(e) = driver.log.append(Event::Result(result)) {
                    tracing::error!("cannot record the result: {e}");
                }
            }
            .instrument(span),
        );
        Ok(run)
    }

    /// Stops the task's process group; the result still follows.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Where the archive is, once the result has been written.
    pub fn archive(&self) -> Option<ArchiveInfo> {
        self.archive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn drive(
        &self,
        spec: RunSpec,
        sandbox: &Policy,
        archive_path: &Path,
        grace: Duration,
    ) -> TaskResult {
        let started = Instant::now();
        let mut result = match self.execute(&spec, sandbox, archive_path, grace).await {
            Ok(result) => result,
            Err(e) => {
                // The result carries the error to the client; this is for the executor's log.
                tracing::error!("{e}");
                TaskResult {
                    error: e,
                    exit_code: -1,
                    ..Default::default()
                }
            }
        };
        result.duration = prost_types::Duration::try_from(started.elapsed()).ok();
        result
    }

    async fn execute(
        &self,
        spec: &RunSpec,
        sandbox: &Policy,
        archive_path: &Path,
        grace: Duration,
    ) -> Result<TaskResult, String> {
        let filters = output_filters(&spec.output_filters)?;
        let dir = spec.workspace.join(&spec.workdir);
        if !dir.is_dir() {
            return Err(format!(
                "the working directory {} does not exist",
                dir.display()
            ));
        }
        let (confinement, tmpdir) = self.confine(sandbox, &spec.workspace).await?;
        let mut env = spec.env.clone();
        if let Some(tmpdir) = &tmpdir {
            // The task's own: the rest of the system's temporary directory is not writable.
            env.entry("TMPDIR".to_string())
                .or_insert_with(|| tmpdir.path().display().to_string());
        }
        // Both walk the whole workspace, which does not change before the task starts: at once.
        let workspace = spec.workspace.clone();
        let watching = tokio::task::spawn_blocking(move || Watcher::start(&workspace));
        let (watcher, before) = tokio::join!(watching, snapshot(&spec.workspace));
        let watcher = match watcher.map_err(|e| format!("the file watcher's start failed: {e}"))? {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                self.note(
                    Level::WARN,
                    "the file watcher could not start; relying on the snapshot comparison",
                    &[("error", e.to_string())],
                );
                None
            }
        };
        let before = before?;
        self.note(
            Level::INFO,
            "task started",
            &[
                ("argv", format!("{:?}", spec.argv)),
                ("files", before.len().to_string()),
                ("trace_id", crate::telemetry::current_trace_id()),
            ],
        );

        let log = self.log.clone();
        let on_output = move |stream: Stream, data: Vec<u8>| {
            let stream = match stream {
                Stream::Stdout => crate::rpc::task_output::Stream::Stdout,
                Stream::Stderr => crate::rpc::task_output::Stream::Stderr,
            };
            let output = TaskOutput {
                stream: stream as i32,
                data,
            };
            if let Err(e) = log.append(Event::Output(output)) {
                tracing::error!("cannot record output: {e}");
            }
        };
        let exit = match process::run(
            process::Spec {
                argv: &spec.argv,
                env: &env,
                dir: &dir,
                timeout: spec.timeout,
                grace,
                confinement,
            },
            self.cancel.clone(),
            on_output,
        )
        .await
        {
            Ok(exit) => exit,
            // As a shell reports it: 127 for a command that is not there, 126 for one that
            // cannot be executed.
            Err(e) => {
                let exit_code = match e.kind() {
                    io::ErrorKind::NotFound => 127,
                    io::ErrorKind::PermissionDenied => 126,
                    _ => -1,
                };
                tracing::error!("{e}");
                return Ok(TaskResult {
                    error: e.to_string(),
                    exit_code,
                    ..Default::default()
                });
            }
        };
        self.note(
            Level::INFO,
            "task finished",
            &[("exit_code", exit.code.to_string())],
        );

        let touched = watcher.map(Watcher::finish).unwrap_or_default();
        let after = snapshot(&spec.workspace).await?;
        let mut changes = before.changes(&after, &touched);
        if changes.git_left_out.count > 0 {
            self.note(Level::WARN, &changes.git_left_out.to_string(), &[]);
        }
        changes.modified.retain(|p| filters.is_match(p));
        changes.deleted.retain(|p| filters.is_match(p));
        let info = self
            .write_archive(&spec.workspace, &changes, archive_path)
            .await?;
        *self.archive.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.clone());

        Ok(result_of(exit, info, changes))
    }

    async fn write_archive(
        &self,
        workspace: &Path,
        changes: &Changes,
        to: &Path,
    ) -> Result<ArchiveInfo, String> {
        let sources: Vec<archive::Source> = changes
            .modified
            .iter()
            .map(|name| archive::Source {
                source: workspace.join(name),
                name: name.clone(),
            })
            .collect();
        let deleted = changes.deleted.clone();
        let to_owned = to.to_path_buf();
        let span = tracing::info_span!("archive", files = sources.len());
        let summary = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            // A new file: nothing planted at its name is followed or overwritten.
            archive::create_new_file(&to_owned, &sources, &deleted)
        })
        .await
        .map_err(|e| format!("the archive writer failed: {e}"))?
        // `{:#}`: the error and each of its causes, joined by ": ".
        .map_err(|e| {
            format!(
                "cannot write the archive of modified files: {:#}",
                anyhow::Error::new(e)
            )
        })?;
        self.note(
            Level::INFO,
            "archive written",
            &[
                ("modified", changes.modified.len().to_string()),
                ("deleted", changes.deleted.len().to_string()),
                ("bytes", summary.bytes_out.to_string()),
            ],
        );
        Ok(ArchiveInfo {
            path: to.display().to_string(),
            size: summary.bytes_out,
            sha256: summary.sha256,
            content: None,
        })
    }

    /// The task's confinement under `policy` and its private TMPDIR, both `None` for `sandbox =
    /// "none"`; `-v` shows the mechanisms in force. The mechanisms are tried afresh for each
    /// run: what a machine allows can change under a long-lived executor's feet.
    async fn confine(
        &self,
        policy: &Policy,
        workspace: &Path,
    ) -> Result<(Option<Confinement>, Option<tempfile::TempDir>), String> {
        if policy.task.mode == Mode::None {
            self.note(Level::INFO, "sandbox: none (the task runs unconfined)", &[]);
            return Ok((None, None));
        }
        let started = Instant::now();
        // Beside the workspace, in the run's own directory (local and ssh), so that the
        // backend's clean-up removes it even after an executor was killed; not in the shared
        // /tmp, where it would outlive such an executor.
        let tmpdir = tempfile::Builder::new()
            .prefix("task-tmp-")
            .tempdir_in(workspace.parent().unwrap_or(&std::env::temp_dir()))
            .map_err(|e| format!("cannot create the task's private TMPDIR: {e}"))?;
        let (policy, workspace, tmp) = (
            policy.clone(),
            workspace.to_path_buf(),
            tmpdir.path().to_path_buf(),
        );
        let confinement = tokio::task::spawn_blocking(move || {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let places = Places {
                workspace: &workspace,
                tmpdir: &tmp,
                home: home.as_deref(),
            };
            let support = Support::probe(policy.net == Net::None);
            Confinement::prepare(&policy, &support, &places)
        })
        .await
        .map_err(|e| format!("the sandbox's set-up failed: {e}"))?
        .map_err(|refused| refused.to_string())?;
        if let Some(confinement) = &confinement {
            self.note(
                Level::INFO,
                &format!("sandbox: {}", confinement.summary),
                &[("setup_ms", started.elapsed().as_millis().to_string())],
            );
        }
        Ok((confinement, Some(tmpdir)))
    }

    /// Records one of the executor's own log lines, for the client and for tracing.
    fn note(&self, level: Level, message: &str, fields: &[(&str, String)]) {
        match level {
            Level::ERROR => tracing::error!(?fields, "{message}"),
            Level::WARN => tracing::warn!(?fields, "{message}"),
            _ => tracing::info!(?fields, "{message}"),
        }
        let level = match level {
            Level::ERROR => crate::rpc::task_log::Level::Error,
            Level::WARN => crate::rpc::task_log::Level::Warn,
            Level::INFO => crate::rpc::task_log::Level::Info,
            Level::DEBUG => crate::rpc::task_log::Level::Debug,
            Level::TRACE => crate::rpc::task_log::Level::Trace,
        };
        let log = TaskLog {
            time: Some(prost_types::Timestamp::from(SystemTime::now())),
            level: level as i32,
            message: message.to_string(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        if let Err(e) = self.log.append(Event::Log(log)) {
            tracing::error!("cannot record a log line: {e}");
        }
    }
}

async fn snapshot(root: &Path) -> Result<Snapshot, String> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || Snapshot::take(&root))
        .await
        .map_err(|e| format!("the workspace scan failed: {e}"))?
        .map_err(|e| format!("cannot scan the workspace: {e}"))
}

/// The globs that limit collected paths; none means everything.
fn output_filters(patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| format!("bad output filter `{pattern}`: {e}"))?;
        builder.add(glob);
    }
    if patterns.is_empty() {
        builder.add(Glob::new("**").expect("a valid glob"));
    }
    builder.build().map_err(|e| e.to_string())
}

/// A result's error when the task was stopped before it ended: by the client, or by a signal
/// to the executor from outside (a pod past its deadline).
const CANCELLED: &str = "the task was cancelled";

fn result_of(exit: Exit, archive: ArchiveInfo, changes: Changes) -> TaskResult {
    let error = if exit.timed_out {
        "the task timed out and was stopped".to_string()
    } else if exit.cancelled {
        CANCELLED.to_string()
    } else {
        String::new()
    };
    TaskResult {
        error,
        exit_code: exit.code,
        signal: exit.signal.unwrap_or(0),
        duration: None,
        archive: Some(archive),
        modified_paths: changes.modified.iter().map(|p| path_string(p)).collect(),
        deleted_paths: changes.deleted.iter().map(|p| path_string(p)).collect(),
        cancelled: exit.cancelled,
        timed_out: exit.timed_out,
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
