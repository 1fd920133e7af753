//! The two objects of a run, built as typed values: the build pod and the NetworkPolicy that
//! isolates it. Plain functions of the run's settings, so that their shape is unit-tested here
//! and proven on a real API server (which enforces Pod Security "restricted") in tests/k8s.rs,
//! and the policy on a CNI that enforces it in tests/netpol.rs.
//!
//! Every pod is bounded, whatever its task says or leaves out: an ephemeral-storage request and
//! limit, a `sizeLimit` on the workspace's emptyDir, and `activeDeadlineSeconds`. The default
//! egress is everything but link-local addresses, where the cloud metadata service is.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, EmptyDirVolumeSource, EnvFromSource, HostAlias,
    LocalObjectReference, Pod, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{
    EXPIRES_AT_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL, TASK_ANNOTATION,
};
use super::launch::{BUILDR_DIR, CONTAINER, TASK_ENV_PREFIX, boot_script};
use super::registry::RegistryRoute;
use crate::backend::executor_command::IDLE_TIMEOUT;
use crate::task::{self, Egress};

// `copy` still finds the pod's paths here; `launch` is their home.
pub use super::launch::{BINARY_PATH, SECRET_PATH, SECRET_WAITER, TOOLS_DIR, WORKSPACE_DIR};

/// The user a pod runs as when the task names none: the conventional "nonroot" of distroless.
pub const DEFAULT_USER: i64 = 65532;
/// How long a pod lives, at most, when its task has neither a timeout nor an `active_deadline`:
/// Kubernetes fails it then, and `buildr k8s gc` removes it.
pub const DEFAULT_ACTIVE_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// What a pod gets beyond its task's timeout for start, copies and fetch.
const DEADLINE_MARGIN: Duration = Duration::from_secs(600);
/// The local disk a pod is scheduled for, and the most it may use (writable layer, logs and
/// emptyDirs together), when its task names neither. The request is kept small so that a node
/// holds many builds; the limit is what one build may take before the kubelet evicts it.
const DEFAULT_EPHEMERAL_STORAGE_REQUEST: &str = "1Gi";
const DEFAULT_EPHEMERAL_STORAGE_LIMIT: &str = "10Gi";
/// The link-local ranges the default egress leaves out: they hold the cloud metadata service
/// (169.254.169.254 on most clouds), which hands out the node's credentials.
const LINK_LOCAL_V4: &str = "169.254.0.0/16";
const LINK_LOCAL_V6: &str = "fe80::/10";

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
    /// Set for a pool's warm pod: how long it may wait for a run's secret once its binary is
    /// in (a run's own pod gets the secret before the binary).
    pub warm_for: Option<Duration>,
    pub created_at: SystemTime,
    /// The inputs registry the pod pulls the inputs from, whatever the task's egress.
    pub registry: Option<RegistryRoute>,
}

impl PodPlan {
    /// The plan of a pod named after `run_id`, for a binary of `arch`, with the default task
    /// settings: no task name, timeout or settings, not kept, not warm, created now.
    pub fn new(run_id: &str, namespace: &str, image: &str, arch: &str) -> Self {
        Self {
            run_id: run_id.to_string(),
            namespace: namespace.to_string(),
            task_name: String::new(),
            image: image.to_string(),
            container: task::Container::default(),
            task_timeout: None,
            arch: arch.to_string(),
            keep: false,
            warm_for: None,
            created_at: SystemTime::now(),
            registry: None,
        }
    }

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

    /// Hard limit of the pod's life, always set: the task's `active_deadline`, else its timeout
    /// plus a margin, else a day.
    pub fn active_deadline(&self) -> Duration {
        self.container.active_deadline.unwrap_or_else(|| {
            self.task_timeout
                .map_or(DEFAULT_ACTIVE_DEADLINE, |t| t + DEADLINE_MARGIN)
        })
    }

    fn expires_at(&self) -> SystemTime {
        self.created_at + self.active_deadline()
    }

