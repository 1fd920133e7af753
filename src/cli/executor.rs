//! `buildr executor`: the gRPC server that runs one task, inside a pod or a local sandbox.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::executor::{self, LISTENING_PREFIX, ListenAddr};
use crate::sandbox::{Mode, Net, Policy, TaskSandbox};
use crate::secret::Secret;

/// Serve the executor's gRPC API (started by `buildr run`; not usually typed by hand).
#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// Where to listen: HOST:PORT (port 0 picks a free one) or unix:PATH. Keep it on loopback:
    /// the client reaches it through a port-forward or from the same machine. A non-loopback
    /// address needs --secret-file.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: ListenAddr,

    /// The workspace, the only one requests may name.
    #[arg(long)]
    pub workspace: PathBuf,

    /// A file holding the run's secret (64 hex digits, private to this user: mode 600): every
    /// call must then carry it (`authorization: Bearer <hex>`).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,

    /// Where the event log and the archive of modified files are kept (not inside the
    /// workspace; private to this user). Default: a fresh private directory under the system's
    /// temporary directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,

    /// The event log's cap: task output past it is dropped, with an event saying how many bytes
    /// were dropped, while the task goes on (a client that stopped reading costs this much disk
    /// at most).
    #[arg(long, default_value_t = DEFAULT_MAX_LOG_BYTES)]
    pub max_log_bytes: u64,

    /// Time a stopped task gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,

    /// Exit when no client has called for this long while no task runs: before the first task
    /// or after the result. Default: wait for the client forever.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Give the task every environment variable whose name starts with PREFIX, without the
    /// prefix (how a pod's Secrets and ConfigMaps reach the task; the rest of the executor's
    /// environment stays its own).
    #[arg(long, value_name = "PREFIX")]
    pub env_prefix: Option<String>,

    /// How the task is confined (see `buildr sandbox check`): `buildr run` passes the task's
    /// `sandbox` on the local and ssh backends; an executor started without it (by hand, or in
    /// a pod, which is the boundary there) runs the task unconfined.
    #[arg(long, value_enum, default_value_t = Mode::None)]
    pub sandbox: Mode,

    /// Also writable by the task (`~/` is this user's home). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub sandbox_writable: Vec<String>,

    /// Also readable by the task, even among what is hidden. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub sandbox_readable: Vec<String>,

    /// Hidden from the task besides the credentials in the home directory (the repository the
    /// inputs came from). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub sandbox_hide: Vec<PathBuf>,

    /// `none`: the task gets a private loopback and nothing else (the task's `egress = "none"`).
    #[arg(long, value_enum, default_value_t = Net::Default)]
    pub sandbox_net: Net,
}

/// 1 GiB: hours of a chatty build's output, and still a bounded piece of a disk.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 1 << 30;

pub async fn run(args: ExecutorArgs) -> anyhow::Result<ExitCode> {
    let secret = args
        .secret_file
        .as_deref()
        .map(Secret::read_file)
        .transpose()?;
    let state_dir = match args.state_dir.clone() {
        Some(dir) => dir,
        None => executor::state_dir::fresh()?,
    };
    let sandbox = sandbox_policy(&args, &state_dir);
    let bound = executor::bind(executor::Config {
        listen: args.listen.clone(),
        state_dir,
        workspace: args.workspace,
        secret,
        max_log_bytes: args.max_log_bytes,
        grace: args.grace_period,
        idle_timeout: args.idle_timeout,
        task_env: args
            .env_prefix
            .as_deref()
            .map(prefixed_env)
            .unwrap_or_default(),
        sandbox,
    })
    .await?;
    println!("{LISTENING_PREFIX}{}", bound.local_addr);
    bound
        .serve(shutdown_signal())
        .await
        .context("the gRPC server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The policy from the flags; the executor's own state, secret and socket are hidden too.
fn sandbox_policy(args: &ExecutorArgs, state_dir: &std::path::Path) -> Policy {
    let mut hide = args.sandbox_hide.clone();
    hide.push(state_dir.to_path_buf());
    hide.extend(args.secret_file.clone());
    if let ListenAddr::Unix(socket) = &args.listen {
        hide.push(socket.clone());
    }
    Policy {
        task: TaskSandbox {
            mode: args.sandbox,
            writable: args.sandbox_writable.clone(),
            readable: args.sandbox_readable.clone(),
        },
        hide,
        net: args.sandbox_net,
    }
}

/// The variables named `PREFIX...`, without the prefix.
fn prefixed_env(prefix: &str) -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(key, value)| {
            let name = key.to_str()?.strip_prefix(prefix)?;
            (!name.is_empty()).then(|| (name.to_string(), value.to_string_lossy().into_owned()))
        })
        .collect()
}

/// SIGTERM (pod deletion, the parent's death) or SIGINT (Ctrl-C), listened for from the call on:
/// one that comes before the future is first polled is not lost, nor does it kill the process.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    let mut interrupt = signal(SignalKind::interrupt()).expect("a SIGINT handler can be installed");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
}
