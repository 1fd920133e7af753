//! `buildr k8s`: the cluster side of the Kubernetes backend.

use std::process::ExitCode;
use std::time::Duration;

use crate::backend::k8s::{ClusterArgs, gc};

/// Work with the objects buildr creates in a cluster.
#[derive(Debug, clap::Subcommand)]
pub enum K8sCommand {
    /// Delete the pods and NetworkPolicies of runs that are over (their expiry has passed, or
    /// they are older than --older-than). Objects that are not buildr's are never touched.
    Gc {
        #[command(flatten)]
        cluster: ClusterArgs,

        /// Also delete buildr's objects older than this (e.g. `2h`), expired or not.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
}

pub async fn run(command: K8sCommand) -> anyhow::Result<ExitCode> {
    match command {
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
    }
    Ok(ExitCode::SUCCESS)
}
