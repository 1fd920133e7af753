//! The Kubernetes backend: each run gets a fresh pod and a NetworkPolicy in the target
//! namespace. The executor binary and then the inputs are copied in through the exec API, the
//! client reaches the executor through the API server's port-forward, and both objects are
//! deleted on every path out.
//!
//! - [`objects`]: the pod and the policy, as typed values
//! - [`startup`]: watching the pod until it runs, failing fast when it will not
//! - [`exec`]: commands in the pod with bulk stdin (the copies)
//! - [`copy`]: the executor binary and the inputs into the pod
//! - [`forward`]: a fresh port-forward for every connection the client makes
//! - [`binary`]: what the executor binary needs (architecture, C library) and its digest
//! - [`gc`]: `buildr k8s gc`, which removes what crashed clients left behind
//! - [`access`]: the permissions buildr uses, and a refusal put into words that name one
//! - [`check`]: `buildr k8s check`, whether a run can succeed in a namespace
//! - [`cluster`]: the kubeconfig, context and namespace flags shared by the commands
//! - [`reach`]: whether a failed request reached the API server, and why not

pub mod access;
pub mod binary;
pub mod check;
pub mod cluster;
pub mod copy;
pub mod exec;
pub mod forward;
pub mod gc;
pub mod objects;
pub mod reach;
pub mod startup;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{
    self,
    delete::{Error as DeleteError, delete_and_finalize},
};

use super::{Backend, Executor};
use crate::secret::Secret;
use crate::task::{Egress, InputFile, Task};
use crate::timeline::Timeline;
use crate::tools::{Tool, ToolError};
use binary::{BinaryError, ExecutorBinary};
pub use cluster::ClusterArgs;
use exec::ExecError;
use objects::PodPlan;

/// How long a pod may take to start when neither the task nor the command line says.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long deleting the run's objects may take before buildr gives up and says what is left.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// One run's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub image: String,
    pub task: Task,
    pub start_timeout: Duration,
    pub binary: ExecutorBinary,
    /// Sent in with the binary, first in the task's PATH.
    pub tools: Vec<Tool>,
    pub keep: bool,
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
            task,
            binary,
            tools: Vec::new(),
            keep,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(
        "no image to run the task in: give --image, or set `image` in the task's `container` block"
    )]
    NoImage,
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("cannot create {what} {namespace}/{name}: {}", api_message(error))]
    Create {
        what: &'static str,
        namespace: String,
        name: String,
        error: Box<kube::Error>,
    },
    #[error("cannot watch pod {pod}: {refusal}")]
    Watch { pod: String, refusal: String },
    #[error("pod {pod} cannot start: {reason}")]
    PodFailed { pod: String, reason: String },
    #[error(
        "pod {pod} did not start within {}: {last} (a longer --start-timeout may help)",
        humantime::format_duration(*waited)
    )]
    StartTimeout {
        pod: String,
        waited: Duration,
        last: String,
    },
    #[error(
        "the image `{image}` has no `tar`; buildr needs an image with `sh` and `tar`, which copy the executor in"
    )]
    NoTar { image: String },
    #[error("copying {what} into pod {pod} did not finish within {}s", waited.as_secs())]
    CopyTimeout {
        what: &'static str,
        pod: String,
        waited: Duration,
    },
    #[error("cannot make the run's secret")]
    Secret(#[source] std::io::Error),
    #[error("cannot copy {what} into pod {pod}")]
    Copy {
        what: &'static str,
        pod: String,
        #[source]
        source: ExecError,
    },
    #[error(
        "cannot {verb} {what} in namespace {namespace}: {}",
        api_message(error)
    )]
    Api {
        verb: &'static str,
        what: &'static str,
        namespace: String,
        error: Box<kube::Error>,
    },
}

/// The API server's own words for a failed request (kube's Display adds a debug dump); for a
/// refusal by the authorizer (403, RBAC), which permission is missing and what shows them all (see
/// [`access::Denial`]). Every error of the k8s path that carries a `kube::Error` shows it here.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if access::is_forbidden(error) => {
            access::Denial::from_message(&status.message).to_string()
        }
        kube::Error::Api(status) => status.message.clone(),
        other => match reach::not_sent(other) {
            Some(cause) => format!("cannot reach the API server: {cause}"),
            None => other.to_string(),
        },
    }
}

