//! `buildr run`: runs a task (or an ad-hoc command) on a backend, streams its output, lands the
//! files it changed, and exits with the task's exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use super::extraction::LimitArgs;
use super::run_cache::CacheArgs;
use super::run_k8s::K8sArgs;
use super::run_ssh::SshArgs;
use crate::archive::Quoted;
use crate::backend::BackendKind;
use crate::run::{self, K8sPlan, LocalPlan, Run, SshPlan};
use crate::task::{InputFile, Task, TaskSet, collect_inputs};

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

    /// Also delete, under --out, the files the task deleted. Only its inputs go: a directory
    /// it deleted keeps any .git in it and the files it never had (ignored ones), with a
    /// warning.
    #[arg(long)]
    pub apply_deletions: bool,

    /// Also bring back symlinks that point outside --out (absolute, or climbing above it).
    /// Without it they are skipped with a warning; either way nothing is written through a
    /// link.
    #[arg(long)]
    pub allow_external_links: bool,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Keep the sandbox (or pod) after the run, for a post-mortem.
    #[arg(long)]
    pub keep: bool,

    /// How long to keep reconnecting to a lost executor before giving up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub reconnect_timeout: Duration,

    /// The buildr binary that runs as the executor [default: `buildr-executor` beside this
    /// binary, else this one].
    #[arg(long)]
    pub executor_binary: Option<PathBuf>,

    /// A program the task needs that its image may lack, sent along into a directory that
    /// comes first in the task's PATH: a name found in PATH here, or a path (relative to the
    /// current directory). Repeatable; adds to the task's `tools`.
    #[arg(long = "tool", value_name = "NAME_OR_PATH")]
    pub tools: Vec<String>,

    /// How the task is confined on the local and ssh backends: auto, none or strict (overrides
    /// the task's `sandbox`; see `buildr sandbox check`).
    #[arg(long, value_enum)]
    pub sandbox: Option<crate::sandbox::Mode>,

    #[command(flatten)]
    pub k8s: K8sArgs,

    #[command(flatten)]
    pub ssh: SshArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// The task to run (see `buildr tasks`).
    #[arg(required_unless_present = "command", conflicts_with = "command")]
    pub task: Option<String>,

    /// An ad-hoc command to run instead of a task, with the whole repository as input.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(args: RunArgs, verbosity: u8) -> anyhow::Result<ExitCode> {
    let mut task = resolve_task(&args)?;
    if let Some(mode) = args.sandbox {
        task.sandbox.mode = mode;
    }
    let out = args.out.clone().unwrap_or_else(|| args.repo.clone());
    check_out(&out)?;
    let id = run::new_run_id();
    let executor_binary = match &args.executor_binary {
        Some(binary) => binary.clone(),
        None => {
            crate::backend::binary::default_executor().context("cannot find the buildr binary")?
        }
    };
    preload_stat_cache(&args, &task);
    if args.backend != BackendKind::K8s && args.k8s.image.is_some() {
        eprintln!("buildr: --image is ignored by the {} backend", args.backend);
    }
    // Planned first: what a plan starts reading of the user's cache (a seed's index) is read
    // while the inputs are collected.
    let keep = args.keep;
    let plan = match args.backend {
        BackendKind::Local => Plan::Local(LocalPlan {
            executor: executor_binary,
            keep,
            sandbox: crate::sandbox::Policy::for_run(&task, Some(&args.repo)),
        }),
        BackendKind::K8s => {
            let caching = args.cache.options().enabled_for(&task);
            let plan = args
                .k8s
                .plan(&task, &args.repo, executor_binary, keep, caching);
            Plan::K8s(Box::new(plan.await?))
        }
        BackendKind::Ssh => {
            let mut settings = args.ssh.settings(&task, executor_binary, keep)?;
            settings.known = crate::snapshot::known::Records::of(&args.repo);
            // The tree is scanned for the host: its stat cache is read meanwhile.
            if let Some(records) = &settings.known {
                crate::cache::StatCache::preload(records.stat_cache.clone());
            }
            Plan::Ssh(SshPlan { settings })
        }
    };
    let inputs = inputs_of(&args, &task)?;
    let run = Run {
        id,
        tools: tool_specs(&args, &task)?,
        repo: args.repo.clone(),
        inputs: inputs.into(),
        out,
        apply_deletions: args.apply_deletions,
        allow_external_links: args.allow_external_links,
        limits: args.limits.limits(),
        reconnect_timeout: args.reconnect_timeout,
        cache: args.cache.options(),
        verbosity,
        task,
    };
    match plan {
        Plan::Local(plan) => run::run(&run, plan).await,
        Plan::K8s(plan) => run::run(&run, *plan).await,
        Plan::Ssh(plan) => run::run(&run, plan).await,
    }
}

/// How a run gets its executor, by backend.
enum Plan {
    Local(LocalPlan),
    K8s(Box<K8sPlan>),
    Ssh(SshPlan),
}

/// Starts reading the repository's stat cache while the inputs are collected, for a run whose
/// action cache will scan them for its key (a run that sends them by content starts it in its
/// plan).
fn preload_stat_cache(args: &RunArgs, task: &Task) {
    if !args.cache.options().enabled_for(task) {
        return;
    }
    if let Some(records) = crate::snapshot::known::Records::of(&args.repo) {
        crate::cache::StatCache::preload(records.stat_cache);
    }
}

/// The task's inputs; a warning when they come out empty from a repository that is not.
fn inputs_of(args: &RunArgs, task: &Task) -> anyhow::Result<Vec<InputFile>> {
    let inputs = collect_inputs(&args.repo, &task.inputs)
        .with_context(|| format!("cannot collect the inputs of task `{}`", task.name))?;
    if inputs.is_empty() && has_entries(&args.repo) {
        eprintln!(
            "buildr: warning: task `{}` has no inputs: its workspace starts empty (check its \
             input mappings and the .gitignore and .buildrignore files of {})",
            task.name,
            args.repo.display()
        );
    }
    Ok(inputs)
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

/// The task's tools and the `--tool` ones, each once; a path on the command line made absolute.
fn tool_specs(args: &RunArgs, task: &Task) -> anyhow::Result<Vec<String>> {
    let mut specs = task.tools.clone();
    for spec in &args.tools {
        // A path on the command line is the shell's: relative to the current directory.
        let spec = if spec.contains('/') {
            std::path::absolute(spec)
                .with_context(|| format!("cannot resolve --tool {spec}"))?
                .display()
                .to_string()
        } else {
            spec.clone()
        };
        if !specs.contains(&spec) {
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// Whether `repo` holds anything but `.git`: inputs that come out empty from a repository that
/// does are worth a warning (a `*` in an ignore file, a mapping that matches nothing).
fn has_entries(repo: &Path) -> bool {
    std::fs::read_dir(repo).is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() != ".git")))
}

/// Finds out before the task runs, not after, whether its results can be written to `out`
/// (created if missing): a file is created there and removed again.
fn check_out(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)
        .and_then(|()| tempfile::tempfile_in(out).map(drop))
        .with_context(|| format!("--out {} cannot be written", Quoted(out)))
}
