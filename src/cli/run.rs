//! `buildr run`: runs a task (or an ad-hoc command) on a backend, streams its output, lands the
//! files it changed, and exits with the task's exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::EXIT_INTERRUPTED;
use crate::archive::{LinkPolicy, Quoted};
use crate::backend::BackendKind;
use crate::backend::local::LocalSandbox;
use crate::client::{self, Outcome, Reconnect, render::Console};
use crate::rpc::{CommandModule, StartTaskRequest, Workspace, start_task_request::Module};
use crate::task::{Task, TaskSet, collect_inputs};

/// Run a task from the repository's .buildr/ task files, or a command given after `--`.
///
/// The exit status is the task's; 130 after Ctrl-C; 125 when buildr itself fails.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  buildr run hello\n  buildr run --out /tmp/out test\n  buildr run -- make -j4"
)]
pub struct RunArgs {
    /// Where the task runs.
    #[arg(long, value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,

    /// The repository: task files are read from its .buildr/ and it is the task's input.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,

    /// Where the files the task created or modified are written. Defaults to the repository
    /// itself, so a run leaves the same files a local run would.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Also delete, under --out, the files the task deleted.
    #[arg(long)]
    pub apply_deletions: bool,

    /// Also bring back symlinks that point outside --out (absolute, or climbing above it).
    /// Without it they are skipped with a warning; either way nothing is written through a
    /// link.
    #[arg(long)]
    pub allow_external_links: bool,

    /// Container image for the k8s backend (overrides the task's `container.image`).
    #[arg(long)]
    pub image: Option<String>,

    /// Keep the sandbox (or pod) after the run, for a post-mortem.
    #[arg(long)]
    pub keep: bool,

    /// How long to keep reconnecting to a lost executor before giving up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub reconnect_timeout: Duration,

    /// The buildr binary that runs as the executor (defaults to this one).
    #[arg(long)]
    pub executor_binary: Option<PathBuf>,

    /// The task to run (see `buildr tasks`).
    #[arg(required_unless_present = "command", conflicts_with = "command")]
    pub task: Option<String>,

    /// An ad-hoc command to run instead of a task, with the whole repository as input.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(args: RunArgs, verbosity: u8) -> anyhow::Result<ExitCode> {
    let task = resolve_task(&args)?;
    let out = args.out.clone().unwrap_or_else(|| args.repo.clone());
    match args.backend {
        BackendKind::Local => {
            if args.image.is_some() {
                eprintln!("buildr: --image is ignored by the local backend");
            }
        }
        BackendKind::K8s => bail!(
            "the k8s backend is not part of this build yet; use --backend local (the default)"
        ),
    }
    check_out(&out)?;
    let run_id = new_run_id();
    let span = tracing::info_span!("run", run_id = %run_id, task = %task.name);
    match run_locally(&args, &task, &out, &run_id, verbosity)
        .instrument(span)
        .await
    {
        Ok(outcome) => Ok(report(&outcome, &out, args.apply_deletions)),
        Err(e) if matches!(e.downcast_ref(), Some(client::ClientError::Interrupted)) => {
            eprintln!("buildr: interrupted");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Err(e) => Err(e),
    }
}

fn resolve_task(args: &RunArgs) -> anyhow::Result<Task> {
    if !args.repo.is_dir() {
        bail!("the repository {} is not a directory", args.repo.display());
    }
    if !args.command.is_empty() {
        return Ok(Task::ad_hoc(args.command.clone()));
    }
    let name = args
        .task
        .as_deref()
        .expect("clap requires a task or a command");
    let tasks = TaskSet::load(&args.repo)
        .with_context(|| format!("cannot load the tasks of {}", args.repo.display()))?;
    Ok(tasks.get(name)?.clone())
}

/// Finds out before the task runs, not after, whether its results can be written to `out`
/// (created if missing): a file is created there and removed again.
fn check_out(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)
        .and_then(|()| tempfile::tempfile_in(out).map(drop))
        .with_context(|| format!("--out {} cannot be written", Quoted(out)))
}

fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

