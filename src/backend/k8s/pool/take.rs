//! A run takes a warm pod: from the pool it names (`--pool`, `container.pool`), else from a pool
//! whose template is the run's pod settings exactly. Taking is one patch with the pod's
//! `resourceVersion` as its precondition: of many clients racing for one pod, the API server
//! lets exactly one relabel it as its run's, and the others get a conflict and try the next
//! pod, or start a pod of their own. The same patch takes the pod out of the pool (no owner: a
//! pool deleted mid-run leaves the run alone), lowers its deadline to the run's, and marks it
//! taken for good ([`TAKEN_MARK`]).
//!
//! Labels are only claims. A pod is a candidate when it is what the pool made
//! ([`warm::as_made`]) and no run took it before: so neither a pod made by hand with the pool's
//! labels nor a used pod relabelled `ready` gets a run's secret and inputs.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::resource::BuildrPool;
use super::{State, pod_shape, warm, was_taken};
use crate::backend::k8s::K8sError;
use crate::backend::k8s::api::{api_message, is_not_found};
use crate::backend::k8s::labels::{
    EXPIRES_AT_ANNOTATION, POOL_LABEL, RUN_ID_LABEL, STATE_LABEL, TAKEN_MARK, TASK_ANNOTATION,
};
use crate::backend::k8s::objects::PodPlan;
use crate::cluster::access::is_forbidden;

/// Where a run looks for a warm pod.
#[derive(Debug, Clone)]
pub enum Source {
    /// The pool the run names, as read when the run's settings were resolved: its template is
    /// the run's pod, and the pool's pods are checked against that very template.
    Named(Box<BuildrPool>),
    /// A pool whose template is the run's pod settings exactly, if there is one.
    Matching,
}

impl Source {
    /// Whether the pool's pods hold a seed (`spec.seed`), as far as the run knows before it
    /// takes one.
    pub fn seeded(&self) -> bool {
        matches!(self, Self::Named(pool) if pool.spec.seed.is_some())
    }
}

/// The pool `name` of `namespace`, if there is one (a cluster without the BuildrPool resource
/// has none).
pub async fn named_pool(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BuildrPool>, K8sError> {
    let pools: Api<BuildrPool> = Api::namespaced(client.clone(), namespace);
    let read = pools.get_opt(name).await;
    read.map_err(|error| {
        K8sError::Take(TakeError::ReadPool {
            namespace: namespace.to_string(),
            pool: name.to_string(),
            error: Box::new(error),
        })
    })
}

/// What became of the attempt.
#[derive(Debug)]
pub enum Taken {
    /// The run's pod now, as the patch left it.
    Warm { pod: Box<Pod>, pool: String },
    /// No warm pod for this run; why, for `-v`.
    Cold(String),
}

/// A take that failed, one variant per failing request, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error(
        "cannot read BuildrPool {namespace}/{pool}: {} (`buildr k8s check --pool {pool}` shows what is missing)",
        api_message(error)
    )]
    ReadPool {
        namespace: String,
        pool: String,
        error: Box<kube::Error>,
    },
    #[error(
        "cannot list the ready warm pods in namespace {namespace}: {}",
        api_message(error)
    )]
    ListPods {
        namespace: String,
        error: Box<kube::Error>,
    },
    #[error("cannot take warm pod {namespace}/{pod}: {}", api_message(error))]
    TakePod {
        namespace: String,
        pod: String,
        error: Box<kube::Error>,
    },
}

