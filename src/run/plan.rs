//! A backend's plan: what a run needs of its backend before anything is connected (the
//! architecture its tools must be built for, the platform its cache key names), and then the
//! connection that makes it a [`Backend`]. A run answered from the cache stops before the
//! connection, so a cache hit needs no cluster and no host.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::backend::arch::host_arch;
use crate::backend::k8s::kubeconfig::ClusterError;
use crate::backend::k8s::pool::take::Source;
use crate::backend::k8s::{self, ClusterArgs, K8sBackend};
use crate::backend::local::LocalBackend;
use crate::backend::ssh::resolve::ResolveError;
use crate::backend::ssh::{self, SshBackend};
use crate::cache::key::Platform;
use crate::printable::Printable;
use crate::tools::Tool;

/// Where a run's cache key says the task runs.
pub struct CachePlatform {
    pub platform: Platform,
    /// Whether the shared cache may hold the result: not when the platform could not be pinned
    /// (an image whose registry could not name its digest).
    pub shareable: bool,
}

/// One backend's plan for a run, before it connects.
pub trait Plan {
    type Backend: Backend;
    /// Why the platform could not be named, or the backend not reached.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The architecture the executor binary, and so the tools, are built for.
    fn arch(&self) -> &str;

    /// The executor binary the run starts.
    fn executor(&self) -> &Path;

    /// The platform of the run's cache key; asked only of a run that caches, after its tools
    /// are found.
    fn platform(&mut self) -> impl Future<Output = Result<CachePlatform, Self::Error>>;

    /// The backend for run `run_id`, whose task finds `tools` first in its PATH: connected to
    /// its cluster, if it has one.
    fn connect(
        self,
        run_id: &str,
        tools: Vec<Tool>,
    ) -> impl Future<Output = Result<Self::Backend, Self::Error>>;
}

/// A run in a sandbox on this machine.
pub struct LocalPlan {
    pub executor: PathBuf,
    pub keep: bool,
    /// What confines the task.
    pub sandbox: crate::sandbox::Policy,
}

impl Plan for LocalPlan {
    type Backend = LocalBackend;
    type Error = Infallible;

    fn arch(&self) -> &str {
        host_arch()
    }

    fn executor(&self) -> &Path {
        &self.executor
    }

    async fn platform(&mut self) -> Result<CachePlatform, Infallible> {
        Ok(CachePlatform {
            platform: Platform::local(host_arch()),
            shareable: true,
        })
    }

    async fn connect(self, run_id: &str, tools: Vec<Tool>) -> Result<LocalBackend, Infallible> {
        Ok(LocalBackend::new(
            self.executor,
            run_id,
            tools,
            self.keep,
            self.sandbox,
        ))
    }
}

/// A run in a pod.
pub struct K8sPlan {
    pub settings: k8s::Settings,
    /// How to reach the cluster, for a run that has not connected yet.
    pub cluster: ClusterArgs,
    /// The connection and namespace made while planning (a pool's template was read), if any.
    pub early: Option<(kube::Client, String)>,
}

impl Plan for K8sPlan {
    type Backend = K8sBackend;
    type Error = ClusterError;

    fn arch(&self) -> &str {
        &self.settings.binary.arch
    }

    fn executor(&self) -> &Path {
        &self.settings.binary.path
    }

    /// Pins the image by digest first: asking its registry costs a round trip, paid only for a
    /// key. The pod then runs the image the key names, whatever a node holds under its tag.
    async fn platform(&mut self) -> Result<CachePlatform, ClusterError> {
        let settings = &mut self.settings;
        let pinned = crate::cache::oci::pinned_image(&settings.image).await;
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
        Ok(CachePlatform {
            platform: Platform::k8s(
                &settings.image,
                &settings.binary.arch,
                &settings.task.container,
            ),
            shareable,
        })
    }

    async fn connect(mut self, run_id: &str, tools: Vec<Tool>) -> Result<K8sBackend, ClusterError> {
        let (client, namespace) = match self.early {
            Some(cluster) => cluster,
            None => self.cluster.client().await?,
        };
        self.settings.tools = tools;
        Ok(K8sBackend::new(self.settings, client, namespace, run_id))
    }
}

/// A run on a host over ssh.
pub struct SshPlan {
    pub settings: ssh::Settings,
}

impl Plan for SshPlan {
    type Backend = SshBackend;
    type Error = ResolveError;

    fn arch(&self) -> &str {
        &self.settings.binary.arch
    }

    fn executor(&self) -> &Path {
        &self.settings.binary.path
    }

    /// The host as ssh's configuration resolves it (`ssh -G`): a Host alias names the machine
    /// it stands for.
    async fn platform(&mut self) -> Result<CachePlatform, ResolveError> {
        let settings = &self.settings;
        let destination = ssh::resolve::destination(&settings.destination, &settings.options)?;
        Ok(CachePlatform {
            platform: Platform::ssh(&destination, &settings.binary.arch),
            shareable: true,
        })
    }

    async fn connect(mut self, run_id: &str, tools: Vec<Tool>) -> Result<SshBackend, ResolveError> {
        self.settings.tools = tools;
        Ok(SshBackend::new(self.settings, run_id))
    }
}
