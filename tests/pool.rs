//! Warm pools on the real cluster of tests/cluster: a BuildrPool, `buildr k8s pool-controller`
//! started by the test itself for the test's own namespace, and runs that take its pods. Run by
//! tests/run-all.sh.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use buildr::cluster::controller::REFILL_AFTER_TAKE;
use common::cluster::{BUSYBOX_IMAGE, ClusterTest, Namespace, base_image};
use common::pool::{
    PoolController, create_pool, install_crd, pool_field, pool_pods, run_without_image, wait_full,
};
use common::{eventually, round_trip, stderr, stdout};
use nix::sys::signal::Signal;

/// A namespace with the CRD in the cluster, a pool controller of its own, and the pool `warm`
/// of SIZE pods of the base image, full.
fn full_pool(test: &str, size: usize) -> (ClusterTest, PoolController, Duration) {
    full_pool_of(test, size, &base_image())
}

/// [`full_pool`] of IMAGE.
fn full_pool_of(test: &str, size: usize, image: &str) -> (ClusterTest, PoolController, Duration) {
    install_crd();
    let t = ClusterTest::new(test);
    let controller = PoolController::start(&t.ns);
    let started = Instant::now();
    create_pool(&t.ns, "warm", size as u32, image);
    wait_full(&t.ns, "warm", size, &controller);
    (t, controller, started.elapsed())
}

/// Writes which of the test images the task runs in: only BusyBox's has /bin/busybox.
const WHICH_IMAGE: &str =
    "if [ -e /bin/busybox ]; then echo busybox; else echo base; fi > image.txt";

/// How long a run of a trivial task may take here, a pod of its own included.
const RUN_WITHIN: Duration = Duration::from_secs(60);

