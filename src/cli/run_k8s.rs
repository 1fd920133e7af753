//! `buildr run`'s options for the k8s backend, and their resolution against the task into the
//! backend's [`Settings`] and the run's [`K8sPlan`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use crate::backend::binary::ExecutorBinary;
use crate::backend::k8s::pool;
use crate::backend::k8s::pool::resource::BuildrPool;
use crate::backend::k8s::pool::take::{self, Source};
use crate::backend::k8s::{ClusterArgs, DEFAULT_START_TIMEOUT, InputsRegistry, K8sError, Settings};
use crate::cache::StatCache;
use crate::run::K8sPlan;
use crate::snapshot::delta::SeedIndexes;
use crate::snapshot::known::Records;
use crate::task::{Egress, Task};

/// `buildr run` options for the k8s backend.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Container image for the k8s backend (overrides the task's `container.image`; a run that
    /// names a pool runs in the pool's template instead).
    #[arg(long)]
    pub image: Option<String>,

    /// How long the pod may take to start: scheduling, image pull, container start (k8s
    /// backend; overrides the task's `container.start_timeout`; default 2m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub start_timeout: Option<Duration>,

    /// What the pod may reach (k8s backend; overrides the task's `container.egress`; default
    /// no-link-local: everything but the cloud metadata service). Ingress is always denied.
    #[arg(long, value_enum)]
    pub egress: Option<Egress>,

    /// Take a warm pod from this BuildrPool (k8s backend; overrides the task's
    /// `container.pool`): the run's pod is then the pool's template, and needs no --image.
    /// Without it, a pool whose template equals the task's pod settings is used if there is
    /// one; else the run starts a pod of its own.
    #[arg(long)]
    pub pool: Option<String>,

    /// Send the inputs by content to this registry, for the pod to pull (k8s backend;
    /// overrides the task's `inputs_registry`): only the packs it lacks travel, and the pod
    /// pulls them over the pod network. Without it, or when the pod cannot reach it, the
    /// inputs are copied whole.
    #[arg(
        long,
        env = "BUILDR_INPUTS_REGISTRY",
        value_name = "REGISTRY/REPOSITORY"
    )]
    pub inputs_registry: Option<String>,
}

impl K8sArgs {
    /// Resolves the options against the task into the run's settings; `binary` is the buildr
    /// that will run in the pod. A run that names a pool (`--pool`, `container.pool`) runs in
    /// that pool's template, read from the cluster: its image and `container` settings, with
    /// the run's own egress, start timeout and deadline (see [`pool::run_container`]); when
    /// the pool does not exist, in the task's own image, if it has one. Any other run needs an
    /// image (`--image`, `container.image`), asked for before anything else.
    ///
    /// Connects to the cluster when the settings need it (a pool to read), or when the run
    /// cannot be answered from the cache (`caching` off: a wrong kubeconfig is then named in
    /// seconds, before the binary is read and hashed), and keeps that connection in the plan.
    /// Warns when the binary is dynamically linked: it runs only in some images.
    pub async fn plan(
        &self,
        task: &Task,
        repo: &std::path::Path,
        binary: PathBuf,
        keep: bool,
        caching: bool,
    ) -> anyhow::Result<K8sPlan> {
        let named = self.pool.clone().or_else(|| task.container.pool.clone());
        let image = self.image.clone().or_else(|| task.container.image.clone());
        let mut task = task.clone();
        if let Some(egress) = self.egress {
            task.container.egress = Some(egress);
        }
        let mut cluster = None;
        let (image, pool) = match named {
            None => (image.ok_or(K8sError::NoImage)?, Some(Source::Matching)),
            Some(name) => {
                let (client, namespace) = cluster.insert(self.cluster.client().await?);
                match take::named_pool(client, namespace, &name).await? {
                    Some(pool) => {
                        let template = pool_image(&pool, namespace)?;
                        if let Some(asked) = self.image.as_ref().filter(|i| **i != template) {
                            eprintln!(
                                "buildr: --image {asked} is not used: the run's pod is the \
                                 template of BuildrPool {namespace}/{name}, in {template}"
                            );
                        }
                        tracing::info!(
                            "the run's pod is the template of BuildrPool {namespace}/{name}"
                        );
                        task.container = pool::run_container(&pool.spec.container, &task.container);
                        (template, Some(Source::Named(Box::new(pool))))
                    }
                    None => {
                        let Some(image) = image else {
                            let namespace = namespace.clone();
                            return Err(K8sError::NoPool {
                                pool: name,
                                namespace,
                            }
                            .into());
                        };
                        eprintln!(
                            "buildr: there is no BuildrPool {name} in namespace {namespace}: \
                             starting a pod of its own"
                        );
                        (image, None)
                    }
                }
            }
        };
        if cluster.is_none() && !caching {
            cluster = Some(self.cluster.client().await?);
        }
        let binary = ExecutorBinary::inspect(&binary).map_err(K8sError::from)?;
        if let Some(warning) = binary.dynamic_warning("in images") {
            eprintln!("buildr: warning: {warning}");
        }
        // A seeded pool's pods hold its seed: the difference goes through the seed's
        // repository unless the run names another.
        let seed = match &pool {
            Some(Source::Named(pool)) => pool.spec.seed.as_deref(),
            _ => None,
        };
        let seed_repository = seed.and_then(|seed| {
            let (repository, _tag) = seed.rsplit_once(':')?;
            Some(repository.to_string())
        });
        let inputs_registry = self
            .inputs_registry
            .clone()
            .or_else(|| task.inputs_registry.clone())
            .or(seed_repository)
            .map(|location| {
                let records = Records::of(repo);
                // The tree will be scanned: its stat cache, and the seed's index, are read
                // while the inputs are collected.
                if let Some(records) = &records {
                    StatCache::preload(records.stat_cache.clone());
                }
                let preloaded_seed = seed.zip(records.as_ref()).and_then(|(seed, records)| {
                    SeedIndexes::in_cache(&records.cache_dir).preload(seed)
                });
                InputsRegistry {
                    location,
                    records,
                    preloaded_seed: preloaded_seed.map(Arc::new),
                }
            });
        let settings = Settings {
            image,
            inputs_registry,
            start_timeout: self
                .start_timeout
                .or(task.container.start_timeout)
                .unwrap_or(DEFAULT_START_TIMEOUT),
            pool,
            task,
            binary,
            tools: Vec::new(),
            keep,
        };
        Ok(K8sPlan {
            settings,
            cluster: self.cluster.clone(),
            early: cluster,
        })
    }
}

/// The image of the pool's template; a pool without one cannot give a run its pod.
fn pool_image(pool: &BuildrPool, namespace: &str) -> Result<String, K8sError> {
    pool.spec
        .container
        .image
        .clone()
        .ok_or_else(|| K8sError::PoolFailing {
            pool: pool.name_any(),
            namespace: namespace.to_string(),
            reason: "its `container` has no `image`".to_string(),
        })
}
