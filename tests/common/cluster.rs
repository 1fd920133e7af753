//! Helpers for the tests that run against the real cluster of tests/cluster/ (the README's test
//! command brings it up and exports KUBECONFIG): a fresh namespace per test that enforces Pod
//! Security "restricted", kubectl, and `buildr run --backend k8s` with the static executor.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{buildr_bin, stderr, stdout};

/// Why the cluster tests are ignored by a plain `cargo test`.
pub const NEEDS_CLUSTER: &str = "needs the cluster from tests/cluster (tests/run-all.sh)";

/// The image with a shell, tar and the host's glibc; BusyBox alone; BusyBox without tar.
pub fn base_image() -> String {
    std::env::var("BUILDR_CLUSTER_BASE_IMAGE").unwrap_or_else(|_| "buildr.local/base:1".into())
}
pub const BUSYBOX_IMAGE: &str = "buildr.local/busybox:1";
pub const NO_TAR_IMAGE: &str = "buildr.local/notar:1";

/// The statically linked, stripped buildr that goes into pods (`cargo dist`).
pub fn static_buildr() -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-gnu/dist/buildr");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo dist` (tests/run-all.sh does)",
        path.display()
    );
    path
}

pub fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// kubectl that must succeed; its stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let output = kubectl(args);
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// A namespace of its own for one test, enforcing Pod Security "restricted" so that the API
/// server itself refuses a pod that is not. Deleted (without waiting) when dropped.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(test: &str) -> Self {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let name = format!("t-{test}-{suffix}").replace('_', "-");
        kubectl_ok(&["create", "namespace", &name]);
        kubectl_ok(&[
            "label",
            "namespace",
            &name,
            "pod-security.kubernetes.io/enforce=restricted",
        ]);
        Self { name }
    }

    /// `buildr run --backend k8s` in this namespace with the static executor.
    pub fn run(&self, repo: &Path, out: &Path, image: &str, extra: &[&str]) -> Output {
        self.command(repo, out, image, extra)
            .output()
            .expect("buildr runs")
    }

    /// The command of [`Namespace::run`], to spawn it.
    pub fn command(&self, repo: &Path, out: &Path, image: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(buildr_bin());
        command
            .args([
                "run",
                "--backend",
                "k8s",
                "-n",
                &self.name,
                "--image",
                image,
            ])
            .arg("--executor-binary")
            .arg(static_buildr())
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
        let listed = kubectl_ok(&[
            "-n",
            &self.name,
            "get",
            "pods,networkpolicies",
            "-l",
            "app.kubernetes.io/managed-by=buildr",
            "-o",
            "name",
        ]);
        listed.lines().map(str::to_string).collect()
    }

    /// Nothing of buildr's is left: no pod, no NetworkPolicy.
    pub fn assert_nothing_left(&self) {
        assert_eq!(self.buildr_objects(), Vec::<String>::new(), "left behind");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
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
