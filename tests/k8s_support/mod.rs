//! Helpers for the tests that run against a real cluster (tests/cluster locally, kind in hosted
//! CI): kubectl and helm found the way the cluster scripts find them, throw-away namespaces that
//! delete themselves (also when a test panics), pods shaped like buildr's, and connection probes
//! run inside pods.
#![allow(dead_code)] // each test crate uses a different part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const NEEDS_CLUSTER: &str = "needs the cluster from tests/cluster (tests/run-all.sh)";

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The image test pods run: tests/cluster's base image (bash, coreutils, timeout, echoserver).
pub fn base_image() -> String {
    std::env::var("BUILDR_CLUSTER_BASE_IMAGE").unwrap_or_else(|_| "buildr.local/base:1".into())
}

/// The folder tests/cluster's scripts build kubectl (when missing), helm and kube-router into.
fn cluster_bin_dir() -> PathBuf {
    let go_mod = std::fs::read_to_string(repo_root().join("tests/cluster/go.mod"))
        .expect("read tests/cluster/go.mod");
    let version = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes "))
        .expect("tests/cluster/go.mod requires k8s.io/kubernetes")
        .trim()
        .to_owned();
    let cache = std::env::var("BUILDR_CLUSTER_CACHE")
        .unwrap_or_else(|_| "/var/cache/buildr-cluster".into());
    Path::new(&cache).join(version).join("bin")
}

/// A tool from tests/cluster's cache (where build-tools.sh puts helm, pinned by its go.mod), else
/// from PATH (a hosted runner's kubectl). The cache comes first so that a preinstalled Helm 3 on
/// a runner does not stand in for the Helm the tests are written for.
pub fn tool(name: &str) -> PathBuf {
    let cached = cluster_bin_dir().join(name);
    if cached.is_file() {
        return cached;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{name} is neither in {} (tests/cluster/up.sh builds it there) nor on PATH",
        cached.display()
    );
}

/// What a command printed and how it ended.
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs PROGRAM ARGS with STDIN, from the repository's root.
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin is piped");
        w.write_all(input.as_bytes()).expect("write stdin");
    }
    Run::from(child.wait_with_output().expect("wait for command"))
}

/// kubectl ARGS; panics with its stderr when it fails.
pub fn kubectl(args: &[&str]) -> String {
    let r = run(&tool("kubectl"), args, None);
    assert!(r.ok, "kubectl {} failed:\n{}", args.join(" "), r.stderr);
    r.stdout
}

/// kubectl ARGS, whatever the outcome.
pub fn kubectl_try(args: &[&str]) -> Run {
    run(&tool("kubectl"), args, None)
}

/// `kubectl apply -f -` of YAML.
pub fn apply(yaml: &str) {
    let r = run(&tool("kubectl"), &["apply", "-f", "-"], Some(yaml));
    assert!(
        r.ok,
        "kubectl apply failed:\n{}\n--- input ---\n{yaml}",
        r.stderr
    );
}

/// helm ARGS, whatever the outcome.
pub fn helm(args: &[&str]) -> Run {
    run(&tool("helm"), args, None)
}

/// A fresh name: PREFIX-<pid>-<random>, lower case, for namespaces and releases.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// Polls F every 300 ms until it returns true or TIMEOUT passes; says whether it did.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A namespace that is deleted when dropped (also when the test panics).
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    /// Creates `chart-…` with LABELS ("key=value").
    pub fn create(prefix: &str, labels: &[&str]) -> Namespace {
        let name = unique(prefix);
        kubectl(&["create", "namespace", &name]);
        let ns = Namespace { name };
        if !labels.is_empty() {
            let mut args = vec!["label", "namespace", ns.name.as_str()];
            args.extend_from_slice(labels);
            kubectl(&args);
        }
        // Pods need the namespace's default ServiceAccount, made by the controller manager.
        assert!(
            eventually(Duration::from_secs(30), || kubectl_try(&[
                "-n",
                &ns.name,
                "get",
                "serviceaccount",
                "default"
            ])
            .ok),
            "namespace {}: no default ServiceAccount after 30 s",
            ns.name
        );
        ns
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        kubectl(&a)
    }

    pub fn kubectl_try(&self, args: &[&str]) -> Run {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        kubectl_try(&a)
    }

    /// Waits until pod NAME is Ready; panics with its description otherwise.
    pub fn wait_ready(&self, pod: &str) {
        let r = self.kubectl_try(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ]);
        if !r.ok {
            let describe = self.kubectl_try(&["describe", "pod", pod]).stdout;
            panic!(
                "pod {}/{pod} not Ready: {}\n{describe}",
                self.name, r.stderr
            );
        }
    }

    pub fn pod_ip(&self, pod: &str) -> String {
        self.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
    }

    pub fn host_ip(&self, pod: &str) -> String {
        self.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.hostIP}"])
    }

    /// Whether a TCP connection from POD to HOST:PORT opens within 2 s.
    pub fn connects(&self, pod: &str, host: &str, port: u16) -> bool {
        let probe = format!("exec 3<>/dev/tcp/{host}/{port}");
        self.kubectl_try(&["exec", pod, "--", "timeout", "2", "bash", "-c", &probe])
            .ok
    }

    /// Whether POD still exists.
    pub fn has_pod(&self, pod: &str) -> bool {
        self.kubectl_try(&["get", "pod", pod, "-o", "name"]).ok
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl_try(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A Helm release that is uninstalled when dropped.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--ignore-not-found",
        ]);
    }
}

/// Installs charts/buildr as release NAME into NAMESPACE with `--set` VALUES; panics on failure.
pub fn helm_install(name: &str, namespace: &str, values: &[&str]) -> Release {
    let mut args = vec![
        "install",
        name,
        "charts/buildr",
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "120s",
    ];
    for v in values {
        args.push("--set");
        args.push(v);
    }
    let r = helm(&args);
    let release = Release {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
    };
    assert!(r.ok, "helm {} failed:\n{}", args.join(" "), r.stderr);
    release
}

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

/// The address and port pods reach the API server at: the `kubernetes` Service's cluster IP.
pub fn api_server_vip() -> (String, u16) {
    let ip = kubectl(&[
        "-n",
        "default",
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let port = kubectl(&[
        "-n",
        "default",
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.ports[0].port}",
    ]);
    (ip, port.trim().parse().expect("a port number"))
}
