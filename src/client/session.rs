//! Follows one run's events to its result. A lost connection is redialled and the stream
//! resumed after the last sequence number seen, so every event arrives exactly once; an
//! interrupt asks the executor to cancel and the result is still awaited.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::Status;

use super::ClientError;
use super::connect::Client;
use super::redial::Redial;
use crate::printable::Printable;
use crate::rpc::{
    CancelRequest, StartTaskRequest, TaskLog, TaskOutput, TaskResult, task_event::Event,
};

/// Where events go as they arrive.
pub trait EventSink {
    fn output(&mut self, output: &TaskOutput);
    fn log(&mut self, log: &TaskLog);
}

/// How long to keep redialling a lost executor before giving up, and how often.
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    pub give_up_after: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            give_up_after: Duration::from_secs(60),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// What a follow produced: the result, and whether the user interrupted.
#[derive(Debug)]
pub struct Finished {
    pub result: TaskResult,
    pub interrupted: bool,
    /// How many times the stream was resumed after a lost connection.
    pub resumes: u32,
}

/// Starts (or re-attaches to) the run and follows it to its result.
///
/// Each message on `interrupts` is one Ctrl-C: the first asks the executor to cancel the task,
/// the second gives up waiting and returns [`ClientError::Interrupted`].
pub async fn follow(
    client: &mut Client,
    request: StartTaskRequest,
    sink: &mut dyn EventSink,
    interrupts: &mut mpsc::Receiver<()>,
    reconnect: Reconnect,
) -> Result<Finished, ClientError> {
    let mut interrupt = Interrupt {
        signals: interrupts,
        open: true,
        requested: false,
        requested_at: None,
        delivered: false,
        unheard_since: None,
        run_id: request.run_id.clone(),
    };
    let mut last_seen = request.after_sequence;
    let mut resumes = 0;
    let mut redial = Redial::new("StartTask", reconnect);

    loop {
        let attempt = StartTaskRequest {
            after_sequence: last_seen,
            ..request.clone()
        };
        // A call of its own, so that a Ctrl-C meanwhile is heard: a redial can take long.
        let started = {
            let mut caller = client.clone();
            async move { caller.start_task(attempt).await }
        };
        let unheard = interrupt.stop_waiting();
        let started = tokio::select! {
            started = started => started,
            () = interrupt.next() => {
                interrupt.handle(client).await?;
                continue;
            }
            () = unheard => return Err(ClientError::Interrupted),
        };
        let lost: Status = match started {
            Ok(response) => {
                let mut stream = response.into_inner();
                if redial.connected() {
                    resumes += 1;
                    tracing::info!(after = last_seen, "resumed the event stream");
                }
                interrupt.redeliver(client).await;
                loop {
                    let unheard = interrupt.stop_waiting();
                    let retry_due = interrupt.retry_due();
                    tokio::select! {
                        message = stream.message() => match message {
                            Ok(Some(event)) => {
                                // A resumed stream starts after `last_seen`; anything older is
                                // a duplicate and is dropped.
                                if event.sequence <= last_seen {
                                    continue;
                                }
                                last_seen = event.sequence;
                                match event.event {
                                    Some(Event::Output(output)) => sink.output(&output),
                                    Some(Event::Log(log)) => sink.log(&log),
                                    Some(Event::Result(result)) => {
                                        let interrupted = interrupt.requested;
                                        return Ok(Finished { result, interrupted, resumes });
                                    }
                                    None => {}
                                }
                            }
                            Ok(None) => break Status::unavailable("the event stream ended before the result"),
                            Err(status) => break status,
                        },
                        () = interrupt.next() => interrupt.handle(client).await?,
                        // A cancel the executor did not hear, over a stream that still flows
                        // (it timed out under load): asked again, for a while.
                        () = retry_due => interrupt.redeliver(client).await,
                        () = unheard => return Err(ClientError::Interrupted),
                    }
                }
            }
            Err(status) => status,
        };
        let delay = redial.lost(lost)?;
        let unheard = interrupt.stop_waiting();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = interrupt.next() => interrupt.handle(client).await?,
            () = unheard => return Err(ClientError::Interrupted),
        }
    }
}

