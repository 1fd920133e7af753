//! Ctrl-C against a real tonic server on loopback whose task never ends: the run stops waiting
//! in bounded time whether the executor never answers the cancel or answers it and still sends
//! no result. Either way the caller's clean-up then stops the executor; a run that waited on
//! the event stream for ever instead was seen once in the ssh suite under load.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::pin::Pin;
use std::time::{Duration, Instant};

use buildr::client::{self, ClientError};
use buildr::rpc::executor_server::Executor;
use buildr::rpc::{
    AcknowledgeRequest, AcknowledgeResponse, ArchiveChunk, CancelRequest, CancelResponse,
    FetchArchiveRequest, ResumeRequest, StartTaskRequest, TaskEvent, TaskOutput, task_event,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type Chunks = Pin<Box<dyn Stream<Item = Result<ArchiveChunk, Status>> + Send>>;
type Events = Pin<Box<dyn Stream<Item = Result<TaskEvent, Status>> + Send>>;

/// How the fake executor answers a cancel; its task prints one line and never ends.
#[derive(Clone, Copy)]
enum OnCancel {
    /// Never answers (an executor too busy to).
    Silent,
    /// Says it heard, and the task goes on all the same.
    Ignore,
}

struct Stuck(OnCancel);

#[tonic::async_trait]
impl Executor for Stuck {
    type StartTaskStream = Events;
    type ResumeStream = Events;
    type FetchArchiveStream = Chunks;

    async fn start_task(&self, _: Request<StartTaskRequest>) -> Result<Response<Events>, Status> {
        let line = TaskEvent {
            sequence: 1,
            event: Some(task_event::Event::Output(TaskOutput {
                stream: 0,
                data: b"started\n".to_vec(),
            })),
        };
        let stream = futures::stream::iter([Ok(line)]).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("not resumable"))
    }

    async fn cancel(&self, _: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        match self.0 {
            OnCancel::Silent => std::future::pending().await,
            OnCancel::Ignore => Ok(Response::new(CancelResponse {})),
        }
    }

    async fn fetch_archive(
        &self,
        _: Request<FetchArchiveRequest>,
    ) -> Result<Response<Chunks>, Status> {
        Err(Status::unimplemented("no archive"))
    }

    async fn acknowledge(
        &self,
        _: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        Ok(Response::new(AcknowledgeResponse {}))
    }
}

/// One Ctrl-C, once the task printed its line, to a run on a stuck executor: how the run
/// ended, and how long after the Ctrl-C.
async fn interrupt_a_stuck_run(
    on_cancel: OnCancel,
) -> (Result<client::Outcome, ClientError>, Duration) {
    let addr = common::serve_fake(Stuck(on_cancel)).await;
    let out = tempfile::tempdir().unwrap();
    let (ctrl_c, mut interrupts) = tokio::sync::mpsc::channel(1);
    let mut sink = common::Collected::default();
    let channel = client::connect::channel(&client::Target::Tcp(addr));
    let task = buildr::task::Task::ad_hoc(vec!["sleep".into(), "300".into()]);
    let request = client::start_request(&task, "stuck", "/workspace");
    let options = common::client_options(out.path());
    let run = client::execute(channel, request, &options, &mut sink, &mut interrupts);
    tokio::pin!(run);
    // The task runs for ever: the run cannot end before the Ctrl-C.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut run)
            .await
            .is_err()
    );
    ctrl_c.send(()).await.unwrap();
    let pressed = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a Ctrl-C ends the run in bounded time");
    (ended, pressed.elapsed())
}

#[tokio::test]
async fn a_cancel_never_answered_stops_the_wait_within_seconds() {
    let (ended, took) = interrupt_a_stuck_run(OnCancel::Silent).await;
    assert!(matches!(ended, Err(ClientError::Interrupted)), "{ended:?}");
    // The cancel's own 5 s, then the grace for an unheard Ctrl-C, already past.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test]
async fn a_cancel_heard_without_a_result_stops_the_wait_in_bounded_time() {
    let (ended, took) = interrupt_a_stuck_run(OnCancel::Ignore).await;
    assert!(matches!(ended, Err(ClientError::Interrupted)), "{ended:?}");
    // Long enough for a task's SIGTERM handler and the executor's grace period, no longer.
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(25),
        "took {took:?}"
    );
}
