//! The command line: one module per subcommand. Doc comments are the `--help` text.

pub mod archive;
pub mod cache;
pub mod executor;
pub mod extraction;
pub mod k8s;
pub mod run;
pub mod run_cache;
pub mod run_k8s;
pub mod self_check;
pub mod tasks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::printable::Printable;

/// Run build steps in a fresh sandbox or Kubernetes pod and bring back exactly the files they
/// changed.
#[derive(Debug, Parser)]
#[command(name = "buildr", version, propagate_version = true)]
pub struct Cli {
    /// More detail on stderr (-v: progress of the run, -vv: debug, -vvv: trace). RUST_LOG, when
    /// set, takes precedence.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::RunArgs),
    Tasks(tasks::TasksArgs),
    Executor(executor::ExecutorArgs),
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    #[command(subcommand)]
    K8s(k8s::K8sCommand),
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    #[command(hide = true)]
    SelfCheck(self_check::SelfCheckArgs),
}

/// Exit status of `buildr` when buildr itself fails (not the task), as `docker run` does, so that
/// it cannot be mistaken for a task's own exit status 1.
pub const EXIT_BUILDR_FAILED: u8 = 125;
/// Exit status after Ctrl-C, as a shell reports SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Parses the command line and runs it; returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match cli.command {
        Command::Executor(_) => "buildr-executor",
        _ => "buildr",
    };
    // One thread per process: the work is I/O between a few sockets, pipes and files, and
    // hand-offs between worker threads cost more than they give (a 200 MB output stream ran
    // 14% faster; BENCHMARKS.md). Blocking work (scans, archives) has its own threads anyway.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("buildr: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_BUILDR_FAILED);
        }
    };
    runtime.block_on(async {
        let telemetry = crate::telemetry::init(cli.verbose, service);
        let (result, failure_code) = match cli.command {
            Command::Run(args) => (run::run(args, cli.verbose).await, EXIT_BUILDR_FAILED),
            Command::Tasks(args) => (tasks::run(args), 1),
            Command::Executor(args) => (executor::run(args).await, 1),
            Command::Archive(command) => (archive::run(command), 1),
            Command::K8s(command) => (k8s::run(command).await, 1),
            Command::Cache(command) => (cache::run(command), 1),
            Command::SelfCheck(args) => (self_check::run(args), 1),
        };
        let code = match result {
            Ok(code) => code,
            Err(e) => {
                report(&e, cli.verbose > 0);
                ExitCode::from(failure_code)
            }
        };
        // Flushing sends the last spans through tonic, which needs this runtime's one thread:
        // flush on a blocking thread while this one drives the export.
        let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
        code
    })
}

/// One line with the cause; the chain of causes under `-v`. Escaped: an error may quote what
/// the executor, the pod or the API server said.
fn report(error: &anyhow::Error, verbose: bool) {
    eprintln!("buildr: {}", Printable(&format!("{error:#}")));
    if verbose {
        for cause in error.chain().skip(1) {
            eprintln!("  caused by: {}", Printable(&cause.to_string()));
        }
    }
}
