//! Which cluster and namespace: kubectl's flags and their defaults (the current context of
//! KUBECONFIG or ~/.kube/config, else the pod's own service account when run in a cluster).

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

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

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the kubeconfig {}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot use the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error(
        "no Kubernetes configuration found (no KUBECONFIG, no ~/.kube/config, not in a cluster)"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot set up a client for the cluster")]
    Client(#[source] kube::Error),
}

impl ClusterArgs {
    /// A client for the chosen cluster, and the namespace to work in.
    pub async fn client(&self) -> Result<(kube::Client, String), ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| ClusterError::ReadKubeconfig {
                        path: path.clone(),
                        source,
                    })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(ClusterError::Kubeconfig)?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(ClusterError::Kubeconfig)?,
            // The kubeconfig if there is one, else the service account of the pod we run in
            // (the janitor CronJob).
            (None, None) => kube::Config::infer().await.map_err(ClusterError::Infer)?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(ClusterError::Client)?;
        Ok((client, namespace))
    }
}