/// `text` with every run of whitespace (newlines included) made one space: the API server's and
/// the kubelet's messages span lines, buildr's errors take one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// A run in a fresh pod.
pub struct K8sBackend {
    settings: Settings,
    client: kube::Client,
    namespace: String,
    run_id: String,
    /// Set just before the pod is created, so that a start cut short still deletes it.
    pod: Option<RunPod>,
}

/// The run's pod, as far as buildr knows it exists.
struct RunPod {
    name: String,
    /// Its create was answered. Until then it may or may not exist: the request was cut short,
    /// or its connection broke after it went out.
    created: bool,
}

impl K8sBackend {
    /// A run in `namespace` of the cluster `client` talks to (see [`ClusterArgs::client`]).
    pub fn new(settings: Settings, client: kube::Client, namespace: String, run_id: &str) -> Self {
        Self {
            settings,
            client,
            namespace,
            run_id: run_id.to_string(),
            pod: None,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn plan(&self) -> PodPlan {
        let task = &self.settings.task;
        PodPlan {
            run_id: self.run_id.clone(),
            namespace: self.namespace.clone(),
            task_name: task.name.clone(),
            image: self.settings.image.clone(),
            container: task.container.clone(),
            task_timeout: task.timeout,
            arch: self.settings.binary.arch.clone(),
            keep: self.settings.keep,
            created_at: SystemTime::now(),
        }
    }

    fn create_error(&self, what: &'static str, name: &str) -> impl FnOnce(kube::Error) -> K8sError {
        let namespace = self.namespace.clone();
        let name = name.to_string();
        move |error| K8sError::Create {
            what,
            namespace,
            name,
            error: Box::new(error),
        }
    }

    /// Deletes the policy and the pod and waits until the pod is gone, retrying while the API
    /// server cannot be reached (it may be restarting) for up to [`DELETE_TIMEOUT`].
    async fn delete_objects(&self, pod: &str) {
        let deadline = Instant::now() + DELETE_TIMEOUT;
        let ns = &self.namespace;
        // The policy is owned by the pod and would go with it, but only once the garbage
        // collector gets to it: delete it now so that nothing of the run is left when we exit.
        let params = DeleteParams::default();
        let policies = self.policies();
        match until_reachable(deadline, || policies.delete(pod, &params)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) if access::is_forbidden(&e) => eprintln!(
                "buildr: NetworkPolicy {ns}/{pod} is left until its pod is gone (the pod owns it): \
                 cannot delete it: {}",
                api_message(&e)
            ),
            Err(e) => eprintln!(
                "buildr: cannot delete NetworkPolicy {ns}/{pod}: {}",
                api_message(&e)
            ),
        }
        let pods = self.pods();
        let deleted = until_reachable(deadline, || async {
            match delete_and_finalize(pods.clone(), pod, &params).await {
                Ok(()) => Ok(()),
                Err(DeleteError::Delete(e)) if is_not_found(&e) => Ok(()),
                Err(DeleteError::Delete(e)) => Err(e),
                // Deleted, but watching it go is refused: it goes all the same, and the run's
                // error already names the missing permission.
                Err(DeleteError::Await(wait::Error::ProbeFailed(e)))
                    if startup::refusal(&e).is_some() =>
                {
                    tracing::debug!("cannot watch pod {ns}/{pod} go: {e}");
                    Ok(())
                }
                Err(other) => Err(kube::Error::Service(other.into())),
            }
        });
        let left = |why: String| {
            eprintln!(
                "buildr: pod {ns}/{pod} is left behind (remove it with `kubectl -n {ns} delete pod \
                 {pod}`; `buildr k8s gc` removes it once it expires): {why}"
            )
        };
        match tokio::time::timeout(DELETE_TIMEOUT, deleted).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => left(format!("cannot delete it: {}", api_message(&e))),
            Err(_) => left(format!(
                "it was not gone after {}s",
                DELETE_TIMEOUT.as_secs()
            )),
        }
    }