/// How long the redials go on after a Ctrl-C that the executor did not hear (the connection
/// was down): then the run stops waiting, and its clean-up stops the task.
const UNHEARD_GRACE: Duration = Duration::from_secs(5);
/// How long the run waits for the result of a task the executor was asked to cancel: its stop
/// takes the executor's grace period (5 s by default), then the result follows at once. A run
/// past this stops waiting, and its clean-up stops the executor.
const CANCEL_GRACE: Duration = Duration::from_secs(20);
/// How often a cancel the executor did not hear is sent again.
const CANCEL_RETRY: Duration = Duration::from_secs(1);

/// The user's Ctrl-Cs: the first asks the executor to cancel (again after a reconnect, until it
/// is heard, for at most [`UNHEARD_GRACE`]), the second gives up waiting.
struct Interrupt<'a> {
    signals: &'a mut mpsc::Receiver<()>,
    open: bool,
    requested: bool,
    /// When the first Ctrl-C was pressed.
    requested_at: Option<Instant>,
    delivered: bool,
    /// When the Ctrl-C that the executor has not heard yet was pressed.
    unheard_since: Option<Instant>,
    run_id: String,
}

impl Interrupt<'_> {
    /// The next Ctrl-C; never, once nobody can send one.
    async fn next(&mut self) {
        if self.open && self.signals.recv().await.is_some() {
            return;
        }
        self.open = false;
        std::future::pending().await
    }

    async fn handle(&mut self, client: &mut Client) -> Result<(), ClientError> {
        if self.requested {
            return Err(ClientError::Interrupted);
        }
        self.requested = true;
        self.requested_at = Some(Instant::now());
        self.unheard_since = self.requested_at;
        self.deliver(client).await;
        if self.delivered {
            eprintln!("buildr: cancelling the task (Ctrl-C again to stop waiting)");
        }
        Ok(())
    }

    /// Sends a cancel that the executor has not heard yet (the connection was down).
    async fn redeliver(&mut self, client: &mut Client) {
        if self.requested && !self.delivered {
            self.deliver(client).await;
        }
    }

    async fn deliver(&mut self, client: &mut Client) {
        self.delivered = cancel(client, &self.run_id).await;
        if self.delivered {
            self.unheard_since = None;
        }
    }

    /// Resolves when a cancel that the executor has not heard is due to be sent again; never
    /// while there is none.
    fn retry_due(&self) -> impl Future<Output = ()> + use<> {
        let undelivered = self.requested && !self.delivered;
        async move {
            match undelivered {
                true => tokio::time::sleep(CANCEL_RETRY).await,
                false => std::future::pending().await,
            }
        }
    }

    /// Resolves when the run stops waiting for its task after a Ctrl-C: [`UNHEARD_GRACE`]
    /// after one that the executor has not heard, [`CANCEL_GRACE`] after the first in any case
    /// (the cancel was heard, yet no result came); never before a Ctrl-C.
    fn stop_waiting(&self) -> impl Future<Output = ()> + use<> {
        let unheard = self.unheard_since.map(|since| since + UNHEARD_GRACE);
        let no_result = self.requested_at.map(|at| at + CANCEL_GRACE);
        let deadline = unheard.into_iter().chain(no_result).min();
        async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// Asks the executor to stop the task; says whether it heard.
async fn cancel(client: &mut Client, run_id: &str) -> bool {
    let request = CancelRequest {
        run_id: run_id.to_string(),
        reason: "interrupted by the user".to_string(),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.cancel(request)).await {
        Ok(Ok(_)) => true,
        Ok(Err(status)) => {
            tracing::warn!("cancel failed: {}", Printable(status.message()));
            false
        }
        Err(_) => {
            tracing::warn!("cancel got no answer within 5s");
            false
        }
    }
}
