//! `buildr executor`: the gRPC server that runs one task, inside a pod or a local sandbox.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::executor::{self, LISTENING_PREFIX, ListenAddr};

/// Serve the executor's gRPC API (started by `buildr run`; not usually typed by hand).
#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// Where to listen: HOST:PORT (port 0 picks a free one) or unix:PATH. Keep it on loopback:
    /// the client reaches it through a port-forward or from the same machine.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: ListenAddr,

    /// Where the event log and the archive of modified files are kept (not inside the workspace).
    #[arg(long, default_value = "/tmp/buildr-executor")]
    pub state_dir: PathBuf,

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
}

pub async fn run(args: ExecutorArgs) -> anyhow::Result<ExitCode> {
    let bound = executor::bind(executor::Config {
        listen: args.listen.clone(),
        state_dir: args.state_dir,
        grace: args.grace_period,
        idle_timeout: args.idle_timeout,
        task_env: args
            .env_prefix
            .as_deref()
            .map(prefixed_env)
            .unwrap_or_default(),
    })
    .await
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("{LISTENING_PREFIX}{}", bound.local_addr);
    bound
        .serve(shutdown_signal())
        .await
        .context("the gRPC server failed")?;
    Ok(ExitCode::SUCCESS)
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

/// SIGTERM (pod deletion, the parent's death) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
