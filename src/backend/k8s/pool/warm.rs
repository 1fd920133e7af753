//! A pool's objects: its warm pods, made by the very builder a run's pod is made by
//! ([`PodPlan::pod`]) and marked as the pool's, and the deny-all NetworkPolicy they wait under.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::resource::BuildrPool;
use super::{POOL_LABEL, STATE_LABEL, State, TEMPLATE_ANNOTATION};
use crate::backend::k8s::objects::{MANAGED_BY, MANAGED_BY_LABEL, PodPlan};

/// What a pool's pods are made from: its template and the binary they get, as a short digest
/// (a pod made from another is replaced).
pub fn template_digest(pool: &BuildrPool, binary_sha256: &str) -> String {
    let template =
        serde_json::to_string(&pool.spec.container).expect("a container always serializes");
    let digest = Sha256::new()
        .chain_update(template)
        .chain_update(binary_sha256)
        .finalize();
    hex::encode(&digest[..8])
}

/// The plan of a new warm pod of `pool`, for a binary of `arch`: a run's plan with the pool's
/// template, a run id of its own (replaced by the run that takes it), and a deadline that
/// covers its wait for a run on top of the run's own.
pub fn plan(pool: &BuildrPool, namespace: &str, arch: &str) -> Option<PodPlan> {
    let mut container = pool.spec.container.clone();
    let image = container.image.clone()?;
    let max_idle = pool.spec.max_idle();
    let run_deadline = PodPlan {
        container: container.clone(),
        ..placeholder_plan(namespace, arch, image.clone())
    }
    .active_deadline();
    container.active_deadline = Some(max_idle + run_deadline);
    Some(PodPlan {
        container,
        task_name: format!("(warm pod of pool {})", pool.name_any()),
        warm_for: Some(max_idle),
        ..placeholder_plan(namespace, arch, image)
    })
}

fn placeholder_plan(namespace: &str, arch: &str, image: String) -> PodPlan {
    PodPlan {
        run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        namespace: namespace.to_string(),
        task_name: String::new(),
        image,
        container: Default::default(),
        task_timeout: None,
        arch: arch.to_string(),
        keep: false,
        warm_for: None,
        created_at: SystemTime::now(),
    }
}

/// The warm pod of `plan`: labelled as `pool`'s, starting, and owned by the pool, so that
/// deleting the pool deletes the pods that wait in it.
pub fn pod(plan: &PodPlan, pool: &BuildrPool, template: &str) -> Pod {
    let mut pod = plan.pod();
    let metadata = &mut pod.metadata;
    let labels = metadata.labels.get_or_insert_default();
    labels.insert(POOL_LABEL.to_string(), pool.name_any());
    labels.insert(
        STATE_LABEL.to_string(),
        State::Starting.as_str().to_string(),
    );
    metadata
        .annotations
        .get_or_insert_default()
        .insert(TEMPLATE_ANNOTATION.to_string(), template.to_string());
    metadata.owner_references = pool.controller_owner_ref(&()).map(|owner| vec![owner]);
    pod
}

/// The name of the policy that denies `pool`'s pods everything while they wait.
pub fn policy_name(pool: &str) -> String {
    format!("buildr-pool-{pool}")
}

/// Denies the pool's pods all ingress and egress: nothing runs in them but a shell waiting for
/// a run, and a run that takes one adds its own policy for the egress its task asks for (the
/// policies add up: this one takes nothing away). Owned by the pool.
pub fn deny_all(pool: &BuildrPool, namespace: &str) -> NetworkPolicy {
    let name = pool.name_any();
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name(&name)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (POOL_LABEL.to_string(), name.clone()),
            ])),
            owner_references: pool.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(POOL_LABEL.to_string(), name)])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(Vec::new()),
            egress: Some(Vec::new()),
        }),
    }
}
