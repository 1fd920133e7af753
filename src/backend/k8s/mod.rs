//! The Kubernetes backend: each run gets a fresh pod and a NetworkPolicy in the target
//! namespace. The executor binary and then the inputs are copied in through the exec API, the
//! client reaches the executor through the API server's port-forward, and both objects are
//! deleted on every path out.
//!
//! This file is one run's life in the cluster ([`K8sBackend`]: create, start, clean up), given
//! plain [`Settings`] that the CLI resolves; what is left after the clean-up is returned as
//! [`Leftover`]s, never printed here. The rest is in modules of their own:
//!
//! - [`api`]: the API server's failures in buildr's words, and the one backoff of every retry
//! - [`labels`]: the names of the labels and annotations on every object buildr creates
//! - [`objects`]: the pod and the policy, as typed values
//! - [`launch`]: the pod's file layout, and its main process that becomes the executor
//! - [`startup`]: watching the pod until it runs, failing fast when it will not
//! - [`exec`]: commands in the pod with bulk stdin (the copies)
//! - [`copy`]: the executor binary and the inputs into the pod
//! - [`by_content`]: the inputs by content: pushed for the pod to pull, or the difference from
//!   a seeded pod's seed
//! - [`leftover`]: what a run leaves in the cluster (kept, or not deleted and why)
//! - [`forward`]: a fresh port-forward for every connection the client makes
//! - [`kubeconfig`]: the kubeconfig, context and namespace flags shared by the commands
//! - [`registry`]: the inputs registry as the pod reaches it (inputs by content)
//! - [`reach`]: whether a failed request reached the API server, and why not
//! - [`pool`]: warm pods kept ready by `buildr k8s pool-controller`, which a run takes
//!
//! The cluster's administration (`buildr k8s check`, `gc`, the permissions, the pool
//! controller) is [`crate::cluster`]'s.

pub mod api;
pub mod by_content;
pub mod copy;
pub mod exec;
pub mod forward;
pub mod kubeconfig;
pub mod labels;
pub mod launch;
pub mod leftover;
pub mod objects;
pub mod pool;
pub mod reach;
pub mod registry;
pub mod startup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use super::binary::{BinaryError, ExecutorBinary};
use super::{Backend, StartedExecutor};
use crate::backend::upload::{self, Payload, Pulled, UploadError};
use crate::client;
use crate::secret::Secret;
use crate::snapshot::delta::PreloadedSeed;
use crate::snapshot::{Credentials, known::Records};
use crate::task::{InputFile, Task};
use crate::timeline::Timeline;
use crate::tools::Tool;
use api::{api_message, is_not_found, until_reachable};
use by_content::ToPod;
use kube::ResourceExt;
use labels::SEED_ANNOTATION;
// `api` words refusals by the permissions table, which is the cluster's.
use crate::cluster::access;
use exec::ExecError;
pub use kubeconfig::ClusterArgs;
use leftover::{Leftover, NotDeleted};
use objects::PodPlan;
use pool::take::Taken;

/// How long a pod may take to start when neither the task nor the command line says.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long deleting the run's objects may take before buildr gives up and says what is left.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// One run's settings, resolved from the task and the command line (`cli::run_k8s`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The pod's image: the template's of the pool the run names, else `--image` or the
    /// task's `container.image`. The cache key and the timeline are this pod's.
    pub image: String,
    /// The task; its `container` is the pod's settings: for a run that names a pool, that
    /// pool's template with the run's own egress, start timeout and deadline on top
    /// (`pool::run_container`).
    pub task: Task,
    pub start_timeout: Duration,
    pub binary: ExecutorBinary,
    /// Sent in with the binary, first in the task's PATH.
    pub tools: Vec<Tool>,
    pub keep: bool,
    /// Where to look for a warm pod: the pool the run names (then `image` and the task's
    /// `container` are its template already), or one whose template matches the task's
    /// settings; none when the pool the run names does not exist.
    pub pool: Option<pool::take::Source>,
    /// Where the inputs go by content, for the pod to pull; none: they are copied whole.
    pub inputs_registry: Option<InputsRegistry>,
}