    /// Whether the pod whose create got no answer exists after all; when that cannot be found
    /// out either, says that it may be left behind.
    async fn exists(&self, pod: &str) -> bool {
        let ns = &self.namespace;
        let deadline = Instant::now() + DELETE_TIMEOUT;
        let pods = self.pods();
        match until_reachable(deadline, || pods.get_opt(pod)).await {
            Ok(found) => found.is_some(),
            Err(e) => {
                eprintln!(
                    "buildr: pod {ns}/{pod} may be left behind (its create got no answer, and \
                     whether it exists cannot be asked: {}); `buildr k8s gc` removes it once it \
                     expires",
                    api_message(&e)
                );
                false
            }
        }
    }
}

/// Runs `call` until the API server answers it (a refusal is an answer) or `deadline` passes.
async fn until_reachable<T, F, Fut>(deadline: Instant, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match call().await {
            Err(e) if !matches!(e, kube::Error::Api(_)) && Instant::now() + delay < deadline => {
                tracing::debug!("the API server is not reachable ({e}); retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
}

impl Backend for K8sBackend {
    type Error = K8sError;

    async fn start(
        &mut self,
        inputs: &[InputFile],
        timeline: &mut Timeline,
    ) -> Result<Executor, K8sError> {
        let mut step = Instant::now();
        let plan = self.plan();
        let name = plan.name();
        self.pod = Some(RunPod {
            name: name.clone(),
            created: false,
        });
        let pods = self.pods();
        let pod = match pods.create(&PostParams::default(), &plan.pod()).await {
            Ok(pod) => pod,
            Err(e) => {
                // A refusal, or a request that never left, created nothing: nothing to delete,
                // and nothing to claim is left behind.
                let refused = matches!(&e, kube::Error::Api(status) if status.code < 500);
                if refused || reach::not_sent(&e).is_some() {
                    self.pod = None;
                }
                return Err(self.create_error("pod", &name)(e));
            }
        };
        if let Some(run_pod) = &mut self.pod {
            run_pod.created = true;
        }
        let uid = pod.metadata.uid.unwrap_or_default();
        self.policies()
            .create(&PostParams::default(), &plan.network_policy(&uid))
            .await
            .map_err(self.create_error("NetworkPolicy", &name))?;
        timeline.record("create pod and policy", &mut step);

        let image = &self.settings.image;
        startup::wait_running(&pods, &name, image, self.settings.start_timeout, timeline).await?;
        let mut step = Instant::now();
        let secret = Secret::generate().map_err(K8sError::Secret)?;
        copy::binary(
            &pods,
            &self.client,
            &name,
            image,
            &self.settings.binary,
            &self.settings.tools,
            &secret,
        )
        .await?;
        let copied = if self.settings.tools.is_empty() {
            "copy binary"
        } else {
            "copy binary and tools"
        };
        timeline.record(copied, &mut step);
        copy::inputs(&pods, &self.client, &name, inputs).await?;
        timeline.record("copy inputs", &mut step);
        Ok(Executor {
            channel: forward::channel(pods, name),
            workspace_root: objects::WORKSPACE_DIR.to_string(),
            secret: Some(secret),
        })
    }

    async fn lost(&mut self) -> String {
        match self.pod.as_ref().map(|pod| pod.name.clone()) {
            Some(pod) => startup::wait_stopped(&self.pods(), &pod).await,
            None => std::future::pending().await,
        }
    }

    async fn clean_up(&mut self) {
        let Some(RunPod { name: pod, created }) = self.pod.take() else {
            return;
        };
        if !created && !self.exists(&pod).await {
            return;
        }
        if self.settings.keep {
            let ns = &self.namespace;
            eprintln!(
                "buildr: keeping pod {ns}/{pod} (and its NetworkPolicy); look inside with \
                 `kubectl -n {ns} exec -it {pod} -- sh`, remove it with `kubectl -n {ns} delete pod {pod}`"
            );
            return;
        }
        self.delete_objects(&pod).await;
    }
}
