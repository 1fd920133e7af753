//! Pods and NetworkPolicies for `kubectl apply`: buildr's own per-run objects as its code builds
//! them (to test the CNI's enforcement and the chart's janitor without a run), pods shaped like
//! buildr's (its labels and security settings, nothing more) or plain ones.

use buildr::backend::arch::host_arch;
use buildr::backend::k8s::objects::{DEFAULT_ACTIVE_DEADLINE, PodPlan};
use buildr::task::Container;

use super::cluster::base_image;

/// A pod named NAME running SCRIPT (`sh -c`) in the base image, with LABELS and ANNOTATIONS;
/// RESTRICTED gives it the security settings of buildr's build pods (Pod Security "restricted":
/// non-root uid 65532, no privilege escalation, no capabilities, RuntimeDefault seccomp, no
/// token), else it runs as the image's root.
pub fn pod_yaml(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    restricted: bool,
    script: &str,
) -> String {
    let map = |kv: &[(&str, &str)]| {
        let inner: Vec<String> = kv
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote(v)))
            .collect();
        format!("{{{}}}", inner.join(", "))
    };
    let (pod_security, container_security) = if restricted {
        (
            "\n  securityContext:\n    runAsNonRoot: true\n    runAsUser: 65532\n    runAsGroup: 65532\n    seccompProfile: {type: RuntimeDefault}",
            "\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities: {drop: [ALL]}",
        )
    } else {
        ("", "")
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {labels}
  annotations: {annotations}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false{pod_security}
  containers:
  - name: main
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", {script}]{container_security}
"#,
        labels = map(labels),
        annotations = map(annotations),
        image = base_image(),
        script = quote(script),
    )
}

/// S as a double-quoted YAML (and JSON) string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A pod shaped like buildr's build pod `buildr-RUN_ID`: its labels and expiry annotation,
/// restricted security.
pub fn build_pod_yaml(ns: &str, run_id: &str, expires_at: &str, script: &str) -> String {
    pod_yaml(
        ns,
        &format!("buildr-{run_id}"),
        &[
            ("app.kubernetes.io/managed-by", "buildr"),
            ("buildr.dev/run-id", run_id),
        ],
        &[("buildr.dev/expires-at", expires_at)],
        true,
        script,
    )
}

/// A pod that is not buildr's, named NAME, running SCRIPT as root (e.g. a server on port 53).
pub fn plain_pod_yaml(ns: &str, name: &str, script: &str) -> String {
    pod_yaml(ns, name, &[("app", name)], &[], false, script)
}

/// The plan of run RUN_ID in NS with CONTAINER settings and no timeout, made so that its pod and
/// policy expire at EXPIRES_AT (RFC 3339): the objects buildr itself builds, for tests that apply
/// them without a run.
pub fn run_plan(ns: &str, run_id: &str, expires_at: &str, container: Container) -> PodPlan {
    let expires_at = humantime::parse_rfc3339(expires_at).expect("an RFC 3339 time");
    PodPlan {
        task_name: "test".to_owned(),
        container,
        created_at: expires_at - DEFAULT_ACTIVE_DEADLINE,
        ..PodPlan::new(run_id, ns, &base_image(), host_arch())
    }
}

/// PLAN's pod, running SCRIPT (`sh -c`) instead of waiting for an executor, as JSON.
pub fn run_pod_json(plan: &PodPlan, script: &str) -> String {
    let mut pod = plan.pod();
    let container = &mut pod.spec.as_mut().expect("a pod spec").containers[0];
    container.command = Some(vec!["/bin/sh".into(), "-c".into(), script.into()]);
    serde_json::to_string(&pod).expect("a pod serialises")
}

/// PLAN's NetworkPolicy, as JSON: owned by the pod of uid OWNER_UID, or by none (a policy left
/// behind, which outlives any pod).
pub fn run_policy_json(plan: &PodPlan, owner_uid: Option<&str>) -> String {
    let mut policy = plan.network_policy(&plan.name(), owner_uid.unwrap_or_default());
    if owner_uid.is_none() {
        policy.metadata.owner_references = None;
    }
    serde_json::to_string(&policy).expect("a policy serialises")
}
