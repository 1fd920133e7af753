//! A pool's objects: its warm pods, made by the very builder a run's pod is made by
//! ([`PodPlan::pod`]) and marked as the pool's, and the deny-all NetworkPolicy they wait under;
//! and whether a pod that says it is the pool's is one the pool made ([`as_made`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::State;
use super::resource::BuildrPool;
use crate::backend::k8s::labels::{
    EXECUTOR_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, POOL_LABEL, SEED_ANNOTATION, STATE_LABEL,
    TEMPLATE_ANNOTATION,
};
use crate::backend::k8s::objects::{PodPlan, dns_rule, registry_rule};
use crate::backend::k8s::registry::RegistryRoute;

/// What a pool's pods are made from: its template, the binary they get and the seed snapshot
/// their workspace holds (pinned), as a short digest (a pod made from another is replaced: a
/// seed tag that moved replaces the pods, as a new template does).
pub fn template_digest(pool: &BuildrPool, binary_sha256: &str, seed: Option<&str>) -> String {
    let template =
        serde_json::to_string(&pool.spec.container).expect("a container always serializes");
    let digest = Sha256::new()
        .chain_update(template)
        .chain_update(binary_sha256)
        .chain_update(seed.unwrap_or_default())
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
    // A run id of its own, until a run takes it.
    let run_id = crate::backend::new_run_id();
    let mut plan = PodPlan::new(&run_id, namespace, &image, arch);
    plan.container = container.clone();
    container.active_deadline = Some(max_idle + plan.active_deadline());
    Some(PodPlan {
        container,
        task_name: format!("(warm pod of pool {})", pool.name_any()),
        warm_for: Some(max_idle),
        ..plan
    })
}

/// The warm pod of `plan`: labelled as `pool`'s, starting, owned by the pool (so that deleting
/// the pool deletes the pods that wait in it), and annotated with the binary it will get and
/// the digest of both.
pub fn pod(plan: &PodPlan, pool: &BuildrPool, binary_sha256: &str, seed: Option<&str>) -> Pod {
    let mut pod = plan.pod();
    let metadata = &mut pod.metadata;
    let labels = metadata.labels.get_or_insert_default();
    labels.insert(POOL_LABEL.to_string(), pool.name_any());
    labels.insert(
        STATE_LABEL.to_string(),
        State::Starting.as_str().to_string(),
    );
    let annotations = metadata.annotations.get_or_insert_default();
    annotations.insert(
        TEMPLATE_ANNOTATION.to_string(),
        template_digest(pool, binary_sha256, seed),
    );
    annotations.insert(EXECUTOR_ANNOTATION.to_string(), binary_sha256.to_string());
    if let Some(seed) = seed {
        annotations.insert(SEED_ANNOTATION.to_string(), seed.to_string());
    }
    metadata.owner_references = pool.controller_owner_ref(&()).map(|owner| vec![owner]);
    pod
}

/// Whether `pod` is one that `pool` made, as far as the pod object tells: owned by the pool (its
/// uid, as its controller), its digest that of the pool's template and of the binary recorded
/// at its creation, and its spec, in all that decides what runs in it with which rights and
/// mounts, the one the template gives. Else why not, in a few words.
///
/// What it cannot tell: what happened inside the pod (whoever may `exec` into it is trusted
/// with it), and an image tag that was pushed again.
pub fn as_made(pool: &BuildrPool, pod: &Pod) -> Result<(), String> {
    let uid = pool.metadata.uid.as_deref();
    let owned = pod
        .owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid && o.controller == Some(true));
    if !owned {
        return Err(format!("not owned by BuildrPool {}", pool.name_any()));
    }
    let annotations = pod.annotations();
    let Some(binary) = annotations.get(EXECUTOR_ANNOTATION) else {
        return Err(format!("no {EXECUTOR_ANNOTATION} annotation"));
    };
    let seed = annotations.get(SEED_ANNOTATION).map(String::as_str);
    if annotations.get(TEMPLATE_ANNOTATION) != Some(&template_digest(pool, binary, seed)) {
        return Err("made from another template".to_string());
    }
    // Where the pod may run is not compared: the arch is the controller's binary's.
    let Some(expected) = plan(pool, "", "").and_then(|plan| plan.pod().spec) else {
        return Err(format!("BuildrPool {} has no image", pool.name_any()));
    };
    let actual = pod.spec.clone().unwrap_or_default();
    let (expected, actual) = (what_runs(&expected), what_runs(&actual));
    match first_difference(&expected, &actual, "spec") {
        None => Ok(()),
        Some(field) => Err(format!("its {field} is not the template's")),
    }
}