/// The registry a run sends its inputs to by content (`--inputs-registry`, the task's
/// `inputs_registry`), and this machine's records of what it holds.
#[derive(Debug, Clone)]
pub struct InputsRegistry {
    /// `REGISTRY/REPOSITORY`.
    pub location: String,
    pub records: Option<Records>,
    /// The index of the seed the run's pool names, being read
    /// ([`crate::snapshot::delta::SeedIndexes::preload`]).
    pub preloaded_seed: Option<Arc<PreloadedSeed>>,
}

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(
        "no image to run the task in: give --image or --pool, or set `image` or `pool` in the task's `container` block"
    )]
    NoImage,
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error("cannot create pod {namespace}/{name}: {}", api_message(error))]
    CreatePod {
        namespace: String,
        name: String,
        error: Box<kube::Error>,
    },
    #[error(
        "cannot create NetworkPolicy {namespace}/{name}: {}",
        api_message(error)
    )]
    CreatePolicy {
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
    #[error(transparent)]
    Upload(#[from] Box<UploadError<ExecError>>),
    #[error(
        "there is no BuildrPool {pool} in namespace {namespace}, and no image to start a pod of its own (list the pools with `kubectl get buildrpools -n {namespace}`, or give --image)"
    )]
    NoPool { pool: String, namespace: String },
    #[error("the warm pods of BuildrPool {namespace}/{pool} cannot start: {reason}")]
    PoolFailing {
        pool: String,
        namespace: String,
        reason: String,
    },
    #[error(transparent)]
    Take(#[from] pool::take::TakeError),
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

/// The pod a run got.
struct TakenPod {
    name: String,
    /// A warm pod's uid, for its policy (a pod of the run's own has its policy already).
    warm_uid: Option<String>,
    /// The seed snapshot a warm pod's workspace holds (`REGISTRY/REPOSITORY@sha256:…`).
    seed: Option<String>,
}

/// The run's pod, as far as buildr knows it exists.
struct RunPod {
    name: String,
    /// The run's NetworkPolicy, named after the run (a warm pod's name is the pool's choice).
    policy: String,
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
        let (image, arch) = (&self.settings.image, &self.settings.binary.arch);
        PodPlan {
            task_name: task.name.clone(),
            container: task.container.clone(),
            task_timeout: task.timeout,
            keep: self.settings.keep,
            ..PodPlan::new(&self.run_id, &self.namespace, image, arch)
        }
    }

    fn create_pod_error(&self, name: &str, error: kube::Error) -> K8sError {
        K8sError::CreatePod {
            namespace: self.namespace.clone(),
            name: name.to_string(),
            error: Box::new(error),
        }
    }

    fn create_policy_error(&self, name: &str) -> impl FnOnce(kube::Error) -> K8sError {
        let namespace = self.namespace.clone();
        let name = name.to_string();
        move |error| K8sError::CreatePolicy {
            namespace,
            name,
            error: Box::new(error),
        }
    }

    /// Creates the run's own pod and its policy, and waits for the pod to run.
    async fn start_cold(
        &mut self,
        plan: &PodPlan,
        timeline: &mut Timeline,
    ) -> Result<(), K8sError> {
        let mut step = Instant::now();
        let name = plan.name();
        self.pod = Some(RunPod {
            name: name.clone(),
            policy: name.clone(),
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
                return Err(self.create_pod_error(&name, e));
            }
        };
        if let Some(run_pod) = &mut self.pod {
            run_pod.created = true;
        }
        let uid = pod.metadata.uid.unwrap_or_default();
        self.policies()
            .create(&PostParams::default(), &plan.network_policy(&name, &uid))
            .await
            .map_err(self.create_policy_error(&name))?;
        timeline.record("create pod and policy", &mut step);
        let image = &self.settings.image;
        startup::wait_running(&pods, &name, image, self.settings.start_timeout, timeline).await?;
        Ok(())
    }

    /// Takes a warm pod (from the pool the run names, or one whose template matches), or
    /// starts a pod of the run's own; says which on `own_pod` as soon as it is known.
    async fn take_or_start(
        &mut self,
        plan: &PodPlan,
        timeline: &mut Timeline,
        own_pod: tokio::sync::watch::Sender<Option<bool>>,
    ) -> Result<TakenPod, K8sError> {
        let mut step = Instant::now();
        // A kept pod's main process must outlive its executor: a warm pod's does not.
        let taken = match &self.settings.pool {
            _ if self.settings.keep => Taken::Cold("--keep needs a pod of its own".to_string()),
            Some(source) => pool::take::take(&self.client, plan, source).await?,
            None => Taken::Cold("the pool it names does not exist".to_string()),
        };
        match taken {
            Taken::Warm { pod, pool } => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                tracing::info!("took warm pod {name} of pool {pool}");
                self.pod = Some(RunPod {
                    name: name.clone(),
                    policy: plan.name(),
                    created: true,
                });
                timeline.record("take a warm pod", &mut step);
                own_pod.send_replace(Some(false));
                // Its binary is in: the run sends its secret, tools and inputs, and its policy
                // goes up meanwhile (the pool's deny-all holds the pod until then).
                let seed = pod.annotations().get(SEED_ANNOTATION).cloned();
                let uid = pod.metadata.uid.unwrap_or_default();
                Ok(TakenPod {
                    name,
                    warm_uid: Some(uid),
                    seed,
                })
            }
            Taken::Cold(why) => {
                // Asked for by name, a warm pod missed is worth a line; else -v says why.
                let named = matches!(&self.settings.pool, Some(pool::take::Source::Named(_)));
                if named && !self.settings.keep {
                    eprintln!("buildr: {why}: starting a pod of its own from its template");
                } else {
                    tracing::info!("no warm pod ({why}): starting a pod of its own");
                }
                own_pod.send_replace(Some(true));
                self.start_cold(plan, timeline).await?;
                Ok(TakenPod {
                    name: plan.name(),
                    warm_uid: None,
                    seed: None,
                })
            }
        }
    }

    /// Deletes the policy and the pod, both at once, and returns as soon as the API server has
    /// accepted both deletions: the run is over for the user then. Nothing is waited for after
    /// that: the executor exits once its result is acknowledged, so the pod is already finished
    /// and goes by itself within moments (the policy too, were its own deletion lost: the pod
    /// owns it). Retries while the API server cannot be reached (it may be restarting) for up
    /// to [`DELETE_TIMEOUT`], and returns what is left when a deletion is refused or never
    /// accepted.
    async fn delete_objects(&self, pod: &str, policy: &str) -> Vec<Leftover> {
        let (policy_deletion, pod_deletion) = tokio::join!(
            delete_accepted(self.policies(), policy, DELETE_TIMEOUT),
            delete_accepted(self.pods(), pod, DELETE_TIMEOUT),
        );
        let policy = policy_deletion.err().map(|why| Leftover::Policy {
            namespace: self.namespace.clone(),
            name: policy.to_string(),
            why,
        });
        let pod = pod_deletion.err().map(|why| Leftover::Pod {
            namespace: self.namespace.clone(),
            pod: pod.to_string(),
            why,
        });
        policy.into_iter().chain(pod).collect()
    }

    /// Whether the pod whose create got no answer exists after all: `Ok(false)` when it does
    /// not, and when that cannot be found out either, what may be left behind.
    async fn exists(&self, pod: &str) -> Result<bool, Leftover> {
        let deadline = Instant::now() + DELETE_TIMEOUT;
        let pods = self.pods();
        match until_reachable(deadline, || pods.get_opt(pod)).await {
            Ok(found) => Ok(found.is_some()),
            Err(why) => Err(Leftover::MaybePod {
                namespace: self.namespace.clone(),
                pod: pod.to_string(),
                why,
            }),
        }
    }
}

