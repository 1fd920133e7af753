//! Channels to an executor, with the trace context and the run's secret attached to every call
//! and HTTP/2 keep-alive so that a dead tunnel is noticed instead of hanging.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::ClientError;
use crate::rpc::executor_client::ExecutorClient;
use crate::secret::Secret;

/// Where an executor can be reached from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

pub type Client = ExecutorClient<InterceptedService<Channel, CallMetadata>>;

/// What every call carries: the trace context, and the run's secret when the executor has one.
#[derive(Clone)]
pub struct CallMetadata {
    secret: Option<MetadataValue<Ascii>>,
}

impl CallMetadata {
    pub fn new(secret: Option<&Secret>) -> Self {
        Self {
            secret: secret
                .map(|s| MetadataValue::try_from(s.header_value()).expect("hex digits are ASCII")),
        }
    }
}

impl tonic::service::Interceptor for CallMetadata {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        crate::telemetry::inject(request.metadata_mut());
        if let Some(secret) = &self.secret {
            request
                .metadata_mut()
                .insert(crate::secret::METADATA_KEY, secret.clone());
        }
        Ok(request)
    }
}

/// The endpoint every channel to an executor is built on: HTTP/2 keep-alive so that a dead
/// tunnel is noticed, and big windows and frames for bulk output and archives.
pub fn endpoint(uri: &str) -> Endpoint {
    Endpoint::from_shared(uri.to_string())
        .expect("a well-formed URI")
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(crate::executor::WINDOW)
        .initial_connection_window_size(crate::executor::WINDOW)
        .max_frame_size(crate::executor::MAX_FRAME)
}

/// The authority used in requests over a connector, which ignores it.
const CONNECTOR_URI: &str = "http://executor.buildr.invalid";

/// A lazily connecting channel: it (re)connects on demand, so a cut connection is redialled by
/// the next call.
pub fn channel(target: &Target) -> Channel {
    match target {
        Target::Tcp(addr) => endpoint(&format!("http://{addr}")).connect_lazy(),
        Target::Unix(path) => {
            let path = path.clone();
            channel_through(move || {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await }
            })
        }
    }
}

/// A lazily connecting channel whose every connection is a fresh stream from `dial`, such as a
/// new port-forward through the Kubernetes API server.
pub fn channel_through<D, F, S>(dial: D) -> Channel
where
    D: Fn() -> F + Send + 'static,
    F: Future<Output = std::io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    endpoint(CONNECTOR_URI).connect_with_connector_lazy(tower::service_fn(move |_| {
        let stream = dial();
        async move { stream.await.map(TokioIo::new) }
    }))
}

pub fn client(channel: Channel, secret: Option<&Secret>) -> Client {
    ExecutorClient::with_interceptor(channel, CallMetadata::new(secret))
        .max_decoding_message_size(16 * 1024 * 1024)
}

/// Waits until the executor's health service says it serves, retrying until `timeout`.
pub async fn wait_ready(
    channel: &Channel,
    secret: Option<&Secret>,
    timeout: Duration,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + timeout;
    let mut health = HealthClient::with_interceptor(channel.clone(), CallMetadata::new(secret));
    let mut last_error;
    // Soon after the first try, which may come a moment before the executor listens; then
    // less often.
    let mut pause = Duration::from_millis(10);
    loop {
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        match tokio::time::timeout(Duration::from_secs(5), check).await {
            Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => {
                return Ok(());
            }
            Ok(Ok(response)) => last_error = format!("status {:?}", response.get_ref().status()),
            // Retrying cannot fix a refused secret, nor a refused way in.
            Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
                return Err(ClientError::Rpc {
                    call: "Health",
                    status: Box::new(status),
                });
            }
            Ok(Err(status)) => match denied(&status) {
                Some(reason) => return Err(ClientError::Denied { reason }),
                None => last_error = status.message().to_string(),
            },
            Err(_) => last_error = "no answer within 5s".to_string(),
        }
        if Instant::now() >= deadline {
            return Err(ClientError::NotReady {
                waited: timeout,
                last_error,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Why the connection under a failed call was refused for good, if it was: a dialler says so
/// with [`std::io::ErrorKind::PermissionDenied`] (a port-forward the API server forbids), which
/// no redial can cure.
pub(crate) fn denied(status: &Status) -> Option<String> {
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Some(io.to_string());
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_dial_ends_the_wait_at_once() {
        let channel = channel_through(|| async {
            Err::<tokio::net::UnixStream, _>(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "port-forward to p: not allowed",
            ))
        });
        let started = Instant::now();
        let error = wait_ready(&channel, None, Duration::from_secs(20))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "it retried");
        assert_eq!(
            error.to_string(),
            "cannot connect to the executor: port-forward to p: not allowed"
        );
    }
}
