//! The permissions buildr uses in a namespace, in one table: what `buildr k8s check` asks the
//! API server about, what the chart's Role grants (tests/chart.rs holds it to this table), and
//! how a refusal from the API server is put into words that name the missing permission.

use std::fmt;

/// One RBAC permission (a verb on a resource) that a run or `buildr k8s gc` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The API group: `""` for the core group.
    pub group: &'static str,
    /// The resource, with its subresource after a slash (`pods/exec`), as RBAC rules name it.
    pub resource: &'static str,
    pub verb: &'static str,
    /// What buildr does with it, for people deciding whether to grant it.
    pub purpose: &'static str,
    /// Whether `buildr run` uses it (else only `buildr k8s gc` does).
    pub run: bool,
    /// Whether only a run that takes a warm pod needs it: without it, runs start pods of their
    /// own (README, Warm pools).
    pub warm: bool,
}

/// Everything `buildr run --backend k8s` (warm pools included) and `buildr k8s gc` call, nothing
/// more: exactly the rules of the chart's Role (charts/buildr/templates/role.yaml). The pool
/// controller's own are in its Role (charts/buildr/templates/pool-controller.yaml).
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "",
        resource: "pods",
        verb: "create",
        purpose: "a run creates its pod",
        run: true,
        warm: false,
    },
    Permission {
        group: "",
        resource: "pods",
        verb: "list",
        purpose: "a run watches its pod, and a watch lists first; gc finds expired pods",
        run: true,
        warm: false,
    },
    Permission {
        group: "",
        resource: "pods",
        verb: "watch",
        purpose: "a run watches its pod start and stop, and go when deleted",
        run: true,
        warm: false,
    },
    Permission {
        group: "",
        resource: "pods",
        verb: "delete",
        purpose: "a run deletes its pod at the end; gc deletes expired pods",
        run: true,
        warm: false,
    },
    Permission {
        group: "",
        resource: "pods",
        verb: "patch",
        purpose: "a run takes a warm pod: relabels it as its own, if nobody took it first",
        run: true,
        warm: true,
    },
    Permission {
        group: "buildr.dev",
        resource: "buildrpools",
        verb: "get",
        purpose: "a run reads the BuildrPool it names (--pool, `pool`)",
        run: true,
        warm: true,
    },
    Permission {
        group: "buildr.dev",
        resource: "buildrpools",
        verb: "list",
        purpose: "a run looks for a BuildrPool with its pod settings; check lists pools",
        run: true,
        warm: true,
    },
    Permission {
        group: "",
        resource: "pods/exec",
        verb: "get",
        purpose: "copying buildr and the inputs into the pod",
        run: true,
        warm: false,
    },
    Permission {
        group: "",
        resource: "pods/exec",
        verb: "create",
        purpose: "copying buildr and the inputs into the pod; checked from Kubernetes 1.35",
        run: true,
        warm: false,
    },
    Permission {
        group: "",
        resource: "pods/portforward",
        verb: "get",
        purpose: "connecting to the executor in the pod",
        run: true,
        warm: false,
    },
    Permission {
        group: "",
        resource: "pods/portforward",
        verb: "create",
        purpose: "connecting to the executor in the pod; checked from Kubernetes 1.35",
        run: true,
        warm: false,
    },
    Permission {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verb: "create",
        purpose: "a run isolates its pod with a NetworkPolicy",
        run: true,
        warm: false,
    },
    Permission {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verb: "list",
        purpose: "gc finds expired policies",
        run: false,
        warm: false,
    },
    Permission {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verb: "delete",
        purpose: "a run deletes its policy at the end; gc deletes expired ones",
        run: true,
        warm: false,
    },
];

impl Permission {
    /// The entry of [`PERMISSIONS`] for a verb on a resource, if buildr uses it.
    pub fn find(group: &str, resource: &str, verb: &str) -> Option<&'static Permission> {
        PERMISSIONS
            .iter()
            .find(|p| p.group == group && p.resource == resource && p.verb == verb)
    }

    /// The resource and the subresource, apart, as an access review asks for them.
    pub fn resource_and_subresource(&self) -> (&'static str, Option<&'static str>) {
        match self.resource.split_once('/') {
            Some((resource, subresource)) => (resource, Some(subresource)),
            None => (self.resource, None),
        }
    }

    /// The Role rule that grants it, on one line, in the chart's YAML style.
    pub fn rule(&self) -> String {
        let group = if self.group.is_empty() {
            "\"\""
        } else {
            self.group
        };
        format!(
            "- apiGroups: [{group}]  resources: [{}]  verbs: [{}]",
            self.resource, self.verb
        )
    }
}

/// `create pods/exec`; a resource outside the core group carries it (`networkpolicies.networking.k8s.io`),
/// as kubectl names them.
impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Named::new(self.verb, self.resource, self.group))
    }
}

struct Named<'a> {
    verb: &'a str,
    resource: &'a str,
    group: &'a str,
}

impl<'a> Named<'a> {
    fn new(verb: &'a str, resource: &'a str, group: &'a str) -> Self {
        Self {
            verb,
            resource,
            group,
        }
    }
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} {}", self.verb, self.resource)
        } else {
            // The group goes after the resource, before a subresource: `networkpolicies.networking.k8s.io`.
            match self.resource.split_once('/') {
                Some((r, sub)) => write!(f, "{} {r}.{}/{sub}", self.verb, self.group),
                None => write!(f, "{} {}.{}", self.verb, self.resource, self.group),
            }
        }
    }
}

/// Whether the API server refused a request for lack of permission (403 Forbidden), the
/// websocket upgrades of exec and port-forward included.
pub fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

