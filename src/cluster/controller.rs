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

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
use crate::backend::k8s::labels::{
    POOL_LABEL, READY_AT_ANNOTATION, STATE_LABEL, TEMPLATE_ANNOTATION,
};
use crate::backend::k8s::pool::resource::{BuildrPool, BuildrPoolStatus, PODS_FAILING, READY};
use crate::backend::k8s::pool::{State, warm, was_taken};
use crate::backend::k8s::startup::{Start, classify};
use crate::backend::upload::Payload;

/// How soon a pool with pods still starting is looked at again, besides its pods' own events.
const STARTING_RECHECK: Duration = Duration::from_secs(5);
/// How soon a failed reconcile is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How often the patch that marks a pod ready is tried while its pod keeps changing.
const READY_ATTEMPTS: usize = 3;
/// How many reports may wait for the log; a reconcile with one to give waits while it is full.
const REPORTS_WAITING: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "BuildrPool {namespace}/{pool}: cannot {verb} {what}: {}",
        api_message(error)
    )]
    Api {
        pool: String,
        namespace: String,
        verb: &'static str,
        what: String,
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

struct Context {
    client: kube::Client,
    namespace: String,
    binary: ExecutorBinary,
    reports: tokio::sync::mpsc::Sender<Reconciled>,
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
) -> impl Stream<Item = Result<Reconciled, PoolError>> {
    let (reports, received) = tokio::sync::mpsc::channel(REPORTS_WAITING);
    let pools: Api<BuildrPool> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let context = Arc::new(Context {
        client,
        namespace: namespace.clone(),
        binary,
        reports,
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
            Some(report) = received.recv() => Some(Ok(report)),
            failure = failures.next() => failure,
        };
        next.map(|item| (item, (failures, received)))
    })
}

fn error_policy(_pool: Arc<BuildrPool>, _error: &PoolError, _context: Arc<Context>) -> Action {
    Action::requeue(RETRY)
}

/// The pool's pods, sorted by what becomes of them in this reconcile.
#[derive(Default)]
struct Census {
    ready: Vec<Pod>,
    /// Running, binary not in yet.
    to_fill: Vec<Pod>,
    starting: usize,
    in_use: u32,
    spent: Vec<String>,
    failing: Option<String>,
    not_as_made: Option<String>,
    /// When the next ready pod has waited `maxIdle`.
    next_expiry: Option<SystemTime>,
}

async fn reconcile(pool: Arc<BuildrPool>, context: Arc<Context>) -> Result<Action, PoolError> {
    if pool.metadata.deletion_timestamp.is_some() {
        // Its pods and policy go with it: they are owned by it.
        return Ok(Action::await_change());
    }
    let name = pool.name_any();
    let namespace = &context.namespace;
    let failed = |verb: &'static str, what: String| {
        let (pool, namespace) = (name.clone(), namespace.clone());
        move |error: kube::Error| PoolError::Api {
            pool,
            namespace,
            verb,
            what,
            error: Box::new(error),
        }
    };
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let Some(plan_image) = pool.spec.container.image.clone() else {
        let failing = "the pool's `container` has no `image`".to_string();
        report(
            &pool,
            &context,
            Census {
                failing: Some(failing),
                ..Census::default()
            },
            0,
            0,
        )
        .await?;
        return Ok(Action::await_change());
    };
    let policies: Api<NetworkPolicy> = Api::namespaced(context.client.clone(), namespace);
    match policies
        .create(&PostParams::default(), &warm::deny_all(&pool, namespace))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(failed("create", "its NetworkPolicy".to_string())(e)),
    }
    let listed = pods
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
        .await
        .map_err(failed("list", "its pods".to_string()))?;
    let template = warm::template_digest(&pool, &context.binary.sha256);
    let mut census = census(&pool, listed.items, &template, &plan_image);

    // Beyond `size` (it was lowered): the youngest ready pods go first.
    let size = pool.spec.size as usize;
    while census.ready.len() + census.to_fill.len() + census.starting > size
        && let Some(extra) = census.ready.pop()
    {
        census.spent.push(extra.name_any());
    }
    let spent = std::mem::take(&mut census.spent);
    let deletions = spent.iter().map(|pod| {
        let (pods, failed) = (&pods, &failed);
        async move {
            match pods.delete(pod, &DeleteParams::background()).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(failed("delete", format!("pod {pod}"))(e)),
            }
        }
    });
    future::try_join_all(deletions).await?;

    let to_fill = std::mem::take(&mut census.to_fill);
    let fills = future::join_all(
        to_fill
            .iter()
            .map(|pod| fill(&pods, &context, pod, &plan_image)),
    )
    .await;
    for (pod, filled) in to_fill.into_iter().zip(fills) {
        match filled {
            Ok(Filled::Ready) => census.ready.push(pod),
            // Its change is an event of its own, and the next reconcile sees it.
            Ok(Filled::Changed) => {}
            Err(why) => {
                census.failing.get_or_insert(why);
                let _ = pods
                    .delete(&pod.name_any(), &DeleteParams::background())
                    .await;
                census.spent.push(pod.name_any());
            }
        }
    }

    let missing = size.saturating_sub(census.ready.len() + census.starting);
    let creates = (0..missing).map(|_| async {
        let plan = warm::plan(&pool, namespace, &context.binary.arch)
            .expect("the pool has an image: checked above");
        let pod = warm::pod(&plan, &pool, &context.binary.sha256);
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(failed("create", format!("pod {}", plan.name())))
    });
    let created = future::join_all(creates).await;
    let mut made = 0;
    for outcome in created {
        match outcome {
            Ok(_) => {
                made += 1;
                census.starting += 1;
            }
            // A refusal (quota, admission) is why the pool cannot fill: say it in its status.
            Err(PoolError::Api { error, .. }) if matches!(*error, kube::Error::Api(_)) => {
                census
                    .failing
                    .get_or_insert(format!("its pod is refused: {}", api_message(&error)));
            }
            Err(e) => return Err(e),
        }
    }
    let deleted = spent.len() + census.spent.len();
    let next = if census.starting > 0 || census.failing.is_some() {
        Action::requeue(STARTING_RECHECK)
    } else {
        let due = census
            .next_expiry
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(pool.spec.max_idle());
        Action::requeue(due + Duration::from_secs(1))
    };
    report(&pool, &context, census, made, deleted).await?;
    Ok(next)
}

