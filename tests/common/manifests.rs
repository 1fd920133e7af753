//! Pods and NetworkPolicies as YAML for `kubectl apply`: shaped like buildr's build pods and
//! per-run policies (to test the chart's janitor and the CNI's enforcement without a run), or
//! plain ones.

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

/// The per-run NetworkPolicy buildr creates for egress mode EGRESS ("none", "dns" or "all"),
/// expiring at EXPIRES_AT like its pod.
pub fn run_policy_yaml(ns: &str, run_id: &str, expires_at: &str, egress: &str) -> String {
    let rules = match egress {
        "none" => String::new(),
        "dns" => "\n  egress:\n  - ports:\n    - {protocol: UDP, port: 53}\n    - {protocol: TCP, port: 53}".to_owned(),
        "all" => "\n  egress:\n  - {}".to_owned(),
        other => panic!("unknown egress mode {other}"),
    };
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: buildr-{run_id}
  namespace: {ns}
  labels:
    app.kubernetes.io/managed-by: buildr
    buildr.dev/run-id: "{run_id}"
  annotations:
    buildr.dev/expires-at: "{expires_at}"
spec:
  podSelector:
    matchLabels:
      buildr.dev/run-id: "{run_id}"
  policyTypes: [Ingress, Egress]{rules}
"#
    )
}
