//! The `container { ... }` block: the pod's image, resources, scheduling, identity and
//! network, read by the Kubernetes backend.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use hcl_edit::Span;
use hcl_edit::structure::{Attribute, Block};

use super::kube_values::{self, Bound};
use super::{Expects, Field, check_body, no_label, toleration};
use crate::task::reader::Reader;
use crate::task::{Container, TaskError};

/// How the block is written, for messages.
pub(super) const SYNTAX: &str = "`container { image = \"...\" }`";

/// Label key prefixes buildr sets on its own pods (to find and clean them up); a task may not
/// set or shadow them.
const RESERVED_LABEL_PREFIXES: &[&str] = &["buildr.dev/", "app.kubernetes.io/managed-by"];

/// A container as it is read.
struct ContainerDraft {
    container: Container,
    /// The task's `timeout`, which `active_deadline` must outlast.
    task_timeout: Option<Duration>,
    /// Each resource's request (its name, where its value is, its amount), checked against
    /// its limit once both are read.
    requests: Vec<(String, Option<Range<usize>>, f64)>,
    limits: BTreeMap<String, f64>,
}

/// Where a quantity lands in [`Container`].
type QuantityField = fn(&mut Container) -> &mut Option<String>;

impl ContainerDraft {
    /// A resource request (zero or more), kept to check against its limit.
    fn request(
        &mut self,
        file: &Reader,
        attr: &Attribute,
        here: &str,
        field: QuantityField,
    ) -> Result<(), TaskError> {
        let key = attr.key.as_str();
        let (text, amount) = kube_values::quantity(file, &attr.value, key, here, Bound::Request)?;
        self.requests
            .push((key.to_string(), attr.value.span(), amount));
        *field(&mut self.container) = Some(text);
        Ok(())
    }

    /// A resource limit (more than zero), kept to check its request against.
    fn limit(
        &mut self,
        file: &Reader,
        attr: &Attribute,
        here: &str,
        field: QuantityField,
    ) -> Result<(), TaskError> {
        let key = attr.key.as_str();
        let (text, amount) = kube_values::quantity(file, &attr.value, key, here, Bound::Limit)?;
        self.limits.insert(key.to_string(), amount);
        *field(&mut self.container) = Some(text);
        Ok(())
    }
}