/// Takes a warm pod for the run `plan` describes (its run id, image and settings) from
/// `source`.
pub async fn take(
    client: &kube::Client,
    plan: &PodPlan,
    source: &Source,
) -> Result<Taken, K8sError> {
    let namespace = &plan.namespace;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let ready = |pool: Option<&str>| {
        let ready = format!("{STATE_LABEL}={}", State::Ready.as_str());
        let selector = match pool {
            Some(pool) => format!("{POOL_LABEL}={pool},{ready}"),
            None => ready,
        };
        let pods = pods.clone();
        async move { pods.list(&ListParams::default().labels(&selector)).await }
    };
    let matched;
    let (pool, listed) = match source {
        Source::Named(pool) => (&**pool, ready(Some(&pool.name_any())).await),
        Source::Matching => {
            let pools: Api<BuildrPool> = Api::namespaced(client.clone(), namespace);
            // The pools and the ready pods, both at once: one round trip.
            let (pool, listed) = tokio::join!(matching(&pools, plan), ready(None));
            matched = match pool {
                Ok(Some(pool)) => pool,
                Ok(None) => {
                    let why = "no BuildrPool has the task's pod settings";
                    return Ok(Taken::Cold(why.to_string()));
                }
                Err(why) => return Ok(Taken::Cold(why)),
            };
            (&matched, listed)
        }
    };
    let name = pool.name_any();
    let listed = listed.map_err(|error| TakeError::ListPods {
        namespace: namespace.clone(),
        error: Box::new(error),
    });
    let mut candidates = listed?.items;
    candidates.retain(|pod| {
        pod.labels().get(POOL_LABEL) == Some(&name) && pod.metadata.deletion_timestamp.is_none()
    });
    candidates.retain(|pod| match genuine(pool, pod) {
        Ok(()) => true,
        Err(why) => {
            tracing::info!("passed over pod {} of pool {name}: {why}", pod.name_any());
            false
        }
    });
    // Racing clients start at different pods, so that most of them win their first patch.
    let start = plan.run_id.bytes().map(usize::from).sum::<usize>();
    let count = candidates.len();
    for i in 0..count {
        let pod = &candidates[(start + i) % count];
        match pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(take_patch(pod, plan)),
            )
            .await
        {
            Ok(taken) => {
                return Ok(Taken::Warm {
                    pod: Box::new(taken),
                    pool: name,
                });
            }
            // Another run took it first, or it was replaced meanwhile.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) if is_not_found(&e) => continue,
            Err(error) => {
                return Err(K8sError::Take(TakeError::TakePod {
                    namespace: namespace.clone(),
                    pod: pod.name_any(),
                    error: Box::new(error),
                }));
            }
        }
    }
    match (source, pool.failing()) {
        (Source::Named(_), Some(reason)) => Err(K8sError::PoolFailing {
            pool: name,
            namespace: namespace.clone(),
            reason: reason.to_string(),
        }),
        _ => Ok(Taken::Cold(format!(
            "BuildrPool {namespace}/{name} has no ready pod"
        ))),
    }
}

/// Whether `pod`, labelled as `pool`'s and ready, may be given a run: made by the pool and
/// never taken before; why not, for `-v`.
fn genuine(pool: &BuildrPool, pod: &Pod) -> Result<(), String> {
    if was_taken(pod) {
        return Err("a run took it before".to_string());
    }
    warm::as_made(pool, pod)
}

/// The pool whose template is the run's pod, if any; when pools cannot be listed (no CRD, no
/// permission), why not.
async fn matching(pools: &Api<BuildrPool>, plan: &PodPlan) -> Result<Option<BuildrPool>, String> {
    let wanted = pod_shape(&task_container_with_image(plan));
    match pools.list(&ListParams::default()).await {
        Ok(list) => Ok(list
            .items
            .into_iter()
            .find(|pool| pod_shape(&pool.spec.container) == wanted)),
        Err(e) if is_not_found(&e) => Err("the cluster has no BuildrPool resource".to_string()),
        Err(e) if is_forbidden(&e) => Err("not allowed to list BuildrPools".to_string()),
        Err(e) => Err(format!("cannot list BuildrPools: {}", api_message(&e))),
    }
}

fn task_container_with_image(plan: &PodPlan) -> crate::task::Container {
    crate::task::Container {
        image: Some(plan.image.clone()),
        ..plan.container.clone()
    }
}

