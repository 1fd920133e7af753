//! `buildr k8s`: the cluster side of the Kubernetes backend.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;

use crate::backend::binary::ExecutorBinary;
use crate::backend::k8s::pool::{controller, resource};
use crate::backend::k8s::{ClusterArgs, check, gc};

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
            eprintln!("buildr: filling the BuildrPools of namespace {namespace}");
            let mut events = std::pin::pin!(controller::run(client, namespace, binary));
            let mut last = std::collections::BTreeMap::new();
            while let Some(event) = events.next().await {
                match event {
                    // A reconcile that changed nothing is not news.
                    Ok(done) => {
                        let line = done.to_string();
                        if last.insert(done.pool.clone(), line.clone()).as_ref() != Some(&line) {
                            eprintln!("buildr: {line}");
                        }
                    }
                    Err(e) => eprintln!("buildr: {e}"),
                }
            }
        }
        K8sCommand::Crd => print!("{}", resource::crd_yaml()),
    }
    Ok(ExitCode::SUCCESS)
}
