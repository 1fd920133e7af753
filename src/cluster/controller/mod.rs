//! `buildr k8s pool-controller`: keeps every `BuildrPool` of a namespace filled. kube's
//! `runtime::Controller` runs [`reconcile`] for a pool whenever it or one of its pods changes
//! (and when its oldest ready pod is due for replacement), one pool at a time each.
//!
//! A reconcile reads the pool's pods from the API server (not a cache), so it counts what
//! exists, whatever an earlier controller did before it was killed: it deletes what is spent
//! (ended, idle past `maxIdle`, of an older template, beyond `size`), copies the binary into
//! started pods and marks them ready, creates only the difference to `size`, and writes the
//! counts and the first reason a pod cannot start into the pool's status. Creates are awaited
//! one reconcile at a time, so a restart neither loses nor doubles a pod.

//! `buildr k8s pool-controller`: keeps every `BuildrPool` of a namespace filled. kube's
//! `runtime::Controller` runs [`reconcile`] for a pool whenever it or one of its pods changes
//! (and when its oldest ready pod is due for replacement), one pool at a time each.
//!
//! A reconcile observes, decides, acts. It reads the pool's pods from the API server (not a
//! cache), so it counts what exists, whatever an earlier controller did before it was killed;
//! [`decide`] sorts them without I/O; then it deletes what is spent (ended, idle past `maxIdle`,
//! of an older template, beyond `size`), copies the binary into started pods and marks them
//! ready, creates only the difference to `size` (a taken pod's replacement a moment after the
//! take, [`REFILL_AFTER_TAKE`]), and writes the counts and the first reason a
//! pod cannot start into the pool's status. Creates are awaited one reconcile at a time, so a
//! restart neither loses nor doubles a pod. A pool in trouble (a failed reconcile, a pod that
//! cannot start or ends unused) waits longer each time in a row ([`decide::Pace`]), and so do
//! its replacement pods.

mod decide;
mod seed;

pub use decide::REFILL_AFTER_TAKE;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::backend::binary::ExecutorBinary;
use crate::backend::k8s::K8sError;
use crate::backend::k8s::api::{api_message, is_not_found};
use crate::backend::k8s::copy;
use crate::backend::k8s::labels::{POOL_LABEL, READY_AT_ANNOTATION, STATE_LABEL};
use crate::backend::k8s::pool::resource::{BuildrPool, BuildrPoolStatus, PODS_FAILING, READY};
use crate::backend::k8s::pool::{State, warm, was_taken};
use crate::backend::upload::{Payload, Pulled};
use decide::{Decision, Pace, decide, next_look, to_create};
use seed::Seed;

/// How often the patch that marks a pod ready is tried while its pod keeps changing.
const READY_ATTEMPTS: usize = 3;
/// How many reports may wait for the log; a reconcile with one to give waits while it is full.
const REPORTS_WAITING: usize = 16;
/// The field manager of the pools' deny-all policies: applied server-side, so that each
/// reconcile puts back what someone changed in them.
const FIELD_MANAGER: &str = "buildr-pool-controller";

/// A reconcile that failed, one variant per failing request, naming the pool and the object.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "BuildrPool {namespace}/{pool}: cannot apply its deny-all NetworkPolicy {policy}: {} (the controller needs `create` and `patch` on networkpolicies)",
        api_message(error)
    )]
    ApplyPolicy {
        pool: String,
        namespace: String,
        policy: String,
        error: Box<kube::Error>,
    },
    #[error(
        "BuildrPool {namespace}/{pool}: cannot list its pods: {}",
        api_message(error)
    )]
    ListPods {
        pool: String,
        namespace: String,
        error: Box<kube::Error>,
    },
    #[error(
        "BuildrPool {namespace}/{pool}: cannot delete pod {pod}: {} (it is deleted at the next try; else remove it with `kubectl -n {namespace} delete pod {pod}`)",
        api_message(error)
    )]
    DeletePod {
        pool: String,
        namespace: String,
        pod: String,
        error: Box<kube::Error>,
    },
    #[error(
        "BuildrPool {namespace}/{pool}: {failed} of its spent pods could not be deleted; tried again later"
    )]
    SpentLeft {
        pool: String,
        namespace: String,
        failed: usize,
    },
    #[error(
        "BuildrPool {namespace}/{pool}: cannot create pod {pod}: {}",
        api_message(error)
    )]
    CreatePod {
        pool: String,
        namespace: String,
        pod: String,
        error: Box<kube::Error>,
    },
    #[error(
        "BuildrPool {namespace}/{pool}: cannot update its status: {} (the controller needs `patch` on buildrpools/status)",
        api_message(error)
    )]
    WriteStatus {
        pool: String,
        namespace: String,
        error: Box<kube::Error>,
    },
    #[error("BuildrPools in namespace {namespace}: {error}")]
    Watch {
        namespace: String,
        error: Box<watcher::Error>,
    },
}

