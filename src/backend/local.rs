//! The local backend: a fresh sandbox directory whose workspace receives the inputs through the
//! same `.tar.s2` path a pod does, and `buildr executor` as a child process on a Unix socket inside the sandbox.
//! `clean_up` stops the executor and removes the directory on every path out; `keep` leaves the
//! directory for a post-mortem.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::arch::host_arch;
use super::executor_command::ExecutorCommand;
use super::process;
use super::upload::{self, RemoteCommand};
use super::{Backend, StartedExecutor};
use crate::archive::ArchiveError;
use crate::client::Target;
use crate::executor::{LISTENING_PREFIX, ListenAddr};
use crate::sandbox::Policy;
use crate::secret::Secret;
use crate::task::InputFile;
use crate::timeline::Timeline;
use crate::tools::{Check, Tool, ToolError};

/// The sandbox, still there after the run's clean-up.
#[derive(Debug, thiserror::Error)]
pub enum Leftover {
    /// Kept because the user asked (`--keep`).
    #[error("keeping the sandbox at {}", .0.display())]
    Kept(PathBuf),
    #[error("cannot remove the sandbox: {0}")]
    NotRemoved(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "cannot create the sandbox directory {}; check that TMPDIR names a directory you can \
         write to, with space left",
        .path.display()
    )]
    CreateSandbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy the inputs into the sandbox")]
    CopyInputs(#[source] ArchiveError),
    #[error("cannot start the executor {}", binary.display())]
    SpawnExecutor {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the executor did not report its address: {0}")]
    NoAddress(String),
    #[error("cannot write the run's secret into the sandbox")]
    WriteSecret(#[source] std::io::Error),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(
        "cannot run {} to check what the tools need; buildr needs a POSIX shell there to run \
         tools on this machine",
        .shell.display()
    )]
    CheckTools {
        shell: PathBuf,
        #[source]
        source: process::Failed,
    },
    #[error("cannot copy tool {} into the sandbox", .0.display())]
    CopyTool(PathBuf, #[source] std::io::Error),
}

/// A run's sandbox on this machine.
pub struct LocalBackend {
    executor_binary: PathBuf,
    run_id: String,
    tools: Vec<Tool>,
    keep: bool,
    sandbox: Policy,
    root: Option<tempfile::TempDir>,
    executor: Option<Child>,
}

/// How long the executor may take to exit after the client acknowledged the result.
const EXIT_GRACE: Duration = Duration::from_secs(5);

impl LocalBackend {
    /// A sandbox for run `run_id` whose executor is `executor_binary` (a `buildr` binary) and
    /// whose task finds `tools` first in its PATH; `keep` leaves the sandbox directory after
    /// the run; `sandbox` confines the task.
    pub fn new(
        executor_binary: PathBuf,
        run_id: &str,
        tools: Vec<Tool>,
        keep: bool,
        sandbox: Policy,
    ) -> Self {
        Self {
            executor_binary,
            run_id: run_id.to_string(),
            tools,
            keep,
            sandbox,
            root: None,
            executor: None,
        }
    }
}

impl Backend for LocalBackend {
    type Error = LocalError;
    type Leftover = Leftover;

    /// Creates the sandbox, copies the inputs into its workspace and starts the executor
    /// listening on a Unix socket in the sandbox.
    async fn start(
        &mut self,
        inputs: &Arc<[InputFile]>,
        secret: &Secret,
        timeline: &mut Timeline,
    ) -> Result<StartedExecutor, LocalError> {
        let mut step = Instant::now();
        let root = self.root.insert(
            tempfile::Builder::new()
                .prefix(&format!("buildr-{}-", self.run_id))
                // Private: the executor's socket is in here.
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|source| LocalError::CreateSandbox {
                    path: std::env::temp_dir().join(format!("buildr-{}-…", self.run_id)),
                    source,
                })?,
        );
        let workspace = root.path().join("workspace");
        let state = root.path().join("state");
        let tools_dir = root.path().join("tools");
        for dir in [&workspace, &state, &tools_dir] {
            std::fs::create_dir(dir).map_err(|source| LocalError::CreateSandbox {
                path: dir.clone(),
                source,
            })?;
        }
        if !self.tools.is_empty() {
            check_tools(&self.tools).await?;
            for tool in &self.tools {
                std::fs::copy(&tool.source, tools_dir.join(&tool.name))
                    .map_err(|e| LocalError::CopyTool(tool.source.clone(), e))?;
            }
            timeline.record("check and copy tools", &mut step);
        }

        let (copied, inputs_sent) = {
            let inputs = inputs.to_vec();
            let workspace = workspace.clone();
            let span = tracing::info_span!("copy", files = inputs.len());
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                super::inputs::copy_to_dir(&inputs, &workspace)
            })
            .await
            .expect("the copy thread does not panic")
            .map_err(LocalError::CopyInputs)?
        };
        tracing::debug!(files = copied.files, bytes = copied.bytes, "inputs copied");
        timeline.record("copy inputs", &mut step);

        // The secret goes to the executor in a file in its private state directory.
        let secret_file = state.join("secret");
        secret
            .write_file(&secret_file)
            .map_err(LocalError::WriteSecret)?;
        let child = self.executor.insert(spawn_executor(
            &self.executor_binary,
            &state,
            &workspace,
            &tools_dir,
            &secret_file,
            &self.sandbox,
        )?);
        let target = read_address(child).await?;
        timeline.record("start executor", &mut step);
        Ok(StartedExecutor {
            channel: crate::client::connect::channel(&target),
            workspace_root: workspace.display().to_string(),
            inputs_sent,
        })
    }

    async fn lost(&mut self) -> String {
        let Some(executor) = self.executor.as_mut() else {
            return std::future::pending().await;
        };
        match executor.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Waits for the executor to exit (it does once the result is acknowledged), stops it if it
    /// does not, and removes the sandbox unless it is kept.
    async fn clean_up(&mut self) -> Vec<Leftover> {
        if let Some(mut executor) = self.executor.take() {
            process::terminate(&mut executor);
            if tokio::time::timeout(EXIT_GRACE, executor.wait())
                .await
                .is_err()
            {
                tracing::warn!("the executor did not exit after the run");
            }
        }
        let Some(root) = self.root.take() else {
            return Vec::new();
        };
        if self.keep {
            return vec![Leftover::Kept(root.keep())];
        }
        match root.close() {
            Ok(()) => Vec::new(),
            Err(e) => vec![Leftover::NotRemoved(e)],
        }
    }
}