/// The pod a run ran in, by the host name it wrote.
const WHERE: &str = "cat /etc/hostname > where.txt";

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_run_takes_a_warm_pod_and_the_pool_refills() {
    let (t, controller, fill) = full_pool("pool-take", 3);
    let warm = pool_pods(&t.ns, "warm", Some("ready"));
    assert_eq!(
        pool_field(&t.ns, "warm", "{.status.inUse}"),
        "0",
        "nothing in use yet"
    );

    let output = run_without_image(
        &t,
        &["-v", "--pool", "warm", "--", "sh", "-c", WHERE],
        RUN_WITHIN,
    );
    let returned = Instant::now();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("took warm pod"), "{log}");
    assert!(
        log.contains("take a warm pod"),
        "the timeline says so: {log}"
    );
    assert!(!log.contains("create pod and policy"), "{log}");
    let used = fs::read_to_string(t.out.path().join("where.txt")).unwrap();
    let used = used.trim();
    assert!(
        warm.iter().any(|p| p == used),
        "{used} is not one of {warm:?}"
    );

    // Back to 3 ready within the wait before a taken pod's replacement, a pod start (the first
    // fill, controller start included) and a second; the pod that ran the task is gone, and
    // nothing of the run is left.
    let refill_within = REFILL_AFTER_TAKE + fill + Duration::from_secs(1);
    let refilled = eventually(refill_within, || {
        pool_pods(&t.ns, "warm", Some("ready")).len() == 3
    });
    assert!(
        refilled,
        "not refilled within {:?} of the run: {:?}\n{}",
        refill_within,
        pool_pods(&t.ns, "warm", None),
        controller.log()
    );
    eprintln!("refilled in {:?} (first fill {fill:?})", returned.elapsed());
    assert!(eventually(Duration::from_secs(5), || !t.ns.has_pod(used)));
    assert!(
        !pool_pods(&t.ns, "warm", Some("ready"))
            .iter()
            .any(|p| p == used)
    );
    let objects = t.ns.buildr_objects();
    assert!(
        objects
            .iter()
            .all(|o| o == "networkpolicy.networking.k8s.io/buildr-pool-warm"
                || o.starts_with("pod/")),
        "{objects:?}"
    );
    assert!(eventually(Duration::from_secs(5), || pool_field(
        &t.ns,
        "warm",
        "{.status.inUse}"
    ) == "0"));
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_run_that_names_only_its_pool_runs_in_its_template_warm_or_cold() {
    // The pool's image is not the one a run would get otherwise: the task says where it ran.
    let (t, mut controller, _) = full_pool_of("pool-name-only", 2, BUSYBOX_IMAGE);
    // Nothing refills the pool from here on.
    controller.kill();
    let script = format!("{WHERE}; {WHICH_IMAGE}");
    let ran_in = |t: &ClusterTest| {
        let read = |file: &str| fs::read_to_string(t.out.path().join(file)).unwrap();
        (
            read("where.txt").trim().to_string(),
            read("image.txt").trim().to_string(),
        )
    };
    let warm = pool_pods(&t.ns, "warm", Some("ready"));

    // As the README's Warm pools section runs it: the pool and the command, nothing else.
    let output = run_without_image(
        &t,
        &["--pool", "warm", "-v", "--", "sh", "-c", &script],
        RUN_WITHIN,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("took warm pod"),
        "{}",
        stderr(&output)
    );
    let (pod, image) = ran_in(&t);
    assert!(warm.contains(&pod), "{pod} is not one of {warm:?}");
    assert_eq!(image, "busybox");

    // The same from a task file whose container block names only the pool.
    fs::create_dir_all(t.repo.path().join(".buildr")).unwrap();
    let task = format!(
        "task \"t\" {{\n  command = [\"sh\", \"-c\", {script:?}]\n  container {{\n    pool = \"warm\"\n  }}\n}}\n"
    );
    fs::write(t.repo.path().join(".buildr/t.hcl"), task).unwrap();
    let output = run_without_image(&t, &["-v", "t"], RUN_WITHIN);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("took warm pod"),
        "{}",
        stderr(&output)
    );
    let (second, image) = ran_in(&t);
    assert!(
        warm.contains(&second) && second != pod,
        "{second} of {warm:?}"
    );
    assert_eq!(image, "busybox");

    // The pool is empty now: a pod of the run's own, from the pool's template, said in one line.
    let output = run_without_image(&t, &["t"], RUN_WITHIN);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // One line on the pool; the other is the run's own (the files written back).
    let said = format!(
        "buildr: BuildrPool {}/warm has no ready pod: starting a pod of its own from its template",
        t.ns.name
    );
    let log = stderr(&output);
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("written to")).collect();
    assert_eq!(lines, [said], "{log}");
    let (cold, image) = ran_in(&t);
    assert!(!warm.contains(&cold), "{cold} is a pool's pod");
    assert_eq!(image, "busybox", "the cold pod is not the pool's template");

    // A pool that does not exist: the task's own image if it has one, else a refusal.
    let output = run_without_image(
        &t,
        &[
            "--pool",
            "nope",
            "--image",
            &base_image(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        RUN_WITHIN,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let said = format!(
        "buildr: there is no BuildrPool nope in namespace {}: starting a pod of its own",
        t.ns.name
    );
    assert_eq!(stderr(&output).lines().next(), Some(said.as_str()));
    assert_eq!(ran_in(&t).1, "base");
    let output = run_without_image(&t, &["--pool", "nope", "--", "true"], RUN_WITHIN);
    assert_eq!(output.status.code(), Some(125));
    let said = format!(
        "buildr: there is no BuildrPool nope in namespace {0}, and no image to start a pod of its \
         own (list the pools with `kubectl get buildrpools -n {0}`, or give --image)\n",
        t.ns.name
    );
    assert_eq!(stderr(&output), said);
    // Neither a pool nor an image: refused before the cluster is asked anything.
    let output = run_without_image(&t, &["--", "true"], RUN_WITHIN);
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).starts_with("buildr: no image to run the task in: give --image or --pool"),
        "{}",
        stderr(&output)
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn neither_a_pod_made_by_hand_with_the_pools_labels_nor_a_used_pod_relabelled_ready_is_taken() {
    use buildr::backend::k8s::pool::take::{Source, Taken, named_pool, take};
    let (t, mut controller, _) = full_pool("pool-forged", 1);
    let real = pool_pods(&t.ns, "warm", Some("ready")).remove(0);
    let made: serde_json::Value =
        serde_json::from_str(&t.ns.kubectl(&["get", "pod", &real, "-o", "json"])).unwrap();
    // Nothing replaces or deletes pods from here until the controller starts again.
    controller.kill();

    // A client that took the pod and died before sending its secret...
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let taken = runtime.block_on(async {
        let client = kube::Client::try_default().await.unwrap();
        let pool = named_pool(&client, &t.ns.name, "warm")
            .await
            .unwrap()
            .unwrap();
        let plan = common::manifests::run_plan(
            &t.ns.name,
            "deadclient01",
            "2030-01-01T00:00:00Z",
            Default::default(),
        );
        take(&client, &plan, &Source::Named(Box::new(pool)))
            .await
            .unwrap()
    });
    assert!(matches!(taken, Taken::Warm { .. }), "{taken:?}");
    // ...and someone who may patch pods gives it back to the pool as it was.
    let owners = serde_json::json!({
        "metadata": {
            "labels": { "buildr.dev/state": "ready" },
            "ownerReferences": made["metadata"]["ownerReferences"],
        }
    });
    t.ns.kubectl(&[
        "patch",
        "pod",
        &real,
        "--type=merge",
        "-p",
        &owners.to_string(),
    ]);
    // The mark of the take is the one thing that cannot be undone.
    let unmarked = serde_json::json!({ "spec": { "tolerations": made["spec"]["tolerations"] } });
    let refused = t.ns.kubectl_try(&[
        "patch",
        "pod",
        &real,
        "--type=merge",
        "-p",
        &unmarked.to_string(),
    ]);
    assert!(!refused.ok, "the mark came off");
    assert!(refused.stderr.contains("tolerations"), "{}", refused.stderr);

    // A pod made by hand: the pool's labels, annotations, owner and spec, but another image.
    let mut forged = made.clone();
    forged["metadata"] = serde_json::json!({
        "name": "forged",
        "labels": made["metadata"]["labels"],
        "annotations": made["metadata"]["annotations"],
        "ownerReferences": made["metadata"]["ownerReferences"],
    });
    forged["metadata"]["labels"]["buildr.dev/state"] = "ready".into();
    forged["spec"]["containers"][0]["image"] = BUSYBOX_IMAGE.into();
    forged.as_object_mut().unwrap().remove("status");
    let created = common::cluster::kubectl_input(
        &["-n", &t.ns.name, "create", "-f", "-"],
        &forged.to_string(),
    );
    assert!(created.ok, "{}", created.stderr);
    t.ns.wait_ready("forged");
    let mut both = vec!["forged".to_string(), real.clone()];
    both.sort();
    assert_eq!(pool_pods(&t.ns, "warm", Some("ready")), both);

    // Both are passed over, and -v says why: the run starts a pod of its own.
    let output = run_without_image(
        &t,
        &["--pool", "warm", "-v", "--", "sh", "-c", WHERE],
        RUN_WITHIN,
    );
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "passed over pod {real} of pool warm: a run took it before"
        )),
        "{log}"
    );
    assert!(
        log.contains("passed over pod forged of pool warm: its spec.containers[0].image is not the template's"),
        "{log}"
    );
    assert!(
        log.contains("has no ready pod: starting a pod of its own"),
        "{log}"
    );
    let ran = fs::read_to_string(t.out.path().join("where.txt")).unwrap();
    assert!(
        ![real.as_str(), "forged"].contains(&ran.trim()),
        "ran in {ran}"
    );

    // The controller deletes both and fills the pool with a pod of its own, which a run takes.
    let controller = PoolController::start(&t.ns);
    assert!(
        eventually(Duration::from_secs(30), || !t.ns.has_pod(&real)
            && !t.ns.has_pod("forged")),
        "{:?}\n{}",
        pool_pods(&t.ns, "warm", None),
        controller.log()
    );
    wait_full(&t.ns, "warm", 1, &controller);
    let fresh = pool_pods(&t.ns, "warm", Some("ready"));
    let output = run_without_image(
        &t,
        &["--pool", "warm", "-v", "--", "sh", "-c", WHERE],
        RUN_WITHIN,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ran = fs::read_to_string(t.out.path().join("where.txt")).unwrap();
    assert_eq!([ran.trim().to_string()], *fresh);
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn twelve_concurrent_runs_on_a_pool_of_three_each_get_a_pod_of_their_own() {
    let (t, controller, _) = full_pool("pool-race", 3);
    let warm = pool_pods(&t.ns, "warm", Some("ready"));
    let runs: Vec<(tempfile::TempDir, std::process::Child)> = (0..12)
        .map(|i| {
            let out = tempfile::tempdir().unwrap();
            let script = format!("{WHERE}; echo {i} > which.txt");
            let child =
                t.ns.command_without_image(
                    t.repo.path(),
                    out.path(),
                    &["--pool", "warm", "--", "sh", "-c", &script],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (out, child)
        })
        .collect();
    let mut hosts = BTreeSet::new();
    for (i, (out, child)) in runs.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "run {i}: {}",
            stderr(&output)
        );
        let which = fs::read_to_string(out.path().join("which.txt")).unwrap();
        assert_eq!(
            which.trim(),
            i.to_string(),
            "run {i} got another run's result"
        );
        let host = fs::read_to_string(out.path().join("where.txt")).unwrap();
        assert!(
            hosts.insert(host.trim().to_string()),
            "pod {} ran two tasks",
            host.trim()
        );
        assert!(stdout(&output).is_empty());
    }
    assert_eq!(hosts.len(), 12);
    // The runs raced for the three warm pods, and each of them served one run.
    let unused: Vec<&String> = warm.iter().filter(|pod| !hosts.contains(*pod)).collect();
    assert!(unused.is_empty(), "warm pods no run took: {unused:?}");
    // Nothing left but the refilled pool: no taken pod, no run's policy.
    wait_full(&t.ns, "warm", 3, &controller);
    let settled = eventually(Duration::from_secs(10), || {
        pool_pods(&t.ns, "warm", None).len() == 3 && t.ns.buildr_objects().len() == 3 + 1
    });
    assert!(settled, "left: {:?}", t.ns.buildr_objects());
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn the_round_trip_through_a_warm_pod_matches_the_local_backend() {
    let (t, _controller, _) = full_pool("pool-round-trip", 1);
    round_trip::matches_local(&t.ns, &base_image(), &["--pool", "warm"]);
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_run_whose_settings_match_a_pool_takes_it_unasked_and_others_start_cold() {
    let (t, _controller, _) = full_pool("pool-match", 1);
    let output = t.run(&base_image(), &["-v", "--", "true"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("took warm pod"),
        "{}",
        stderr(&output)
    );
    // Other settings than the pool's: a pod of its own, and -v says why.
    fs::create_dir_all(t.repo.path().join(".buildr")).unwrap();
    fs::write(
        t.repo.path().join(".buildr/t.hcl"),
        "task \"t\" {\n  command = [\"true\"]\n  container {\n    memory_limit = \"300Mi\"\n  }\n}\n",
    )
    .unwrap();
    let output = t.run(&base_image(), &["-v", "t"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("no BuildrPool has the task's pod settings"),
        "{log}"
    );
    assert!(log.contains("create pod and policy"), "{log}");
}

/// Every pod of POOL in NS from now on, as a watch sees them (`kubectl get -w`): none created
/// and deleted in between is missed, as a listing now and then would miss it.
struct PodsSeen {
    watch: std::process::Child,
    names: std::sync::mpsc::Receiver<String>,
    seen: BTreeSet<String>,
}

impl PodsSeen {
    fn watch(ns: &Namespace, pool: &str) -> Self {
        let selector = format!("buildr.dev/pool={pool}");
        let mut watch = std::process::Command::new(common::cluster::tool("kubectl"))
            .args([
                "get", "pods", "-n", &ns.name, "-l", &selector, "-w", "-o", "name",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = watch.stdout.take().unwrap();
        let (tx, names) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if tx
                    .send(line.trim_start_matches("pod/").to_string())
                    .is_err()
                {
                    break;
                }
            }
        });
        Self {
            watch,
            names,
            seen: BTreeSet::new(),
        }
    }

    /// The pods seen so far, once at least `at_least` are.
    fn seen(&mut self, at_least: usize) -> &BTreeSet<String> {
        while self.seen.len() < at_least {
            match self.names.recv_timeout(Duration::from_secs(30)) {
                Ok(name) => {
                    self.seen.insert(name);
                }
                Err(_) => break,
            }
        }
        self.seen.extend(self.names.try_iter());
        &self.seen
    }
}

impl Drop for PodsSeen {
    fn drop(&mut self) {
        let _ = self.watch.kill();
        let _ = self.watch.wait();
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_controller_killed_mid_fill_and_restarted_ends_at_exactly_the_size() {
    install_crd();
    let ns = Namespace::new("pool-restart");
    // A quota of 2 pods: the first controller can make only half the pool before it is
    // killed, whatever its speed; the restarted one must make exactly the other half.
    ns.kubectl(&["create", "quota", "two-pods", "--hard=pods=2"]);
    let mut controller = PoolController::start(&ns);
    create_pool(&ns, "warm", 4, &base_image());
    let half = eventually(Duration::from_secs(30), || {
        pool_pods(&ns, "warm", None).len() == 2
    });
    assert!(
        half,
        "the pool's first pods were not made:\n{}",
        controller.log()
    );
    controller.kill();
    let before = pool_pods(&ns, "warm", None);
    assert_eq!(before.len(), 2, "made before the kill: {before:?}");
    ns.kubectl(&["delete", "quota", "two-pods"]);

    let mut pods_seen = PodsSeen::watch(&ns, "warm");
    assert_eq!(pods_seen.seen(2).len(), 2, "the watch lists the pods first");
    let controller = PoolController::start(&ns);
    wait_full(&ns, "warm", 4, &controller);
    let pods = pool_pods(&ns, "warm", None);
    assert_eq!(pods.len(), 4, "{pods:?}\n{}", controller.log());
    assert!(
        before.iter().all(|p| pods.contains(p)),
        "{before:?} lost: {pods:?}"
    );
    // Every pod that ever existed is one of the four: the restarted controller counted the
    // two it found starting, and made only the two missing, none twice.
    let seen = pods_seen.seen(4).clone();
    let made_after: Vec<&String> = seen.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(
        made_after.len(),
        2,
        "made after the restart: {made_after:?}\n{}",
        controller.log()
    );
}

/// The controller exited on its own, with status 0, within two seconds of the signal, and its
/// last line says it stopped.
fn assert_stopped_promptly(controller: &mut PoolController, signal: Signal) {
    let (status, took) = controller.stop(signal);
    eprintln!("{signal}: exited in {took:?}");
    let log = controller.log();
    assert_eq!(status.code(), Some(0), "{signal}: {status}\n{log}");
    assert!(
        took <= Duration::from_secs(2),
        "{signal}: exited after {took:?}\n{log}"
    );
    let stopped: Vec<&str> = log.lines().filter(|l| l.contains("stopped")).collect();
    assert_eq!(stopped, ["buildr: the pool controller stopped"], "{log}");
    assert!(log.ends_with("stopped\n"), "{log}");
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_controller_stops_at_once_on_sigterm_or_ctrl_c_mid_fill_or_idle() {
    install_crd();
    let ns = Namespace::new("pool-stop");
    let mut controller = PoolController::start(&ns);
    create_pool(&ns, "warm", 4, &base_image());
    // Told to stop as soon as it created pods, while it waits for them or copies into them.
    assert!(eventually(Duration::from_secs(30), || !pool_pods(
        &ns, "warm", None
    )
    .is_empty()));
    assert!(
        pool_pods(&ns, "warm", Some("ready")).len() < 4,
        "the fill was over before the signal"
    );
    assert_stopped_promptly(&mut controller, Signal::SIGTERM);

    // Started again, it ends at exactly the size: what the first made is counted, not doubled.
    let mut controller = PoolController::start(&ns);
    wait_full(&ns, "warm", 4, &controller);
    let full = pool_pods(&ns, "warm", None);
    assert_eq!(full.len(), 4, "{full:?}\n{}", controller.log());
    // Idle, with nothing to do but wait for changes.
    assert_stopped_promptly(&mut controller, Signal::SIGTERM);
    let mut controller = PoolController::start(&ns);
    assert!(eventually(Duration::from_secs(10), || controller
        .log()
        .contains("pool warm: 4 ready")));
    assert_stopped_promptly(&mut controller, Signal::SIGINT);
    // Stopping deletes nothing: the next controller finds the pool full.
    assert_eq!(pool_pods(&ns, "warm", Some("ready")), full);
}

/// The egress rules of the pool's deny-all policy: none when it denies all.
fn deny_all_egress(ns: &Namespace) -> serde_json::Value {
    let policy = ns.kubectl(&["get", "networkpolicy", "buildr-pool-warm", "-o", "json"]);
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    match &policy["spec"]["egress"] {
        serde_json::Value::Null => serde_json::json!([]),
        egress => egress.clone(),
    }
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_deny_all_policy_opened_by_hand_is_closed_again_at_the_next_reconcile() {
    let (t, controller, _) = full_pool("pool-policy", 1);
    assert_eq!(deny_all_egress(&t.ns), serde_json::json!([]));
    // Someone lets the waiting pods reach everything.
    let open = r#"{"spec":{"egress":[{}]}}"#;
    t.ns.kubectl(&[
        "patch",
        "networkpolicy",
        "buildr-pool-warm",
        "--type=merge",
        "-p",
        open,
    ]);
    assert_eq!(deny_all_egress(&t.ns), serde_json::json!([{}]));
    // The next reconcile (its pod goes, so one comes) puts the policy back as the pool makes it.
    let pod = pool_pods(&t.ns, "warm", None).remove(0);
    t.ns.kubectl(&["delete", "pod", &pod, "--wait=false"]);
    let closed = eventually(Duration::from_secs(30), || {
        deny_all_egress(&t.ns) == serde_json::json!([])
    });
    assert!(
        closed,
        "egress still {}\n{}",
        deny_all_egress(&t.ns),
        controller.log()
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn deleting_the_pool_removes_its_pods_and_its_policy() {
    let (t, _controller, _) = full_pool("pool-delete", 2);
    t.ns.kubectl(&["delete", "buildrpool", "warm", "--wait=false"]);
    let gone = eventually(Duration::from_secs(30), || t.ns.buildr_objects().is_empty());
    assert!(gone, "left: {:?}", t.ns.buildr_objects());
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_pool_whose_image_does_not_exist_says_so_and_a_run_that_asks_for_it_too() {
    install_crd();
    let t = ClusterTest::new("pool-noimage");
    let controller = PoolController::start(&t.ns);
    create_pool(&t.ns, "broken", 2, "buildr.local/does-not-exist:1");
    let path = "{.status.conditions[?(@.type==\"PodsFailing\")].message}";
    let reported = eventually(Duration::from_secs(60), || {
        pool_field(&t.ns, "broken", path).contains("cannot be pulled")
    });
    assert!(
        reported,
        "status: {}\n{}",
        pool_field(&t.ns, "broken", "{.status}"),
        controller.log()
    );
    let started = Instant::now();
    let output = run_without_image(&t, &["--pool", "broken", "--", "true"], RUN_WITHIN);
    assert_eq!(output.status.code(), Some(125), "{}", stderr(&output));
    let lines: Vec<String> = stderr(&output).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("buildr: the warm pods of BuildrPool")
            && lines[0].contains("buildr.local/does-not-exist:1")
            && lines[0].contains("cannot be pulled"),
        "{lines:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn of_many_clients_racing_for_the_last_warm_pod_exactly_one_gets_it() {
    use buildr::backend::k8s::pool::take::{Source, Taken, named_pool, take};
    let (t, _controller, _) = full_pool("pool-last", 1);
    let ready = pool_pods(&t.ns, "warm", Some("ready"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let taken = runtime.block_on(async {
        let client = kube::Client::try_default().await.unwrap();
        let pool = named_pool(&client, &t.ns.name, "warm").await.unwrap();
        let source = Source::Named(Box::new(pool.expect("the pool exists")));
        // All list the one ready pod before any of them patches it.
        let racers = (0..8).map(|i| {
            let plan = common::manifests::run_plan(
                &t.ns.name,
                &format!("racer{i:07}"),
                "2030-01-01T00:00:00Z",
                Default::default(),
            );
            let (client, source) = (client.clone(), &source);
            async move { take(&client, &plan, source).await.unwrap() }
        });
        futures::future::join_all(racers).await
    });
    let winners: Vec<String> = taken
        .iter()
        .filter_map(|taken| match taken {
            Taken::Warm { pod, .. } => pod.metadata.name.clone(),
            Taken::Cold(_) => None,
        })
        .collect();
    assert_eq!(winners, ready, "{taken:?}");
    let runs = t.ns.kubectl(&[
        "get",
        "pod",
        &ready[0],
        "-o",
        "jsonpath={.metadata.labels.buildr\\.dev/run-id}",
    ]);
    assert!(runs.starts_with("racer"), "{runs}");
}