const TABLE: &[Field<ContainerDraft>] = &[
    Field {
        name: "image",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.image = Some(file.required(&attr.value, attr.key.as_str(), here)?);
            Ok(())
        }),
    },
    Field {
        name: "cpu_request",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.request(file, attr, here, |c| &mut c.cpu_request)
        }),
    },
    Field {
        name: "cpu_limit",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.limit(file, attr, here, |c| &mut c.cpu_limit)
        }),
    },
    Field {
        name: "memory_request",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.request(file, attr, here, |c| &mut c.memory_request)
        }),
    },
    Field {
        name: "memory_limit",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.limit(file, attr, here, |c| &mut c.memory_limit)
        }),
    },
    Field {
        name: "ephemeral_storage_request",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.request(file, attr, here, |c| &mut c.ephemeral_storage_request)
        }),
    },
    Field {
        name: "ephemeral_storage_limit",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.limit(file, attr, here, |c| &mut c.ephemeral_storage_limit)
        }),
    },
    Field {
        name: "workspace_size_limit",
        // A limit, but of the workspace alone: no request is checked against it.
        expects: Expects::Attribute(|file, attr, here, draft| {
            let (text, _) =
                kube_values::quantity(file, &attr.value, attr.key.as_str(), here, Bound::Limit)?;
            draft.container.workspace_size_limit = Some(text);
            Ok(())
        }),
    },
    Field {
        name: "node_selector",
        // Node labels are labels, but the node's, so no key of them is reserved.
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.node_selector =
                kube_values::labels(file, &attr.value, attr.key.as_str(), here, &[])?;
            Ok(())
        }),
    },
    Field {
        name: "service_account",
        expects: Expects::Attribute(|file, attr, here, draft| {
            object_name(file, attr, here, &mut draft.container.service_account)
        }),
    },
    Field {
        name: "image_pull_secrets",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.image_pull_secrets =
                kube_values::object_names(file, &attr.value, attr.key.as_str(), here)?;
            Ok(())
        }),
    },
    Field {
        name: "labels",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.labels = kube_values::labels(
                file,
                &attr.value,
                attr.key.as_str(),
                here,
                RESERVED_LABEL_PREFIXES,
            )?;
            Ok(())
        }),
    },
    Field {
        name: "annotations",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.annotations =
                kube_values::qualified_entries(file, &attr.value, attr.key.as_str(), here)?
                    .into_iter()
                    .map(|entry| (entry.key, entry.value))
                    .collect();
            Ok(())
        }),
    },
    Field {
        name: "env_from_secrets",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.env_from_secrets =
                kube_values::object_names(file, &attr.value, attr.key.as_str(), here)?;
            Ok(())
        }),
    },
    Field {
        name: "env_from_config_maps",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.env_from_config_maps =
                kube_values::object_names(file, &attr.value, attr.key.as_str(), here)?;
            Ok(())
        }),
    },
    Field {
        name: "egress",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.egress = Some(kube_values::egress(
                file,
                &attr.value,
                attr.key.as_str(),
                here,
            )?);
            Ok(())
        }),
    },
    Field {
        name: "start_timeout",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.start_timeout =
                Some(file.duration(&attr.value, attr.key.as_str(), here)?);
            Ok(())
        }),
    },
    Field {
        name: "active_deadline",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.active_deadline = Some(kube_values::active_deadline(
                file,
                &attr.value,
                attr.key.as_str(),
                here,
                draft.task_timeout,
            )?);
            Ok(())
        }),
    },
    Field {
        name: "run_as_user",
        expects: Expects::Attribute(|file, attr, here, draft| {
            draft.container.run_as_user = Some(kube_values::run_as_user(
                file,
                &attr.value,
                attr.key.as_str(),
                here,
            )?);
            Ok(())
        }),
    },
    Field {
        name: "pool",
        // A BuildrPool's name (README, Warm pools).
        expects: Expects::Attribute(|file, attr, here, draft| {
            object_name(file, attr, here, &mut draft.container.pool)
        }),
    },
    Field {
        name: "toleration",
        expects: Expects::Block {
            syntax: toleration::SYNTAX,
            read: |file, block, here, draft| {
                let toleration = toleration::read(file, block, here)?;
                draft.container.tolerations.push(toleration);
                Ok(())
            },
        },
    },
];

/// An attribute that names one Kubernetes object, into `field`.
fn object_name(
    file: &Reader,
    attr: &Attribute,
    here: &str,
    field: &mut Option<String>,
) -> Result<(), TaskError> {
    *field = Some(kube_values::object_name(
        file,
        &attr.value,
        attr.key.as_str(),
        here,
    )?);
    Ok(())
}