    /// The ephemeral-storage request and limit. A default never contradicts what the task set:
    /// the default request is lowered to the task's limit, the default limit raised to its
    /// request.
    fn ephemeral_storage(&self) -> (String, String) {
        let c = &self.container;
        let request = c.ephemeral_storage_request.as_deref();
        let limit = c.ephemeral_storage_limit.as_deref();
        let (request, limit) = match (request, limit) {
            (Some(request), Some(limit)) => (request, limit),
            (Some(request), None) => (request, larger(request, DEFAULT_EPHEMERAL_STORAGE_LIMIT)),
            (None, Some(limit)) => (smaller(DEFAULT_EPHEMERAL_STORAGE_REQUEST, limit), limit),
            (None, None) => (
                DEFAULT_EPHEMERAL_STORAGE_REQUEST,
                DEFAULT_EPHEMERAL_STORAGE_LIMIT,
            ),
        };
        (request.to_string(), limit.to_string())
    }

    /// The workspace emptyDir's `sizeLimit`: the task's, else the pod's whole ephemeral-storage
    /// limit (a task that raises that one means its workspace too).
    fn workspace_size_limit(&self) -> String {
        self.container
            .workspace_size_limit
            .clone()
            .unwrap_or_else(|| self.ephemeral_storage().1)
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
        // The buildr emptyDir (binary, state, event log, archive) is bounded by the pod's
        // ephemeral-storage limit; the workspace by its own size limit too.
        let volume = |name: &str, size_limit: Option<String>| Volume {
            name: name.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: size_limit.map(Quantity),
                ..EmptyDirVolumeSource::default()
            }),
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
                // The registry's name without DNS, which the task's egress may not allow.
                host_aliases: self.registry.as_ref().and_then(|route| {
                    let name = route.name.clone()?;
                    Some(
                        route
                            .addresses
                            .iter()
                            .map(|address| HostAlias {
                                hostnames: Some(vec![name.clone()]),
                                ip: address.to_string(),
                            })
                            .collect(),
                    )
                }),
                active_deadline_seconds: Some(self.active_deadline().as_secs() as i64),
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
                        boot_script(self.keep, self.warm_for.unwrap_or_default() + IDLE_TIMEOUT),
                    ]),
                    working_dir: Some(WORKSPACE_DIR.to_string()),
                    env_from: non_empty(self.env_from()),
                    resources: Some(self.resources()),
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
                volumes: Some(vec![
                    volume("buildr", None),
                    volume("workspace", Some(self.workspace_size_limit())),
                ]),
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

    /// CPU and memory as the task asks (a namespace's LimitRange fills what it leaves out);
    /// ephemeral storage always, so that no build can fill its node's disk.
    fn resources(&self) -> ResourceRequirements {
        let c = &self.container;
        let (storage_request, storage_limit) = self.ephemeral_storage();
        let quantities = |cpu: &Option<String>, memory: &Option<String>, storage: String| {
            [("cpu", cpu.clone()), ("memory", memory.clone())]
                .into_iter()
                .chain([("ephemeral-storage", Some(storage))])
                .filter_map(|(name, value)| Some((name.to_string(), Quantity(value?))))
                .collect::<BTreeMap<String, Quantity>>()
        };
        ResourceRequirements {
            requests: Some(quantities(
                &c.cpu_request,
                &c.memory_request,
                storage_request,
            )),
            limits: Some(quantities(&c.cpu_limit, &c.memory_limit, storage_limit)),
            ..ResourceRequirements::default()
        }
    }

    /// The policy that isolates the pod named `pod` (the plan's own, or a warm pod a run took):
    /// no ingress at all (port-forward does not cross it), and the egress the task asked for.
    /// Owned by the pod, so that it goes when the pod goes.
    pub fn network_policy(&self, pod: &str, pod_uid: &str) -> NetworkPolicy {
        let mut egress = match self.container.egress.unwrap_or_default() {
            Egress::None => Vec::new(),
            Egress::Dns => vec![dns_rule()],
            Egress::NoLinkLocal => vec![NetworkPolicyEgressRule {
                to: Some(vec![
                    everywhere_but("0.0.0.0/0", LINK_LOCAL_V4),
                    everywhere_but("::/0", LINK_LOCAL_V6),
                ]),
                ports: None,
            }],
            Egress::All => vec![NetworkPolicyEgressRule::default()],
        };
        egress.extend(self.registry.as_ref().map(registry_rule));
        let mut metadata = self.metadata();
        metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".to_string(),
            kind: "Pod".to_string(),
            name: pod.to_string(),
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

/// DNS, anywhere: port 53, UDP and TCP.
pub fn dns_rule() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
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
    }
}

