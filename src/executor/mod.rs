//! The executor: a gRPC server that runs one task in a workspace and serves its events and the
//! archive of what it changed. It runs inside a pod (the container's main process) or as a child
//! of `buildr run` for the local backend.
//!
//! - [`event_log`]: sequence-numbered events, spilled to disk, resumable from any number
//! - [`process`]: the task's process group, its output pipes, cancel and timeout
//! - [`changes`]: what the task modified, by watcher and by snapshot comparison
//! - [`run`]: one run from start to result
//! - [`service`]: the gRPC adapter
//! - [`auth`]: the per-run secret every call must carry
//! - [`state_dir`]: the private directory of the event log and the archive

pub mod auth;
pub mod changes;
pub mod event_log;
pub mod process;
pub mod run;
pub mod service;
pub mod state_dir;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::rpc::executor_server::ExecutorServer;
use service::ExecutorService;

/// Where the executor listens: a TCP address (port 0 picks one) or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|_| format!("`{s}` is neither HOST:PORT (like 127.0.0.1:7070) nor unix:PATH"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

pub struct Config {
    pub listen: ListenAddr,
    /// Holds the event log and the archive; must not be inside the workspace. Created private
    /// if missing; refused if another user owns it or others can write to it.
    pub state_dir: PathBuf,
    /// The only workspace root requests may name.
    pub workspace: PathBuf,
    /// Every call must carry it (see [`crate::secret`]); required on a non-loopback address.
    pub secret: Option<crate::secret::Secret>,
    /// The event log's cap: task output past it is dropped (and counted), the task goes on.
    pub max_log_bytes: u64,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub grace: Duration,
    /// Exit when no client has called for this long while no task runs (a pod whose client
    /// died ends itself); `None` waits for the client forever.
    pub idle_timeout: Option<Duration>,
    /// Environment every task gets below its own `env`.
    pub task_env: BTreeMap<String, String>,
    /// What confines the task (see [`crate::sandbox`]).
    pub sandbox: crate::sandbox::Policy,
}

/// What the executor prints on stdout once it is bound, followed by the address.
pub const LISTENING_PREFIX: &str = "listening on ";

/// HTTP/2 flow-control window and frame size, shared with the client's channel.
pub const WINDOW: u32 = 8 * 1024 * 1024;
pub const MAX_FRAME: u32 = 1024 * 1024;

/// How long in-flight calls get to finish once the client has acknowledged the result.
const DRAIN_AFTER_ACK: Duration = Duration::from_secs(2);

/// A bound executor, ready to serve: `local_addr` says where.
pub struct Bound {
    pub local_addr: ListenAddr,
    incoming: Incoming,
    config: Config,
}

enum Incoming {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Why an executor did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    StateDir(#[from] state_dir::StateDirError),
    #[error("the workspace {} is not a directory", path.display())]
    Workspace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing to listen on {0} without a secret: anyone who reaches it could run commands; \
         give --secret-file or listen on a loopback address"
    )]
    NoSecret(SocketAddr),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: ListenAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds the listening socket, so that the caller can report the address before serving.
pub async fn bind(mut config: Config) -> Result<Bound, StartError> {
    state_dir::prepare(&config.state_dir)?;
    config.workspace = config
        .workspace
        .canonicalize()
        .and_then(|w| {
            if w.is_dir() {
                Ok(w)
            } else {
                Err(io::Error::from(io::ErrorKind::NotADirectory))
            }
        })
        .map_err(|source| StartError::Workspace {
            path: config.workspace.clone(),
            source,
        })?;
    let listen_err = |source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    };
    let (incoming, local_addr) = match &config.listen {
        ListenAddr::Tcp(addr) if !addr.ip().is_loopback() && config.secret.is_none() => {
            return Err(StartError::NoSecret(*addr));
        }
        ListenAddr::Tcp(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
            let local = listener.local_addr().map_err(listen_err)?;
            (Incoming::Tcp(listener), ListenAddr::Tcp(local))
        }
        ListenAddr::Unix(path) => {
            let listener = UnixListener::bind(path).map_err(listen_err)?;
            (Incoming::Unix(listener), ListenAddr::Unix(path.clone()))
        }
    };
    Ok(Bound {
        local_addr,
        incoming,
        config,
    })
}

impl Bound {
    /// Serves until the client acknowledges the result or `shutdown` resolves; on shutdown a
    /// running task is stopped first (SIGTERM, then SIGKILL after the grace period).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let done = CancellationToken::new();
        let service = Arc::new(ExecutorService::new(
            service::Limits {
                state_dir: self.config.state_dir.clone(),
                workspace: self.config.workspace.clone(),
                grace: self.config.grace,
                max_log_bytes: self.config.max_log_bytes,
                sandbox: self.config.sandbox.clone(),
            },
            self.config.task_env.clone(),
            done.clone(),
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ExecutorServer<Arc<ExecutorService>>>()
            .await;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // Output and archives are bulk data: big windows keep the pipe full over a
            // port-forward's latency, and big frames cut the per-frame cost.
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_frame_size(MAX_FRAME)
            .layer(tonic::service::InterceptorLayer::new(
                auth::Authenticate::new(self.config.secret.clone()),
            ))
            .add_service(health_service)
            .add_service(ExecutorServer::from_arc(service.clone()));

        let stop = done.clone();
        let server = async move {
            match self.incoming {
                Incoming::Tcp(listener) => {
                    router
                        .serve_with_incoming_shutdown(
                            // Without TCP_NODELAY, Nagle holds each small event back until
                            // the peer's delayed ACK: 40 ms a round trip.
                            TcpIncoming::from(listener).with_nodelay(Some(true)),
                            stop.cancelled(),
                        )
                        .await
                }
                Incoming::Unix(listener) => {
                    router
                        .serve_with_incoming_shutdown(
                            UnixListenerStream::new(listener),
                            stop.cancelled(),
                        )
                        .await
                }
            }
        };
        tokio::pin!(server);
        let abandoned = async {
            match self.config.idle_timeout {
                Some(timeout) => service.abandoned(timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut server => result,
            () = abandoned => {
                tracing::warn!("no client called for {:?} while no task ran; exiting", self.config.idle_timeout.unwrap_or_default());
                Ok(())
            }
            () = shutdown => {
                tracing::info!("shutting down: stopping the task");
                service.cancel_all();
                let limit = self.config.grace + DRAIN_AFTER_ACK;
                let _ = tokio::time::timeout(limit, service.finished()).await;
                Ok(())
            }
            () = done.cancelled() => {
                // In-flight calls get a moment to end; a half-open stream does not hold us.
                tokio::time::timeout(DRAIN_AFTER_ACK, &mut server).await.unwrap_or(Ok(()))
            }
        }
    }
}