/// What one reconcile of a pool did and saw, for the controller's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    pub pool: String,
    pub status: BuildrPoolStatus,
    pub created: usize,
    pub deleted: usize,
    /// Why a pod cannot start, if one cannot.
    pub failing: Option<String>,
    /// A pod with the pool's labels that the pool did not make (or that was changed since),
    /// deleted, and why: made by hand, or changed by an admission webhook.
    pub not_as_made: Option<String>,
}

impl fmt::Display for Reconciled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.status;
        write!(
            f,
            "pool {}: {} ready, {} starting, {} in use; created {}, deleted {}",
            self.pool, s.ready, s.starting, s.in_use, self.created, self.deleted
        )?;
        if let Some(why) = &self.failing {
            write!(f, "; a pod cannot start: {why}")?;
        }
        if let Some(why) = &self.not_as_made {
            write!(f, "; {why}")?;
        }
        Ok(())
    }
}

/// What the log gets: each reconcile's outcome, and each failure that did not end one.
type Report = Result<Reconciled, PoolError>;

struct Context {
    client: kube::Client,
    namespace: String,
    binary: ExecutorBinary,
    reports: tokio::sync::mpsc::Sender<Report>,
    /// Each pool's backoff, by name.
    paces: Mutex<HashMap<String, Pace>>,
}

impl Context {
    fn pace<T>(&self, pool: &BuildrPool, with: impl FnOnce(&mut Pace) -> T) -> T {
        // A poisoned lock is a panic elsewhere; the paces are still usable.
        let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
        let pace = paces.entry(pool.name_any()).or_default();
        with(pace.of_generation(pool.metadata.generation))
    }

    /// Hands the log a report; nobody reads them once the stream is dropped, and the
    /// reconcile is done all the same.
    async fn report(&self, report: Report) {
        let _ = self.reports.send(report).await;
    }
}

