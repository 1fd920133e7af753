//! charts/buildr and manifests/, the way a platform team uses them: `helm lint`, `helm template`,
//! a real `helm install` and `helm uninstall`, `kubectl apply -f manifests/`, the values schema,
//! the ServiceAccount's permissions (asked of the API server's authorizer) and the janitor.
//! Needs helm (tests/cluster/build-tools.sh builds it) and a cluster.

mod k8s_support;

use k8s_support::*;
use std::collections::BTreeSet;
use std::time::Duration;

const CHART: &str = "charts/buildr";
const MANIFESTS: &str = "manifests/buildr.yaml";

/// The Role rules the chart must hold: exactly what the backend and `buildr k8s gc` call.
fn expected_runner_rules() -> BTreeSet<(String, String, String)> {
    let mut rules = BTreeSet::new();
    let mut add = |group: &str, resources: &[&str], verbs: &[&str]| {
        for r in resources {
            for v in verbs {
                rules.insert((group.to_owned(), (*r).to_owned(), (*v).to_owned()));
            }
        }
    };
    add("", &["pods"], &["create", "list", "watch", "delete"]);
    add("", &["pods/exec", "pods/portforward"], &["get", "create"]);
    add(
        "networking.k8s.io",
        &["networkpolicies"],
        &["create", "list", "delete"],
    );
    rules
}

/// A Role's rules as (apiGroup, resource, verb) triples, as the API server stored them.
fn role_rules(ns: &str, role: &str) -> BTreeSet<(String, String, String)> {
    let template = concat!(
        "{{range .rules}}{{$r := .}}{{if .resourceNames}}RESOURCE-NAMES {{.resourceNames}}\n{{end}}",
        "{{range .apiGroups}}{{$g := .}}{{range $r.resources}}{{$res := .}}{{range $r.verbs}}",
        "{{$g}}|{{$res}}|{{.}}\n{{end}}{{end}}{{end}}{{end}}"
    );
    let out = kubectl(&[
        "-n",
        ns,
        "get",
        "role",
        role,
        "-o",
        &format!("go-template={template}"),
    ]);
    out.lines()
        .map(|line| {
            assert!(
                !line.starts_with("RESOURCE-NAMES"),
                "role {role} has a rule with resourceNames: {line}"
            );
            let mut parts = line.splitn(3, '|').map(str::to_owned);
            let triple = (parts.next(), parts.next(), parts.next());
            match triple {
                (Some(g), Some(r), Some(v)) => (g, r, v),
                _ => panic!("unexpected line from kubectl: {line:?}"),
            }
        })
        .collect()
}