/// Reads the `container` block of the task `context` names, whose `timeout` is
/// `task_timeout`.
pub(super) fn read(
    file: &Reader,
    block: &Block,
    context: &str,
    task_timeout: Option<Duration>,
) -> Result<Container, TaskError> {
    let here = format!("`container` in {context}");
    no_label(file, block, &here)?;
    let mut draft = ContainerDraft {
        container: Container::default(),
        task_timeout,
        requests: Vec::new(),
        limits: BTreeMap::new(),
    };
    let body = check_body(file, block, &here, TABLE)?;
    body.read_attributes(file, &here, &mut draft)?;
    // Before the tolerations: a request over its limit is the first thing to fix.
    for (request_key, at, request) in &draft.requests {
        let limit_key = request_key.replace("_request", "_limit");
        if let Some(&limit) = draft.limits.get(&limit_key)
            && *request > limit
        {
            return Err(file.invalid(
                at.clone(),
                format!(
                    "`{request_key}` in {here}: the request is more than `{limit_key}`, which \
                     Kubernetes refuses; expected at most the limit"
                ),
            ));
        }
    }
    body.read_blocks(file, &here, &mut draft)?;
    Ok(draft.container)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::blocks::names;
    use crate::task::parse::testing::{assert_errors, error, in_container, parse};
    use crate::task::quantity::QUANTITY_RULE;
    use crate::task::{Egress, Toleration};

    #[test]
    fn every_container_field_lands_in_place() {
        let tasks = parse(
            r#"
task "a" {
  script = "x"
  container {
    image                = "debian:bookworm"
    cpu_request          = "500m"
    cpu_limit            = "2"
    memory_request       = "256Mi"
    memory_limit         = "1Gi"
    node_selector        = { "disktype" = "ssd", "topology.kubernetes.io/zone" = "" }
    service_account      = "builder"
    image_pull_secrets   = ["regcred", "mirror.creds"]
    labels               = { team = "infra" }
    annotations          = { "example.com/owner" = "me (any text: / , ;)" }
    env_from_secrets     = ["build-tokens"]
    env_from_config_maps = ["build-settings"]
    egress               = "dns"
    start_timeout        = "3m"
    active_deadline      = "2h"
    run_as_user          = 1000
    pool                 = "warm-builders"
    ephemeral_storage_request = "2Gi"
    ephemeral_storage_limit   = "20Gi"
    workspace_size_limit      = "15Gi"
    toleration {
      key                = "dedicated"
      operator           = "Equal"
      value              = "builds"
      effect             = "NoExecute"
      toleration_seconds = 60
    }
    toleration {
      operator = "Exists"
    }
  }
}
"#,
        )
        .unwrap();
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let strings =
            |items: &[&str]| -> Vec<String> { items.iter().map(|s| s.to_string()).collect() };
        assert_eq!(
            tasks[0].container,
            Container {
                image: Some("debian:bookworm".into()),
                cpu_request: Some("500m".into()),
                cpu_limit: Some("2".into()),
                memory_request: Some("256Mi".into()),
                memory_limit: Some("1Gi".into()),
                node_selector: map(&[("disktype", "ssd"), ("topology.kubernetes.io/zone", "")]),
                tolerations: vec![
                    Toleration {
                        key: Some("dedicated".into()),
                        operator: Some("Equal".into()),
                        value: Some("builds".into()),
                        effect: Some("NoExecute".into()),
                        toleration_seconds: Some(60),
                    },
                    Toleration {
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    },
                ],
                service_account: Some("builder".into()),
                image_pull_secrets: strings(&["regcred", "mirror.creds"]),
                labels: map(&[("team", "infra")]),
                annotations: map(&[("example.com/owner", "me (any text: / , ;)")]),
                env_from_secrets: strings(&["build-tokens"]),
                env_from_config_maps: strings(&["build-settings"]),
                egress: Some(Egress::Dns),
                start_timeout: Some(Duration::from_secs(180)),
                active_deadline: Some(Duration::from_secs(7200)),
                run_as_user: Some(1000),
                pool: Some("warm-builders".into()),
                ephemeral_storage_request: Some("2Gi".into()),
                ephemeral_storage_limit: Some("20Gi".into()),
                workspace_size_limit: Some("15Gi".into()),
            }
        );
    }

    #[test]
    fn egress_takes_every_value_name() {
        for (name, egress) in [
            ("none", Egress::None),
            ("dns", Egress::Dns),
            ("no-link-local", Egress::NoLinkLocal),
            ("all", Egress::All),
        ] {
            let source = format!(
                "task \"a\" {{\n  script = \"x\"\n  container {{ egress = \"{name}\" }}\n}}\n"
            );
            assert_eq!(parse(&source).unwrap()[0].container.egress, Some(egress));
        }
    }

    #[test]
    fn container_errors_name_the_place_and_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "    egres = \"dns\"",
                "t.hcl:4:5: unknown attribute `egres` in `container` in task \"a\"; expected one of: image, cpu_request, cpu_limit, memory_request, memory_limit, ephemeral_storage_request, ephemeral_storage_limit, workspace_size_limit, node_selector, service_account, image_pull_secrets, labels, annotations, env_from_secrets, env_from_config_maps, egress, start_timeout, active_deadline, run_as_user, pool (did you mean `egress`?)",
            ),
            (
                "    tolerations {}",
                "t.hcl:4:5: unknown block type `tolerations` in `container` in task \"a\"; expected one of: toleration (did you mean `toleration`?)",
            ),
            (
                "    toleration = {}",
                "t.hcl:4:5: `toleration` in `container` in task \"a\" is a block, not an attribute; expected `toleration { key = \"...\" }` (one block per toleration)",
            ),
            (
                "    labels { team = \"infra\" }",
                "t.hcl:4:5: `labels` in `container` in task \"a\" is an attribute, not a block; expected `labels = ...`",
            ),
            (
                "    egress = \"dsn\"",
                "t.hcl:4:14: `egress` in `container` in task \"a\": expected one of: none, dns, no-link-local, all; found \"dsn\" (did you mean `dns`?)",
            ),
            (
                "    egress = \"\"",
                "t.hcl:4:14: `egress` in `container` in task \"a\": expected one of: none, dns, no-link-local, all; found \"\"",
            ),
            (
                "    labels = { \"a/b/c\" = \"x\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": invalid key \"a/b/c\"; expected an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    labels = { \"Example.com/team\" = \"x\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": invalid key \"Example.com/team\": its prefix \"Example.com\" is not a DNS subdomain: at most 253 characters, lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit",
            ),
            (
                "    labels = { team = \"in fra\" }",
                "t.hcl:4:23: `labels.team` in `container` in task \"a\": invalid value \"in fra\"; expected an empty string or at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    node_selector = { \"disk type\" = \"ssd\" }",
                "t.hcl:4:23: `node_selector` in `container` in task \"a\": invalid key \"disk type\"; expected an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    annotations = { \"-x\" = \"any value / at all\" }",
                "t.hcl:4:21: `annotations` in `container` in task \"a\": invalid key \"-x\"; expected an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters, letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
            ),
            (
                "    labels = { \"buildr.dev/run\" = \"x\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": the key \"buildr.dev/run\" is reserved (buildr labels its own pods with keys starting with buildr.dev/ or app.kubernetes.io/managed-by); expected another key",
            ),
            (
                "    labels = { \"app.kubernetes.io/managed-by\" = \"me\" }",
                "t.hcl:4:16: `labels` in `container` in task \"a\": the key \"app.kubernetes.io/managed-by\" is reserved (buildr labels its own pods with keys starting with buildr.dev/ or app.kubernetes.io/managed-by); expected another key",
            ),
            (
                "    labels = { team = \"a\", \"team\" = \"b\" }",
                "t.hcl:4:28: `labels` in `container` in task \"a\": the key \"team\" is given twice (first at t.hcl:4:16); expected each key once",
            ),
            (
                "    env_from_secrets = [\"Build_Tokens\"]",
                "t.hcl:4:25: `env_from_secrets` in `container` in task \"a\": invalid name \"Build_Tokens\"; expected a DNS subdomain: at most 253 characters, lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit",
            ),
            (
                "    service_account = \"Builder\"",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": invalid name \"Builder\"; expected a DNS subdomain: at most 253 characters, lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit",
            ),
            (
                "    image_pull_secrets = [\"regcred\", \"regcred\"]",
                "t.hcl:4:38: `image_pull_secrets` in `container` in task \"a\": \"regcred\" is listed twice; expected each name once",
            ),
            (
                "    env_from_config_maps = [\"\"]",
                "t.hcl:4:29: `env_from_config_maps` in `container` in task \"a\": expected a non-empty string",
            ),
            (
                "    service_account = \"\"",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": expected a non-empty string",
            ),
            (
                "    image = \" \"",
                "t.hcl:4:13: `image` in `container` in task \"a\": expected a non-empty string",
            ),
            (
                "    service_account = 5",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    labels = { team = 1 }",
                "t.hcl:4:23: `labels.team` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    env_from_secrets = [\"a\", 2]",
                "t.hcl:4:30: `env_from_secrets` in `container` in task \"a\": expected a list of strings, found a number",
            ),
            (
                "    image_pull_secrets = \"regcred\"",
                "t.hcl:4:26: `image_pull_secrets` in `container` in task \"a\": expected a list of strings, found a string",
            ),
            (
                "    run_as_user = \"1000\"",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found a string",
            ),
            (
                "    run_as_user = 0",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": 0 is root, and the pod must run as non-root (the restricted Pod Security Standard); expected a user id from 1 to 2147483647",
            ),
            (
                "    run_as_user = -1",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found -1",
            ),
            (
                "    run_as_user = 1.5",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found 1.5",
            ),
            (
                "    run_as_user = 4294967296",
                "t.hcl:4:19: `run_as_user` in `container` in task \"a\": expected a user id from 1 to 2147483647, found 4294967296",
            ),
            (
                "    start_timeout = \"0s\"",
                "t.hcl:4:21: `start_timeout` in `container` in task \"a\" is zero; expected a duration like \"90s\", \"10m\" or \"1h 30m\"",
            ),
            (
                "    start_timeout = 180",
                "t.hcl:4:21: `start_timeout` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    service_account = -1",
                "t.hcl:4:23: `service_account` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    ephemeral_storage_limit = \"10GB\"",
                "t.hcl:4:31: `ephemeral_storage_limit` in `container` in task \"a\": invalid quantity \"10GB\"; expected RULE",
            ),
            (
                "    workspace_size_limit = \"0\"",
                "t.hcl:4:28: `workspace_size_limit` in `container` in task \"a\": \"0\" is out of range; expected RULE, more than zero",
            ),
            (
                "    ephemeral_storage_request = \"-1Gi\"",
                "t.hcl:4:33: `ephemeral_storage_request` in `container` in task \"a\": \"-1Gi\" is out of range; expected RULE, zero or more",
            ),
            (
                "    ephemeral_storage_limit = 10",
                "t.hcl:4:31: `ephemeral_storage_limit` in `container` in task \"a\": expected a string, found a number",
            ),
            (
                "    cpu_limit = \"two\"",
                "t.hcl:4:17: `cpu_limit` in `container` in task \"a\": invalid quantity \"two\"; expected RULE",
            ),
            (
                "    ephemeral_storage_request = \"20Gi\"\n    ephemeral_storage_limit = \"10Gi\"",
                "t.hcl:4:33: `ephemeral_storage_request` in `container` in task \"a\": the request is more than `ephemeral_storage_limit`, which Kubernetes refuses; expected at most the limit",
            ),
            (
                "    memory_limit = \"1Gi\"\n    memory_request = \"2000Mi\"",
                "t.hcl:5:22: `memory_request` in `container` in task \"a\": the request is more than `memory_limit`, which Kubernetes refuses; expected at most the limit",
            ),
            (
                "    active_deadline = \"1.5s\"",
                "t.hcl:4:23: `active_deadline` in `container` in task \"a\": 1s 500ms is not a whole number of seconds; expected a duration like \"2h\" or \"90s\"",
            ),
            (
                "    active_deadline = \"0s\"",
                "t.hcl:4:23: `active_deadline` in `container` in task \"a\" is zero; expected a duration like \"90s\", \"10m\" or \"1h 30m\"",
            ),
            (
                "    active_dedline = \"1h\"",
                "t.hcl:4:5: unknown attribute `active_dedline` in `container` in task \"a\"; expected one of: LIST (did you mean `active_deadline`?)",
            ),
        ];
        let cases: Vec<(String, String)> = cases
            .iter()
            .map(|(body, expected)| {
                let expected = expected
                    .replace("RULE", QUANTITY_RULE)
                    .replace("LIST", &names(TABLE, true).join(", "));
                (body.to_string(), expected)
            })
            .collect();
        let cases: Vec<(&str, &str)> = cases
            .iter()
            .map(|(body, expected)| (body.as_str(), expected.as_str()))
            .collect();
        assert_errors(&cases, in_container);
    }

    #[test]
    fn an_active_deadline_must_outlast_the_task_timeout() {
        let source = |deadline: &str| {
            format!(
                "task \"a\" {{\n  script = \"x\"\n  timeout = \"1h\"\n  container {{\n    active_deadline = \"{deadline}\"\n  }}\n}}\n"
            )
        };
        assert_eq!(
            error(&source("1h")),
            "t.hcl:5:23: `active_deadline` in `container` in task \"a\": 1h is not longer than the task's timeout (1h), so the pod would be killed before the task times out; expected a longer deadline (the task's timeout plus the time to start the pod and copy files in and out)"
        );
        assert_eq!(
            parse(&source("1h 15m")).unwrap()[0]
                .container
                .active_deadline,
            Some(Duration::from_secs(4500))
        );
    }
}
