//! Backends decide where a task runs: how the workspace is prepared, how the executor is started
//! and how the client reaches it. From the connection on, every backend uses [`crate::client`].
//!
//! - [`local`]: a sandbox directory and an executor child process on this machine
//! - [`k8s`]: a fresh pod and NetworkPolicy, the binary and inputs copied in through exec, a
//!   port-forward to the executor
//! - [`ssh`]: a private run directory on a machine reached with the user's own `ssh`, the
//!   executor's Unix socket forwarded over one master connection
//! - [`inputs`]: the inputs as a `.tar.s2` stream, shared by all backends
//!
//! What every backend that runs the executor on another machine shares:
//!
//! - [`upload`]: the binary, tools, secret and inputs, over a command on the other side
//! - [`executor_command`]: the executor's command line and the PATH its task inherits
//! - [`binary`]: the executor binary sent (architecture, C library, digest)
//! - [`arch`]: architectures in Kubernetes' names, this machine's included
//! - [`process`]: a child that goes with `buildr run`, the SIGTERM stop, a kept stderr tail,
//!   the one backoff between attempts
//!
//! Why a trait and not an enum: the run that drives a backend ([`crate::run`]) is written once,
//! generic over [`Backend`], and each backend keeps its own state and error type; a new backend
//! is a new implementation (and a [`crate::run::Plan`]), never a new arm in every step of the
//! run.

pub mod arch;
pub mod binary;
pub mod by_content;
pub mod executor_command;
pub mod inputs;
pub mod k8s;
pub mod local;
pub mod process;
pub mod ssh;
pub mod upload;

use std::future::Future;
use std::sync::Arc;

use crate::secret::Secret;
use crate::task::InputFile;
use crate::timeline::Timeline;

/// Where `buildr run` runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// A sandbox on this machine; needs no cluster.
    Local,
    /// A fresh pod in a Kubernetes namespace.
    K8s,
    /// A private directory on a machine reached with `ssh`.
    Ssh,
}

impl std::fmt::Display for BackendKind {
    /// Its name on the command line (`--backend`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Local => "local",
            BackendKind::K8s => "k8s",
            BackendKind::Ssh => "ssh",
        })
    }
}

/// A fresh run id: 12 hex digits of a random UUID. It names what the run creates (sandbox,
/// pod, run directory), so it is short enough for a pod's name.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A started executor, as the client sees it.
pub struct StartedExecutor {
    /// A channel that dials the executor afresh whenever its connection is lost.
    pub channel: tonic::transport::Channel,
    /// The workspace root on the executor's side.
    pub workspace_root: String,
    /// The digest of the input tree as the inputs archive sent it
    /// ([`crate::archive::TreeHasher`]), for the cache to check against its key.
    pub inputs_sent: Option<[u8; 32]>,
}

/// One run's place to execute a task. The run calls [`Backend::start`] once, then waits on the
/// client and on [`Backend::lost`], and calls [`Backend::clean_up`] on every path out: success,
/// error, or Ctrl-C (which may drop `start` half-way, so a backend records what it created
/// before it creates it).
pub trait Backend {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Something a run leaves after its clean-up; its Display is the sentence to show the user.
    type Leftover: std::fmt::Display;

    /// Prepares the workspace with `inputs` and starts the executor there, giving it the run's
    /// `secret` (which every call then carries), and records its phases in `timeline`. The
    /// inputs are shared: a backend may read them on another thread while it waits on its pod.
    fn start(
        &mut self,
        inputs: &Arc<[InputFile]>,
        secret: &Secret,
        timeline: &mut Timeline,
    ) -> impl Future<Output = Result<StartedExecutor, Self::Error>>;

    /// Resolves when the executor is gone for good (it cannot be redialled), saying how it
    /// ended. Its normal end, right after the result is acknowledged, resolves it too.
    fn lost(&mut self) -> impl Future<Output = String>;

    /// Deletes what the run created, unless the user asked to keep it. Idempotent, and never
    /// fails the run: returns what is left (kept, or not deleted and why), for the caller to
    /// tell the user.
    fn clean_up(&mut self) -> impl Future<Output = Vec<Self::Leftover>>;
}
