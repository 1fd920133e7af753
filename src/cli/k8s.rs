//! `buildr k8s`: the cluster side of the Kubernetes backend.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;

use crate::backend::binary::ExecutorBinary;
use crate::backend::k8s::ClusterArgs;
use crate::backend::k8s::pool::resource;
use crate::cluster::{check, controller, gc};

/// Work with the objects buildr creates in a cluster.
#[derive(Debug, clap::Subcommand)]
pub enum K8sCommand {
    /// Check whether `buildr run --backend k8s` (and `buildr k8s gc`) can succeed in a
    /// namespace: asks the API server about every permission they use, and has the namespace's
    /// admission (Pod Security, LimitRange, quotas, policies) judge a dry run of the pod a run
    /// creates. Prints a table, with the Role rule for each missing permission; exit status 0
    /// when a run can succeed, else 1. Creates nothing.
    Check {
        #[command(flatten)]
        cluster: ClusterArgs,

        /// The image to put in the checked pod, for policies that judge images (default: a
        /// placeholder).
        #[arg(long)]
        image: Option<String>,

        /// The BuildrPool a run would take its pod from (`--pool`, `container.pool`): checked to
        /// exist and to have pods that start. Without it, every pool of the namespace is listed.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Delete the pods and NetworkPolicies of runs that are over (their expiry has passed, or
    /// they are older than --older-than). Objects that are not buildr's are never touched.
    Gc {
        #[command(flatten)]
        cluster: ClusterArgs,

        /// Also delete buildr's objects older than this (e.g. `2h`), expired or not.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Keep the BuildrPools of a namespace filled with warm pods (see README, Warm pools):
    /// runs until SIGTERM or Ctrl-C, in the cluster (the chart's `pool.enabled`) or outside it
    /// with a kubeconfig. Logs one line per change to stderr.
    PoolController {
        #[command(flatten)]
        cluster: ClusterArgs,

        /// The static executor copied into the warm pods [default: `buildr-executor` beside
        /// this binary, else this binary].
        #[arg(long)]
        executor_binary: Option<PathBuf>,
    },
    /// Print the BuildrPool CustomResourceDefinition (YAML), as charts/buildr/crds/ holds it.
    Crd,
}

impl K8sCommand {
    /// Whether it is made to run in the chart's image, which has no CA certificates (the pool
    /// controller, which asks the seeds' registries for their tags).
    pub fn runs_in_a_bare_image(&self) -> bool {
        matches!(self, Self::PoolController { .. })
    }
}

pub async fn run(command: K8sCommand) -> anyhow::Result<ExitCode> {
    match command {
        K8sCommand::Check {
            cluster,
            image,
            pool,
        } => {
            let (client, namespace) = cluster.client().await?;
            let image = image.as_deref().unwrap_or(check::PLACEHOLDER_IMAGE);
            let report = check::check(&client, &namespace, image, pool.as_deref()).await;
            print!("{}", report.table());
            eprintln!("buildr: {}", report.summary());
            if !report.ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        K8sCommand::Gc {
            cluster,
            older_than,
        } => {
            let (client, namespace) = cluster.client().await?;
            let collected = gc::collect(client, &namespace, older_than).await?;
            for object in &collected.deleted {
                println!("deleted {namespace}/{object}");
            }
            eprintln!(
                "buildr: {} object{} deleted in namespace {namespace}",
                collected.deleted.len(),
                if collected.deleted.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
        }
        K8sCommand::PoolController {
            cluster,
            executor_binary,
        } => {
            let binary = match executor_binary {
                Some(binary) => binary,
                None => crate::backend::binary::default_executor()
                    .context("cannot find the buildr binary")?,
            };
            let binary = ExecutorBinary::inspect(&binary)?;
            let (client, namespace) = cluster.client().await?;
            let signal = super::executor::shutdown_signal();
            eprintln!("buildr: filling the BuildrPools of namespace {namespace}");
            pool_controller(client, namespace, binary, signal).await;
        }
        K8sCommand::Crd => print!("{}", resource::crd_yaml()),
    }
    Ok(ExitCode::SUCCESS)
}

/// How long the reconciles running when the controller is told to stop may take to finish.
/// Longer ones are cut short: the next controller takes up what they left, since every
/// reconcile starts from what is in the cluster.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Runs the pool controller, logging one line per change, until `signal`; then lets running
/// reconciles finish for up to [`STOP_GRACE`] and says it stopped, in one line.
async fn pool_controller(
    client: kube::Client,
    namespace: String,
    binary: ExecutorBinary,
    signal: impl Future<Output = ()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let mut events = std::pin::pin!(controller::run(client, namespace, binary, stopped));
    let mut signal = std::pin::pin!(signal);
    let mut stop = Some(stop);
    // Armed by the signal.
    let mut grace = std::pin::pin!(tokio::time::sleep(STOP_GRACE));
    let mut last = std::collections::BTreeMap::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                // A reconcile that changed nothing is not news.
                Some(Ok(done)) => {
                    let line = done.to_string();
                    if last.insert(done.pool.clone(), line.clone()).as_ref() != Some(&line) {
                        eprintln!("buildr: {line}");
                    }
                }
                Some(Err(e)) => eprintln!("buildr: {e}"),
                None => break,
            },
            () = &mut signal, if stop.is_some() => {
                let _ = stop.take().map(|stop| stop.send(()));
                grace.as_mut().reset(tokio::time::Instant::now() + STOP_GRACE);
            }
            () = &mut grace, if stop.is_none() => break,
        }
    }
    eprintln!("buildr: the pool controller stopped");
}
