//! Which cluster and namespace: kubectl's flags and their defaults (the current context of
//! KUBECONFIG or ~/.kube/config, else the pod's own service account when run in a cluster), and
//! a first request that finds out within seconds whether the API server can be reached at all,
//! so that a wrong kubeconfig ends a command with one line naming the server and the cause.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use super::api::one_line;
use super::reach;

/// How long connecting to the API server (TCP and TLS) may take. kube's default is 30 s, which
/// a server that swallows packets makes every command wait; a real one answers well within this
/// even across a continent. Credential plugins run before connecting and are not limited.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// The namespace (k8s backend; default: the context's namespace, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// The kubeconfig context to use (k8s backend; default: the current context).
    #[arg(long)]
    pub context: Option<String>,

    /// The kubeconfig file (k8s backend; default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

// kube's errors print their causes in their own text, so these keep that text and not the
// error as a source: a source would print every cause a second time.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{problem} (fix it, or give another with --kubeconfig or KUBECONFIG)")]
    Kubeconfig { problem: String },
    #[error(
        "no Kubernetes configuration: {} does not exist, KUBECONFIG is not set and buildr is not \
         running in a pod (give one with --kubeconfig or KUBECONFIG)",
        path.display()
    )]
    NoConfig { path: PathBuf },
    #[error("cannot set up a client for the cluster at {server}: {problem}")]
    Client { server: String, problem: String },
    #[error("cannot reach the Kubernetes API server {server}: {cause}")]
    Unreachable { server: String, cause: String },
    #[error(
        "the Kubernetes API server {server} does not accept the kubeconfig's credentials: {message}"
    )]
    Unauthorized { server: String, message: String },
}

/// kube's client, as `kube::Client::try_from` builds it, but with TCP_NODELAY on its
/// connections to the API server. kube leaves Nagle's algorithm on, so that a small write that
/// follows another unacknowledged one waits for the server's delayed ACK, 40 ms: every call to
/// the executor through a port-forward (an HTTP/2 frame after another) and every exec stream
/// that sends a line before its data paid that, several times a run. Through a proxy, whose
/// connector kube keeps to itself, the client is kube's own.
fn client_without_nagle(config: kube::Config) -> Result<kube::Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;
    use tower_http::classify::ServerErrorsFailureClass;
    use tower_http::trace::TraceLayer;

    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut connector =
        hyper_timeout::TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        // As kube's own stack does, so that `-v` shows why a request failed; under kube's
        // target, which the console quiets without `-v` as it quiets kube's own lines.
        .layer(TraceLayer::new_for_http().on_failure(
            |failure: ServerErrorsFailureClass,
             _latency: std::time::Duration,
             _span: &tracing::Span| {
                match failure {
                    ServerErrorsFailureClass::StatusCode(status) => {
                        tracing::error!(target: "kube_client", "failed with status {status}")
                    }
                    ServerErrorsFailureClass::Error(error) => {
                        tracing::error!(target: "kube_client", "failed with error {error}")
                    }
                }
            },
        ))
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}

impl ClusterArgs {
    /// A client for the chosen cluster, and the namespace to work in. The API server has
    /// answered one request when this returns: one that cannot be reached is an error here.
    pub async fn client(&self) -> Result<(kube::Client, String), ClusterError> {
        let mut config = self.config().await?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let server = config.cluster_url.to_string();
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = client_without_nagle(config).map_err(|e| ClusterError::Client {
            server: server.clone(),
            problem: one_line(&e.to_string()),
        })?;
        probe(&client, server).await?;
        Ok((client, namespace))
    }

    async fn config(&self) -> Result<kube::Config, ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let unusable = |e: KubeconfigError| ClusterError::Kubeconfig {
            problem: kubeconfig_problem(&e, &self.kubeconfig_name()),
        };
        if let Some(path) = &self.kubeconfig {
            let kubeconfig = Kubeconfig::read_from(path).map_err(unusable)?;
            return kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(unusable);
        }
        match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => Ok(config),
            // No kubeconfig at all: the service account of the pod we run in (the janitor
            // CronJob), if we run in one.
            Err(KubeconfigError::ReadConfig(e, path))
                if e.kind() == std::io::ErrorKind::NotFound
                    && std::env::var_os("KUBECONFIG").is_none() =>
            {
                kube::Config::incluster().map_err(|_| ClusterError::NoConfig { path })
            }
            // No home to look in (a container may have none): the pod's service account too.
            Err(KubeconfigError::FindPath) => {
                kube::Config::incluster().map_err(|_| ClusterError::NoConfig {
                    path: PathBuf::from("~/.kube/config"),
                })
            }
            Err(e) => Err(unusable(e)),
        }
    }
}

impl ClusterArgs {
    /// The kubeconfig in use, as the user named it.
    fn kubeconfig_name(&self) -> String {
        match (&self.kubeconfig, std::env::var_os("KUBECONFIG")) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(paths)) => format!("{} (KUBECONFIG)", paths.to_string_lossy()),
            (None, None) => "~/.kube/config".to_string(),
        }
    }
}

/// Asks the API server for its version, which any client may: the first request of every
/// command, so that an unreachable server is named before anything else happens.
async fn probe(client: &kube::Client, server: String) -> Result<(), ClusterError> {
    match client.apiserver_version().await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 401 => Err(ClusterError::Unauthorized {
            server,
            message: one_line(&status.message),
        }),
        Err(e) => match reach::not_sent(&e) {
            Some(cause) => Err(ClusterError::Unreachable { server, cause }),
            // It answered, if not as asked: the commands' own requests say what is wrong.
            None => {
                tracing::debug!("the API server's version is not known: {e}");
                Ok(())
            }
        },
    }
}

/// What is wrong with a kubeconfig, in one line that says each cause once.
fn kubeconfig_problem(error: &KubeconfigError, name: &str) -> String {
    match error {
        KubeconfigError::ReadConfig(e, path) => {
            format!("cannot read the kubeconfig {}: {e}", path.display())
        }
        // The parser's text draws the place of the error over several lines; its first says it.
        KubeconfigError::Parse(e) => format!(
            "the kubeconfig {name} is not valid YAML: {}",
            e.to_string().lines().next().unwrap_or_default()
        ),
        other => format!(
            "cannot use the kubeconfig {name}: {}",
            one_line(&other.to_string())
        ),
    }
}
