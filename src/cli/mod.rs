//! The command line: one module per subcommand. Doc comments are the `--help` text.

pub mod archive;
pub mod cache;
pub mod executor;
pub mod extraction;
pub mod inputs;
pub mod inputs_apply;
pub mod inputs_pull;
pub mod k8s;
pub mod run;
pub mod run_cache;
pub mod run_k8s;
pub mod run_ssh;
pub mod sandbox;
pub mod self_check;
pub mod tasks;

use std::future::Future;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::printable::Printable;

/// Run build steps in a local sandbox, a fresh Kubernetes pod or on an ssh host, and bring back
/// exactly the files they changed.
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
    // Boxed: its arguments outweigh every other subcommand's.
    Run(Box<run::RunArgs>),
    Tasks(tasks::TasksArgs),
    #[command(subcommand)]
    K8s(k8s::K8sCommand),
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    #[command(subcommand)]
    Inputs(inputs::InputsCommand),
    #[command(flatten)]
    Remote(RemoteCommand),
}

/// `buildr-executor`, the lean build that backends send to run a task: the subcommands the
/// other side of a run needs, with the same arguments as in `buildr`, so that either binary can
/// serve there. Its own binary leaves out the Kubernetes client, TLS and the task-file parser
/// (the linker keeps only what these reach), which halves what every cold run copies.
#[derive(Debug, Parser)]
#[command(name = "buildr", version, propagate_version = true)]
pub struct ExecutorCli {
    /// More detail on stderr (-v: info, -vv: debug, -vvv: trace). RUST_LOG, when set, takes
    /// precedence.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: RemoteCommand,
}

/// What runs on the executor's side of a run.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    Executor(executor::ExecutorArgs),
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    #[command(hide = true)]
    SelfCheck(self_check::SelfCheckArgs),
    #[command(hide = true)]
    InputsApply(inputs_apply::InputsApplyArgs),
    #[command(hide = true)]
    InputsPull(inputs_pull::InputsPullArgs),
}

impl RemoteCommand {
    /// The service name its spans are exported under.
    fn service(&self) -> &'static str {
        match self {
            RemoteCommand::Executor(_) => "buildr-executor",
            _ => "buildr",
        }
    }

    /// What it sets up while the process has one thread (its environment).
    fn before_threads(&self) {
        if let RemoteCommand::InputsPull(_) = self {
            crate::tls_roots::for_a_bare_system();
        }
    }

    /// Runs it; the result, and the exit status should it fail.
    async fn run(self) -> (anyhow::Result<ExitCode>, u8) {
        let result = match self {
            RemoteCommand::Executor(args) => executor::run(args).await,
            RemoteCommand::Archive(command) => archive::run(command),
            RemoteCommand::Sandbox(command) => sandbox::run(command),
            RemoteCommand::SelfCheck(args) => self_check::run(args),
            RemoteCommand::InputsApply(args) => inputs_apply::run(args),
            RemoteCommand::InputsPull(args) => inputs_pull::run(args).await,
        };
        (result, 1)
    }
}

pub use crate::run::{EXIT_BUILDR_FAILED, EXIT_INTERRUPTED};

/// Parses the command line and runs it; returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Remote(remote) => {
            remote.before_threads();
            remote.service()
        }
        command => {
            if let Command::K8s(k8s) = command
                && k8s.runs_in_a_bare_image()
            {
                crate::tls_roots::for_a_bare_system();
            }
            give_large_buffers_back();
            "buildr"
        }
    };
    let verbose = cli.verbose;
    run_to_exit(verbose, service, async move {
        match cli.command {
            Command::Run(args) => (run::run(*args, verbose).await, EXIT_BUILDR_FAILED),
            Command::Tasks(args) => (tasks::run(args), 1),
            Command::K8s(command) => (k8s::run(command).await, 1),
            Command::Cache(command) => (cache::run(command), 1),
            Command::Inputs(command) => (inputs::run(command).await, 1),
            Command::Remote(command) => command.run().await,
        }
    })
}

/// Makes every buffer of 1 MiB or more a mapping of its own, whose pages go back to the system
/// as soon as it is freed. glibc otherwise raises that threshold to the largest buffer freed
/// so far, and carves the next ones from heaps that keep their pages (one per thread that
/// allocated): the lists and tables a client makes one after another for 100,000 inputs, and
/// the packs it sends. A 1 GB / 100,000-file `inputs push` peaked at 95 MB of RSS for 52 MB of
/// heap; 76 MB with this. Only on the client's side: a pod's pull is left as it was measured.
fn give_large_buffers_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// `buildr-executor`'s main: [`ExecutorCli`].
pub fn executor_main() -> ExitCode {
    let cli = ExecutorCli::parse();
    cli.command.before_threads();
    run_to_exit(cli.verbose, cli.command.service(), cli.command.run())
}

/// Runs `work` (its result, and the exit status should it fail) on this process's runtime with
/// telemetry set up as `service`, reports its error, and returns the exit status.
fn run_to_exit(
    verbose: u8,
    service: &'static str,
    work: impl Future<Output = (anyhow::Result<ExitCode>, u8)>,
) -> ExitCode {
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
        let telemetry = crate::telemetry::init(verbose, service);
        let (result, failure_code) = work.await;
        let code = match result {
            Ok(code) => code,
            Err(e) => {
                report(&e, verbose > 0);
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