/// A 403 from the API server, read: which verb on which resource was refused, where. The
/// API server's RBAC message says it: `pods "x" is forbidden: User "u" cannot create resource
/// "pods/exec" in API group "" in the namespace "ns"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The verb, resource, group and namespace, when the message names them.
    refused: Option<Refused>,
    /// The API server's own words, for a message of another shape (admission's).
    message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    verb: String,
    resource: String,
    group: String,
    namespace: Option<String>,
}

impl Denial {
    pub fn from_message(message: &str) -> Self {
        Self {
            refused: parse_refusal(message),
            message: message.to_string(),
        }
    }

    /// The namespace the refusal was in, when the message names it.
    pub fn namespace(&self) -> Option<&str> {
        self.refused.as_ref()?.namespace.as_deref()
    }

    /// What buildr wanted the permission for, when it is one of [`PERMISSIONS`].
    fn permission(&self) -> Option<&'static Permission> {
        let r = self.refused.as_ref()?;
        Permission::find(&r.group, &r.resource, &r.verb)
    }
}

/// `not allowed to create pods/exec in namespace ns (copying …); run `buildr k8s check -n ns` to
/// see every missing permission`.
impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not an authorizer's refusal: admission's (Pod Security, a quota, a webhook), which
        // speaks for itself and which the task's own settings may have caused.
        let Some(r) = &self.refused else {
            return f.write_str(&self.message);
        };
        write!(
            f,
            "not allowed to {}",
            Named::new(&r.verb, &r.resource, &r.group)
        )?;
        if let Some(ns) = &r.namespace {
            write!(f, " in namespace {ns}")?;
        }
        if let Some(p) = self.permission() {
            write!(f, " ({})", p.purpose)?;
        }
        match &r.namespace {
            Some(ns) => write!(
                f,
                "; run `buildr k8s check -n {ns}` to see every missing permission"
            ),
            None => write!(
                f,
                "; run `buildr k8s check` to see every missing permission"
            ),
        }
    }
}

/// Reads `cannot VERB resource "RESOURCE" in API group "GROUP"[ in the namespace "NS"]` out of
/// the API server's message (`forbiddenMessage` in k8s.io/apiserver).
fn parse_refusal(message: &str) -> Option<Refused> {
    let rest = &message[message.find("\" cannot ")? + "\" cannot ".len()..];
    let (verb, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("resource \"")?;
    let (resource, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(" in API group \"")?;
    let (group, rest) = rest.split_once('"')?;
    let namespace = rest
        .strip_prefix(" in the namespace \"")
        .and_then(|ns| Some(ns.split_once('"')?.0.to_string()));
    Some(Refused {
        verb: verb.to_string(),
        resource: resource.to_string(),
        group: group.to_string(),
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_is_listed_once() {
        for (i, p) in PERMISSIONS.iter().enumerate() {
            assert_eq!(
                Permission::find(p.group, p.resource, p.verb),
                Some(&PERMISSIONS[i]),
                "{p} is listed twice"
            );
        }
    }

    #[test]
    fn a_rule_grants_one_permission_in_the_roles_style() {
        let exec = Permission::find("", "pods/exec", "create").unwrap();
        assert_eq!(
            exec.rule(),
            r#"- apiGroups: [""]  resources: [pods/exec]  verbs: [create]"#
        );
        assert_eq!(exec.resource_and_subresource(), ("pods", Some("exec")));
        let policies = Permission::find("networking.k8s.io", "networkpolicies", "list").unwrap();
        assert_eq!(
            policies.rule(),
            "- apiGroups: [networking.k8s.io]  resources: [networkpolicies]  verbs: [list]"
        );
        assert_eq!(
            policies.to_string(),
            "list networkpolicies.networking.k8s.io"
        );
        assert_eq!(exec.to_string(), "create pods/exec");
    }

    #[test]
    fn a_refusal_names_the_verb_the_resource_and_the_check() {
        let message = r#"pods "buildr-abc" is forbidden: User "system:serviceaccount:b:buildr" cannot create resource "pods/exec" in API group "" in the namespace "builds""#;
        let denial = Denial::from_message(message);
        assert_eq!(denial.namespace(), Some("builds"));
        assert_eq!(
            denial.to_string(),
            "not allowed to create pods/exec in namespace builds (copying buildr and the \
             inputs into the pod; checked from Kubernetes 1.35); run `buildr k8s check -n builds` to see every missing permission"
        );
        let message = r#"networkpolicies.networking.k8s.io "buildr-abc" is forbidden: User "u" cannot delete resource "networkpolicies" in API group "networking.k8s.io" in the namespace "b": RBAC: role missing"#;
        assert!(
            Denial::from_message(message)
                .to_string()
                .starts_with("not allowed to delete networkpolicies.networking.k8s.io in namespace b (a run deletes its policy")
        );
    }

    #[test]
    fn a_refusal_of_another_shape_keeps_the_servers_words_alone() {
        let quota = r#"pods "buildr-abc" is forbidden: exceeded quota: small, requested: limits.memory=64Gi"#;
        let denial = Denial::from_message(quota);
        assert_eq!(denial.namespace(), None);
        assert_eq!(denial.to_string(), quota);
        let cluster_scope = r#"pods is forbidden: User "u" cannot list resource "pods" in API group "" at the cluster scope"#;
        assert_eq!(
            Denial::from_message(cluster_scope).to_string(),
            "not allowed to list pods (a run watches its pod, and a watch lists first; gc \
             finds expired pods); run `buildr k8s check` to see every missing permission"
        );
    }
}
