//! A run takes a warm pod: the pool it names (`--pool`, `container.pool`), else a pool whose
//! template is the run's pod settings exactly. Taking is one patch with the pod's
//! `resourceVersion` as its precondition: of many clients racing for one pod, the API server
//! lets exactly one relabel it as its run's, and the others get a conflict and try the next
//! pod, or start a pod of their own. The same patch takes the pod out of the pool (no owner: a
//! pool deleted mid-run leaves the run alone) and lowers its deadline to the run's.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::resource::BuildrPool;
use super::{POOL_LABEL, STATE_LABEL, State, pod_shape};
use crate::backend::k8s::K8sError;
use crate::backend::k8s::access::is_forbidden;
use crate::backend::k8s::api::{api_message, is_not_found};
use crate::backend::k8s::objects::{EXPIRES_AT_ANNOTATION, PodPlan, RUN_ID_LABEL, TASK_ANNOTATION};

/// What became of the attempt.
#[derive(Debug)]
pub enum Taken {
    /// The run's pod now, as the patch left it.
    Warm { pod: Box<Pod>, pool: String },
    /// No warm pod for this run; why, for `-v`.
    Cold(String),
}

/// Takes a warm pod for the run `plan` describes (its run id, image and settings), from the
/// pool `named` if given, else from a pool whose template matches.
pub async fn take(
    client: &kube::Client,
    plan: &PodPlan,
    named: Option<&str>,
) -> Result<Taken, K8sError> {
    let namespace = &plan.namespace;
    let pools: Api<BuildrPool> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // The pool and the ready pods, both at once: one round trip.
    let ready = format!("{STATE_LABEL}={}", State::Ready.as_str());
    let ready = match named {
        Some(name) => format!("{POOL_LABEL}={name},{ready}"),
        None => ready,
    };
    let ready = ListParams::default().labels(&ready);
    let (pool, listed) = tokio::join!(
        async {
            match named {
                Some(name) => pools
                    .get_opt(name)
                    .await
                    .map_err(api_error("get", "BuildrPools", namespace))?
                    .ok_or_else(|| K8sError::NoPool {
                        pool: name.to_string(),
                        namespace: namespace.clone(),
                    })
                    .map(Ok),
                None => Ok(matching(&pools, plan).await.and_then(|pool| {
                    pool.ok_or_else(|| "no BuildrPool has the task's pod settings".to_string())
                })),
            }
        },
        pods.list(&ready),
    );
    let pool = match pool? {
        Ok(pool) => pool,
        Err(why) => return Ok(Taken::Cold(why)),
    };
    let name = pool.name_any();
    let mut candidates = listed.map_err(api_error("list", "pods", namespace))?.items;
    candidates.retain(|pod| pod.labels().get(POOL_LABEL) == Some(&name));
    candidates.retain(|pod| pod.metadata.deletion_timestamp.is_none());
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
            Err(e) => return Err(api_error("patch", "pods", namespace)(e)),
        }
    }
    match (named, pool.failing()) {
        (Some(_), Some(reason)) => Err(K8sError::PoolFailing {
            pool: name,
            namespace: namespace.clone(),
            reason: reason.to_string(),
        }),
        _ => Ok(Taken::Cold(format!("pool {name} has no ready pod"))),
    }
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
/// (no owner), and its deadline comes down to the run's, counted from now.
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
        "spec": { "activeDeadlineSeconds": seconds },
    })
}

fn api_error(
    verb: &'static str,
    what: &'static str,
    namespace: &str,
) -> impl FnOnce(kube::Error) -> K8sError {
    let namespace = namespace.to_string();
    move |error| K8sError::Api {
        verb,
        what,
        namespace,
        error: Box::new(error),
    }
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
            run_id: "run1".to_string(),
            namespace: "builds".to_string(),
            task_name: "test".to_string(),
            image: "debian".to_string(),
            container: Default::default(),
            task_timeout: Some(Duration::from_secs(60)),
            arch: "amd64".to_string(),
            keep: false,
            warm_for: None,
            created_at: SystemTime::now(),
        };
        let patch = take_patch(&pod, &plan);
        let metadata = &patch["metadata"];
        assert_eq!(metadata["resourceVersion"], "42");
        assert_eq!(metadata["labels"][STATE_LABEL], "taken");
        assert_eq!(metadata["labels"][RUN_ID_LABEL], "run1");
        assert!(metadata["ownerReferences"].is_null());
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
    }
}