/// The route to the inputs registry; none, with one warning line, when it cannot be found
/// (the inputs are then copied whole).
async fn route_or_warn(location: &str) -> Option<registry::RegistryRoute> {
    match registry::route(location).await {
        Ok(route) => Some(route),
        Err(why) => {
            eprintln!(
                "buildr: warning: the inputs registry {location}: {why}; copying the inputs whole"
            );
            None
        }
    }
}

/// Deletes `name` and returns once the API server has accepted it (or it is already gone),
/// without waiting for it to go; retries while the API server cannot be reached, for up to
/// `timeout`.
async fn delete_accepted<K>(api: Api<K>, name: &str, timeout: Duration) -> Result<(), NotDeleted>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams::background();
    let deadline = Instant::now() + timeout;
    let delete = until_reachable(deadline, || api.delete(name, &params));
    // A request that hangs must not hold the run's end past the deadline either.
    match tokio::time::timeout_at(deadline.into(), delete).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if is_not_found(&e) => Ok(()),
        Ok(Err(e)) => Err(NotDeleted::Failed(e)),
        Err(_) => Err(NotDeleted::NoAnswer { waited: timeout }),
    }
}

impl Backend for K8sBackend {
    type Error = K8sError;
    type Leftover = Leftover;

    async fn start(
        &mut self,
        inputs: &Arc<[InputFile]>,
        secret: &Secret,
        timeline: &mut Timeline,
    ) -> Result<StartedExecutor, K8sError> {
        let mut plan = self.plan();
        let registry = self.settings.inputs_registry.clone();
        plan.registry = match &registry {
            Some(registry) => route_or_warn(&registry.location).await,
            None => None,
        };
        // The snapshot goes up, or for a pool's seeded pod the tree is scanned, while the pod is
        // taken or starts.
        let seeded = self
            .settings
            .pool
            .as_ref()
            .is_some_and(pool::take::Source::seeded);
        let (own_pod, own_pod_known) = tokio::sync::watch::channel(None);
        let prepare = async {
            match (&registry, &plan.registry) {
                (Some(registry), Some(_)) => {
                    let own_pod = seeded.then_some(own_pod_known);
                    by_content::prepare(registry, inputs, own_pod).await
                }
                _ => None,
            }
        };
        let take = async {
            let taken = self.take_or_start(&plan, timeline, own_pod).await;
            let step = Instant::now();
            // A seeded pod's seed index is read while the tree is still being scanned.
            let seed = taken.as_ref().ok().and_then(|taken| taken.seed.as_deref());
            let seed_index = match (&registry, seed) {
                (Some(registry), Some(seed)) if seeded => {
                    by_content::seed_index(registry, seed).await
                }
                _ => None,
            };
            // The difference will most likely go to this pod: its session opens now, and its
            // set-up runs alongside the rest of the scan. A taken pod is a warm one, whose
            // secret goes in this session.
            let onto_seed = match (&taken, &seed_index) {
                (Ok(taken), Some(_)) => Some(copy::OntoSeed::open(
                    self.pods(),
                    self.client.clone(),
                    taken.name.clone(),
                    self.settings.image.clone(),
                    Some(secret.clone()),
                )),
                _ => None,
            };
            (taken, step, seed_index, onto_seed)
        };
        let ((taken, mut step, seed_index, onto_seed), prepared) = tokio::join!(take, prepare);
        let TakenPod {
            name,
            warm_uid,
            seed,
        } = taken?;
        let to_pod = match (&registry, prepared) {
            (Some(registry), Some(prepared)) => {
                by_content::for_pod(registry, inputs, prepared, seed_index).await
            }
            _ => None,
        };
        if let Some(to_pod) = &to_pod {
            // What the push or the diff took beyond the pod's take or start, which it ran
            // alongside.
            timeline.record(&to_pod.phase(), &mut step);
        }
        let pods = self.pods();
        let mut step = Instant::now();
        let image = &self.settings.image;
        let tools = &self.settings.tools;
        let send_binary = warm_uid.is_none();
        let policy = async {
            let Some(uid) = &warm_uid else {
                return Ok(());
            };
            self.policies()
                .create(&PostParams::default(), &plan.network_policy(&name, uid))
                .await
                .map(|_| ())
                .map_err(self.create_policy_error(&plan.name()))
        };
        // At once: the inputs' session waits in the pod for the binary, which unpacks them. A
        // warm pod has its binary: its secret goes with the inputs, and a copy is needed only
        // for tools.
        let copy = async {
            if !send_binary && tools.is_empty() {
                return Ok(());
            }
            let payload = Payload {
                binary: send_binary,
                tools,
                secret: send_binary.then_some(secret),
            };
            copy::binary(
                &pods,
                &self.client,
                &name,
                image,
                &self.settings.binary,
                payload,
            )
            .await
        };
        let secret_with_inputs = (!send_binary).then_some(secret);
        let (pushed, difference) = match to_pod {
            Some(ToPod::Pushed(pushed)) => (Some(pushed), None),
            Some(ToPod::Difference(difference)) => (None, Some(difference)),
            None => (None, None),
        };
        // A seeded pod's session, and the difference it is to send (none: it is cancelled).
        let onto_seed = onto_seed.map(|onto| (onto, difference));
        let to_pull = pushed.as_ref().zip(plan.registry.as_ref());
        let difference_sent = onto_seed.as_ref().is_some_and(|(_, d)| d.is_some());
        let seed_kept = to_pull.is_some() || difference_sent;
        let credentials =
            to_pull.and_then(|(pushed, _)| Credentials::of(&pushed.reference).ok().flatten());
        let inputs_copy = async {
            let mut secret = secret_with_inputs;
            if let Some((onto_seed, difference)) = onto_seed {
                // The session took the secret, whatever it is then sent.
                secret = None;
                match difference {
                    None => onto_seed.cancel().await?,
                    Some(difference) => {
                        match onto_seed.send((difference.delta, difference.packs)).await? {
                            Pulled::Done => {
                                return Ok((
                                    Some(difference.tree),
                                    Some("the difference onto the pod's seed"),
                                ));
                            }
                            // The workspace was left empty.
                            Pulled::Unreachable(why) => eprintln!(
                                "buildr: warning: pod {name} cannot take the inputs' difference ({why}); copying them whole"
                            ),
                        }
                    }
                }
            }
            if let Some((pushed, route)) = to_pull {
                let from = copy::PodPull {
                    snapshot: &pushed.reference,
                    route,
                    // What the push used: the pod pulls as the user.
                    credentials: credentials.as_ref(),
                    seeded: match seed {
                        Some(_) => copy::Seeded::Onto,
                        None => copy::Seeded::No,
                    },
                };
                let pull = copy::pull(&pods, &self.client, &name, image, from, secret);
                match pull.await? {
                    Pulled::Done if seed.is_some() => {
                        return Ok((Some(pushed.tree), Some("pulled onto the pod's seed")));
                    }
                    Pulled::Done => return Ok((Some(pushed.tree), Some("pulled"))),
                    // The pull left the workspace empty, a seeded one too.
                    Pulled::Unreachable(why) => {
                        eprintln!(
                            "buildr: warning: pod {name} cannot pull the inputs from {} ({why}); copying them whole",
                            route.registry
                        );
                        // Taken before the pull began.
                        secret = None;
                    }
                }
            }
            // A pull or a difference that failed has emptied the workspace already.
            if let Some(seed) = seed.as_ref().filter(|_| !seed_kept) {
                tracing::info!("the inputs are copied whole: the pod's seed {seed} is emptied");
                copy::clear_workspace(&pods, &self.client, &name, image).await?;
            }
            let copied = copy::inputs(&pods, &self.client, &name, image, inputs, secret).await?;
            Ok::<_, K8sError>((copied, None))
        };
        // A warm pod waits under its pool's deny-all: a pull needs the run's policy, which
        // lets it reach the registry, in place first (a seeded pool's policy lets it already).
        let pull_after_policy = warm_uid.is_some() && to_pull.is_some() && seed.is_none();
        let policy_and_inputs = async {
            if pull_after_policy {
                policy.await?;
                return Ok(((), inputs_copy.await?));
            }
            let (policy, inputs) = tokio::join!(policy, inputs_copy);
            Ok::<_, K8sError>((policy?, inputs?))
        };
        let copies = async {
            let (binary, policy_and_inputs) = tokio::join!(copy, policy_and_inputs);
            // When the binary's copy fails, the inputs' stream, which waits for it, stops and
            // fails too, sometimes first: the binary's error is the cause, so it is the one
            // reported (not the first to arrive).
            binary?;
            let (policy, inputs) = policy_and_inputs?;
            Ok::<_, K8sError>((policy, (), inputs))
        };
        // The way to the executor is opened while the inputs travel: it listens once its binary
        // and secret are in, which is before the inputs are (a warm pod has the binary and
        // gets the secret first in the inputs' stream). No task starts before the copies end;
        // a connection not up by then is the client's own readiness check to wait for.
        let channel = forward::channel(pods.clone(), name.clone());
        let (_, _, (inputs_sent, by_content_how)) = {
            let connect = client::connect::wait_ready(&channel, Some(secret), upload::COPY_TIMEOUT);
            tokio::pin!(copies, connect);
            tokio::select! {
                copied = &mut copies => copied?,
                _ = &mut connect => copies.await?,
            }
        };
        let copied = match (send_binary, tools.is_empty()) {
            (true, true) => "copy binary and inputs",
            (true, false) => "copy binary, tools and inputs",
            (false, true) => "create policy, copy secret and inputs",
            (false, false) => "create policy, copy secret, tools and inputs",
        };
        match by_content_how {
            Some(how) => timeline.record(&format!("{copied}, by content: {how}"), &mut step),
            None => timeline.record(copied, &mut step),
        }
        Ok(StartedExecutor {
            channel,
            workspace_root: launch::WORKSPACE_DIR.to_string(),
            inputs_sent,
        })
    }

