//! `buildr k8s check`: whether a run can succeed in a namespace, asked of the API server itself.
//! Every permission of [`PERMISSIONS`] is a `SelfSubjectAccessReview` (which any authenticated
//! user may make), and the namespace's admission (Pod Security, LimitRange, quotas, policies)
//! judges a server-side dry-run create of the very pod a run would make; nothing is created.
//! The cluster calls are [`check`]; what is made of their answers is plain [`Report`] logic, and
//! the table it is shown as is [`table`]'s.

mod table;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

use super::access::{PERMISSIONS, Permission};
use crate::backend::arch::host_arch;
use crate::backend::k8s::api::{api_message, is_not_found};
use crate::backend::k8s::objects::PodPlan;
use crate::backend::k8s::pool::resource::BuildrPool;

/// The image the dry-run pod names when none is given: admission that looks at images (an
/// allowed-registries policy) judges this one, so `--image` gives the real one.
pub const PLACEHOLDER_IMAGE: &str = "buildr-check.invalid/placeholder:1";

/// The API server's answer about one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Missing,
    /// The review itself failed; why.
    Unknown(String),
}

/// What the namespace's admission made of buildr's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Refused; the API server's message.
    Refused(String),
    /// Not asked: creating pods is not allowed, so the dry run would only be refused for that.
    NotChecked,
}

/// A warm pool a run could take its pod from, as `buildr k8s check` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub name: String,
    pub state: PoolState,
    /// Asked for by name (`--pool`): a run that names it fails unless it is there and starts.
    pub named: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// `ready` of `size` pods ready.
    Ready {
        ready: u32,
        size: u32,
    },
    /// Its pods cannot start; why.
    Failing(String),
    Missing,
    /// Pools could not be listed or read; why.
    Unknown(String),
}

impl PoolRow {
    fn blocks(&self) -> bool {
        self.named && matches!(self.state, PoolState::Missing | PoolState::Failing(_))
    }
}

/// Everything `buildr k8s check` found out about a namespace.
#[derive(Debug, Clone)]
pub struct Report {
    pub namespace: String,
    pub permissions: Vec<(&'static Permission, Verdict)>,
    pub admission: Admission,
    /// The pool asked about, else every pool of the namespace.
    pub pools: Vec<PoolRow>,
}

impl Report {
    /// Whether a run (and gc) can succeed: every permission allowed, the pod admitted, and the
    /// pool asked for there with pods that start.
    pub fn ok(&self) -> bool {
        self.permissions.iter().all(|(_, v)| *v == Verdict::Allowed)
            && self.admission == Admission::Admitted
            && !self.pools.iter().any(PoolRow::blocks)
    }