/// The way to the inputs registry: its addresses, its port, TCP.
pub fn registry_rule(route: &RegistryRoute) -> NetworkPolicyEgressRule {
    let host = |address: &std::net::IpAddr| {
        let bits = if address.is_ipv4() { 32 } else { 128 };
        NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: format!("{address}/{bits}"),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        }
    };
    NetworkPolicyEgressRule {
        to: Some(route.addresses.iter().map(host).collect()),
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(route.port))),
            protocol: Some("TCP".to_string()),
            ..NetworkPolicyPort::default()
        }]),
    }
}

/// A policy peer: every address of `cidr` but those of `except`.
fn everywhere_but(cidr: &str, except: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: Some(vec![except.to_string()]),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Of two quantities, the larger; `a` if they cannot be compared.
fn larger<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (task::quantity::value(a), task::quantity::value(b)) {
        (Ok(x), Ok(y)) if y > x => b,
        _ => a,
    }
}

/// Of two quantities, the smaller; `a` if they cannot be compared.
fn smaller<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (task::quantity::value(a), task::quantity::value(b)) {
        (Ok(x), Ok(y)) if y < x => b,
        _ => a,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PodPlan {
        PodPlan {
            task_name: "test".to_string(),
            created_at: SystemTime::UNIX_EPOCH,
            ..PodPlan::new("abc123", "builds", "debian:bookworm", "amd64")
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
        assert_eq!(spec.active_deadline_seconds, Some(24 * 3600));
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
    }

    /// (request, limit) of a resource of the pod's container, as Kubernetes gets them.
    fn resource(pod: &Pod, name: &str) -> (Option<String>, Option<String>) {
        let resources = pod.spec.as_ref().unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        let get = |map: Option<BTreeMap<String, Quantity>>| map?.get(name).map(|q| q.0.clone());
        (get(resources.requests), get(resources.limits))
    }

    fn workspace_size_limit(pod: &Pod) -> Option<String> {
        let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
        let workspace = volumes.iter().find(|v| v.name == "workspace").unwrap();
        workspace
            .empty_dir
            .as_ref()
            .unwrap()
            .size_limit
            .clone()
            .map(|q| q.0)
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    #[test]
    fn the_default_pod_is_bounded_in_disk_and_time() {
        let pod = plan().pod();
        assert_eq!(
            resource(&pod, "ephemeral-storage"),
            (some("1Gi"), some("10Gi"))
        );
        assert_eq!(workspace_size_limit(&pod), some("10Gi"));
        let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
        let buildr = volumes.iter().find(|v| v.name == "buildr").unwrap();
        assert_eq!(buildr.empty_dir, Some(EmptyDirVolumeSource::default()));
        // CPU and memory stay the namespace's to default (its LimitRange, if any).
        assert_eq!(resource(&pod, "cpu"), (None, None));
        assert_eq!(resource(&pod, "memory"), (None, None));
        assert_eq!(
            pod.spec.unwrap().active_deadline_seconds,
            Some(DEFAULT_ACTIVE_DEADLINE.as_secs() as i64)
        );
    }

    #[test]
    fn bounds_set_by_the_task_reach_the_pod_and_defaults_do_not_contradict_them() {
        let with = |container: task::Container| {
            let mut plan = plan();
            plan.container = container;
            plan.pod()
        };
        let pod = with(task::Container {
            ephemeral_storage_request: some("2Gi"),
            ephemeral_storage_limit: some("50Gi"),
            workspace_size_limit: some("40Gi"),
            active_deadline: Some(Duration::from_secs(7200)),
            ..task::Container::default()
        });
        assert_eq!(
            resource(&pod, "ephemeral-storage"),
            (some("2Gi"), some("50Gi"))
        );
        assert_eq!(workspace_size_limit(&pod), some("40Gi"));
        assert_eq!(pod.spec.unwrap().active_deadline_seconds, Some(7200));

        // A raised limit raises the workspace's bound with it; a low one lowers the request.
        let pod = with(task::Container {
            ephemeral_storage_limit: some("500Mi"),
            ..task::Container::default()
        });
        assert_eq!(
            resource(&pod, "ephemeral-storage"),
            (some("500Mi"), some("500Mi"))
        );
        assert_eq!(workspace_size_limit(&pod), some("500Mi"));
        let pod = with(task::Container {
            ephemeral_storage_limit: some("50Gi"),
            ..task::Container::default()
        });
        assert_eq!(
            resource(&pod, "ephemeral-storage"),
            (some("1Gi"), some("50Gi"))
        );
        assert_eq!(workspace_size_limit(&pod), some("50Gi"));
        // A large request raises the default limit.
        let pod = with(task::Container {
            ephemeral_storage_request: some("20Gi"),
            ..task::Container::default()
        });
        assert_eq!(
            resource(&pod, "ephemeral-storage"),
            (some("20Gi"), some("20Gi"))
        );
    }

    #[test]
    fn the_deadline_and_the_expiry_follow_the_timeout_unless_the_task_sets_one() {
        let mut plan = plan();
        plan.task_timeout = Some(Duration::from_secs(60));
        let pod = plan.pod();
        assert_eq!(
            pod.metadata.annotations.unwrap()[EXPIRES_AT_ANNOTATION],
            "1970-01-01T00:11:00Z"
        );
        assert_eq!(pod.spec.unwrap().active_deadline_seconds, Some(660));
        plan.container.active_deadline = Some(Duration::from_secs(3600));
        let pod = plan.pod();
        assert_eq!(
            pod.metadata.annotations.unwrap()[EXPIRES_AT_ANNOTATION],
            "1970-01-01T01:00:00Z"
        );
        assert_eq!(pod.spec.unwrap().active_deadline_seconds, Some(3600));
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
        assert!(!resources.requests.as_ref().unwrap().contains_key("memory"));
        let env_from = &container.env_from.as_ref().unwrap()[0];
        assert_eq!(env_from.secret_ref.as_ref().unwrap().name, "tokens");
        assert_eq!(env_from.prefix.as_deref(), Some(TASK_ENV_PREFIX));
        assert!(container.env.is_none(), "no value is ever in the spec");
    }

    #[test]
    fn the_policy_denies_ingress_and_allows_the_chosen_egress() {
        let mut plan = plan();
        for (egress, rules) in [
            (Egress::None, 0),
            (Egress::Dns, 1),
            (Egress::NoLinkLocal, 1),
            (Egress::All, 1),
        ] {
            plan.container.egress = Some(egress);
            let policy = plan.network_policy("buildr-abc123", "uid-1");
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
            } else if egress == Egress::All {
                assert_eq!(spec.egress.unwrap()[0], NetworkPolicyEgressRule::default());
            }
        }
    }

    #[test]
    fn a_pod_that_pulls_reaches_its_registry_by_name_whatever_its_egress() {
        let mut plan = plan();
        plan.container.egress = Some(Egress::None);
        plan.registry = Some(RegistryRoute {
            registry: "registry.team:5000".to_string(),
            name: Some("registry.team".to_string()),
            addresses: vec!["10.1.2.3".parse().unwrap(), "fd00::7".parse().unwrap()],
            port: 5000,
            plain_http: false,
        });
        let rules = plan
            .network_policy("buildr-abc123", "uid-1")
            .spec
            .unwrap()
            .egress;
        let rule = &rules.unwrap()[0];
        let cidrs: Vec<_> = rule
            .to
            .as_ref()
            .unwrap()
            .iter()
            .map(|peer| peer.ip_block.as_ref().unwrap().cidr.as_str())
            .collect();
        assert_eq!(cidrs, ["10.1.2.3/32", "fd00::7/128"]);
        let port = &rule.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.port.clone(), port.protocol.as_deref()),
            (Some(IntOrString::Int(5000)), Some("TCP"))
        );
        let aliases = plan.pod().spec.unwrap().host_aliases.unwrap();
        assert_eq!(aliases.len(), 2);
        assert!(
            aliases
                .iter()
                .all(|alias| alias.hostnames == Some(vec!["registry.team".to_string()]))
        );
    }

    #[test]
    fn the_default_egress_is_everything_but_link_local() {
        let policy = plan().network_policy("buildr-abc123", "uid-1");
        let rules = policy.spec.unwrap().egress.unwrap();
        let blocks: Vec<(String, Vec<String>)> = rules[0]
            .to
            .clone()
            .unwrap()
            .into_iter()
            .map(|peer| {
                let block = peer.ip_block.unwrap();
                (block.cidr, block.except.unwrap())
            })
            .collect();
        assert_eq!(
            blocks,
            [
                ("0.0.0.0/0".to_string(), vec!["169.254.0.0/16".to_string()]),
                ("::/0".to_string(), vec!["fe80::/10".to_string()]),
            ]
        );
        assert_eq!(rules[0].ports, None, "every port");
    }
}
