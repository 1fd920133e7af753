//! `buildr run`: runs a task (or an ad-hoc command) on a backend, streams its output, lands the
//! files it changed, and exits with the task's exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::EXIT_INTERRUPTED;
use super::extraction::{LimitArgs, left_alone_warnings};
use super::run_cache::{self, CacheArgs, CachedRun, KeySource};
use super::run_k8s::K8sArgs;
use super::run_ssh::SshArgs;
use crate::archive::{Deletions, ExtractOptions, InputPaths, LinkPolicy, Quoted};
use crate::backend::arch::host_arch;
use crate::backend::k8s::K8sBackend;
use crate::backend::k8s::pool::take::Source;
use crate::backend::local::LocalBackend;
use crate::backend::ssh::{self, SshBackend};
use crate::backend::{Backend, BackendKind};
use crate::cache::{Recorder, key::Platform};
use crate::client::{self, Outcome, Reconnect, render::Console};
use crate::printable::Printable;
use crate::task::{InputFile, Task, TaskSet, collect_inputs};
use crate::timeline::Timeline;
use crate::tools::{self, Tool};

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
    let task = resolve_task(&args)?;
    let out = args.out.clone().unwrap_or_else(|| args.repo.clone());
    check_out(&out)?;
    let run_id = new_run_id();
    let executor_binary = match &args.executor_binary {
        Some(binary) => binary.clone(),
        None => {
            crate::backend::binary::default_executor().context("cannot find the buildr binary")?
        }
    };
    let span = tracing::info_span!("run", run_id = %run_id, task = %task.name);
    let inputs = inputs_of(&args, &task)?;
    let run = Run {
        args: &args,
        task: &task,
        inputs: &inputs,
        out: &out,
        run_id: &run_id,
        verbosity,
        cache: None,
    };
    let outcome = match args.backend {
        BackendKind::Local => {
            if args.k8s.image.is_some() {
                eprintln!("buildr: --image is ignored by the local backend");
            }
            let arch = host_arch();
            let tools = resolve_tools(&args, &task, arch, verbosity)?;
            let key = KeySource {
                repo: &args.repo,
                inputs: &inputs,
                platform: Platform::local(arch),
                executor: &executor_binary,
                tools: &tools,
                shareable: true,
            };
            let cache = match consult_cache(&run, key).await? {
                Cached::Replayed(code) => return Ok(code),
                Cached::Missed(cache) => cache,
            };
            let backend = LocalBackend::new(executor_binary, &run_id, tools, args.keep);
            let run = Run {
                cache: cache.as_deref(),
                ..run
            };
            run_on(backend, &run).instrument(span).await
        }
        BackendKind::K8s => {
            // A run that may be answered from the cache looks there before it connects, unless
            // its pod is a pool's template, which is read from the cluster.
            let caching = args.cache.enabled_for(&task);
            let (mut settings, early) = args
                .k8s
                .resolve(&task, executor_binary, args.keep, caching)
                .await?;
            settings.tools = resolve_tools(&args, &task, &settings.binary.arch, verbosity)?;
            // Asking the image's registry for its digest costs a round trip: only for a key.
            // The pod then runs the image the key names, whatever a node holds under its tag.
            let pinned = if caching {
                crate::cache::oci::pinned_image(&settings.image).await
            } else {
                None
            };
            let shareable = pinned.is_some();
            if let Some(pinned) = pinned.filter(|p| *p != settings.image) {
                // A named pool's pods run its template's tag, not the digest the key names.
                if matches!(settings.pool, Some(Source::Named(_))) {
                    eprintln!(
                        "buildr: the pool's template names its image by tag; this cached run \
                         pins it to {} and starts a pod of its own (name the image by digest \
                         in the pool's template to use its warm pods)",
                        Printable(&pinned)
                    );
                    settings.pool = Some(Source::Matching);
                }
                settings.image = pinned;
            }
            let key = KeySource {
                repo: &args.repo,
                inputs: &inputs,
                platform: Platform::k8s(
                    &settings.image,
                    &settings.binary.arch,
                    &settings.task.container,
                ),
                executor: &settings.binary.path,
                tools: &settings.tools,
                shareable,
            };
            let cache = match consult_cache(&run, key).await? {
                Cached::Replayed(code) => return Ok(code),
                Cached::Missed(cache) => cache,
            };
            let (client, namespace) = match early {
                Some(cluster) => cluster,
                None => args.k8s.cluster.client().await?,
            };
            let backend = K8sBackend::new(settings, client, namespace, &run_id);
            let run = Run {
                cache: cache.as_deref(),
                ..run
            };
            run_on(backend, &run).instrument(span).await
        }
        BackendKind::Ssh => {
            if args.k8s.image.is_some() {
                eprintln!("buildr: --image is ignored by the ssh backend");
            }
            let mut settings = args.ssh.settings(&task, executor_binary, args.keep)?;
            settings.tools = resolve_tools(&args, &task, &settings.binary.arch, verbosity)?;
            let cache = if args.cache.enabled_for(&task) {
                let destination =
                    ssh::resolve::destination(&settings.destination, &settings.options)?;
                let key = KeySource {
                    repo: &args.repo,
                    inputs: &inputs,
                    platform: Platform::ssh(&destination, &settings.binary.arch),
                    executor: &settings.binary.path,
                    tools: &settings.tools,
                    shareable: true,
                };
                consult_cache(&run, key).await?
            } else {
                Cached::Missed(None)
            };
            let cache = match cache {
                Cached::Replayed(code) => return Ok(code),
                Cached::Missed(cache) => cache,
            };
            let backend = SshBackend::new(settings, &run_id);
            let run = Run {
                cache: cache.as_deref(),
                ..run
            };
            run_on(backend, &run).instrument(span).await
        }
    };
    match outcome {
        Ok(outcome) => Ok(report(&outcome, &out, args.apply_deletions)),
        Err(e) if matches!(e.downcast_ref(), Some(client::ClientError::Interrupted)) => {
            eprintln!("buildr: interrupted");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Err(e) => Err(e),
    }
}

