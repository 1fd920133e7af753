//! Runs the task as the leader of its own process group, streams its stdout and stderr as they
//! come, and stops the whole group on cancel or timeout: SIGTERM, then SIGKILL after a grace
//! period. When the main process ends, whatever it left running in its group is killed, so a run
//! never leaves processes behind.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::sandbox::Confinement;

/// Which of the task's pipes a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What to run.
pub struct Spec<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub dir: &'a Path,
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when the task is stopped.
    pub grace: Duration,
    /// Applied between fork and exec; `None` runs the task unconfined.
    pub confinement: Option<Confinement>,
}

/// How the task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit status, or 128 + N when killed by signal N (as a shell reports it).
    pub code: i32,
    pub signal: Option<i32>,
    pub cancelled: bool,
    pub timed_out: bool,
}

/// The read size for the task's pipes; one read becomes one output event.
const CHUNK: usize = 64 * 1024;
/// How long to wait for the pipes to reach end of file once the group is gone.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the task to its end, handing output chunks to `on_output` in the order each pipe
/// produced them.
pub async fn run(
    spec: Spec<'_>,
    cancel: CancellationToken,
    on_output: impl Fn(Stream, Vec<u8>) + Clone + Send + 'static,
) -> io::Result<Exit> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the command is empty"))?;
    let mut command = Command::new(program);
    // SAFETY: prctl is async-signal-safe. If the executor itself dies (even by SIGKILL), the
    // task's main process goes with it instead of running on unobserved.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
    if let Some(confinement) = spec.confinement {
        confinement.install(&mut command);
    }
    let mut child = command
        .args(args)
        .env_clear()
        .envs(task_base_env())
        .envs(spec.env)
        .current_dir(spec.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{program}`: {e}")))?;
    let group = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);

    let stdout = tokio::spawn(pump(
        child.stdout.take().expect("stdout is piped"),
        Stream::Stdout,
        on_output.clone(),
    ));
    let stderr = tokio::spawn(pump(
        child.stderr.take().expect("stderr is piped"),
        Stream::Stderr,
        on_output,
    ));

    let deadline = async {
        match spec.timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    let (status, cancelled, timed_out) = tokio::select! {
        status = child.wait() => (status?, false, false),
        () = cancel.cancelled() => (stop(&mut child, group, spec.grace).await?, true, false),
        () = deadline => (stop(&mut child, group, spec.grace).await?, false, true),
    };
    // The main process is gone; anything it left in its group goes too.
    let _ = killpg(group, Signal::SIGKILL);
    for pump in [stdout, stderr] {
        let _ = tokio::time::timeout(DRAIN, pump).await;
    }
    Ok(exit_of(status, cancelled, timed_out))
}

/// Environment every task starts from: enough for a shell to work, nothing else of the
/// executor's (the task's own `env` is added on top).
pub fn task_base_env() -> Vec<(String, String)> {
    const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut env: Vec<(String, String)> = ["HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER"]
        .into_iter()
        .filter_map(|key| std::env::var(key).ok().map(|v| (key.to_string(), v)))
        .collect();
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    env.push(("PATH".to_string(), path));
    env
}

async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    on_output: impl Fn(Stream, Vec<u8>),
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => on_output(stream, buf[..n].to_vec()),
        }
    }
}

/// SIGTERM to the group, then SIGKILL if the main process is still there after `grace`.
async fn stop(child: &mut Child, group: Pid, grace: Duration) -> io::Result<ExitStatus> {
    let _ = killpg(group, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = killpg(group, Signal::SIGKILL);
            child.wait().await
        }
    }
}

fn exit_of(status: ExitStatus, cancelled: bool, timed_out: bool) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal();
    let code = match (status.code(), signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Exit {
        code,
        signal,
        cancelled,
        timed_out,
    }
}
