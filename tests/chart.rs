//! charts/buildr and manifests/, the way a platform team uses them: `helm lint`, `helm template`,
//! a real `helm install` and `helm uninstall`, `kubectl apply -f manifests/`, the values schema,
//! the ServiceAccount's permissions (asked of the API server's authorizer), the janitor, the pool
//! controller and the BuildrPool CRD (generated from its Rust type).
//! Needs helm (tests/cluster/build-tools.sh builds it), and all but the helm-only tests a cluster;
//! each says which in its ignore reason, and `cargo test -- --include-ignored` runs them all.

mod common;

use buildr::cluster::access::{PERMISSIONS, Permission};
use buildr::task::Container;
use common::cluster::{
    Namespace, RESTRICTED, apply, base_image, kubectl, kubectl_input, kubectl_try, static_executor,
    token_kubeconfig, unique,
};
use common::helm::{Release, helm, helm_install};
use common::manifests::{build_pod_yaml, plain_pod_yaml, pod_yaml, run_plan, run_policy_json};
use common::{Run, buildr, eventually, repo_root, run, stderr, stdout};
use std::collections::BTreeSet;
use std::time::Duration;

const CHART: &str = "charts/buildr";
const MANIFESTS: &str = "manifests/buildr.yaml";
/// The BuildrPool CRD, generated from its Rust type (`buildr k8s crd`).
const CRD: &str = "charts/buildr/crds/buildrpools.yaml";
const MANIFESTS_CRD: &str = "manifests/crds/buildrpools.yaml";

/// The Role rules the chart must hold: exactly what the backend and `buildr k8s gc` call, the
/// table `buildr k8s check` asks about.
fn expected_runner_rules() -> BTreeSet<(String, String, String)> {
    PERMISSIONS
        .iter()
        .map(|p| (p.group.to_owned(), p.resource.to_owned(), p.verb.to_owned()))
        .collect()
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
#[ignore = "needs helm from tests/cluster/build-tools.sh (tests/run-all.sh)"]
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
        "--set",
        "pool.enabled=true",
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
        "Deployment",
    ] {
        assert!(
            kinds.contains(&kind),
            "no {kind} rendered; kinds: {kinds:?}"
        );
    }
    // Three of each of these: the runner's, the janitor's and the pool controller's.
    for kind in ["ServiceAccount", "Role", "RoleBinding"] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            3,
            "{kind}s rendered: {kinds:?}"
        );
    }
    // The client accepts every object (kubectl's own schema check, no cluster needed).
    let dry = kubectl_input(&["apply", "--dry-run=client", "-f", "-"], &r.stdout);
    assert!(
        dry.ok,
        "kubectl apply --dry-run=client refused the rendered chart: {}",
        dry.stderr
    );
}

