//! A run on a connected backend: its secret, the backend's start (upload and executor), the
//! task through the client (output, results fetched and extracted), the storing of a result
//! the cache may keep, and the clean-up on every path out (errors and Ctrl-C included).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Run;
use crate::backend::Backend;
use crate::cache::Recorder;
use crate::cache::action::CachedRun;
use crate::client::{self, Outcome, Reconnect, render::Console};
use crate::secret::{Secret, SecretError};
use crate::timeline::Timeline;

/// Why a run on a backend failed, beyond the backend's and the client's own errors.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The executor is gone for good: it cannot be redialled.
    #[error("the executor exited unexpectedly ({how})")]
    ExecutorLost { how: String },
}

/// How long a run may still take to finish once its executor has exited.
const EXECUTOR_EXIT_GRACE: Duration = Duration::from_secs(2);

/// One run on `backend`, storing its result in `cache` if it may be: start it, drive the
/// client, and clean up on every path out (errors and Ctrl-C included).
pub async fn run_on(
    mut backend: impl Backend,
    run: &Run,
    cache: Option<&CachedRun>,
) -> anyhow::Result<Outcome> {
    // Listen for Ctrl-C before anything is created, so that it never kills us mid-setup and
    // leaves a sandbox or a pod behind.
    let mut interrupts = forward_interrupts();
    let mut timeline = Timeline::default();
    let outcome = execute_on(&mut backend, run, cache, &mut interrupts, &mut timeline).await;
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
    run: &Run,
    cache: Option<&CachedRun>,
    interrupts: &mut mpsc::Receiver<()>,
    timeline: &mut Timeline,
) -> anyhow::Result<Outcome> {
    let began = Instant::now();
    // Made here, once, for every backend: it hands it to the executor out of band.
    let secret = Secret::generate().map_err(RunError::from)?;
    // A Ctrl-C while the backend starts stops the start; what it created is cleaned up.
    let executor = tokio::select! {
        started = backend.start(&run.inputs, &secret, timeline) => started?,
        Some(()) = interrupts.recv() => return Err(client::ClientError::Interrupted.into()),
    };
    // Were the inputs sent as the key describes them (digested from the bytes sent)?
    let sent_as_keyed = cache.is_some_and(|cache| cache.describes(executor.inputs_sent));
    let request = client::start_request(&run.task, &run.id, &executor.workspace_root);
    let extract = run.extract_options();
    let options = client::Options {
        out: run.out.clone(),
        secret: Some(secret),
        deletions: extract.deletions,
        links: extract.links,
        limits: run.limits,
        fetch_idle_timeout: client::fetch::DEFAULT_IDLE_TIMEOUT,
        ready_timeout: Duration::from_secs(30),
        reconnect: Reconnect {
            give_up_after: run.reconnect_timeout,
            ..Reconnect::default()
        },
        keep_archive: cache.is_some(),
    };
    let mut sink = Recorder::new(Console::new(run.verbosity > 0), cache.is_some());
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
                Err(_) => return Err(RunError::ExecutorLost { how }.into()),
            },
        }
    };
    // A task cancelled without the user asking was stopped from outside (a pod past its
    // deadline, an executor sent SIGTERM): say why, as for an executor lost mid-run. Its result
    // can arrive before its end is seen, when it travels in the result message.
    if !outcome.interrupted
        && outcome.result.cancelled
        && let Ok(how) = tokio::time::timeout(EXECUTOR_EXIT_GRACE, backend.lost()).await
    {
        return Err(RunError::ExecutorLost { how }.into());
    }
    timeline.extend(outcome.timeline.clone());
    if let Some(cache) = cache {
        let mut step = Instant::now();
        cache
            .store(&mut outcome, sink.finish(), sent_as_keyed, began.elapsed())
            .await;
        timeline.record("store in the cache", &mut step);
    }
    Ok(outcome)
}

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