/// `kubectl auth can-i VERB RESOURCE -n NS --as SUBJECT`: the API server's authorizer decides.
/// RESOURCE may name a subresource ("pods/exec"): kubectl itself would read that as the pod
/// named "exec", so it is passed as `--subresource`.
fn can_i(subject: &str, ns: &str, verb: &str, resource: &str) -> bool {
    let (resource_only, subresource) = match resource.split_once('/') {
        Some((r, sub)) => (r, Some(sub)),
        None => (resource, None),
    };
    let mut args = vec![
        "auth",
        "can-i",
        verb,
        resource_only,
        "-n",
        ns,
        "--as",
        subject,
    ];
    if let Some(sub) = subresource {
        args.extend(["--subresource", sub]);
    }
    let r = kubectl_try(&args);
    match r.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb} {resource}: unexpected answer {other:?}: {}",
            r.stderr
        ),
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn helm_lint_passes() {
    for values in [
        &[][..],
        &[
            "--set",
            "janitor.enabled=true",
            "--set",
            "limitRange.enabled=true",
            "--set",
            "resourceQuota.enabled=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(values);
        let r = helm(&args);
        assert!(
            r.ok,
            "helm {} failed:\n{}{}",
            args.join(" "),
            r.stdout,
            r.stderr
        );
        assert!(
            r.stdout.contains("0 chart(s) failed"),
            "helm lint: {}",
            r.stdout
        );
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn helm_template_renders_every_object() {
    let r = helm(&[
        "template",
        "t",
        CHART,
        "--namespace",
        "chart-t",
        "--set",
        "janitor.enabled=true",
        "--set",
        "limitRange.enabled=true",
        "--set",
        "resourceQuota.enabled=true",
    ]);
    assert!(r.ok, "helm template failed: {}", r.stderr);
    let kinds: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "LimitRange",
        "ResourceQuota",
        "CronJob",
    ] {
        assert!(
            kinds.contains(&kind),
            "no {kind} rendered; kinds: {kinds:?}"
        );
    }
    // Two of each of these: the runner's and the janitor's.
    for kind in ["ServiceAccount", "Role", "RoleBinding"] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            2,
            "{kind}s rendered: {kinds:?}"
        );
    }
    // The client accepts every object (kubectl's own schema check, no cluster needed).
    let dry = run(
        &tool("kubectl"),
        &["apply", "--dry-run=client", "-f", "-"],
        Some(&r.stdout),
    );
    assert!(
        dry.ok,
        "kubectl apply --dry-run=client refused the rendered chart: {}",
        dry.stderr
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn values_schema_rejects_misspelt_and_wrong_values() {
    for (set, must_name) in [
        ("networkPolicy.enabeld=true", "enabeld"),
        ("serviceAcount.create=false", "serviceAcount"),
        ("namespace.podSecurity.enforce=restrcted", "enforce"),
        ("janitor.concurrencyPolicy=Sometimes", "concurrencyPolicy"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
    ] {
        let r = helm(&["template", "t", CHART, "--set", set]);
        assert!(!r.ok, "helm template --set {set} was accepted");
        assert!(
            r.stderr.contains("schema") && r.stderr.contains(must_name),
            "helm template --set {set}: the error does not name the schema and {must_name}:\n{}",
            r.stderr
        );
    }
    // And a correct value still passes.
    let r = helm(&[
        "template",
        "t",
        CHART,
        "--set",
        "networkPolicy.enabled=false",
    ]);
    assert!(r.ok, "a correct value was refused: {}", r.stderr);
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn manifests_are_the_chart_rendered_with_default_values() {
    let r = helm(&["template", "buildr", CHART, "--namespace", "buildr"]);
    assert!(r.ok, "helm template failed: {}", r.stderr);
    let committed =
        std::fs::read_to_string(repo_root().join(MANIFESTS)).expect("read manifests/buildr.yaml");
    assert!(
        committed == r.stdout,
        "{MANIFESTS} differs from the chart rendered with its default values; regenerate it with\n  \
         helm template buildr charts/buildr --namespace buildr > {MANIFESTS}"
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn kubectl_apply_manifests_is_accepted_and_removable() {
    // The manifests name their namespace "buildr": the test owns it only if nobody else does.
    assert!(
        !kubectl_try(&["get", "namespace", "buildr"]).ok,
        "namespace buildr exists already; this test applies manifests/ as they are and needs it free"
    );
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = kubectl_try(&[
                "delete",
                "-f",
                MANIFESTS,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
    }
    let _cleanup = Cleanup;
    let applied = kubectl(&["apply", "-f", MANIFESTS]);
    for object in [
        "namespace/buildr",
        "serviceaccount/buildr",
        "role.rbac.authorization.k8s.io/buildr",
        "rolebinding.rbac.authorization.k8s.io/buildr",
        "networkpolicy.networking.k8s.io/buildr-default-deny",
    ] {
        assert!(
            applied.contains(&format!("{object} created")),
            "{object} not created:\n{applied}"
        );
    }
    assert_eq!(role_rules("buildr", "buildr"), expected_runner_rules());
    let deleted = kubectl(&["delete", "-f", MANIFESTS, "--wait=true", "--timeout=120s"]);
    assert!(
        deleted.contains("namespace \"buildr\" deleted"),
        "{deleted}"
    );
    assert!(
        !kubectl_try(&["get", "namespace", "buildr"]).ok,
        "namespace buildr is still there"
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn helm_install_is_accepted_and_uninstall_removes_everything() {
    let release = unique("chart-inst");
    let system = Namespace::create(&format!("{release}-sys"), &[]);
    let builds = format!("{release}-builds");
    struct DeleteNs(String);
    impl Drop for DeleteNs {
        fn drop(&mut self) {
            let _ = kubectl_try(&[
                "delete",
                "namespace",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
    }
    let _builds_guard = DeleteNs(builds.clone());
    let installed = helm_install(
        &release,
        &system.name,
        &[
            &format!("namespace.name={builds}"),
            "janitor.enabled=true",
            "limitRange.enabled=true",
            "resourceQuota.enabled=true",
            "rbac.groups[0]=ci-runners",
            "image.repository=buildr.local/janitor",
        ],
    );
    let full = format!("{release}-buildr");
    let objects = [
        format!("serviceaccount/{full}"),
        format!("serviceaccount/{full}-janitor"),
        format!("role.rbac.authorization.k8s.io/{full}"),
        format!("role.rbac.authorization.k8s.io/{full}-janitor"),
        format!("rolebinding.rbac.authorization.k8s.io/{full}"),
        format!("rolebinding.rbac.authorization.k8s.io/{full}-janitor"),
        format!("networkpolicy.networking.k8s.io/{full}-default-deny"),
        format!("limitrange/{full}"),
        format!("resourcequota/{full}"),
        format!("cronjob.batch/{full}-janitor"),
    ];
    for o in &objects {
        assert!(
            kubectl_try(&["-n", &builds, "get", o]).ok,
            "{o} missing after helm install"
        );
    }
    // The namespace enforces "restricted": the API server refuses a root pod there.
    let labels = kubectl(&[
        "get",
        "namespace",
        &builds,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains(r#""pod-security.kubernetes.io/enforce":"restricted""#),
        "{labels}"
    );
    let root_pod = plain_pod_yaml(&builds, "root", "sleep 1");
    let r = run(&tool("kubectl"), &["apply", "-f", "-"], Some(&root_pod));
    assert!(
        !r.ok && r.stderr.contains("violates PodSecurity \"restricted"),
        "a root pod was admitted: {}{}",
        r.stdout,
        r.stderr
    );
    // The Role holds exactly the rules the backend needs, and the extra group is bound.
    assert_eq!(role_rules(&builds, &full), expected_runner_rules());
    let binding = kubectl(&[
        "-n",
        &builds,
        "get",
        "rolebinding",
        &full,
        "-o",
        "jsonpath={.subjects[*].name}",
    ]);
    assert_eq!(binding, format!("{full} ci-runners"));
    // The janitor's Role: list and delete pods and networkpolicies, nothing else.
    let janitor: BTreeSet<_> = [
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("networking.k8s.io", "networkpolicies", "list"),
        ("networking.k8s.io", "networkpolicies", "delete"),
    ]
    .iter()
    .map(|(g, r, v)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(role_rules(&builds, &format!("{full}-janitor")), janitor);

    let r = helm(&[
        "uninstall",
        &release,
        "-n",
        &system.name,
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(r.ok, "helm uninstall failed: {}", r.stderr);
    std::mem::forget(installed); // uninstalled already
    assert!(
        eventually(Duration::from_secs(60), || !kubectl_try(&[
            "get",
            "namespace",
            &builds
        ])
        .ok),
        "namespace {builds} still exists after helm uninstall"
    );
    let left = kubectl(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "cluster-wide objects left: {left}");
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn service_account_has_only_what_buildr_needs() {
    let ns = Namespace::create("chart-rbac", &[]);
    let release = unique("chart-rbac");
    let _installed = helm_install(
        &release,
        &ns.name,
        &["namespace.create=false", "namespace.name="],
    );
    let sa = format!("system:serviceaccount:{}:{release}-buildr", ns.name);
    // Everything a run and gc use.
    for (verb, resource) in [
        ("create", "pods"),
        ("list", "pods"),
        ("watch", "pods"),
        ("delete", "pods"),
        ("get", "pods/exec"),
        ("create", "pods/exec"),
        ("get", "pods/portforward"),
        ("create", "pods/portforward"),
        ("create", "networkpolicies.networking.k8s.io"),
        ("list", "networkpolicies.networking.k8s.io"),
        ("delete", "networkpolicies.networking.k8s.io"),
    ] {
        assert!(
            can_i(&sa, &ns.name, verb, resource),
            "the ServiceAccount cannot {verb} {resource}"
        );
    }
    // Nothing else in its namespace.
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "secrets"),
        ("get", "configmaps"),
        ("update", "pods"),
        ("patch", "pods"),
        ("create", "pods/attach"),
        ("update", "pods/ephemeralcontainers"),
        ("create", "pods/eviction"),
        ("update", "networkpolicies.networking.k8s.io"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("create", "deployments.apps"),
        ("create", "jobs.batch"),
        ("create", "services"),
        ("create", "serviceaccounts/token"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("delete", "events"),
    ] {
        assert!(
            !can_i(&sa, &ns.name, verb, resource),
            "the ServiceAccount can {verb} {resource}"
        );
    }
    // Nothing outside its namespace, nor cluster-wide.
    for other in ["default", "kube-system"] {
        for (verb, resource) in [
            ("create", "pods"),
            ("list", "pods"),
            ("get", "secrets"),
            ("create", "pods/exec"),
        ] {
            assert!(
                !can_i(&sa, other, verb, resource),
                "the ServiceAccount can {verb} {resource} in {other}"
            );
        }
    }
    for (verb, resource) in [
        ("list", "namespaces"),
        ("list", "nodes"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
    ] {
        let r = kubectl_try(&[
            "auth",
            "can-i",
            verb,
            resource,
            "--all-namespaces",
            "--as",
            &sa,
        ]);
        assert_eq!(
            r.stdout.trim(),
            "no",
            "the ServiceAccount can {verb} {resource} cluster-wide"
        );
    }
    // And what the API server really does with a kubeconfig holding only its token.
    ns.kubectl(&["create", "secret", "generic", "s", "--from-literal=k=v"]);
    let token = ns.kubectl(&[
        "create",
        "token",
        &format!("{release}-buildr"),
        "--duration=10m",
    ]);
    let kubeconfig = token_kubeconfig(token.trim());
    let as_sa = |args: &[&str]| {
        let mut a = vec![
            "--kubeconfig",
            kubeconfig.path().to_str().expect("utf-8 path"),
            "-n",
            &ns.name,
        ];
        a.extend_from_slice(args);
        kubectl_try(&a)
    };
    let r = as_sa(&["get", "secret", "s"]);
    assert!(
        !r.ok && r.stderr.contains("Forbidden"),
        "the token read a Secret: {}{}",
        r.stdout,
        r.stderr
    );
    let r = as_sa(&["get", "pods"]);
    assert!(r.ok, "the token cannot list pods: {}", r.stderr);
    let r = as_sa(&["get", "pods", "-n", "default"]);
    assert!(
        !r.ok && r.stderr.contains("Forbidden"),
        "the token listed pods in default: {}",
        r.stdout
    );
}

/// A kubeconfig for the current cluster (server and CA from the current one) whose only
/// credential is TOKEN.
fn token_kubeconfig(token: &str) -> tempfile::NamedTempFile {
    let server = kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let ca = kubectl(&[
        "config",
        "view",
        "--minify",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let mut file = tempfile::NamedTempFile::new().expect("temporary file");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\n\
         contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
    );
    std::io::Write::write_all(&mut file, config.as_bytes()).expect("write kubeconfig");
    file
}

/// The janitor image: BUILDR_JANITOR_IMAGE (hosted CI loads it into kind), else built from the
/// static buildr binary and imported into tests/cluster's containerd.
fn janitor_image() -> String {
    if let Ok(image) = std::env::var("BUILDR_JANITOR_IMAGE") {
        return image;
    }
    let r = run(
        &repo_root().join("tests/cluster/janitor-image.sh"),
        &["--import"],
        None,
    );
    assert!(
        r.ok,
        "tests/cluster/janitor-image.sh --import failed:\n{}{}",
        r.stdout, r.stderr
    );
    r.stdout
        .lines()
        .last()
        .expect("janitor-image.sh prints the image name")
        .trim()
        .to_owned()
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn janitor_cronjob_removes_expired_buildr_pods_only() {
    let image = janitor_image();
    let (repository, tag) = image.rsplit_once(':').expect("image has a tag");
    let ns = Namespace::create(
        "chart-janitor",
        &["pod-security.kubernetes.io/enforce=restricted"],
    );
    let release = unique("chart-jan");
    let _installed = helm_install(
        &release,
        &ns.name,
        &[
            "namespace.create=false",
            "namespace.name=",
            "janitor.enabled=true",
            &format!("image.repository={repository}"),
            &format!("image.tag={tag}"),
            "image.pullPolicy=IfNotPresent",
            "janitor.env[0].name=RUST_LOG",
            "janitor.env[0].value=debug",
        ],
    );
    // An expired build pod with its policy, a live one, and a pod that is not buildr's.
    apply(&build_pod_yaml(
        &ns.name,
        "expired1",
        "2001-01-01T00:00:00Z",
        "exec sleep infinity",
    ));
    apply(&run_policy_yaml(
        &ns.name,
        "expired1",
        "2001-01-01T00:00:00Z",
        "none",
    ));
    apply(&run_policy_yaml(
        &ns.name,
        "live1",
        "2099-01-01T00:00:00Z",
        "none",
    ));
    apply(&build_pod_yaml(
        &ns.name,
        "live1",
        "2099-01-01T00:00:00Z",
        "exec sleep infinity",
    ));
    let other = pod_yaml(
        &ns.name,
        "not-buildr",
        &[("app", "other")],
        &[],
        true,
        "exec sleep infinity",
    );
    apply(&other);
    for pod in ["buildr-expired1", "buildr-live1", "not-buildr"] {
        ns.wait_ready(pod);
    }

    let cronjob = format!("{release}-buildr-janitor");
    ns.kubectl(&[
        "create",
        "job",
        "gc-now",
        &format!("--from=cronjob/{cronjob}"),
    ]);
    let done = ns.kubectl_try(&[
        "wait",
        "--for=condition=Complete",
        "job/gc-now",
        "--timeout=120s",
    ]);
    let logs = ns.kubectl_try(&["logs", "job/gc-now", "--all-containers"]);
    assert!(
        done.ok,
        "the janitor job did not complete: {}\nlogs:\n{}{}",
        done.stderr, logs.stdout, logs.stderr
    );
    assert!(
        eventually(Duration::from_secs(30), || !ns.has_pod("buildr-expired1")),
        "the expired buildr pod is still there; janitor logs:\n{}",
        logs.stdout
    );
    assert!(
        !ns.kubectl_try(&["get", "networkpolicy", "buildr-expired1"])
            .ok,
        "the expired run's policy is still there"
    );
    assert!(
        ns.has_pod("buildr-live1"),
        "the janitor deleted a buildr pod that had not expired"
    );
    assert!(
        ns.kubectl_try(&["get", "networkpolicy", "buildr-live1"]).ok,
        "the janitor deleted a policy that had not expired"
    );
    assert!(
        ns.has_pod("not-buildr"),
        "the janitor deleted a pod that is not buildr's"
    );
}

/// The statically linked buildr that goes into pods (`cargo dist`).
fn static_buildr() -> std::path::PathBuf {
    let path = repo_root().join("target/x86_64-unknown-linux-gnu/dist/buildr");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo dist`",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_run_as_the_chart_service_account_succeeds() {
    // The Role is enough for a whole run: a kubeconfig holding only the chart's ServiceAccount
    // token runs a task in a pod and brings its file back.
    let ns = Namespace::create(
        "chart-run",
        &["pod-security.kubernetes.io/enforce=restricted"],
    );
    let release = unique("chart-run");
    let _installed = helm_install(
        &release,
        &ns.name,
        &["namespace.create=false", "namespace.name="],
    );
    let token = ns.kubectl(&[
        "create",
        "token",
        &format!("{release}-buildr"),
        "--duration=10m",
    ]);
    let kubeconfig = token_kubeconfig(token.trim());
    let repo = tempfile::tempdir().expect("temporary repository");
    let out = tempfile::tempdir().expect("temporary output");
    let executor = static_buildr();
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_buildr"))
        .args([
            "run",
            "--backend",
            "k8s",
            "-n",
            &ns.name,
            "--image",
            &base_image(),
        ])
        .arg("--executor-binary")
        .arg(&executor)
        .arg("--repo")
        .arg(repo.path())
        .arg("--out")
        .arg(out.path())
        .args([
            "--",
            "sh",
            "-c",
            "echo made by the chart\\'s account > made.txt",
        ])
        .env("KUBECONFIG", kubeconfig.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("buildr runs");
    assert!(
        r.status.success(),
        "buildr run as the chart's ServiceAccount failed ({}):\n{}",
        r.status,
        String::from_utf8_lossy(&r.stderr)
    );
    let made = std::fs::read_to_string(out.path().join("made.txt")).expect("made.txt came back");
    assert_eq!(made, "made by the chart's account\n");
    let left = ns.kubectl(&[
        "get",
        "pods,networkpolicies",
        "-l",
        "app.kubernetes.io/managed-by=buildr",
        "-o",
        "name",
    ]);
    assert!(
        left.trim().is_empty(),
        "the run left objects behind: {left}"
    );
}