/// Runs the controller for the pools of `namespace` until `shutdown` resolves; yields what each
/// reconcile did, and each failure, as they happen. Once `shutdown` resolves no reconcile
/// starts, and the stream ends when the running ones are done (dropping it sooner aborts them:
/// safe, since every reconcile starts from what is in the cluster).
pub fn run(
    client: kube::Client,
    namespace: String,
    binary: ExecutorBinary,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = Report> {
    let (reports, received) = tokio::sync::mpsc::channel(REPORTS_WAITING);
    let pools: Api<BuildrPool> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let context = Arc::new(Context {
        client,
        namespace: namespace.clone(),
        binary,
        reports,
        paces: Mutex::default(),
    });
    let pods_of_pools = watcher::Config::default().labels(POOL_LABEL);
    let within = namespace.clone();
    let failures = Controller::new(pools, watcher::Config::default())
        .watches(pods, pods_of_pools, move |pod: Pod| {
            let pool = pod.labels().get(POOL_LABEL).cloned();
            pool.map(|pool| ObjectRef::<BuildrPool>::new(&pool).within(&within))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .filter_map(move |outcome| {
            let failure = match outcome {
                Ok(_) => None,
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, _)) => Some(error),
                Err(kube::runtime::controller::Error::QueueError(error)) => {
                    Some(PoolError::Watch {
                        namespace: namespace.clone(),
                        error: Box::new(error),
                    })
                }
                // An object gone before its turn: nothing to do.
                Err(_) => None,
            };
            future::ready(failure.map(Err))
        });
    // The controller's end is this stream's end. The reports cannot say when that is: their
    // sender is in the context, which the finished controller still holds.
    let state = (Box::pin(failures), received);
    futures::stream::unfold(state, |(mut failures, mut received)| async move {
        let next = tokio::select! {
            // Reports first: a reconcile sends its report before the controller yields its
            // outcome, so none is left behind when the controller ends.
            biased;
            Some(report) = received.recv() => Some(report),
            failure = failures.next() => failure,
        };
        next.map(|item| (item, (failures, received)))
    })
}

/// A failed reconcile is tried again after its pool's next backoff: 5 s, then twice as long
/// each time in a row, up to 5 minutes.
fn error_policy(pool: Arc<BuildrPool>, _error: &PoolError, context: Arc<Context>) -> Action {
    Action::requeue(context.pace(&pool, Pace::failed))
}

/// The pool's name and namespace, for its errors.
struct Named<'a> {
    pool: &'a str,
    namespace: &'a str,
}

impl Named<'_> {
    fn delete_pod(&self, pod: &str) -> impl FnOnce(kube::Error) -> PoolError {
        let (pool, namespace, pod) = (self.pool.into(), self.namespace.into(), pod.into());
        move |error| PoolError::DeletePod {
            pool,
            namespace,
            pod,
            error: Box::new(error),
        }
    }
}

async fn reconcile(pool: Arc<BuildrPool>, context: Arc<Context>) -> Result<Action, PoolError> {
    if pool.metadata.deletion_timestamp.is_some() {
        // Its pods and policy go with it: they are owned by it.
        return Ok(Action::await_change());
    }
    let name = pool.name_any();
    let namespace = &context.namespace;
    let named = Named {
        pool: &name,
        namespace,
    };
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let Some(image) = pool.spec.container.image.clone() else {
        let decision = Decision {
            failing: Some("the pool's `container` has no `image`".to_string()),
            ..Decision::default()
        };
        report(&pool, &context, decision, 0, 0).await?;
        return Ok(Action::await_change());
    };

    // Observe.
    let seed = match &pool.spec.seed {
        None => None,
        Some(seed) => match seed::resolve(seed).await {
            Ok(seed) => Some(seed),
            Err(why) => {
                let decision = Decision {
                    failing: Some(why),
                    ..Decision::default()
                };
                report(&pool, &context, decision, 0, 0).await?;
                return Ok(Action::requeue(seed::SEED_RECHECK));
            }
        },
    };
    apply_policy(&pool, &context, seed.as_ref()).await?;
    let listed = pods
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
        .await
        .map_err(|error| PoolError::ListPods {
            pool: name.clone(),
            namespace: namespace.clone(),
            error: Box::new(error),
        })?;
    let pinned = seed.as_ref().map(|seed| seed.pinned.as_str());
    let template = warm::template_digest(&pool, &context.binary.sha256, pinned);

    // Decide.
    let mut decision = decide(&pool, listed.items, &template, &image, SystemTime::now());
    let held = context.pace(&pool, |pace| pace.held(Instant::now()));

    // Act: delete what is spent, fill what started, create the difference.
    let spent = std::mem::take(&mut decision.spent);
    let left = delete_all(&pods, &context, &named, &spent).await;
    if left > 0 {
        return Err(PoolError::SpentLeft {
            pool: name,
            namespace: namespace.clone(),
            failed: left,
        });
    }
    let to_fill = std::mem::take(&mut decision.to_fill);
    let fills = to_fill
        .iter()
        .map(|pod| fill(&pods, &context, pod, &image, seed.as_ref()));
    let fills = future::join_all(fills).await;
    let mut unfilled = Vec::new();
    for (pod, filled) in to_fill.into_iter().zip(fills) {
        match filled {
            Ok(Filled::Ready) => decision.ready.push(pod),
            // Its change is an event of its own, and the next reconcile sees it.
            Ok(Filled::Changed) => {}
            Err(why) => {
                decision.failing.get_or_insert(why);
                unfilled.push(pod.name_any());
            }
        }
    }
    let unfilled_left = delete_all(&pods, &context, &named, &unfilled).await;

    let refill_wait = context.pace(&pool, |pace| {
        pace.refill_wait(&decision.taken, Instant::now())
    });
    let missing = to_create(
        pool.spec.size,
        decision.ready.len(),
        decision.starting,
        held || refill_wait.is_some(),
    );
    let creates = (0..missing).map(|_| async {
        let plan = warm::plan(&pool, namespace, &context.binary.arch)
            .expect("the pool has an image: checked above");
        let pod = warm::pod(&plan, &pool, &context.binary.sha256, pinned);
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|error| PoolError::CreatePod {
                pool: name.clone(),
                namespace: namespace.clone(),
                pod: plan.name(),
                error: Box::new(error),
            })
    });
    let created = future::join_all(creates).await;
    let mut made = 0;
    for outcome in created {
        match outcome {
            Ok(_) => {
                made += 1;
                decision.starting += 1;
            }
            // A refusal (quota, admission) is why the pool cannot fill: say it in its status.
            Err(PoolError::CreatePod { error, .. }) if matches!(*error, kube::Error::Api(_)) => {
                decision
                    .failing
                    .get_or_insert(format!("its pod is refused: {}", api_message(&error)));
            }
            Err(e) => return Err(e),
        }
    }
    let deleted = spent.len() + unfilled.len() - unfilled_left;
    let troubled = decision.troubled();
    let paced = context.pace(&pool, |pace| pace.after(troubled, held, Instant::now()));
    let mut next =
        paced.unwrap_or_else(|| next_look(&decision, pool.spec.max_idle(), SystemTime::now()));
    if let Some(wait) = refill_wait {
        next = next.min(wait);
    }
    if seed.is_some() {
        // A tag that moves is no event of the cluster's.
        next = next.min(seed::SEED_RECHECK);
    }
    report(&pool, &context, decision, made, deleted).await?;
    Ok(Action::requeue(next))
}

