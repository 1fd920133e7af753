//! The archive fetch against a real tonic server on loopback that misbehaves: it streams more
//! than the size it reported, or stalls mid-fetch. Either must fail promptly, with a message
//! that says what happened, rather than fill the disk or hang.

use std::pin::Pin;
use std::time::{Duration, Instant};

use buildr::client::{ClientError, Reconnect, connect, fetch};
use buildr::rpc::executor_server::{Executor, ExecutorServer};
use buildr::rpc::{
    AcknowledgeRequest, AcknowledgeResponse, ArchiveChunk, ArchiveInfo, CancelRequest,
    CancelResponse, FetchArchiveRequest, ResumeRequest, StartTaskRequest, TaskEvent,
};
use futures::Stream;
use tonic::{Request, Response, Status};

type Chunks = Pin<Box<dyn Stream<Item = Result<ArchiveChunk, Status>> + Send>>;
type Events = Pin<Box<dyn Stream<Item = Result<TaskEvent, Status>> + Send>>;

/// What the fake executor does when the archive is fetched.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Streams 64 KiB chunks without end, whatever size it reported.
    Endless,
    /// Sends one chunk, then nothing, holding the stream open.
    Stall,
}

struct Fake(Misbehaviour);

const CHUNK: usize = 64 << 10;

#[tonic::async_trait]
impl Executor for Fake {
    type StartTaskStream = Events;
    type ResumeStream = Events;
    type FetchArchiveStream = Chunks;

    async fn start_task(&self, _: Request<StartTaskRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("only FetchArchive"))
    }

    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("only FetchArchive"))
    }

    async fn cancel(&self, _: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        Err(Status::unimplemented("only FetchArchive"))
    }

    async fn fetch_archive(
        &self,
        request: Request<FetchArchiveRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let mut offset = request.into_inner().offset;
        let misbehaviour = self.0;
        let stream = async_stream(move |tx| async move {
            loop {
                let chunk = ArchiveChunk {
                    offset,
                    data: vec![b'x'; CHUNK],
                };
                offset += CHUNK as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
                if let Misbehaviour::Stall = misbehaviour {
                    // Hold the stream open without sending anything more.
                    tx.closed().await;
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn acknowledge(
        &self,
        _: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        Ok(Response::new(AcknowledgeResponse {}))
    }
}

/// A stream fed by `produce` through a channel.
fn async_stream<F, Fut>(produce: F) -> Chunks
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ArchiveChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Fetches an archive reported as 100 KiB from a fake executor that `misbehaves`, with a
/// 500 ms idle timeout; the whole fetch is given 20 s.
async fn fetch_from(misbehaviour: Misbehaviour) -> (Result<std::fs::File, ClientError>, Duration) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExecutorServer::new(Fake(misbehaviour)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = connect::client(channel, None);
    let info = ArchiveInfo {
        path: "/archive.tar.s2".to_string(),
        size: 100 << 10,
        sha256: "0".repeat(64),
    };
    let progress = indicatif::ProgressBar::hidden();
    let started = Instant::now();
    let fetched = fetch::fetch_archive(
        &mut client,
        "run",
        &info,
        &progress,
        Reconnect::default(),
        Duration::from_millis(500),
    );
    let result = tokio::time::timeout(Duration::from_secs(20), fetched)
        .await
        .expect("the fetch must end on its own, not hang or stream forever");
    (result, started.elapsed())
}

#[tokio::test]
async fn more_bytes_than_reported_fail_the_fetch() {
    let (result, _) = fetch_from(Misbehaviour::Endless).await;
    let err = result.expect_err("more than the reported size must fail");
    assert!(matches!(err, ClientError::ArchiveTooLong { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("sent more than the 102400 bytes it reported"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stalled_fetch_fails_after_the_idle_timeout() {
    let (result, took) = fetch_from(Misbehaviour::Stall).await;
    let err = result.expect_err("a stall must fail");
    assert!(matches!(err, ClientError::FetchStalled { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("stalled: nothing arrived for 500ms at byte 65536 of 102400"),
        "{message}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