/// What of a pod's spec decides what runs in it, with which rights and mounts. The rest does
/// not make a pod another's: resources (a LimitRange adds to them), the size of its emptyDirs
/// (written back in canonical form), scheduling, the deadline (a take lowers it), and what the
/// API server fills in.
fn what_runs(spec: &PodSpec) -> serde_json::Value {
    let container = |c: &Container| Container {
        name: c.name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        env: c.env.clone(),
        env_from: c.env_from.clone(),
        security_context: c.security_context.clone(),
        volume_mounts: c.volume_mounts.clone(),
        ..Container::default()
    };
    let volume = |v: &Volume| {
        let mut v = v.clone();
        if let Some(empty_dir) = &mut v.empty_dir {
            empty_dir.size_limit = None;
        }
        v
    };
    let yes = |flag: Option<bool>| flag.filter(|&on| on);
    let spec = PodSpec {
        containers: spec.containers.iter().map(container).collect(),
        init_containers: spec.init_containers.clone().filter(|c| !c.is_empty()),
        ephemeral_containers: spec.ephemeral_containers.clone().filter(|c| !c.is_empty()),
        security_context: spec.security_context.clone(),
        volumes: spec
            .volumes
            .as_ref()
            .map(|v| v.iter().map(volume).collect()),
        host_network: yes(spec.host_network),
        host_pid: yes(spec.host_pid),
        host_ipc: yes(spec.host_ipc),
        share_process_namespace: yes(spec.share_process_namespace),
        automount_service_account_token: spec.automount_service_account_token,
        // The API server names the default one when the pod names none.
        service_account_name: Some(
            spec.service_account_name
                .clone()
                .unwrap_or_else(|| "default".to_string()),
        ),
        runtime_class_name: spec.runtime_class_name.clone(),
        ..PodSpec::default()
    };
    serde_json::to_value(spec).expect("a pod spec always serializes")
}

/// The path of the first place where `actual` differs from `expected`, if one does.
fn first_difference(
    expected: &serde_json::Value,
    actual: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
            let null = Value::Null;
            keys.into_iter().find_map(|key| {
                let (e, a) = (e.get(key), a.get(key));
                first_difference(
                    e.unwrap_or(&null),
                    a.unwrap_or(&null),
                    &format!("{path}.{key}"),
                )
            })
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (e, a))| first_difference(e, a, &format!("{path}[{i}]"))),
        _ => (expected != actual).then(|| path.to_string()),
    }
}

/// The name of the policy that denies `pool`'s pods everything while they wait.
pub fn policy_name(pool: &str) -> String {
    format!("buildr-pool-{pool}")
}

/// Denies the pool's pods all ingress and egress: nothing runs in them but a shell waiting for
/// a run, and a run that takes one adds its own policy for the egress its task asks for (the
/// policies add up: this one takes nothing away). A seeded pool's pods may reach the seed's
/// registry (`seed`), and DNS when it is named. Owned by the pool.
pub fn deny_all(pool: &BuildrPool, namespace: &str, seed: Option<&RegistryRoute>) -> NetworkPolicy {
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
            egress: Some(seed.map(seed_egress).unwrap_or_default()),
        }),
    }
}

