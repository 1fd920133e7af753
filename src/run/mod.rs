//! One `buildr run`, the same for every backend. The command line (`cli::run`) turns its
//! arguments into a [`Run`] and a backend's [`Plan`]; from there, in order:
//!
//! 1. the tools, found on this machine for the plan's architecture (here);
//! 2. the cache, for a run that caches: its key from the plan's platform, the lookup, and the
//!    replay of a hit, which ends the run before any backend connects ([`crate::cache::action`]
//!    has the rules);
//! 3. the connection: the plan becomes a [`crate::backend::Backend`] ([`plan`]);
//! 4. the run's secret, the upload and the executor's start, the task, the fetch of its
//!    results, the storing of a result that may be cached, and the clean-up on every path out
//!    ([`execute`]);
//! 5. the report of what happened, and the exit status ([`report`]).

pub mod execute;
pub mod plan;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tracing::Instrument;

use crate::archive::{Deletions, ExtractOptions, InputPaths, Limits, LinkPolicy};
pub use crate::backend::new_run_id;
use crate::cache::action::{self, CachedRun, KeySource};
use crate::client::ClientError;
use crate::task::{InputFile, Task};
use crate::tools::{self, Tool, ToolError};
pub use plan::{CachePlatform, K8sPlan, LocalPlan, Plan, SshPlan};

/// Exit status of `buildr` when buildr itself fails (not the task), as `docker run` does, so that
/// it cannot be mistaken for a task's own exit status 1.
pub const EXIT_BUILDR_FAILED: u8 = 125;
/// Exit status after Ctrl-C, as a shell reports SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// What one run is about, whatever the backend.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its id: names the run's sandbox, pod or run directory, and its span.
    pub id: String,
    pub task: Task,
    /// The repository: the task's input, and where its trust file is.
    pub repo: PathBuf,
    pub inputs: std::sync::Arc<[InputFile]>,
    /// Where the results are written.
    pub out: PathBuf,
    /// The task's tools and the `--tool` ones: names found in PATH here, or absolute paths.
    pub tools: Vec<String>,
    /// Delete under `out` the inputs the task deleted.
    pub apply_deletions: bool,
    /// Bring back symlinks that point outside `out`.
    pub allow_external_links: bool,
    pub limits: Limits,
    /// How long to keep redialling a lost executor.
    pub reconnect_timeout: Duration,
    pub cache: action::Options,
    pub verbosity: u8,
}

/// Runs `run` as `plan` says, and returns the exit status: the task's (or the replayed one's),
/// [`EXIT_INTERRUPTED`] after Ctrl-C.
pub async fn run(run: &Run, mut plan: impl Plan) -> anyhow::Result<ExitCode> {
    let tools = resolve_tools(run, plan.arch())?;
    let cache = if run.cache.enabled_for(&run.task) {
        match consult_cache(run, &mut plan, &tools).await? {
            Cached::Replayed(code) => return Ok(code),
            Cached::Missed(cache) => Some(cache),
        }
    } else {
        None
    };
    let backend = plan.connect(&run.id, tools).await?;
    let span = tracing::info_span!("run", run_id = %run.id, task = %run.task.name);
    match execute::run_on(backend, run, cache.as_deref())
        .instrument(span)
        .await
    {
        Ok(outcome) => Ok(report::report(&outcome, &run.out, run.apply_deletions)),
        Err(e) if matches!(e.downcast_ref(), Some(ClientError::Interrupted)) => {
            eprintln!("buildr: interrupted");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Err(e) => Err(e),
    }
}

/// What the cache made of a run that caches.
enum Cached {
    /// A stored result was replayed, and this is its exit status.
    Replayed(ExitCode),
    /// The task must run; its result is stored here.
    Missed(Box<CachedRun>),
}

/// The run's key, from `plan`'s platform, and the replay of a stored result.
async fn consult_cache(run: &Run, plan: &mut impl Plan, tools: &[Tool]) -> anyhow::Result<Cached> {
    let CachePlatform {
        platform,
        shareable,
    } = plan.platform().await?;
    let key = KeySource {
        repo: &run.repo,
        inputs: &run.inputs,
        platform,
        executor: plan.executor(),
        tools,
        shareable,
    };
    let cache = CachedRun::prepare(
        &run.cache,
        &run.task,
        key,
        run.limits.max_bytes,
        run.verbosity,
    )?;
    let Some(hit) = cache.lookup().await? else {
        return Ok(Cached::Missed(Box::new(cache)));
    };
    let outcome = action::replay(&hit, &run.out, &run.extract_options(), run.limits)?;
    Ok(Cached::Replayed(report::report(
        &outcome,
        &run.out,
        run.apply_deletions,
    )))
}

impl Run {
    /// How the results are extracted into `out`, by a run and by a replay alike (whose key
    /// holds the same `inputs`).
    fn extract_options(&self) -> ExtractOptions {
        ExtractOptions {
            // A deletion removes only what the task was given: never a `.git`, nor ignored files.
            deletions: if self.apply_deletions {
                Deletions::Inputs(InputPaths::new(self.inputs.iter().map(|i| i.dest.clone())))
            } else {
                Deletions::Off
            },
            links: if self.allow_external_links {
                LinkPolicy::Allow
            } else {
                LinkPolicy::Skip
            },
            progress: None,
        }
    }
}

/// The run's tools, found on this machine and checked for `arch`; `-v` lists them.
fn resolve_tools(run: &Run, arch: &str) -> Result<Vec<Tool>, ToolError> {
    let tools = tools::resolve(&run.tools, &run.repo, arch)?;
    if run.verbosity > 0 {
        for tool in &tools {
            eprintln!("buildr: sending tool {tool}");
        }
    }
    Ok(tools)
}
