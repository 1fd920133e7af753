//! BuildrPools on the real cluster: the CRD applied from the chart, pools created with kubectl,
//! and `buildr k8s pool-controller` run as a child process for one test's namespace.

use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::buildr_bin;
use super::cluster::{ClusterTest, Namespace, kubectl, static_executor};
use super::{eventually, repo_root};

/// The CRD as the chart ships it; applying it again changes nothing.
pub fn install_crd() {
    let crd = repo_root().join("charts/buildr/crds/buildrpools.yaml");
    kubectl(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/buildrpools.buildr.dev",
        "--timeout=30s",
    ]);
}

/// `buildr k8s pool-controller` for one namespace, killed when dropped; its log goes to a file
/// that a failed test prints.
pub struct PoolController {
    child: Child,
    pub log: tempfile::NamedTempFile,
}

impl PoolController {
    pub fn start(ns: &Namespace) -> Self {
        Self::start_with_env(ns, &[])
    }

    /// [`PoolController::start`] with ENV (a seed's registry, Docker's config).
    pub fn start_with_env(ns: &Namespace, env: &[(&str, &str)]) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(buildr_bin())
            .args(["k8s", "pool-controller", "-n", &ns.name])
            .envs(env.iter().copied())
            .arg("--executor-binary")
            .arg(static_executor())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("buildr k8s pool-controller starts");
        Self { child, log }
    }

    /// Kills it outright (SIGKILL), as a crash or an evicted pod would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends it SIGNAL and waits for it to exit: its status and how long it took. Panics, with
    /// its log, when it is still there after 10 s.
    pub fn stop(&mut self, signal: Signal) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("the controller is there");
        while sent.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        panic!(
            "the controller did not exit within 10 s of {signal}:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for PoolController {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates the BuildrPool NAME in NS: SIZE pods of IMAGE.
pub fn create_pool(ns: &Namespace, name: &str, size: u32, image: &str) {
    let yaml = format!(
        "apiVersion: buildr.dev/v1alpha1\nkind: BuildrPool\nmetadata:\n  name: {name}\n  \
         namespace: {}\nspec:\n  size: {size}\n  maxIdle: 30m\n  container:\n    image: {image}\n",
        ns.name
    );
    super::cluster::apply(&yaml);
}

/// The pool's pods in STATE (`starting`, `ready`, `taken`), or all of them.
pub fn pool_pods(ns: &Namespace, pool: &str, state: Option<&str>) -> Vec<String> {
    let mut selector = format!("buildr.dev/pool={pool}");
    if let Some(state) = state {
        selector += &format!(",buildr.dev/state={state}");
    }
    let listed = ns.kubectl(&["get", "pods", "-l", &selector, "-o", "name"]);
    let mut pods: Vec<String> = listed
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
    pods.sort();
    pods
}

/// A field of the pool's status, by JSONPath (`{.status.ready}`).
pub fn pool_field(ns: &Namespace, pool: &str, path: &str) -> String {
    let jsonpath = format!("jsonpath={path}");
    ns.kubectl_try(&["get", "buildrpool", pool, "-o", &jsonpath])
        .stdout
}

/// Waits until the pool has SIZE ready pods and says so in its status; panics with the
/// controller's log otherwise.
pub fn wait_full(ns: &Namespace, pool: &str, size: usize, controller: &PoolController) {
    let full = eventually(Duration::from_secs(60), || {
        pool_pods(ns, pool, Some("ready")).len() == size
            && pool_field(ns, pool, "{.status.ready}") == size.to_string()
    });
    assert!(
        full,
        "pool {pool} not full: {:?}; status {}\ncontroller:\n{}",
        pool_pods(ns, pool, None),
        pool_field(ns, pool, "{.status}"),
        controller.log()
    );
}

/// `buildr run --backend k8s EXTRA` with no image, as the README's Warm pools section runs it;
/// killed (and its output so far returned) after WITHIN, so that a run that hangs fails the
/// test instead of holding it.
pub fn run_without_image(t: &ClusterTest, extra: &[&str], within: Duration) -> Output {
    let mut child =
        t.ns.command_without_image(t.repo.path(), t.out.path(), extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("buildr runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < within {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}
