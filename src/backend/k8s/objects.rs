//! The two objects of a run, built as typed values: the build pod and the NetworkPolicy that
//! isolates it. Plain functions of the run's settings, so that their shape is unit-tested here
//! and proven on a real API server (which enforces Pod Security "restricted") in tests/k8s.rs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, EmptyDirVolumeSource, EnvFromSource,
    LocalObjectReference, Pod, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::task::{self, Egress};

/// The label every object buildr creates carries, and by which `buildr k8s gc` finds them.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "buildr";
/// The run an object belongs to; the policy selects its pod by it.
pub const RUN_ID_LABEL: &str = "buildr.dev/run-id";
/// When the object may be deleted by `buildr k8s gc` (RFC 3339), whatever became of its client.
pub const EXPIRES_AT_ANNOTATION: &str = "buildr.dev/expires-at";
/// The task the pod runs, for people reading `kubectl get pods`.
pub const TASK_ANNOTATION: &str = "buildr.dev/task";

/// The executor's container, and the port it listens on inside the pod (loopback only).
pub const CONTAINER: &str = "executor";
pub const EXECUTOR_PORT: u16 = 7070;
/// Where the binary, the executor's state and the workspace live in the pod (emptyDirs).
pub const BUILDR_DIR: &str = "/buildr";
pub const BINARY_PATH: &str = "/buildr/bin/buildr";
/// The task's tools, first in its PATH.
pub const TOOLS_DIR: &str = "/buildr/tools";
/// The run's secret, which every call to the executor must carry (see `crate::secret`).
pub const SECRET_PATH: &str = "/buildr/secret";
pub const WORKSPACE_DIR: &str = "/workspace";
/// The environment variables prefix under which Secrets and ConfigMaps reach the executor; it
/// hands them to the task without the prefix (the executor's own environment stays its own).
pub const TASK_ENV_PREFIX: &str = "BUILDR_TASK_ENV_";
/// The user a pod runs as when the task names none: the conventional "nonroot" of distroless.
pub const DEFAULT_USER: i64 = 65532;
/// How long the executor stays after its task when no client comes back for the result.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a pod lives, at most, when its task has no timeout; `buildr k8s gc` removes it then.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// What a pod gets beyond its task's timeout for start, copies and fetch.
const DEADLINE_MARGIN: Duration = Duration::from_secs(600);

/// Everything the objects of one run are made from.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub run_id: String,
    pub namespace: String,
    pub task_name: String,
    pub image: String,
    pub container: task::Container,
    pub task_timeout: Option<Duration>,
    /// `kubernetes.io/arch` of the binary that will run in the pod.
    pub arch: String,
    /// The user wants the pod after the run: it stays up once the executor is done.
    pub keep: bool,
    pub created_at: SystemTime,
}

impl PodPlan {
    /// The name of both the pod and its policy.
    pub fn name(&self) -> String {
        format!("buildr-{}", self.run_id)
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.container.labels.clone();
        labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
        labels.insert(RUN_ID_LABEL.to_string(), self.run_id.clone());
        labels
    }

    /// Hard limit of the pod's life: the task's timeout plus a margin, if it has one.
    fn active_deadline(&self) -> Option<Duration> {
        self.task_timeout.map(|t| t + DEADLINE_MARGIN)
    }

    fn expires_at(&self) -> SystemTime {
        self.created_at + self.active_deadline().unwrap_or(DEFAULT_EXPIRY)
    }

