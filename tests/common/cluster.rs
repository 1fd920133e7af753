//! The real cluster of tests/cluster (the README's test command brings it up and exports
//! KUBECONFIG; hosted CI uses kind): kubectl found the way the cluster scripts find it,
//! throw-away namespaces that delete themselves (also when a test panics), connection probes run
//! inside pods, and `buildr run --backend k8s` with the static executor.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{Run, buildr_bin, eventually, repo_root, run};

/// The image with a shell, tar, the host's glibc, bash, coreutils' timeout and echoserver;
/// BusyBox alone; BusyBox without tar.
pub fn base_image() -> String {
    std::env::var("BUILDR_CLUSTER_BASE_IMAGE").unwrap_or_else(|_| "buildr.local/base:1".into())
}
pub const BUSYBOX_IMAGE: &str = "buildr.local/busybox:1";
pub const NO_TAR_IMAGE: &str = "buildr.local/notar:1";

/// The label that makes the API server itself refuse a pod that is not Pod Security "restricted".
pub const RESTRICTED: &str = "pod-security.kubernetes.io/enforce=restricted";

/// How long after a run its pod and policy may still exist: the run returns once their
/// deletion is accepted, and the finished pod takes a moment to go.
pub const NOTHING_LEFT_WITHIN: Duration = Duration::from_secs(5);

/// The label on every object buildr creates.
const MANAGED_BY_BUILDR: &str = "app.kubernetes.io/managed-by=buildr";