async fn run_locally(
    args: &RunArgs,
    task: &Task,
    out: &Path,
    run_id: &str,
    verbosity: u8,
) -> anyhow::Result<Outcome> {
    // Listen for Ctrl-C before anything is created, so that it never kills us mid-setup and
    // leaves a sandbox behind; an early one cancels the task as soon as it starts.
    let mut interrupts = forward_interrupts();
    let inputs = collect_inputs(&args.repo, &task.inputs)
        .with_context(|| format!("cannot collect the inputs of task `{}`", task.name))?;
    if inputs.is_empty() {
        eprintln!(
            "buildr: warning: task `{}` has no inputs: its workspace starts empty (check its \
             input mappings and the .gitignore and .buildrignore files of {})",
            task.name,
            args.repo.display()
        );
    }
    let executor = match &args.executor_binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("cannot find the buildr binary")?,
    };
    let mut sandbox = LocalSandbox::start(&inputs, &executor, run_id).await?;
    if args.keep
        && let Some(dir) = sandbox.keep()
    {
        eprintln!("buildr: keeping the sandbox at {}", dir.display());
    }
    let request = start_request(task, run_id, &sandbox.workspace.display().to_string());
    let options = client::Options {
        out: out.to_path_buf(),
        apply_deletions: args.apply_deletions,
        links: if args.allow_external_links {
            LinkPolicy::Allow
        } else {
            LinkPolicy::Skip
        },
        ready_timeout: Duration::from_secs(30),
        reconnect: Reconnect {
            give_up_after: args.reconnect_timeout,
            ..Reconnect::default()
        },
    };
    let mut console = Console::new(verbosity > 0);
    let channel = client::connect::channel(&sandbox.target);
    let run = client::execute(channel, request, &options, &mut console, &mut interrupts);
    tokio::pin!(run);
    let outcome = tokio::select! {
        outcome = &mut run => outcome?,
        // A dead executor cannot be redialled: say so now rather than after the reconnect
        // timeout. Its exit right after the acknowledgement is the normal end, hence the grace.
        how = sandbox.exited() => match tokio::time::timeout(EXECUTOR_EXIT_GRACE, &mut run).await {
            Ok(outcome) => outcome?,
            Err(_) => bail!("the executor exited unexpectedly ({how})"),
        },
    };
    sandbox.finish().await;
    Ok(outcome)
}

/// How long a run may still take to finish once its executor has exited.
const EXECUTOR_EXIT_GRACE: Duration = Duration::from_secs(2);

/// The request that starts `task` in a workspace at `workspace_root`.
pub fn start_request(task: &Task, run_id: &str, workspace_root: &str) -> StartTaskRequest {
    StartTaskRequest {
        run_id: run_id.to_string(),
        module: Some(Module::Command(CommandModule {
            argv: task.argv(),
            env: task.env.clone().into_iter().collect(),
            workdir: task.workdir.clone(),
            timeout: task
                .timeout
                .and_then(|t| prost_types::Duration::try_from(t).ok()),
            output_filters: task.outputs.clone(),
        })),
        workspace: Some(Workspace {
            root: workspace_root.to_string(),
        }),
        trace_context: crate::telemetry::current_context_headers(),
        after_sequence: 0,
    }
}

/// Each Ctrl-C becomes a message; the run decides what it means (cancel, then give up).
fn forward_interrupts() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Tells what happened on stderr and picks the exit status.
fn report(outcome: &Outcome, out: &Path, deletions_applied: bool) -> ExitCode {
    let result = &outcome.result;
    if let Some(extracted) = &outcome.extracted {
        for link in &extracted.skipped_links {
            eprintln!(
                "buildr: warning: skipped symlink `{}` -> `{}`: it points outside {} \
                 (--allow-external-links brings it back)",
                Quoted(&link.path),
                Quoted(&link.target),
                Quoted(out)
            );
        }
        let changed = result
            .modified_paths
            .len()
            .saturating_sub(extracted.skipped_links.len());
        if changed > 0 {
            eprintln!(
                "buildr: {changed} changed path{} written to {}",
                if changed == 1 { "" } else { "s" },
                out.display()
            );
        }
        let deleted = result.deleted_paths.len();
        if deleted > 0 && !deletions_applied {
            eprintln!(
                "buildr: the task deleted {deleted} path{}; not applied (use --apply-deletions)",
                if deleted == 1 { "" } else { "s" }
            );
        }
    }
    if !result.error.is_empty() {
        eprintln!("buildr: {}", result.error);
    }
    if outcome.interrupted {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    match u8::try_from(result.exit_code) {
        Ok(code) => ExitCode::from(code),
        Err(_) => ExitCode::from(super::EXIT_BUILDR_FAILED),
    }
}