    fn metadata(&self) -> ObjectMeta {
        let mut annotations = self.container.annotations.clone();
        annotations.insert(
            EXPIRES_AT_ANNOTATION.to_string(),
            humantime::format_rfc3339_seconds(self.expires_at()).to_string(),
        );
        annotations.insert(TASK_ANNOTATION.to_string(), self.task_name.clone());
        ObjectMeta {
            name: Some(self.name()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    }

    /// The build pod: passes Pod Security "restricted"; its main process waits for the binary
    /// to be copied in and then becomes the executor.
    pub fn pod(&self) -> Pod {
        let user = self.container.run_as_user.unwrap_or(DEFAULT_USER);
        let mut node_selector = self.container.node_selector.clone();
        node_selector.insert("kubernetes.io/os".to_string(), "linux".to_string());
        node_selector.insert("kubernetes.io/arch".to_string(), self.arch.clone());
        let volume = |name: &str| Volume {
            name: name.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        };
        let mount = |name: &str, path: &str| VolumeMount {
            name: name.to_string(),
            mount_path: path.to_string(),
            ..VolumeMount::default()
        };
        Pod {
            metadata: self.metadata(),
            spec: Some(PodSpec {
                restart_policy: Some("Never".to_string()),
                automount_service_account_token: Some(false),
                service_account_name: self.container.service_account.clone(),
                // Service links would put every Service of the namespace into the environment.
                enable_service_links: Some(false),
                active_deadline_seconds: self.active_deadline().map(|d| d.as_secs() as i64),
                // The executor stops its task (SIGTERM, then SIGKILL 5 s later) on deletion.
                termination_grace_period_seconds: Some(10),
                node_selector: Some(node_selector),
                tolerations: non_empty(self.container.tolerations.iter().map(toleration)),
                image_pull_secrets: non_empty(
                    self.container
                        .image_pull_secrets
                        .iter()
                        .map(|name| LocalObjectReference { name: name.clone() }),
                ),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(user),
                    run_as_group: Some(user),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_string(),
                        ..SeccompProfile::default()
                    }),
                    ..PodSecurityContext::default()
                }),
                containers: vec![Container {
                    name: CONTAINER.to_string(),
                    image: Some(self.image.clone()),
                    command: Some(vec![
                        "/bin/sh".to_string(),
                        "-c".to_string(),
                        boot_script(self.keep),
                    ]),
                    working_dir: Some(WORKSPACE_DIR.to_string()),
                    env_from: non_empty(self.env_from()),
                    resources: self.resources(),
                    security_context: Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        privileged: Some(false),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".to_string()]),
                            ..Capabilities::default()
                        }),
                        ..SecurityContext::default()
                    }),
                    volume_mounts: Some(vec![
                        mount("buildr", BUILDR_DIR),
                        mount("workspace", WORKSPACE_DIR),
                    ]),
                    ..Container::default()
                }],
                volumes: Some(vec![volume("buildr"), volume("workspace")]),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn env_from(&self) -> impl Iterator<Item = EnvFromSource> {
        let secrets = self
            .container
            .env_from_secrets
            .iter()
            .map(|name| EnvFromSource {
                prefix: Some(TASK_ENV_PREFIX.to_string()),
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            });
        let config_maps = self
            .container
            .env_from_config_maps
            .iter()
            .map(|name| EnvFromSource {
                prefix: Some(TASK_ENV_PREFIX.to_string()),
                config_map_ref: Some(ConfigMapEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            });
        secrets.chain(config_maps)
    }

    fn resources(&self) -> Option<ResourceRequirements> {
        let c = &self.container;
        let quantities = |cpu: &Option<String>, memory: &Option<String>| {
            let map: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_string(), Quantity(value.clone()?))))
                .collect();
            (!map.is_empty()).then_some(map)
        };
        let requests = quantities(&c.cpu_request, &c.memory_request);
        let limits = quantities(&c.cpu_limit, &c.memory_limit);
        (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
            requests,
            limits,
            ..ResourceRequirements::default()
        })
    }

    /// The policy that isolates the pod: no ingress at all (port-forward does not cross it), and
    /// the egress the task asked for. Owned by the pod, so that it goes when the pod goes.
    pub fn network_policy(&self, pod_uid: &str) -> NetworkPolicy {
        let egress = match self.container.egress.unwrap_or(Egress::All) {
            Egress::None => Vec::new(),
            Egress::Dns => vec![NetworkPolicyEgressRule {
                ports: Some(
                    ["UDP", "TCP"]
                        .into_iter()
                        .map(|protocol| NetworkPolicyPort {
                            port: Some(IntOrString::Int(53)),
                            protocol: Some(protocol.to_string()),
                            ..NetworkPolicyPort::default()
                        })
                        .collect(),
                ),
                to: None,
            }],
            Egress::All => vec![NetworkPolicyEgressRule::default()],
        };
        let mut metadata = self.metadata();
        metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".to_string(),
            kind: "Pod".to_string(),
            name: self.name(),
            uid: pod_uid.to_string(),
            // blockOwnerDeletion would need update rights on pods/finalizers; not worth it.
            ..OwnerReference::default()
        }]);
        NetworkPolicy {
            metadata,
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        RUN_ID_LABEL.to_string(),
                        self.run_id.clone(),
                    )])),
                    ..LabelSelector::default()
                }),
                policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                ingress: Some(Vec::new()),
                egress: Some(egress),
            }),
        }
    }
}

fn toleration(t: &task::Toleration) -> Toleration {
    Toleration {
        key: t.key.clone(),
        operator: t.operator.clone(),
        value: t.value.clone(),
        effect: t.effect.clone(),
        toleration_seconds: t.toleration_seconds,
    }
}

fn non_empty<T>(items: impl Iterator<Item = T>) -> Option<Vec<T>> {
    let items: Vec<T> = items.collect();
    (!items.is_empty()).then_some(items)
}

