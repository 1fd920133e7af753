//! `buildr run --backend k8s` on the real single-node cluster of tests/cluster/: a real API
//! server (enforcing Pod Security "restricted" on every test's namespace), a real kubelet and
//! containerd, exec and port-forward through the API server. Run by tests/run-all.sh.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{
    BUSYBOX_IMAGE, ClusterTest, NO_TAR_IMAGE, NOTHING_LEFT_WITHIN, Namespace, apply, base_image,
    token_kubeconfig,
};
use common::round_trip;
use common::{buildr, stderr, stdout, write_files};

/// The local backend and the k8s backend in `image` bring back the same tree, and nothing is
/// left.
fn round_trip_matches_local(image: &str, test: &str) {
    let ns = Namespace::new(test);
    round_trip::matches_local(&ns, image, &[]);
    ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn the_round_trip_matches_the_local_backend() {
    round_trip_matches_local(&base_image(), "round-trip");
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn the_round_trip_works_in_busybox_with_no_libc() {
    round_trip_matches_local(BUSYBOX_IMAGE, "busybox");
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn exit_statuses_and_both_streams_arrive_as_they_would_locally() {
    let t = ClusterTest::new("exit");
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 7", 7),
        ("kill -KILL $$", 128 + 9),
        ("kill -TERM $$", 128 + 15),
        ("exec /no/such/command", 127),
    ] {
        let output = t.run(&base_image(), &["--", "sh", "-c", script]);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{script}: {}",
            stderr(&output)
        );
    }
    let lines = 3000;
    let script =
        format!("i=1; while [ $i -le {lines} ]; do echo out $i; echo err $i >&2; i=$((i+1)); done");
    let output = t.run(&base_image(), &["--", "sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let expected =
        |prefix: &str| -> String { (1..=lines).map(|i| format!("{prefix} {i}\n")).collect() };
    assert_eq!(stdout(&output), expected("out"));
    let errors: String = stderr(&output)
        .lines()
        .filter(|l| l.starts_with("err "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(errors, expected("err"));
    t.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn only_mapped_inputs_arrive_at_their_mapped_places() {
    let t = ClusterTest::new("mapping");
    write_files(
        t.repo.path(),
        &[
            ("src/main.c", "int main;"),
            ("docs/readme.md", "docs"),
            ("secret.txt", "not an input"),
            (
                ".buildr/tasks.hcl",
                r#"task "list" {
  input "src" { to = "code" }
  input "docs/readme.md" { to = "README" }
  script = "find . -type f | sort > /tmp/listing && mv /tmp/listing listing.txt"
}
"#,
            ),
        ],
    );
    let output = t.run(&base_image(), &["list"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        fs::read_to_string(t.out.path().join("listing.txt")).unwrap(),
        "./README\n./code/main.c\n"
    );
    t.ns.assert_nothing_left();
}

/// A run that must fail before the task starts: exit 125, one line on stderr containing
/// `expected`, and nothing left in the namespace.
fn fails_to_start(ns: &Namespace, image: &str, extra: &[&str], expected: &str) {
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut args = extra.to_vec();
    args.extend(["--", "sh", "-c", "echo ran > ran.txt"]);
    let output = ns.run(repo.path(), out.path(), image, &args);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(
        message.contains(expected),
        "expected `{expected}` in: {message}"
    );
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(started.elapsed() < Duration::from_secs(60), "failed slowly");
    assert!(!out.path().join("ran.txt").exists());
    ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn start_failures_are_one_clear_line_and_leave_nothing() {
    let ns = Namespace::new("start-failures");
    fails_to_start(
        &ns,
        "buildr.local/does-not-exist:1",
        &[],
        "the image `buildr.local/does-not-exist:1` cannot be pulled",
    );
    fails_to_start(&ns, NO_TAR_IMAGE, &[], "has no `tar`");
    fails_to_start(
        &ns,
        &base_image(),
        &["--start-timeout", "300ms"],
        "did not start within 300ms",
    );
    // A node selector no node has: the scheduler's own reason.
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[(
            ".buildr/tasks.hcl",
            r#"task "nowhere" {
  command = ["true"]
  container { node_selector = { "buildr.dev/no-such-node" = "yes" } }
}
"#,
        )],
    );
    let output = ns.run(repo.path(), out.path(), &base_image(), &["nowhere"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(message.contains("cannot be scheduled"), "{message}");
    assert!(message.contains("node affinity/selector"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_pod_refused_by_admission_is_one_clear_line() {
    let t = ClusterTest::new("admission");
    write_files(
        t.repo.path(),
        &[(
            ".buildr/tasks.hcl",
            // More memory than the namespace's quota: admission refuses the pod at create.
            r#"task "big" {
  command = ["true"]
  container { memory_limit = "64Gi" }
}
"#,
        )],
    );
    t.ns.kubectl(&["create", "quota", "small", "--hard=limits.memory=1Gi"]);
    let output = t.run(&base_image(), &["big"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(message.contains("cannot create pod"), "{message}");
    assert!(message.contains("exceeded quota"), "{message}");
    t.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn ctrl_c_mid_task_brings_back_what_changed_and_leaves_nothing() {
    let t = ClusterTest::new("ctrl-c");
    let script = "echo partial > partial.txt; echo started; sleep 300";
    let (child, _stdout) = spawn_until_started(&t, script);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert_eq!(
        fs::read_to_string(t.out.path().join("partial.txt")).unwrap(),
        "partial\n"
    );
    t.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn the_executor_port_is_closed_to_other_pods() {
    let t = ClusterTest::new("port");
    // The control: a pod of the test's own, without buildr's NetworkPolicy, listening on the
    // executor's port. The probe must find it open, or "closed" would prove nothing (no
    // `bash` or `timeout` in the probe's image, no pod network at all).
    let control = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "control"},
        "spec": restricted_pod_spec("control", BUSYBOX_IMAGE, &["httpd", "-f", "-p", "7070"])
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), control.to_string()).unwrap();
    t.ns.kubectl(&["create", "-f", file.path().to_str().unwrap()]);
    t.ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/control",
        "--timeout=60s",
    ]);
    let control_ip =
        t.ns.kubectl(&["get", "pod", "control", "-o", "jsonpath={.status.podIP}"]);
    let (mut child, _stdout) = spawn_until_started(&t, "echo started; sleep 20");
    let ip = t.ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/managed-by=buildr",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    assert!(!ip.is_empty() && !control_ip.is_empty());
    let probe = |target: &str| {
        format!(
            "if timeout 5 bash -c 'exec 3<>/dev/tcp/{target}/7070' 2>/dev/null; then echo {target} open; \
             else echo {target} closed; fi"
        )
    };
    let answer = run_probe_pod(&t.ns, &format!("{}; {}", probe(&control_ip), probe(&ip)));
    assert_eq!(
        answer.trim(),
        format!("{control_ip} open\n{ip} closed"),
        "the control pod's port must answer, the executor's must not"
    );
    // Ctrl-C: the run stops the task and deletes its pod and policy before it exits.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    t.ns.assert_nothing_left();
}

/// The spec of a one-container pod that Pod Security "restricted" admits, running `command`.
fn restricted_pod_spec(container: &str, image: &str, command: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "containers": [{
            "name": container,
            "image": image,
            "command": command,
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}
            }
        }]
    })
}

/// `buildr run --backend k8s -- sh -c script` in the background, once the task has printed
/// `started` (its first line), with the rest of its stdout (kept open: buildr still writes).
fn spawn_until_started(
    t: &ClusterTest,
    script: &str,
) -> (
    std::process::Child,
    impl Iterator<Item = std::io::Result<String>>,
) {
    let mut child = t
        .command(&base_image(), &["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(stdout);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    (child, lines)
}

/// Runs `script` with bash in a restricted pod of the base image; its log.
fn run_probe_pod(ns: &Namespace, script: &str) -> String {
    let overrides = serde_json::json!({
        "spec": restricted_pod_spec("probe", &base_image(), &["bash", "-c", script])
    });
    ns.kubectl(&[
        "run",
        "probe",
        "--image",
        &base_image(),
        "--restart=Never",
        "--overrides",
        &overrides.to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let phase = ns.kubectl(&["get", "pod", "probe", "-o", "jsonpath={.status.phase}"]);
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the probe pod did not finish ({phase})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ns.kubectl(&["logs", "probe"])
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn keep_leaves_the_pod_and_says_how_to_reach_it() {
    let t = ClusterTest::new("keep");
    let output = t.run(
        &base_image(),
        &["--keep", "--", "sh", "-c", "echo kept > kept.txt"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("kubectl -n"), "{message}");
    let pods = t.ns.buildr_objects();
    assert_eq!(pods.len(), 2, "the pod and its policy: {pods:?}");
    let pod = pods.iter().find(|p| p.starts_with("pod/")).unwrap();
    // The executor ended on its own once its result was acknowledged (so an unkept pod is
    // finished when it is deleted); the kept pod's shell stays.
    let pod_name = &pod[4..];
    assert!(
        common::eventually(NOTHING_LEFT_WITHIN, || t
            .ns
            .kubectl(&["logs", pod_name])
            .contains("the executor is done")),
        "the executor still runs: {}",
        t.ns.kubectl(&["logs", pod_name])
    );
    // The workspace is still there to look at.
    let listing =
        t.ns.kubectl(&["exec", &pod[4..], "--", "cat", "/workspace/kept.txt"]);
    assert_eq!(listing, "kept\n");
    t.ns.kubectl(&["delete", "pod", &pod[4..], "--wait=true"]);
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn gc_removes_expired_buildr_pods_and_nothing_else() {
    let ns = Namespace::new("gc");
    let pod = |name: &str, labels: &str, expires: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": serde_json::from_str::<serde_json::Value>(labels).unwrap(),
                "annotations": {"buildr.dev/expires-at": expires}
            },
            "spec": restricted_pod_spec("c", BUSYBOX_IMAGE, &["sleep", "300"])
        })
    };
    let buildr_labels = r#"{"app.kubernetes.io/managed-by": "buildr", "buildr.dev/run-id": "old"}"#;
    let manifests = [
        pod("buildr-expired", buildr_labels, "2000-01-01T00:00:00Z"),
        pod("buildr-current", buildr_labels, "2999-01-01T00:00:00Z"),
        pod("not-buildrs", r#"{"app": "other"}"#, "2000-01-01T00:00:00Z"),
    ];
    for manifest in manifests {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), manifest.to_string()).unwrap();
        ns.kubectl(&["create", "-f", file.path().to_str().unwrap()]);
    }
    let output = buildr(&["k8s", "gc", "-n", &ns.name]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("Pod/buildr-expired"),
        "{}",
        stdout(&output)
    );
    let left = ns.kubectl(&["get", "pods", "-o", "name"]);
    let left: Vec<&str> = left.lines().collect();
    assert!(left.contains(&"pod/buildr-current"), "{left:?}");
    assert!(left.contains(&"pod/not-buildrs"), "{left:?}");
    assert!(!left.contains(&"pod/buildr-expired") || terminating(&ns, "buildr-expired"));

    // --older-than takes the unexpired one too, and still not the other.
    let output = buildr(&["k8s", "gc", "-n", &ns.name, "--older-than", "0s"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("Pod/buildr-current"),
        "{}",
        stdout(&output)
    );
    assert!(ns.kubectl_try(&["get", "pod", "not-buildrs"]).ok);
}

fn terminating(ns: &Namespace, pod: &str) -> bool {
    let stamp = ns.kubectl_try(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    !stamp.stdout.is_empty() || !stamp.ok
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn verbose_shows_the_timeline_of_the_run() {
    let t = ClusterTest::new("timeline");
    let output = t.run(&base_image(), &["-v", "--", "true"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let message = stderr(&output);
    for phase in [
        "create pod and policy",
        "schedule",
        "start container",
        "copy binary and inputs",
        "connect",
        "task",
        "clean up",
        "total",
    ] {
        assert!(
            message.contains(&format!("  {phase} ")),
            "no `{phase}` in: {message}"
        );
    }
    t.ns.assert_nothing_left();
}

/// The pod of the namespace's one buildr run, as the API server has it.
fn the_pod(ns: &Namespace) -> serde_json::Value {
    let listed = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/managed-by=buildr",
        "-o",
        "json",
    ]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let pods = listed["items"].as_array().unwrap();
    assert_eq!(pods.len(), 1, "one buildr pod: {pods:?}");
    pods[0].clone()
}

/// A pod's bounds as the API server has them: the ephemeral-storage request and limit, the
/// workspace emptyDir's sizeLimit, activeDeadlineSeconds.
fn bounds(pod: &serde_json::Value) -> (&str, &str, &str, u64) {
    let resources = &pod["spec"]["containers"][0]["resources"];
    let workspace = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "workspace")
        .unwrap();
    (
        resources["requests"]["ephemeral-storage"]
            .as_str()
            .unwrap_or("none"),
        resources["limits"]["ephemeral-storage"]
            .as_str()
            .unwrap_or("none"),
        workspace["emptyDir"]["sizeLimit"]
            .as_str()
            .unwrap_or("none"),
        pod["spec"]["activeDeadlineSeconds"].as_u64().unwrap_or(0),
    )
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh) and helm (tests/cluster/build-tools.sh)"]
fn the_default_pod_passes_the_charts_quota_and_is_bounded_once_abandoned() {
    let t = ClusterTest::new("bounds");
    // The chart's LimitRange and ResourceQuota (which requires CPU and memory requests), in a
    // namespace enforcing Pod Security "restricted".
    let _release = common::helm::helm_install(
        &common::cluster::unique("bounds"),
        &t.ns.name,
        &[
            "namespace.create=false",
            "namespace.name=",
            "limitRange.enabled=true",
            "resourceQuota.enabled=true",
        ],
    );
    let (mut child, _stdout) = spawn_until_started(&t, "echo started; sleep 600");
    // The client is gone for good: nothing will delete the pod but its own bounds.
    child.kill().unwrap();
    child.wait().unwrap();
    let pod = the_pod(&t.ns);
    assert_eq!(bounds(&pod), ("1Gi", "10Gi", "10Gi", 24 * 3600));
    // The chart's LimitRange filled in CPU and memory.
    let limits = &pod["spec"]["containers"][0]["resources"]["limits"];
    assert_eq!(
        (&limits["cpu"], &limits["memory"]),
        (&"2".into(), &"2Gi".into())
    );
    // Its expiry for `buildr k8s gc` is the same deadline.
    let created = pod["metadata"]["creationTimestamp"].as_str().unwrap();
    let expires = pod["metadata"]["annotations"]["buildr.dev/expires-at"]
        .as_str()
        .unwrap();
    let created = humantime::parse_rfc3339(created).unwrap();
    let expires = humantime::parse_rfc3339(expires).unwrap();
    let lifetime = expires.duration_since(created).unwrap().as_secs();
    assert!(
        (24 * 3600 - 5..=24 * 3600 + 5).contains(&lifetime),
        "expires {lifetime}s after creation"
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_tasks_bounds_reach_the_pod_and_its_deadline_ends_it() {
    let t = ClusterTest::new("deadline");
    write_files(
        t.repo.path(),
        &[(
            ".buildr/tasks.hcl",
            r#"task "forever" {
  script = "echo started; sleep 600"
  container {
    ephemeral_storage_request = "100Mi"
    ephemeral_storage_limit   = "2Gi"
    workspace_size_limit      = "1Gi"
    active_deadline           = "20s"
  }
}
"#,
        )],
    );
    let started = Instant::now();
    let mut child = t
        .command(&base_image(), &["--reconnect-timeout", "5s", "forever"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(stdout);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    let pod = the_pod(&t.ns);
    assert_eq!(bounds(&pod), ("100Mi", "2Gi", "1Gi", 20));
    let output = child.wait_with_output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    let last = message.lines().last().unwrap_or_default();
    assert!(
        last.contains("Kubernetes stopped the pod (DeadlineExceeded")
            && last.contains("raise `active_deadline`"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the run ended {:?} after it started",
        started.elapsed()
    );
    let name = pod["metadata"]["name"].as_str().unwrap();
    let reason =
        t.ns.kubectl_try(&["get", "pod", name, "-o", "jsonpath={.status.reason}"]);
    assert!(
        !reason.ok || reason.stdout == "DeadlineExceeded",
        "the pod is still there, not past its deadline: {}",
        reason.stdout
    );
    t.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_workspace_past_its_size_limit_is_evicted() {
    let t = ClusterTest::new("evicted");
    write_files(
        t.repo.path(),
        &[(
            ".buildr/tasks.hcl",
            r#"task "fill" {
  script = "echo started; head -c 60000000 /dev/zero > big; sleep 600"
  timeout = "240s"  # a bound for this test when nothing evicts the pod: the kubelet measures an emptyDir once a minute (volume-stats-agg-period), CI saw 101 s
  container { workspace_size_limit = "20Mi" }
}
"#,
        )],
    );
    let started = Instant::now();
    let output = t.run(&base_image(), &["--reconnect-timeout", "5s", "fill"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "ended only {:?} after the start",
        started.elapsed()
    );
    // The kubelet's word for it (the executor, stopped by the kubelet, exits cleanly, so the
    // pod itself keeps no reason).
    let events = t.ns.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=Evicted",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains(r#"Usage of EmptyDir volume "workspace" exceeds the limit "20Mi""#),
        "no eviction for the workspace: {events:?}; buildr said: {message}"
    );
    t.ns.assert_nothing_left();
}

/// Everything a run needs in namespace NS, for ServiceAccount NAME, except deleting.
fn role_without_delete(ns: &str, name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}, namespace: {ns}}}
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [create, list, watch]
  - apiGroups: [""]
    resources: [pods/exec, pods/portforward]
    verbs: [get, create]
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}
subjects: [{{kind: ServiceAccount, name: {name}, namespace: {ns}}}]
"#
    )
}

/// The run returns once the deletion is accepted, not once the pod is gone: a refused deletion
/// must still be said, naming the pod and how to remove it, and the task's status stays the
/// run's; the pod is really there after the run.
#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_refused_deletion_is_still_reported() {
    let t = ClusterTest::new("delete-refused");
    let ns = &t.ns.name;
    apply(&role_without_delete(ns, "no-delete"));
    let token =
        t.ns.kubectl(&["create", "token", "no-delete", "--duration=10m"]);
    let kubeconfig = token_kubeconfig(token.trim());
    let kubeconfig = kubeconfig.path().to_str().unwrap();
    let output = t.run(
        &base_image(),
        &[
            "--kubeconfig",
            kubeconfig,
            "--",
            "sh",
            "-c",
            "echo done > done.txt",
        ],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{message}");
    assert_eq!(
        fs::read_to_string(t.out.path().join("done.txt")).unwrap(),
        "done\n"
    );
    let pod_line = message
        .lines()
        .find(|l| l.starts_with(&format!("buildr: pod {ns}/buildr-")))
        .unwrap_or_else(|| panic!("no line about the pod in: {message}"));
    assert!(pod_line.contains("is left behind"), "{pod_line}");
    assert!(
        pod_line.contains(&format!("kubectl -n {ns} delete pod")),
        "{pod_line}"
    );
    assert!(pod_line.contains("cannot delete it"), "{pod_line}");
    assert!(
        message.contains(&format!("buildr: NetworkPolicy {ns}/buildr-")),
        "{message}"
    );
    std::thread::sleep(NOTHING_LEFT_WITHIN);
    let left = t.ns.buildr_objects();
    assert!(left.iter().any(|o| o.starts_with("pod/")), "{left:?}");
}