    async fn lost(&mut self) -> String {
        match self.pod.as_ref().map(|pod| pod.name.clone()) {
            Some(pod) => startup::wait_stopped(&self.pods(), &pod).await,
            None => std::future::pending().await,
        }
    }

    async fn clean_up(&mut self) -> Vec<Leftover> {
        let Some(RunPod {
            name: pod,
            policy,
            created,
        }) = self.pod.take()
        else {
            return Vec::new();
        };
        if !created {
            match self.exists(&pod).await {
                Ok(true) => {}
                Ok(false) => return Vec::new(),
                Err(unknown) => return vec![unknown],
            }
        }
        if self.settings.keep {
            return vec![Leftover::Kept {
                namespace: self.namespace.clone(),
                pod,
            }];
        }
        self.delete_objects(&pod, &policy).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods_at(server: &str) -> Api<Pod> {
        let config = kube::Config::new(server.parse().unwrap());
        Api::namespaced(kube::Client::try_from(config).unwrap(), "builds")
    }

    #[tokio::test]
    async fn a_deletion_that_gets_no_answer_is_reported_at_the_deadline() {
        // Takes connections and never answers, as an API server that hangs.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", silent.local_addr().unwrap());
        let deletion = delete_accepted(pods_at(&server), "buildr-x", Duration::from_millis(500));
        let result = tokio::time::timeout(Duration::from_secs(5), deletion)
            .await
            .expect("the deadline ends the wait");
        let reason = result.unwrap_err().to_string();
        assert_eq!(reason, "its deletion got no answer within 500ms");
    }

    #[tokio::test]
    async fn a_deletion_while_the_api_server_is_down_is_retried_then_reported() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", gone.local_addr().unwrap());
        drop(gone);
        let started = Instant::now();
        let timeout = Duration::from_millis(700);
        let result = delete_accepted(pods_at(&server), "buildr-x", timeout).await;
        let reason = result.unwrap_err().to_string();
        assert!(
            reason.starts_with("cannot delete it: cannot reach the API server"),
            "{reason}"
        );
        // Tried more than once: a restarting API server gets its chance.
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