/// The container's main process: waits for the binary (copied in through exec once the pod
/// runs, and renamed into place only when complete), then becomes the executor, so that the
/// executor is the process the pod lives by and not an exec session that a dropped connection
/// would orphan. It gives up if no binary comes, so that a pod whose client died early ends.
/// A kept pod stays up after the executor, for a post-mortem, until it is deleted or expires.
fn boot_script(keep: bool) -> String {
    // As PID 1 the shell would ignore SIGTERM: without the trap a deleted pod lingers for its
    // whole grace period.
    let wait = format!(
        "trap 'exit 143' TERM INT; i=0; while [ ! -x {BINARY_PATH} ]; do \
           i=$((i+1)); if [ $i -gt 15000 ]; then echo 'buildr: no executor binary arrived within 300s' >&2; exit 1; fi; \
           sleep 0.02; \
         done; "
    );
    // The executor hands its PATH on to the task.
    let tools = format!("export PATH={TOOLS_DIR}:$PATH; ");
    let executor = format!(
        "{BINARY_PATH} executor --listen 127.0.0.1:{EXECUTOR_PORT} --state-dir {BUILDR_DIR}/state \
         --workspace {WORKSPACE_DIR} --secret-file {SECRET_PATH} \
         --idle-timeout {}s --env-prefix {TASK_ENV_PREFIX}",
        IDLE_TIMEOUT.as_secs()
    );
    if keep {
        format!(
            "{wait}{tools}{executor}; echo 'buildr: the executor is done; the pod is kept'; while :; do sleep 3600 & wait $!; done"
        )
    } else {
        format!("{wait}{tools}exec {executor}")
    }
}

/// `kubernetes.io/arch` for a Rust target architecture.
pub fn kubernetes_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PodPlan {
        PodPlan {
            run_id: "abc123".to_string(),
            namespace: "builds".to_string(),
            task_name: "test".to_string(),
            image: "debian:bookworm".to_string(),
            container: task::Container::default(),
            task_timeout: None,
            arch: "amd64".to_string(),
            keep: false,
            created_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_pod_is_restricted_and_labelled() {
        let pod = plan().pod();
        let meta = &pod.metadata;
        assert_eq!(meta.name.as_deref(), Some("buildr-abc123"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "buildr");
        assert_eq!(labels[RUN_ID_LABEL], "abc123");
        assert_eq!(
            meta.annotations.as_ref().unwrap()[EXPIRES_AT_ANNOTATION],
            "1970-01-02T00:00:00Z"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.active_deadline_seconds, None);
        let security = spec.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.run_as_user, Some(DEFAULT_USER));
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let container = &spec.containers[0];
        let container_security = container.security_context.as_ref().unwrap();
        assert_eq!(container_security.allow_privilege_escalation, Some(false));
        assert_eq!(
            container_security.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(spec.node_selector.unwrap()["kubernetes.io/arch"], "amd64");
        assert!(spec.volumes.unwrap().iter().all(|v| v.empty_dir.is_some()));
        assert!(container.resources.is_none());
    }

    #[test]
    fn task_settings_reach_the_pod() {
        let mut plan = plan();
        plan.task_timeout = Some(Duration::from_secs(60));
        plan.container = task::Container {
            cpu_request: Some("500m".to_string()),
            memory_limit: Some("1Gi".to_string()),
            run_as_user: Some(1000),
            env_from_secrets: vec!["tokens".to_string()],
            labels: BTreeMap::from([("team".to_string(), "infra".to_string())]),
            node_selector: BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
            ..task::Container::default()
        };
        let pod = plan.pod();
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["team"], "infra");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(660));
        assert_eq!(spec.security_context.unwrap().run_as_user, Some(1000));
        assert_eq!(spec.node_selector.as_ref().unwrap()["disk"], "ssd");
        let container = &spec.containers[0];
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "500m");
        assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
        assert!(!resources.limits.as_ref().unwrap().contains_key("cpu"));
        let env_from = &container.env_from.as_ref().unwrap()[0];
        assert_eq!(env_from.secret_ref.as_ref().unwrap().name, "tokens");
        assert_eq!(env_from.prefix.as_deref(), Some(TASK_ENV_PREFIX));
        assert!(container.env.is_none(), "no value is ever in the spec");
    }

    #[test]
    fn the_policy_denies_ingress_and_allows_the_chosen_egress() {
        let mut plan = plan();
        for (egress, rules) in [(Egress::None, 0), (Egress::Dns, 1), (Egress::All, 1)] {
            plan.container.egress = Some(egress);
            let policy = plan.network_policy("uid-1");
            let owner = &policy.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pod", "uid-1"));
            assert_eq!(owner.block_owner_deletion, None);
            let spec = policy.spec.unwrap();
            assert_eq!(
                spec.pod_selector.unwrap().match_labels.unwrap()[RUN_ID_LABEL],
                "abc123"
            );
            assert_eq!(spec.ingress, Some(Vec::new()));
            assert_eq!(spec.egress.as_ref().unwrap().len(), rules, "{egress:?}");
            if egress == Egress::Dns {
                let ports = spec.egress.unwrap()[0].ports.clone().unwrap();
                assert!(ports.iter().all(|p| p.port == Some(IntOrString::Int(53))));
            }
        }
    }
}