/// Applies the pool's deny-all policy, server-side: created when missing, and what someone
/// changed in it put back.
async fn apply_policy(
    pool: &BuildrPool,
    context: &Context,
    seed: Option<&Seed>,
) -> Result<(), PoolError> {
    let policies: Api<NetworkPolicy> = Api::namespaced(context.client.clone(), &context.namespace);
    let policy = warm::deny_all(pool, &context.namespace, seed.map(|seed| &seed.route));
    let policy_name = policy.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match policies
        .patch(&policy_name, &params, &Patch::Apply(&policy))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => Err(PoolError::ApplyPolicy {
            pool: pool.name_any(),
            namespace: context.namespace.clone(),
            policy: policy_name,
            error: Box::new(error),
        }),
    }
}

/// Deletes `names`, all at once; each deletion that fails is reported to the log. Returns how
/// many failed (a pod already gone is deleted).
async fn delete_all(
    pods: &Api<Pod>,
    context: &Context,
    named: &Named<'_>,
    names: &[String],
) -> usize {
    let deletions = names.iter().map(|pod| async move {
        match pods.delete(pod, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(named.delete_pod(pod)(e)),
        }
    });
    let mut failed = 0;
    for outcome in future::join_all(deletions).await {
        if let Err(e) = outcome {
            failed += 1;
            context.report(Err(e)).await;
        }
    }
    failed
}

/// What became of a pod the binary was copied into.
enum Filled {
    Ready,
    /// Someone changed the pod since it was listed (deleted it, or took it): it is not
    /// marked ready, so that no take is undone.
    Changed,
}