/// Sorts the pool's pods: ready, to fill, starting, in use, or spent (to delete).
fn census(pool: &BuildrPool, pods: Vec<Pod>, template: &str, image: &str) -> Census {
    let mut census = Census::default();
    let uid = pool.metadata.uid.as_deref();
    let max_idle = pool.spec.max_idle();
    let now = SystemTime::now();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ended = matches!(phase, Some("Failed" | "Succeeded"));
        let state = State::of(&pod);
        if state == Some(State::Taken) {
            census.in_use += u32::from(!ended);
            continue;
        }
        // Taken once, it is never the pool's again, whatever its labels say now.
        if was_taken(&pod) {
            census.spent.push(pod.name_any());
            continue;
        }
        // A pod of a pool of the same name that was deleted: the garbage collector's.
        let ours = pod
            .owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid);
        if !ours {
            continue;
        }
        let stale = pod
            .annotations()
            .get(TEMPLATE_ANNOTATION)
            .map(String::as_str)
            != Some(template);
        if ended || stale {
            census.spent.push(pod.name_any());
            continue;
        }
        // Runs would pass it over: made by hand, or changed since (by an admission webhook
        // too, which the log then names: every pod the pool makes would go this way).
        if let Err(why) = warm::as_made(pool, &pod) {
            census.not_as_made.get_or_insert(format!(
                "deleted pod {}, which runs would not take: {why}",
                pod.name_any()
            ));
            census.spent.push(pod.name_any());
            continue;
        }
        match state {
            Some(State::Ready) => {
                let ready_at = pod
                    .annotations()
                    .get(READY_AT_ANNOTATION)
                    .and_then(|at| humantime::parse_rfc3339(at).ok())
                    .unwrap_or(now);
                let expires = ready_at + max_idle;
                if expires <= now {
                    census.spent.push(pod.name_any());
                } else {
                    census.next_expiry =
                        Some(census.next_expiry.map_or(expires, |e| e.min(expires)));
                    census.ready.push(pod);
                }
            }
            _ => match classify(&pod, image) {
                Start::Running => census.to_fill.push(pod),
                Start::Failed(why) => {
                    census.failing.get_or_insert(why);
                    census.starting += 1;
                }
                Start::Waiting(_) => census.starting += 1,
            },
        }
    }
    // Oldest first, so that the youngest go when the pool shrinks.
    census
        .ready
        .sort_by_key(|pod| pod.metadata.creation_timestamp.clone().map(|t| t.0));
    census
}

/// What became of a pod the binary was copied into.
enum Filled {
    Ready,
    /// Someone changed the pod since it was listed (deleted it, or took it): it is not
    /// marked ready, so that no take is undone.
    Changed,
}

/// Copies the binary into a started pod and marks it ready, if it is still as it was listed;
/// why not, in one line.
async fn fill(
    pods: &Api<Pod>,
    context: &Context,
    pod: &Pod,
    image: &str,
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
    census: Census,
    created: usize,
    deleted: usize,
) -> Result<(), PoolError> {
    let name = pool.name_any();
    let previous = pool.status.clone().unwrap_or_default().conditions;
    let size = pool.spec.size;
    let ready = census.ready.len() as u32;
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
            census.failing.is_some(),
            if census.failing.is_some() {
                "PodCannotStart"
            } else {
                "PodsStart"
            },
            census.failing.clone().unwrap_or_default(),
            pool.metadata.generation,
        ),
    ];
    let status = BuildrPoolStatus {
        ready,
        starting: census.starting as u32,
        in_use: census.in_use,
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
        .map_err(|error| PoolError::Api {
            pool: name.clone(),
            namespace: context.namespace.clone(),
            verb: "update",
            what: "its status".to_string(),
            error: Box::new(error),
        })?;
    // Nobody reads them once the stream is dropped: the reconcile is done all the same.
    let _ = context
        .reports
        .send(Reconciled {
            pool: name,
            status,
            created,
            deleted,
            failing: census.failing,
            not_as_made: census.not_as_made,
        })
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