/// The statically linked, stripped lean executor that runs send into pods (`cargo dist`).
pub fn static_executor() -> PathBuf {
    let path = repo_root().join("target/x86_64-unknown-linux-gnu/dist/buildr-executor");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo dist` (tests/run-all.sh does)",
        path.display()
    );
    path
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

/// kubectl ARGS; panics with its stderr when it fails.
pub fn kubectl(args: &[&str]) -> String {
    let r = kubectl_try(args);
    assert!(r.ok, "kubectl {} failed:\n{}", args.join(" "), r.stderr);
    r.stdout
}

/// kubectl ARGS, whatever the outcome.
pub fn kubectl_try(args: &[&str]) -> Run {
    run(&tool("kubectl"), args, None)
}

/// kubectl ARGS reading INPUT on stdin (`-f -`), whatever the outcome.
pub fn kubectl_input(args: &[&str], input: &str) -> Run {
    run(&tool("kubectl"), args, Some(input))
}

/// `kubectl apply -f -` of YAML.
pub fn apply(yaml: &str) {
    let r = kubectl_input(&["apply", "-f", "-"], yaml);
    assert!(
        r.ok,
        "kubectl apply failed:\n{}\n--- input ---\n{yaml}",
        r.stderr
    );
}

/// A fresh name, PREFIX-<random>, that is a DNS label: for namespaces and releases.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8]).replace('_', "-")
}

/// The address and port pods reach the API server at: the `kubernetes` Service's cluster IP.
pub fn api_server_vip() -> (String, u16) {
    let address = kubectl(&[
        "-n",
        "default",
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].port}",
    ]);
    let (ip, port) = address
        .split_once(' ')
        .unwrap_or_else(|| panic!("the kubernetes Service's address: {address:?}"));
    (ip.to_owned(), port.trim().parse().expect("a port number"))
}

/// A kubeconfig for the current cluster (server and CA from the current one) whose only
/// credential is TOKEN.
pub fn token_kubeconfig(token: &str) -> tempfile::NamedTempFile {
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

/// A namespace of its own for one test, deleted (without waiting) when dropped, also when the
/// test panics.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    /// `t-TEST-…`, enforcing Pod Security "restricted" as the namespaces buildr runs in should.
    pub fn new(test: &str) -> Self {
        Self::create(&format!("t-{test}"), &[RESTRICTED])
    }

    /// `PREFIX-…` with LABELS ("key=value"), ready for pods.
    pub fn create(prefix: &str, labels: &[&str]) -> Self {
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
            eventually(Duration::from_secs(30), || ns
                .kubectl_try(&["get", "serviceaccount", "default"])
                .ok),
            "namespace {}: no default ServiceAccount after 30 s",
            ns.name
        );
        ns
    }

    /// kubectl -n NAMESPACE ARGS; panics with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.scoped(args))
    }

    /// kubectl -n NAMESPACE ARGS, whatever the outcome.
    pub fn kubectl_try(&self, args: &[&str]) -> Run {
        kubectl_try(&self.scoped(args))
    }

    fn scoped<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut scoped = vec!["-n", self.name.as_str()];
        scoped.extend_from_slice(args);
        scoped
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

    /// `buildr run --backend k8s` in this namespace with the static executor.
    pub fn run(&self, repo: &Path, out: &Path, image: &str, extra: &[&str]) -> Output {
        self.command(repo, out, image, extra)
            .output()
            .expect("buildr runs")
    }

    /// The command of [`Namespace::run`], to spawn it.
    pub fn command(&self, repo: &Path, out: &Path, image: &str, extra: &[&str]) -> Command {
        let mut with_image = vec!["--image", image];
        with_image.extend_from_slice(extra);
        self.command_without_image(repo, out, &with_image)
    }

    /// `buildr run --backend k8s` in this namespace with the static executor and EXTRA only:
    /// what a run that names a pool needs.
    pub fn command_without_image(&self, repo: &Path, out: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(buildr_bin());
        command
            .args(["run", "--backend", "k8s", "-n", &self.name])
            .arg("--executor-binary")
            .arg(static_executor())
            .arg("--repo")
            .arg(repo)
            .arg("--out")
            .arg(out)
            .args(extra)
            .env_remove("RUST_LOG");
        command
    }

    /// The names of the pods and NetworkPolicies labelled as buildr's in this namespace.
    pub fn buildr_objects(&self) -> Vec<String> {
        let listed = self.kubectl(&[
            "get",
            "pods,networkpolicies",
            "-l",
            MANAGED_BY_BUILDR,
            "-o",
            "name",
        ]);
        listed.lines().map(str::to_string).collect()
    }

    /// Nothing of buildr's is left a few seconds after a run returned: no pod, no
    /// NetworkPolicy. A run returns once their deletion is accepted; its executor has exited by
    /// then, so the pod is gone moments later.
    pub fn assert_nothing_left(&self) {
        let mut left = Vec::new();
        let gone = super::eventually(NOTHING_LEFT_WITHIN, || {
            left = self.buildr_objects();
            left.is_empty()
        });
        assert!(
            gone,
            "left behind {}s after the run: {left:?}",
            NOTHING_LEFT_WITHIN.as_secs()
        );
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl_try(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// One test's namespace, with a scratch repository to run from and a directory for what comes
/// back.
pub struct ClusterTest {
    pub ns: Namespace,
    pub repo: tempfile::TempDir,
    pub out: tempfile::TempDir,
}

impl ClusterTest {
    pub fn new(test: &str) -> Self {
        Self {
            ns: Namespace::new(test),
            repo: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
        }
    }

    /// [`Namespace::run`] from the scratch repository into the scratch output.
    pub fn run(&self, image: &str, extra: &[&str]) -> Output {
        self.ns.run(self.repo.path(), self.out.path(), image, extra)
    }

    /// The command of [`ClusterTest::run`], to spawn it.
    pub fn command(&self, image: &str, extra: &[&str]) -> Command {
        self.ns
            .command(self.repo.path(), self.out.path(), image, extra)
    }
}

/// A file tree as `(path, kind and mode, contents or link target)`, to compare two outputs
/// byte for byte and mode for mode.
pub fn snapshot(root: &Path) -> Vec<(String, String, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    for path in super::tree(root) {
        let full = root.join(&path);
        let meta = std::fs::symlink_metadata(&full).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let (kind, data) = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).unwrap();
            ("link", target.into_os_string().into_encoded_bytes())
        } else if meta.is_dir() {
            ("dir", Vec::new())
        } else {
            ("file", std::fs::read(&full).unwrap())
        };
        entries.push((path, format!("{kind} {mode:o}"), data));
    }
    entries
}
