//! `buildr executor`: the gRPC server that runs one task, inside a pod or a local sandbox.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::executor::{self, ListenAddr};

/// What the executor prints on stdout once it is bound, followed by the address.
pub const LISTENING_PREFIX: &str = "listening on ";

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
}

pub async fn run(args: ExecutorArgs) -> anyhow::Result<ExitCode> {
    let bound = executor::bind(executor::Config {
        listen: args.listen.clone(),
        state_dir: args.state_dir,
        grace: args.grace_period,
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

/// SIGTERM (pod deletion, the parent's death) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