/// Relabels `pod` as the run's, if it is still as it was listed: its `resourceVersion` makes
/// the API server refuse the patch (409) once anyone else changed it. The pod leaves its pool
/// (no owner), its deadline comes down to the run's, counted from now, and it gets the mark of
/// a taken pod, a toleration: the API server refuses any patch that removes one.
fn take_patch(pod: &Pod, plan: &PodPlan) -> serde_json::Value {
    let deadline = plan.active_deadline();
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| SystemTime::from(t.0));
    let age = started
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    let current = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    let wanted = (age + deadline).as_secs() as i64 + 1;
    let seconds = current.map_or(wanted, |current| current.min(wanted));
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + deadline).to_string();
    // A merge patch replaces the list: the pod's own tolerations go along, unchanged.
    let mut tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    tolerations.push(Toleration {
        key: Some(TAKEN_MARK.to_string()),
        operator: Some("Equal".to_string()),
        value: Some(plan.run_id.clone()),
        effect: Some("NoSchedule".to_string()),
        toleration_seconds: None,
    });
    json!({
        "metadata": {
            "resourceVersion": pod.metadata.resource_version,
            "labels": {
                STATE_LABEL: State::Taken.as_str(),
                RUN_ID_LABEL: plan.run_id,
            },
            "annotations": {
                EXPIRES_AT_ANNOTATION: expires,
                TASK_ANNOTATION: plan.task_name,
            },
            "ownerReferences": null,
        },
        "spec": {
            "activeDeadlineSeconds": seconds,
            "tolerations": tolerations,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    #[test]
    fn the_take_is_conditional_leaves_the_pool_and_lowers_the_deadline_to_the_runs() {
        let started = k8s_openapi::jiff::Timestamp::now() - Duration::from_secs(100);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("buildr-warm1".to_string()),
                resource_version: Some("42".to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                active_deadline_seconds: Some(90_000),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                start_time: Some(Time(started)),
                ..PodStatus::default()
            }),
        };
        let plan = PodPlan {
            task_timeout: Some(Duration::from_secs(60)),
            ..PodPlan::new("run1", "builds", "debian", "amd64")
        };
        let patch = take_patch(&pod, &plan);
        let metadata = &patch["metadata"];
        assert_eq!(metadata["resourceVersion"], "42");
        assert_eq!(metadata["labels"][STATE_LABEL], "taken");
        assert_eq!(metadata["labels"][RUN_ID_LABEL], "run1");
        assert!(metadata["ownerReferences"].is_null());
        let mark = &patch["spec"]["tolerations"][0];
        assert_eq!(mark["key"], TAKEN_MARK);
        assert_eq!(mark["value"], "run1");
        // Its age plus the run's deadline (the task's timeout plus 10 minutes).
        let seconds = patch["spec"]["activeDeadlineSeconds"].as_i64().unwrap();
        assert!((760..=763).contains(&seconds), "{seconds}");
        // Never raised: Kubernetes refuses that.
        let mut short = pod.clone();
        short.spec.as_mut().unwrap().active_deadline_seconds = Some(300);
        assert_eq!(
            take_patch(&short, &plan)["spec"]["activeDeadlineSeconds"],
            300
        );
        // The tolerations the pod has stay, or the API server refuses the patch.
        let default = Toleration {
            key: Some("node.kubernetes.io/not-ready".to_string()),
            operator: Some("Exists".to_string()),
            effect: Some("NoExecute".to_string()),
            toleration_seconds: Some(300),
            ..Toleration::default()
        };
        short.spec.as_mut().unwrap().tolerations = Some(vec![default]);
        let tolerations = &take_patch(&short, &plan)["spec"]["tolerations"];
        assert_eq!(tolerations[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(tolerations[1]["key"], TAKEN_MARK);
    }
}