/// Copies the binary into a started pod, pulls a seeded pool's seed into its workspace, and
/// marks it ready, if it is still as it was listed; why not, in one line.
async fn fill(
    pods: &Api<Pod>,
    context: &Context,
    pod: &Pod,
    image: &str,
    seed: Option<&Seed>,
) -> Result<Filled, String> {
    let name = pod.name_any();
    let payload = Payload {
        binary: true,
        tools: &[],
        secret: None,
    };
    copy::binary(
        pods,
        &context.client,
        &name,
        image,
        &context.binary,
        payload,
    )
    .await
    .map_err(|e: K8sError| crate::printable::Printable(&e.to_string()).to_string())?;
    if let Some(seed) = seed {
        let from = copy::PodPull {
            snapshot: &seed.pinned,
            route: &seed.route,
            credentials: seed.credentials.as_ref(),
            seeded: copy::Seeded::Seeding,
        };
        let pulled = copy::pull(pods, &context.client, &name, image, from, None)
            .await
            .map_err(|e: K8sError| crate::printable::Printable(&e.to_string()).to_string())?;
        if let Pulled::Unreachable(why) = pulled {
            return Err(format!("cannot pull its seed {}: {why}", seed.pinned));
        }
    }
    let ready_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut seen = pod.clone();
    // The kubelet's own status updates change the pod too: those are looked at and let pass.
    for _ in 0..READY_ATTEMPTS {
        let patch = json!({
            "metadata": {
                // A precondition: the API server refuses the patch (409) if the pod changed.
                "resourceVersion": seen.metadata.resource_version,
                "labels": { STATE_LABEL: State::Ready.as_str() },
                "annotations": { READY_AT_ANNOTATION: ready_at },
            }
        });
        let failed = |e: kube::Error| format!("cannot mark pod {name} ready: {}", api_message(&e));
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(Filled::Ready),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) if is_not_found(&e) => return Ok(Filled::Changed),
            Err(e) => return Err(failed(e)),
        }
        // Listed, not read: the controller's Role has `list` on pods and needs no `get`.
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        let listed = pods.list(&by_name).await.map_err(failed)?.items;
        seen = match listed.into_iter().next() {
            Some(now) if State::of(&now) == Some(State::Starting) && !was_taken(&now) => now,
            _ => return Ok(Filled::Changed),
        };
    }
    Ok(Filled::Changed)
}

/// Writes the counts and conditions into the pool's status, and hands the log its line.
async fn report(
    pool: &BuildrPool,
    context: &Context,
    decision: Decision,
    created: usize,
    deleted: usize,
) -> Result<(), PoolError> {
    let name = pool.name_any();
    let previous = pool.status.clone().unwrap_or_default().conditions;
    let size = pool.spec.size;
    let ready = decision.ready.len() as u32;
    let full = ready >= size;
    let conditions = vec![
        condition(
            &previous,
            READY,
            full,
            if full { "Filled" } else { "Filling" },
            format!("{ready} of {size} pods ready"),
            pool.metadata.generation,
        ),
        condition(
            &previous,
            PODS_FAILING,
            decision.failing.is_some(),
            if decision.failing.is_some() {
                "PodCannotStart"
            } else {
                "PodsStart"
            },
            decision.failing.clone().unwrap_or_default(),
            pool.metadata.generation,
        ),
    ];
    let status = BuildrPoolStatus {
        ready,
        starting: decision.starting as u32,
        in_use: decision.taken.len() as u32,
        conditions,
    };
    let pools: Api<BuildrPool> = Api::namespaced(context.client.clone(), &context.namespace);
    pools
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(|error| PoolError::WriteStatus {
            pool: name.clone(),
            namespace: context.namespace.clone(),
            error: Box::new(error),
        })?;
    context
        .report(Ok(Reconciled {
            pool: name,
            status,
            created,
            deleted,
            failing: decision.failing,
            not_as_made: decision.not_as_made,
        }))
        .await;
    Ok(())
}

/// A condition, keeping its last transition time while its status stays the same (so that a
/// reconcile that changes nothing writes nothing).
fn condition(
    previous: &[Condition],
    type_: &str,
    holds: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if holds { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}
