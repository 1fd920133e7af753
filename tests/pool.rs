//! Warm pools on the real cluster of tests/cluster: a BuildrPool, `buildr k8s pool-controller`
//! started by the test itself for the test's own namespace, and runs that take its pods. Run by
//! tests/run-all.sh.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use common::cluster::{ClusterTest, Namespace, base_image};
use common::pool::{PoolController, create_pool, install_crd, pool_field, pool_pods, wait_full};
use common::{eventually, round_trip, stderr, stdout};

/// A namespace with the CRD in the cluster, a pool controller of its own, and the pool `warm`
/// of SIZE pods of the base image, full.
fn full_pool(test: &str, size: usize) -> (ClusterTest, PoolController, Duration) {
    install_crd();
    let t = ClusterTest::new(test);
    let controller = PoolController::start(&t.ns);
    let started = Instant::now();
    create_pool(&t.ns, "warm", size as u32, &base_image());
    wait_full(&t.ns, "warm", size, &controller);
    (t, controller, started.elapsed())
}

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

    let output = t.run(
        &base_image(),
        &["-v", "--pool", "warm", "--", "sh", "-c", WHERE],
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

    // Back to 3 ready within a pod start (the first fill, controller start included) plus a
    // second; the pod that ran the task is gone, and nothing of the run is left.
    let refilled = eventually(fill + Duration::from_secs(1), || {
        pool_pods(&t.ns, "warm", Some("ready")).len() == 3
    });
    assert!(
        refilled,
        "not refilled within {:?} of the run: {:?}\n{}",
        fill + Duration::from_secs(1),
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
fn twelve_concurrent_runs_on_a_pool_of_three_each_get_a_pod_of_their_own() {
    let (t, controller, _) = full_pool("pool-race", 3);
    let runs: Vec<(tempfile::TempDir, std::process::Child)> = (0..12)
        .map(|i| {
            let out = tempfile::tempdir().unwrap();
            let script = format!("{WHERE}; echo {i} > which.txt");
            let child =
                t.ns.command(
                    t.repo.path(),
                    out.path(),
                    &base_image(),
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

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn a_controller_killed_mid_fill_and_restarted_ends_at_exactly_the_size() {
    install_crd();
    let ns = Namespace::new("pool-restart");
    let mut controller = PoolController::start(&ns);
    create_pool(&ns, "warm", 4, &base_image());
    // Killed as soon as it created pods, before they are ready.
    assert!(eventually(Duration::from_secs(30), || !pool_pods(
        &ns, "warm", None
    )
    .is_empty()));
    controller.kill();
    let before = pool_pods(&ns, "warm", None);
    assert!(
        pool_pods(&ns, "warm", Some("ready")).len() < 4,
        "the fill was over before the kill: {before:?}"
    );
    let controller = PoolController::start(&ns);
    wait_full(&ns, "warm", 4, &controller);
    // Exactly 4, all of them made before or after the restart, none twice: the restarted
    // controller created only what was missing.
    let pods = pool_pods(&ns, "warm", None);
    assert_eq!(pods.len(), 4, "{pods:?}\n{}", controller.log());
    let log = controller.log();
    let created: usize = log
        .lines()
        .filter_map(|l| {
            l.split("; created ")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(created, 4 - before.len(), "{before:?}\n{log}");
    assert!(
        before.iter().all(|p| pods.contains(p)),
        "{before:?} lost: {pods:?}"
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
    let output = t.run(&base_image(), &["--pool", "broken", "--", "true"]);
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
    // A pool that does not exist is one line too.
    let output = t.run(&base_image(), &["--pool", "nope", "--", "true"]);
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).starts_with("buildr: there is no BuildrPool nope in namespace"),
        "{}",
        stderr(&output)
    );
}

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn of_many_clients_racing_for_the_last_warm_pod_exactly_one_gets_it() {
    use buildr::backend::k8s::pool::take::{Taken, take};
    let (t, _controller, _) = full_pool("pool-last", 1);
    let ready = pool_pods(&t.ns, "warm", Some("ready"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let taken = runtime.block_on(async {
        let client = kube::Client::try_default().await.unwrap();
        // All list the one ready pod before any of them patches it.
        let racers = (0..8).map(|i| {
            let plan = common::manifests::run_plan(
                &t.ns.name,
                &format!("racer{i:07}"),
                "2030-01-01T00:00:00Z",
                Default::default(),
            );
            let client = client.clone();
            async move { take(&client, &plan, Some("warm")).await.unwrap() }
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