impl Drop for LocalBackend {
    /// A run that never reached `clean_up` (a panic) still stops its executor.
    fn drop(&mut self) {
        if let Some(executor) = self.executor.as_mut() {
            process::terminate(executor);
        }
    }
}

/// The shell that checks what the tools need, as a pod's `/bin/sh` does in its image.
const SHELL: &str = "/bin/sh";

/// Looks for what the tools need with this machine's shell, with the check a pod's image or an
/// ssh host gets ([`upload::check_tools`]).
async fn check_tools(tools: &[Tool]) -> Result<(), LocalError> {
    let check = Check::new(tools, host_arch());
    if check.is_empty() {
        return Ok(());
    }
    upload::check_tools(&Shell, "", &check, "on this machine")
        .await
        .map_err(|source| LocalError::CheckTools {
            shell: SHELL.into(),
            source,
        })??;
    Ok(())
}

/// This machine's [`SHELL`] as the other side of a [`RemoteCommand`], so that the local backend
/// runs the remote backends' checks and not a twin of them.
pub(crate) struct Shell;

impl RemoteCommand for Shell {
    type Stdin = process::Stdin;
    type Error = process::Failed;

    async fn run<F>(&self, script: String, feed: F) -> Result<Vec<u8>, process::Failed>
    where
        F: FnOnce(Self::Stdin) -> std::io::Result<Self::Stdin> + Send + 'static,
    {
        let mut command = Command::new(SHELL);
        command.arg("-c").arg(script);
        let feed: process::Feed = Box::new(move |stdin| feed(stdin).map(drop));
        // Never dropped half-way: the check is awaited to its end.
        let never = tokio_util::sync::CancellationToken::new();
        process::run_to_end(command, Some(feed), never, Duration::ZERO).await
    }

    fn exit_code(error: &process::Failed) -> Option<i32> {
        match error {
            process::Failed::Exited { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn spawn_executor(
    binary: &Path,
    state: &Path,
    workspace: &Path,
    tools_dir: &Path,
    secret_file: &Path,
    sandbox: &Policy,
) -> Result<Child, LocalError> {
    let executor = ExecutorCommand {
        binary: binary.to_path_buf(),
        // A socket in the sandbox (a 0700 directory), not a loopback port: on a shared machine
        // no other user can reach the executor and start a command of their own.
        listen: ListenAddr::Unix(state.join("executor.sock")),
        state_dir: state.to_path_buf(),
        workspace: workspace.to_path_buf(),
        secret_file: secret_file.to_path_buf(),
        tools_dir: tools_dir.to_path_buf(),
        idle_timeout: None,
        env_prefix: None,
        sandbox: Some(sandbox.clone()),
    };
    let mut command = Command::new(binary);
    command
        .args(executor.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // The task inherits the executor's PATH: the tools come first in it.
        .env(
            "PATH",
            executor.path(&std::env::var_os("PATH").unwrap_or_default()),
        )
        // Its log lines reach the user as events; its console stays quiet unless asked.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "off".to_string()),
        )
        // Its own group: a Ctrl-C at the terminal reaches `buildr run`, which cancels cleanly,
        // and not the executor behind its back.
        .process_group(0);
    process::dies_with_parent(&mut command);
    command.spawn().map_err(|source| LocalError::SpawnExecutor {
        binary: binary.to_path_buf(),
        source,
    })
}

/// The executor prints `listening on ADDR` once bound.
async fn read_address(child: &mut Child) -> Result<Target, LocalError> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| LocalError::NoAddress("no answer within 30s".to_string()))?
        .map_err(|e| LocalError::NoAddress(e.to_string()))?
        .ok_or_else(|| LocalError::NoAddress("it exited before binding".to_string()))?;
    let addr = line
        .strip_prefix(LISTENING_PREFIX)
        .ok_or_else(|| LocalError::NoAddress(format!("unexpected line `{line}`")))?;
    match addr.parse() {
        Ok(ListenAddr::Tcp(addr)) => Ok(Target::Tcp(addr)),
        Ok(ListenAddr::Unix(path)) => Ok(Target::Unix(path)),
        Err(e) => Err(LocalError::NoAddress(e)),
    }
}