/// What the cache made of a run.
enum Cached {
    /// A stored result was replayed, and this is its exit status.
    Replayed(ExitCode),
    /// The task must run; its result is stored here, if it caches.
    Missed(Option<Box<CachedRun>>),
}

/// The run's key from `key`, if it caches, and the replay of a stored result.
async fn consult_cache(run: &Run<'_>, key: KeySource<'_>) -> anyhow::Result<Cached> {
    let args = run.args;
    let limits = args.limits.limits();
    let cache = CachedRun::prepare(&args.cache, run.task, key, limits.max_bytes, run.verbosity)?;
    let Some(entry) = cache.as_ref().map(CachedRun::lookup) else {
        return Ok(Cached::Missed(None));
    };
    let Some(entry) = entry.await? else {
        return Ok(Cached::Missed(cache.map(Box::new)));
    };
    let outcome = run_cache::replay(&entry, run.out, &extract_options(args, run.inputs), limits)?;
    Ok(Cached::Replayed(report(
        &outcome,
        run.out,
        args.apply_deletions,
    )))
}

/// How the results are extracted into --out, by a run and by a replay alike (whose key holds
/// the same `inputs`).
fn extract_options(args: &RunArgs, inputs: &[InputFile]) -> ExtractOptions {
    ExtractOptions {
        // A deletion removes only what the task was given: never a `.git`, nor ignored files.
        deletions: if args.apply_deletions {
            Deletions::Inputs(InputPaths::new(inputs.iter().map(|i| i.dest.clone())))
        } else {
            Deletions::Off
        },
        links: if args.allow_external_links {
            LinkPolicy::Allow
        } else {
            LinkPolicy::Skip
        },
        progress: None,
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

/// The task's tools and the `--tool` ones, found on this machine and checked for `arch`; `-v`
/// lists them.
fn resolve_tools(
    args: &RunArgs,
    task: &Task,
    arch: &str,
    verbosity: u8,
) -> anyhow::Result<Vec<Tool>> {
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
    let tools = tools::resolve(&specs, &args.repo, arch)?;
    if verbosity > 0 {
        for tool in &tools {
            eprintln!("buildr: sending tool {tool}");
        }
    }
    Ok(tools)
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

fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// What one run is about, whatever the backend.
#[derive(Clone, Copy)]
struct Run<'a> {
    args: &'a RunArgs,
    task: &'a Task,
    inputs: &'a [InputFile],
    out: &'a Path,
    run_id: &'a str,
    verbosity: u8,
    /// Where its result is stored, when it caches.
    cache: Option<&'a CachedRun>,
}

/// One run on `backend`, the same for every backend: start it, drive the client, and clean up
/// on every path out (errors and Ctrl-C included).
async fn run_on(mut backend: impl Backend, run: &Run<'_>) -> anyhow::Result<Outcome> {
    // Listen for Ctrl-C before anything is created, so that it never kills us mid-setup and
    // leaves a sandbox or a pod behind.
    let mut interrupts = forward_interrupts();
    let mut timeline = Timeline::default();
    let outcome = execute_on(&mut backend, run, &mut interrupts, &mut timeline).await;
    let mut step = Instant::now();
    for leftover in backend.clean_up().await {
        eprintln!("buildr: {leftover}");
    }
    timeline.record("clean up", &mut step);
    if run.verbosity > 0 {
        eprintln!("buildr: timeline\n{timeline}");
    }
    outcome
}

async fn execute_on(
    backend: &mut impl Backend,
    run: &Run<'_>,
    interrupts: &mut mpsc::Receiver<()>,
    timeline: &mut Timeline,
) -> anyhow::Result<Outcome> {
    let Run { args, task, .. } = *run;
    let began = Instant::now();
    // A Ctrl-C while the backend starts stops the start; what it created is cleaned up.
    let executor = tokio::select! {
        started = backend.start(run.inputs, timeline) => started?,
        Some(()) = interrupts.recv() => return Err(client::ClientError::Interrupted.into()),
    };
    // Were the inputs sent as the key describes them (digested from the bytes sent)?
    let sent_as_keyed = run
        .cache
        .is_some_and(|cache| cache.describes(executor.inputs_sent));
    let request = client::start_request(task, run.run_id, &executor.workspace_root);
    let extract = extract_options(args, run.inputs);
    let options = client::Options {
        out: run.out.to_path_buf(),
        secret: executor.secret.clone(),
        deletions: extract.deletions,
        links: extract.links,
        limits: args.limits.limits(),
        fetch_idle_timeout: client::fetch::DEFAULT_IDLE_TIMEOUT,
        ready_timeout: Duration::from_secs(30),
        reconnect: Reconnect {
            give_up_after: args.reconnect_timeout,
            ..Reconnect::default()
        },
        keep_archive: run.cache.is_some(),
    };
    let mut sink = Recorder::new(Console::new(run.verbosity > 0), run.cache.is_some());
    let mut outcome = {
        let execution = client::execute(executor.channel, request, &options, &mut sink, interrupts);
        tokio::pin!(execution);
        tokio::select! {
            outcome = &mut execution => outcome?,
            // A dead executor cannot be redialled: say so now rather than after the reconnect
            // timeout. Its exit right after the acknowledgement is the normal end, hence the
            // grace.
            how = backend.lost() => match tokio::time::timeout(EXECUTOR_EXIT_GRACE, &mut execution).await {
                Ok(outcome) => outcome?,
                Err(_) => bail!("the executor exited unexpectedly ({how})"),
            },
        }
    };
    // A task cancelled without the user asking was stopped from outside (a pod past its
    // deadline, an executor sent SIGTERM): say why, as for an executor lost mid-run. Its result
    // can arrive before its end is seen, when it travels in the result message.
    if !outcome.interrupted
        && outcome.result.error == crate::executor::run::CANCELLED
        && let Ok(how) = tokio::time::timeout(EXECUTOR_EXIT_GRACE, backend.lost()).await
    {
        bail!("the executor exited unexpectedly ({how})");
    }
    timeline.extend(outcome.timeline.clone());
    if let Some(cache) = run.cache {
        let mut step = Instant::now();
        cache
            .store(&mut outcome, sink.finish(), sent_as_keyed, began.elapsed())
            .await;
        timeline.record("store in the cache", &mut step);
    }
    Ok(outcome)
}

/// How long a run may still take to finish once its executor has exited.
const EXECUTOR_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Each Ctrl-C becomes a message; the run decides what it means (cancel, then give up).
fn forward_interrupts() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    // Registered here, not in the task: `ctrl_c()` registers on its first poll, and until the
    // spawned task first runs a Ctrl-C would still kill the run mid-setup.
    let signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    tokio::spawn(async move {
        let Ok(mut signals) = signals else { return };
        while signals.recv().await.is_some() {
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
        for warning in left_alone_warnings(extracted) {
            eprintln!("{warning}");
        }
        // What was written, not what the executor claims.
        let changed = extracted.files + extracted.dirs + extracted.symlinks;
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
        eprintln!("buildr: {}", Printable(&result.error));
    }
    if outcome.interrupted {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    match u8::try_from(result.exit_code) {
        Ok(code) => ExitCode::from(code),
        Err(_) => ExitCode::from(super::EXIT_BUILDR_FAILED),
    }
}