/// The way to a seed's registry, and to DNS when the registry has a name.
fn seed_egress(route: &RegistryRoute) -> Vec<NetworkPolicyEgressRule> {
    let mut rules = vec![registry_rule(route)];
    if route.name.is_some() {
        rules.push(dns_rule());
    }
    rules
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Container;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::backend::k8s::pool::resource::BuildrPoolSpec;
    use crate::task;

    const BINARY: &str = "ab12";

    fn pool() -> BuildrPool {
        let mut pool = BuildrPool::new(
            "warm",
            BuildrPoolSpec {
                container: task::Container {
                    image: Some("debian:bookworm".to_string()),
                    ..task::Container::default()
                },
                size: 1,
                max_idle: None,
                seed: None,
            },
        );
        pool.metadata.uid = Some("uid-1".to_string());
        pool
    }

    fn warm_pod(pool: &BuildrPool) -> Pod {
        let plan = plan(pool, "builds", "amd64").unwrap();
        pod(&plan, pool, BINARY, None)
    }

    fn why_not(pool: &BuildrPool, change: impl FnOnce(&mut Pod)) -> String {
        let mut pod = warm_pod(pool);
        change(&mut pod);
        as_made(pool, &pod).unwrap_err()
    }

    #[test]
    fn a_pod_the_pool_made_is_as_made_whatever_the_api_server_or_a_take_fills_in() {
        let pool = pool();
        let mut pod = warm_pod(&pool);
        assert_eq!(as_made(&pool, &pod), Ok(()));
        let spec = pod.spec.as_mut().unwrap();
        spec.service_account_name = Some("default".to_string());
        spec.active_deadline_seconds = Some(60);
        spec.containers[0].termination_message_path = Some("/dev/termination-log".to_string());
        spec.volumes.as_mut().unwrap()[1]
            .empty_dir
            .as_mut()
            .unwrap()
            .size_limit = Some(Quantity("10240Mi".to_string()));
        assert_eq!(as_made(&pool, &pod), Ok(()));
    }

    #[test]
    fn a_pod_the_pool_did_not_make_is_told_apart_and_why() {
        let pool = pool();
        assert_eq!(
            why_not(&pool, |pod| {
                pod.spec.as_mut().unwrap().containers[0].image = Some("evil:1".to_string())
            }),
            "its spec.containers[0].image is not the template's"
        );
        assert_eq!(
            why_not(&pool, |pod| pod.spec.as_mut().unwrap().containers[0]
                .command = None),
            "its spec.containers[0].command is not the template's"
        );
        assert_eq!(
            why_not(&pool, |pod| {
                pod.spec.as_mut().unwrap().init_containers = Some(vec![Container::default()])
            }),
            "its spec.initContainers is not the template's"
        );
        assert_eq!(
            why_not(&pool, |pod| pod.spec.as_mut().unwrap().security_context =
                None),
            "its spec.securityContext is not the template's"
        );
        assert_eq!(
            why_not(&pool, |pod| {
                let volumes = pod.spec.as_mut().unwrap().volumes.as_mut().unwrap();
                volumes[0].empty_dir = None;
            }),
            "its spec.volumes[0].emptyDir is not the template's"
        );
        assert_eq!(
            why_not(&pool, |pod| pod.metadata.owner_references = None),
            "not owned by BuildrPool warm"
        );
        // Owned, but not as the controller: made by hand with an owner reference.
        assert_eq!(
            why_not(&pool, |pod| {
                pod.metadata.owner_references.as_mut().unwrap()[0].controller = None
            }),
            "not owned by BuildrPool warm"
        );
        // Of an older template, or with another binary than the one recorded.
        assert_eq!(
            why_not(&pool, |pod| {
                pod.annotations_mut()
                    .insert(EXECUTOR_ANNOTATION.to_string(), "cd34".to_string());
            }),
            "made from another template"
        );
        let mut changed = pool.clone();
        changed.spec.container.memory_limit = Some("1Gi".to_string());
        assert_eq!(
            as_made(&changed, &warm_pod(&pool)).unwrap_err(),
            "made from another template"
        );
    }
}