#[test]
#[ignore = "needs helm from tests/cluster/build-tools.sh (tests/run-all.sh)"]
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
#[ignore = "needs helm from tests/cluster/build-tools.sh (tests/run-all.sh)"]
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
fn the_crd_in_the_chart_and_the_manifests_is_the_one_buildr_generates() {
    let generated = buildr(&["k8s", "crd"]);
    assert!(generated.status.success(), "{}", stderr(&generated));
    let generated = stdout(&generated);
    for file in [CRD, MANIFESTS_CRD] {
        let committed = std::fs::read_to_string(repo_root().join(file)).expect("read the CRD");
        assert!(
            committed == generated,
            "{file} differs from the BuildrPool type; regenerate it with\n  \
             cargo run -- k8s crd > {file}"
        );
    }
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
    // The chart creates it; deleted here too in case the test fails before uninstalling.
    let _builds_guard = Namespace {
        name: builds.clone(),
    };
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
    let r = kubectl_input(&["apply", "-f", "-"], &root_pod);
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
        ("patch", "pods"),
        ("get", "buildrpools.buildr.dev"),
        ("list", "buildrpools.buildr.dev"),
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
        ("create", "pods/attach"),
        ("create", "buildrpools.buildr.dev"),
        ("patch", "buildrpools.buildr.dev"),
        ("patch", "buildrpools.buildr.dev/status"),
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

/// Waits until the pool `pool` has `size` ready pods, made by the chart's controller (the
/// Deployment `controller`), whose log the failure shows.
fn wait_filled(ns: &Namespace, pool: &str, size: u32, controller: &str) {
    let full = eventually(Duration::from_secs(120), || {
        common::pool::pool_field(ns, pool, "{.status.ready}") == size.to_string()
    });
    let logs = ns.kubectl_try(&["logs", &format!("deployment/{controller}")]);
    assert!(
        full,
        "the chart's controller did not fill the pool: {}\nlogs:\n{}{}",
        common::pool::pool_field(ns, pool, "{.status}"),
        logs.stdout,
        logs.stderr
    );
}

/// The chart installed as `release` into `ns` (which exists), its pool controller running in
/// the janitor image, with `more` values.
fn install_with_pool_controller(release: &str, ns: &Namespace, more: &[&str]) -> Release {
    let image = janitor_image();
    let (repository, tag) = image.rsplit_once(':').expect("image has a tag");
    let (repository, tag) = (
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
    );
    let mut values = vec![
        "namespace.create=false",
        "namespace.name=",
        "pool.enabled=true",
        repository.as_str(),
        tag.as_str(),
        "image.pullPolicy=IfNotPresent",
    ];
    values.extend_from_slice(more);
    helm_install(release, &ns.name, &values)
}

/// The janitor image: BUILDR_JANITOR_IMAGE (hosted CI loads it into kind), else built from the
/// static buildr binary and imported into tests/cluster's containerd.
fn janitor_image() -> String {
    // Built once for the tests that run at once: two builds would write the same file.
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(build_janitor_image).clone()
}

fn build_janitor_image() -> String {
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
    let ns = Namespace::create("chart-janitor", &[RESTRICTED]);
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
    // buildr's policies, without owners: left behind, they outlive their pods.
    for (run_id, expires_at) in [
        ("expired1", "2001-01-01T00:00:00Z"),
        ("live1", "2099-01-01T00:00:00Z"),
    ] {
        let plan = run_plan(&ns.name, run_id, expires_at, Container::default());
        apply(&run_policy_json(&plan, None));
    }
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

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn the_charts_pool_controller_fills_a_pool_that_a_run_takes_from() {
    let ns = Namespace::create("chart-pool", &[RESTRICTED]);
    let release = unique("chart-pool");
    let _installed = install_with_pool_controller(&release, &ns, &[]);
    // Its Role is the least it needs.
    let controller: BTreeSet<_> = [
        ("buildr.dev", "buildrpools", "list"),
        ("buildr.dev", "buildrpools", "watch"),
        ("buildr.dev", "buildrpools/status", "patch"),
        ("", "pods", "create"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "patch"),
        ("", "pods", "delete"),
        ("", "pods/exec", "get"),
        ("", "pods/exec", "create"),
        ("networking.k8s.io", "networkpolicies", "create"),
        ("networking.k8s.io", "networkpolicies", "patch"),
    ]
    .iter()
    .map(|(g, r, v)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
    .collect();
    let name = format!("{release}-buildr-pool-controller");
    assert_eq!(role_rules(&ns.name, &name), controller);

    common::pool::create_pool(&ns, "warm", 2, &base_image());
    wait_filled(&ns, "warm", 2, &name);
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let script = [
        "-v",
        "--pool",
        "warm",
        "--",
        "sh",
        "-c",
        "echo warm > w.txt",
    ];
    let r = ns.run(repo.path(), out.path(), &base_image(), &script);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert!(stderr(&r).contains("took warm pod"), "{}", stderr(&r));
    assert_eq!(
        std::fs::read_to_string(out.path().join("w.txt")).unwrap(),
        "warm\n"
    );
}

/// A namespace enforcing Pod Security "restricted" with the chart installed into it, and a
/// kubeconfig holding only its ServiceAccount's token: what a CI runner in the cluster has.
struct Installed {
    ns: Namespace,
    _release: Release,
    role: String,
    /// The ServiceAccount as `kubectl --as` names it.
    subject: String,
    kubeconfig: tempfile::NamedTempFile,
}

impl Installed {
    fn new(prefix: &str) -> Installed {
        let ns = Namespace::create(prefix, &[RESTRICTED]);
        let release = unique(prefix);
        let installed = helm_install(
            &release,
            &ns.name,
            &["namespace.create=false", "namespace.name="],
        );
        let account = format!("{release}-buildr");
        let token = ns.kubectl(&["create", "token", &account, "--duration=30m"]);
        Installed {
            subject: format!("system:serviceaccount:{}:{account}", ns.name),
            kubeconfig: token_kubeconfig(token.trim()),
            role: account,
            ns,
            _release: installed,
        }
    }

    /// The freshly built buildr with ARGS as the ServiceAccount, the static one going into the
    /// pod; killed after 90 s, so that a hang fails the test instead of stalling it.
    fn buildr(&self, args: &[&str]) -> Run {
        // The cluster flags belong to the subcommand: `buildr k8s check --kubeconfig …`.
        let (subcommand, rest) = args.split_at(if args[0] == "k8s" { 2 } else { 1 });
        let kubeconfig = self.kubeconfig.path().to_str().expect("utf-8 path");
        let mut all = vec!["90", env!("CARGO_BIN_EXE_buildr")];
        all.extend_from_slice(subcommand);
        all.extend(["--kubeconfig", kubeconfig, "-n", &self.ns.name]);
        all.extend_from_slice(rest);
        let r = run(std::path::Path::new("timeout"), &all, None);
        assert_ne!(r.code, Some(124), "buildr {args:?} hung:\n{}", r.stderr);
        r
    }

    /// A run of `sh -c SCRIPT` in the base image from an empty repository; its result and where
    /// its files came back.
    fn run_task(&self, script: &str) -> (Run, tempfile::TempDir) {
        let repo = tempfile::tempdir().expect("temporary repository");
        let out = tempfile::tempdir().expect("temporary output");
        let executor = static_executor();
        let run = self.buildr(&[
            "run",
            "--backend",
            "k8s",
            "--image",
            &base_image(),
            "--executor-binary",
            executor.to_str().expect("utf-8 path"),
            "--repo",
            repo.path().to_str().expect("utf-8 path"),
            "--out",
            out.path().to_str().expect("utf-8 path"),
            "--",
            "sh",
            "-c",
            script,
        ]);
        (run, out)
    }

    /// Sets the Role's rules to PERMISSIONS, one rule each, and waits until the authorizer
    /// answers accordingly for CHANGED (RBAC takes a moment to follow).
    fn grant(&self, permissions: &[&Permission], changed: &[&Permission]) {
        let rules: Vec<String> = permissions
            .iter()
            .map(|p| {
                format!(
                    r#"{{"apiGroups":["{}"],"resources":["{}"],"verbs":["{}"]}}"#,
                    p.group, p.resource, p.verb
                )
            })
            .collect();
        let patch = format!(r#"{{"rules":[{}]}}"#, rules.join(","));
        self.ns
            .kubectl(&["patch", "role", &self.role, "--type=merge", "-p", &patch]);
        for p in changed {
            let granted = permissions.contains(p);
            assert!(
                eventually(Duration::from_secs(30), || can_i(
                    &self.subject,
                    &self.ns.name,
                    p.verb,
                    &kubectl_resource(p)
                ) == granted),
                "the authorizer does not follow the Role for {p}"
            );
        }
    }
}

/// How kubectl names a permission's resource: `pods/exec`, `networkpolicies.networking.k8s.io`.
fn kubectl_resource(p: &Permission) -> String {
    if p.group.is_empty() {
        p.resource.to_owned()
    } else {
        format!("{}.{}", p.resource, p.group)
    }
}

/// The minor version of the API server (34 for 1.34).
fn server_minor() -> u32 {
    let version: serde_json::Value =
        serde_json::from_str(&kubectl(&["get", "--raw", "/version"])).expect("JSON from /version");
    version["minor"]
        .as_str()
        .expect("a minor version")
        .trim_end_matches('+')
        .parse()
        .expect("a minor version")
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_run_as_the_chart_service_account_succeeds() {
    // The Role is enough for a whole run: a kubeconfig holding only the chart's ServiceAccount
    // token passes `buildr k8s check`, runs a task in a pod and brings its file back.
    let installed = Installed::new("chart-run");
    let check = installed.buildr(&["k8s", "check", "--image", &base_image()]);
    assert!(
        check.ok && !check.stdout.contains("MISSING") && !check.stdout.contains("REFUSED"),
        "buildr k8s check as the chart's ServiceAccount failed:\n{}{}",
        check.stdout,
        check.stderr
    );
    assert!(
        check.stderr.contains("a run can succeed in namespace"),
        "{}",
        check.stderr
    );
    // Even when everything is allowed, the table ends saying whom the namespace is shared with.
    let last = check.stdout.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "namespace {} is one trust domain",
            installed.ns.name
        )) && last.contains("its own namespace"),
        "the table does not end with the namespace note:\n{}",
        check.stdout
    );
    let (r, out) = installed.run_task("echo made by the chart\\'s account > made.txt");
    assert!(
        r.ok,
        "buildr run as the chart's ServiceAccount failed ({:?}):\n{}",
        r.code, r.stderr
    );
    let made = std::fs::read_to_string(out.path().join("made.txt")).expect("made.txt came back");
    assert_eq!(made, "made by the chart's account\n");
    installed.ns.assert_nothing_left();
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn each_missing_permission_is_named_by_the_run_and_by_check() {
    // One rule at a time taken out of the chart's Role: the run fails fast and names it (or,
    // for what only gc uses, gc does), `buildr k8s check` names it, and nothing is left behind
    // that the remaining permissions allow deleting.
    let installed = Installed::new("chart-perm");
    let ns = &installed.ns.name;
    let minor = server_minor();
    let mut previous: Option<&Permission> = None;
    for removed in PERMISSIONS {
        let kept: Vec<&Permission> = PERMISSIONS.iter().filter(|p| *p != removed).collect();
        let changed: Vec<&Permission> = [Some(removed), previous].into_iter().flatten().collect();
        installed.grant(&kept, &changed);
        previous = Some(removed);

        let named = format!("not allowed to {removed} in namespace {ns}");
        let points = format!("run `buildr k8s check -n {ns}`");
        let started = std::time::Instant::now();
        let (r, _out) = installed.run_task("true");
        let took = started.elapsed();
        eprintln!(
            "without {removed}: the run {} in {took:.1?}:\n{}",
            if r.ok { "succeeded" } else { "failed" },
            r.stderr.trim_end()
        );
        assert!(
            !r.stderr.contains("Status {"),
            "without {removed}: a debug dump reached the console:\n{}",
            r.stderr
        );
        let upgrade_create = removed.verb == "create" && removed.resource.starts_with("pods/");
        if !removed.run || removed.warm || (upgrade_create && minor < 35) {
            // Not used by a run: gc's own list, and (before 1.35, where the upgrades need only
            // `get`) the upgrades' create; nor by a run without a warm pool, which starts a pod
            // of its own (tests/pool.rs takes warm pods).
            assert!(r.ok, "without {removed} the run failed:\n{}", r.stderr);
        } else if removed.verb == "delete" {
            // The task ran; what could not be deleted is named, and said to be left.
            assert!(
                r.stderr.contains(&named) && r.stderr.contains(&points),
                "without {removed}: clean-up does not name it:\n{}",
                r.stderr
            );
            let left = if removed.resource == "pods" {
                format!("pod {ns}/")
            } else {
                format!("NetworkPolicy {ns}/")
            };
            assert!(
                r.stderr.contains(&left) && r.stderr.contains(" is left "),
                "without {removed}: does not say what is left:\n{}",
                r.stderr
            );
        } else {
            assert!(!r.ok, "without {removed} the run succeeded");
            assert!(
                r.stderr.contains(&named) && r.stderr.contains(&points),
                "without {removed}: the run's error does not name it, or not the check:\n{}",
                r.stderr
            );
            assert!(
                took < Duration::from_secs(45),
                "without {removed}: the run took {took:?} to fail"
            );
        }
        if removed.resource == "networkpolicies" && removed.verb == "list" {
            let gc = installed.buildr(&["k8s", "gc"]);
            assert!(
                !gc.ok && gc.stderr.contains(&named) && gc.stderr.contains(&points),
                "without {removed}: gc does not name it:\n{}",
                gc.stderr
            );
        }

        let check = installed.buildr(&["k8s", "check"]);
        let row = check
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{removed} ")))
            .unwrap_or_else(|| panic!("no row for {removed}:\n{}", check.stdout));
        assert!(
            check.code == Some(1)
                && row.contains(" MISSING ")
                && check.stderr.contains(&format!("({removed})")),
            "without {removed}: buildr k8s check says:\n{}{}",
            check.stdout,
            check.stderr
        );
        assert_eq!(
            check.stdout.matches("MISSING").count(),
            1,
            "{}",
            check.stdout
        );

        if removed.resource == "pods" && removed.verb == "delete" {
            assert!(
                installed
                    .ns
                    .buildr_objects()
                    .iter()
                    .any(|o| o.starts_with("pod/buildr-")),
                "without {removed} the pod is gone all the same"
            );
            installed.ns.kubectl(&[
                "delete",
                "pods,networkpolicies",
                "-l",
                "app.kubernetes.io/managed-by=buildr",
                "--wait=true",
            ]);
        }
        // A policy that could not be deleted goes with its pod (it is owned by it), a moment
        // later.
        assert!(
            eventually(Duration::from_secs(30), || installed
                .ns
                .buildr_objects()
                .is_empty()),
            "without {removed} the run left: {:?}",
            installed.ns.buildr_objects()
        );
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn check_reports_a_namespace_that_refuses_buildrs_pod() {
    // Admission judges the dry-run pod as it would the real one. A ResourceQuota of zero pods is
    // the simplest real refusal: buildr's pod passes Pod Security "restricted" by design, and
    // the quota admission plugin runs on dry runs like the Pod Security one does.
    let ns = Namespace::create("chart-quota", &[RESTRICTED]);
    ns.kubectl(&["create", "quota", "no-pods", "--hard=pods=0"]);
    let r = run(
        std::path::Path::new(env!("CARGO_BIN_EXE_buildr")),
        &["k8s", "check", "-n", &ns.name],
        None,
    );
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("admission of buildr's pod "))
        .unwrap_or_else(|| panic!("no admission row:\n{}", r.stdout));
    assert!(
        r.code == Some(1)
            && row.contains(" REFUSED ")
            && r.stdout.contains("exceeded quota: no-pods")
            && !r.stdout.contains("MISSING")
            && r.stderr.contains("the namespace refuses buildr's pod"),
        "buildr k8s check in a namespace without room for a pod:\n{}{}",
        r.stdout,
        r.stderr
    );
    let left = ns.kubectl(&["get", "pods", "-o", "name"]);
    assert!(left.trim().is_empty(), "the dry run created {left}");
}

#[test]
#[ignore = "needs the cluster and the registry from tests/cluster (tests/run-all.sh)"]
fn the_charts_pool_controller_seeds_pods_from_a_registry_with_the_secret_it_names() {
    use common::registry::{RegistryServer, free_port};
    let ns = Namespace::create("chart-seed", &[RESTRICTED]);
    // A registry on the node's address that lets no one in without the password, holding a
    // seed pushed with the user's credentials.
    let (user, password) = ("pools", "seed-s3cret");
    let node = kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let address = format!("{}:{}", node.trim(), free_port());
    let storage = tempfile::tempdir().unwrap();
    let _registry = RegistryServer::start_at(&address, storage.path(), &[(user, password)], false);
    let docker = tempfile::tempdir().unwrap();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    let config = format!(r#"{{"auths":{{"{address}":{{"auth":"{auth}"}}}}}}"#);
    std::fs::write(docker.path().join("config.json"), config).unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("seed.txt"), "seeded\n").unwrap();
    let location = format!("{address}/team/inputs");
    let pushed = std::process::Command::new(env!("CARGO_BIN_EXE_buildr"))
        .args([
            "inputs",
            "push",
            "--tag",
            "main",
            "--inputs-registry",
            &location,
        ])
        .arg("--repo")
        .arg(repo.path())
        .env("BUILDR_INSECURE_REGISTRIES", &address)
        .env("DOCKER_CONFIG", docker.path())
        .env("XDG_CACHE_HOME", docker.path())
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    // The credentials as a platform team keeps them, named in the chart's values.
    let secret = "seed-registry";
    ns.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        secret,
        "--docker-server",
        &address,
        "--docker-username",
        user,
        "--docker-password",
        password,
    ]);
    let release = unique("chart-seed");
    let (secret_value, env_value) = (
        format!("pool.registrySecret={secret}"),
        format!("pool.env[0].value={address}"),
    );
    let more = [
        secret_value.as_str(),
        "pool.env[0].name=BUILDR_INSECURE_REGISTRIES",
        env_value.as_str(),
    ];
    let _installed = install_with_pool_controller(&release, &ns, &more);
    apply(&format!(
        "apiVersion: buildr.dev/v1alpha1\nkind: BuildrPool\nmetadata:\n  name: seeded\n  \
         namespace: {}\nspec:\n  size: 1\n  seed: {location}:main\n  container:\n    \
         image: {}\n",
        ns.name,
        base_image()
    ));
    wait_filled(
        &ns,
        "seeded",
        1,
        &format!("{release}-buildr-pool-controller"),
    );
    let pod = &common::pool::pool_pods(&ns, "seeded", Some("ready"))[0];
    let seeded = ns.kubectl(&["exec", pod, "--", "cat", "/workspace/seed.txt"]);
    assert_eq!(seeded, "seeded\n");
    // The password is in neither the pod's spec nor anything its processes see.
    let spec = ns.kubectl(&["get", "pod", pod, "-o", "yaml"]);
    let seen = ns.kubectl(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        "cat /proc/*/environ /proc/*/cmdline 2>/dev/null; true",
    ]);
    for what in [&spec, &seen] {
        assert!(!what.contains(password) && !what.contains(&auth), "{what}");
    }
}