    /// One line: that a run can succeed, or what stops it.
    pub fn summary(&self) -> String {
        let ns = &self.namespace;
        if self.ok() {
            return format!("a run can succeed in namespace {ns}");
        }
        let named = |wanted: fn(&Verdict) -> bool| {
            self.permissions
                .iter()
                .filter(|(_, v)| wanted(v))
                .map(|(p, _)| p.to_string())
                .collect::<Vec<_>>()
        };
        let mut problems = Vec::new();
        let missing = named(|v| *v == Verdict::Missing);
        if !missing.is_empty() {
            problems.push(format!(
                "{} missing permission{} ({})",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ));
        }
        let unknown = named(|v| matches!(v, Verdict::Unknown(_)));
        if !unknown.is_empty() {
            problems.push(format!("could not ask about {}", unknown.join(", ")));
        }
        if let Admission::Refused(_) = self.admission {
            problems.push("the namespace refuses buildr's pod".to_string());
        }
        for pool in self.pools.iter().filter(|p| p.blocks()) {
            problems.push(match pool.state {
                PoolState::Missing => format!("there is no BuildrPool {}", pool.name),
                _ => format!("the pods of BuildrPool {} cannot start", pool.name),
            });
        }
        format!(
            "a run cannot succeed in namespace {ns}: {}",
            problems.join("; ")
        )
    }
}

/// Asks the API server about every permission, about the pod's admission in `namespace`, and
/// about the pool `pool` (else every pool there).
pub async fn check(
    client: &kube::Client,
    namespace: &str,
    image: &str,
    pool: Option<&str>,
) -> Report {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let asked = PERMISSIONS
        .iter()
        .map(|permission| review(&reviews, namespace, permission));
    let permissions: Vec<_> = PERMISSIONS
        .iter()
        .zip(futures::future::join_all(asked).await)
        .collect();
    let may_create_pods = permissions
        .iter()
        .any(|(p, v)| p.resource == "pods" && p.verb == "create" && *v == Verdict::Allowed);
    let admission = if may_create_pods {
        admit(client, namespace, image).await
    } else {
        Admission::NotChecked
    };
    Report {
        namespace: namespace.to_string(),
        permissions,
        admission,
        pools: pools(client, namespace, pool).await,
    }
}

/// The pool named `named`, else every pool of the namespace (none when the cluster has no
/// BuildrPool resource: runs then start their own pods, as they always could).
async fn pools(client: &kube::Client, namespace: &str, named: Option<&str>) -> Vec<PoolRow> {
    let api: Api<BuildrPool> = Api::namespaced(client.clone(), namespace);
    let row = |pool: &BuildrPool, named: bool| PoolRow {
        name: pool.name_any(),
        state: match pool.failing() {
            Some(why) => PoolState::Failing(why.to_string()),
            None => PoolState::Ready {
                ready: pool.status.as_ref().map_or(0, |s| s.ready),
                size: pool.spec.size,
            },
        },
        named,
    };
    match named {
        Some(name) => {
            let state = match api.get_opt(name).await {
                Ok(Some(pool)) => return vec![row(&pool, true)],
                Ok(None) => PoolState::Missing,
                Err(e) if is_not_found(&e) => PoolState::Missing,
                Err(e) => PoolState::Unknown(api_message(&e)),
            };
            vec![PoolRow {
                name: name.to_string(),
                state,
                named: true,
            }]
        }
        None => match api.list(&ListParams::default()).await {
            Ok(list) => list.items.iter().map(|pool| row(pool, false)).collect(),
            Err(_) => Vec::new(),
        },
    }
}

async fn review(
    reviews: &Api<SelfSubjectAccessReview>,
    namespace: &str,
    permission: &Permission,
) -> Verdict {
    let (resource, subresource) = permission.resource_and_subresource();
    let asked = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                group: Some(permission.group.to_string()),
                resource: Some(resource.to_string()),
                subresource: subresource.map(str::to_string),
                verb: Some(permission.verb.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    match reviews.create(&PostParams::default(), &asked).await {
        // Not allowed is missing, whether an authorizer denied it or none allowed it.
        Ok(answer) => match answer.status {
            Some(status) if status.allowed => Verdict::Allowed,
            Some(_) => Verdict::Missing,
            None => Verdict::Unknown("the API server gave no answer".to_string()),
        },
        Err(e) => Verdict::Unknown(api_message(&e)),
    }
}

/// A server-side dry run of the pod a run makes with default task settings: admission runs in
/// full, nothing is stored.
async fn admit(client: &kube::Client, namespace: &str, image: &str) -> Admission {
    let run_id = format!("check-{}", crate::backend::new_run_id());
    let plan = PodPlan {
        task_name: "buildr k8s check".to_string(),
        ..PodPlan::new(&run_id, namespace, image, host_arch())
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match pods.create(&params, &plan.pod()).await {
        Ok(_) => Admission::Admitted,
        // Admission's own words: a 403 here is admission refusing (creating pods is allowed).
        Err(kube::Error::Api(status)) => Admission::Refused(status.message),
        Err(other) => Admission::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(missing: &[(&str, &str)], admission: Admission) -> Report {
        Report {
            namespace: "builds".to_string(),
            permissions: PERMISSIONS
                .iter()
                .map(|p| {
                    let gone = missing
                        .iter()
                        .any(|(verb, resource)| p.verb == *verb && p.resource == *resource);
                    (
                        p,
                        if gone {
                            Verdict::Missing
                        } else {
                            Verdict::Allowed
                        },
                    )
                })
                .collect(),
            admission,
            pools: Vec::new(),
        }
    }

    #[test]
    fn a_pool_asked_for_must_exist_and_start_and_others_only_inform() {
        let mut report = report(&[], Admission::Admitted);
        report.pools = vec![PoolRow {
            name: "warm".to_string(),
            state: PoolState::Ready { ready: 0, size: 3 },
            named: false,
        }];
        assert!(report.ok());
        assert!(report.table().contains("pool warm"));
        assert!(report.table().contains("EMPTY    0 of 3 warm pods ready"));
        report.pools[0].state = PoolState::Failing("the image `x` cannot be pulled".to_string());
        assert!(report.ok(), "a pool nobody asked for does not stop a run");
        report.pools[0].named = true;
        assert!(!report.ok());
        assert_eq!(
            report.summary(),
            "a run cannot succeed in namespace builds: the pods of BuildrPool warm cannot start"
        );
        report.pools[0].state = PoolState::Missing;
        assert_eq!(
            report.summary(),
            "a run cannot succeed in namespace builds: there is no BuildrPool warm"
        );
    }

    #[test]
    fn everything_allowed_and_admitted_is_ok() {
        let report = report(&[], Admission::Admitted);
        assert!(report.ok());
        assert_eq!(report.summary(), "a run can succeed in namespace builds");
        let table = report.table();
        assert!(
            !table.contains("MISSING") && !table.contains("grant"),
            "{table}"
        );
        assert_eq!(
            table.lines().count(),
            2 + PERMISSIONS.len() + 1 + 2,
            "namespace, header, a row each, admission, the note:\n{table}"
        );
        // Everything allowed is when the note matters most.
        let note = table.lines().last().unwrap();
        assert!(
            note.starts_with("note: namespace builds is one trust domain")
                && note.contains("its own namespace"),
            "{table}"
        );
    }

    #[test]
    fn a_missing_permission_shows_the_rule_that_grants_it() {
        let report = report(&[("create", "pods/exec")], Admission::Admitted);
        assert!(!report.ok());
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        let row = lines
            .iter()
            .position(|l| l.starts_with("create pods/exec "))
            .unwrap();
        assert!(lines[row].contains(" MISSING  copying buildr"), "{table}");
        assert_eq!(
            lines[row + 1].trim_start(),
            r#"grant it with: - apiGroups: [""]  resources: [pods/exec]  verbs: [create]"#
        );
        // The columns line up: the answer starts at the same place on every row.
        let column = lines[1].find("ALLOWED").unwrap();
        assert_eq!(lines[row].find("MISSING"), Some(column));
        assert_eq!(
            report.summary(),
            "a run cannot succeed in namespace builds: 1 missing permission (create pods/exec)"
        );
    }

    #[test]
    fn a_refused_pod_shows_admissions_reason() {
        let report = report(
            &[("delete", "pods"), ("list", "networkpolicies")],
            Admission::Refused(
                "pods \"buildr-check-1\" is forbidden: exceeded quota: q,\n requested: pods=1"
                    .to_string(),
            ),
        );
        let table = report.table();
        let row = table
            .lines()
            .find(|l| l.starts_with("admission of buildr's pod "))
            .unwrap();
        assert!(row.contains(" REFUSED  a dry-run create"), "{table}");
        assert!(
            table.contains("forbidden: exceeded quota: q, requested: pods=1\n"),
            "{table}"
        );
        assert_eq!(
            report.summary(),
            "a run cannot succeed in namespace builds: 2 missing permissions (delete pods, list \
             networkpolicies.networking.k8s.io); the namespace refuses buildr's pod"
        );
    }
}
