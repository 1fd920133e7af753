//! `buildr run`'s options for the k8s backend, and their resolution against the task into the
//! backend's [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::binary::ExecutorBinary;
use crate::backend::k8s::{ClusterArgs, DEFAULT_START_TIMEOUT, K8sError, Settings};
use crate::task::{Egress, Task};

/// `buildr run` options for the k8s backend.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Container image for the k8s backend (overrides the task's `container.image`).
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
    /// `container.pool`). Without it, a pool whose template equals the task's pod settings is
    /// used if there is one; else the run starts a pod of its own.
    #[arg(long)]
    pub pool: Option<String>,
}

impl K8sArgs {
    /// The image the task runs in: `--image`, else the task's `container.image`.
    pub fn image(&self, task: &Task) -> Result<String, K8sError> {
        self.image
            .clone()
            .or_else(|| task.container.image.clone())
            .ok_or(K8sError::NoImage)
    }

    /// Resolves the options against the task; `binary` is the buildr that will run in the pod.
    /// Warns when that binary is dynamically linked: it runs only in some images.
    pub fn settings(&self, task: &Task, binary: PathBuf, keep: bool) -> Result<Settings, K8sError> {
        let image = self.image(task)?;
        let binary = ExecutorBinary::inspect(&binary)?;
        if let Some(interpreter) = &binary.interpreter {
            eprintln!(
                "buildr: warning: the executor binary {} is dynamically linked (it needs \
                 {interpreter}) and runs only in images with a compatible glibc; `cargo dist` \
                 builds a static one (see README, Install)",
                binary.path.display()
            );
        }
        let mut task = task.clone();
        if let Some(egress) = self.egress {
            task.container.egress = Some(egress);
        }
        Ok(Settings {
            image,
            start_timeout: self
                .start_timeout
                .or(task.container.start_timeout)
                .unwrap_or(DEFAULT_START_TIMEOUT),
            pool: self.pool.clone().or_else(|| task.container.pool.clone()),
            task,
            binary,
            tools: Vec::new(),
            keep,
        })
    }
}
