//! Case 10: inputs by content (`--inputs-registry`) against today's whole copy through the exec
//! API, with 1 GB / 100,000 source-like files and a CNCF Distribution registry on the node's
//! address (built by tests/cluster/build-tools.sh), as the issue's figures ask:
//!
//! - the first push (an empty repository): the whole run, against a run that copies whole; and
//!   `buildr inputs push` alone, against that run's copy phase;
//! - a cold pod pulling the whole 1 GB from the registry: the input phase, against the copy;
//! - one file changed, a warm pod seeded with the previous snapshot: the input phases (take,
//!   diff against the seed, and the difference into the pod) and the whole run, against a run
//!   that copies whole;
//! - the client's peak memory in each.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::harness::registry::{RegistryServer, free_port};
use super::{Bench, Controller, kubectl, ok, phase, print_timeline};

/// The input phase of a run that takes a warm pod.
const WARM_INPUTS: &str = "create policy, copy secret and inputs";
/// The difference from a seeded pod's seed, made after the take.
const DIFF: &str = "diff against the pod's seed";

impl Bench {
    pub(super) fn by_content(&self) {
        let repo = self.small_tree(100_000);
        let node = String::from_utf8(
            kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
            ])
            .stdout,
        )
        .unwrap();
        let storage = self.scratch.path().join("registry");
        let address = format!("{}:{}", node.trim(), free_port());
        let _registry = RegistryServer::start_at(&address, &storage, &[], false);
        let cache = self.scratch.path().join("cache");
        let by_content = |location: &str, args: &[&str]| {
            let mut command =
                self.command(&repo, &[&["--inputs-registry", location], args].concat());
            command
                .env("BUILDR_INSECURE_REGISTRIES", &address)
                .env("XDG_CACHE_HOME", &cache)
                .env("DOCKER_CONFIG", &cache);
            command
        };
        let whole = || {
            let mut command = self.command(&repo, &["--", "true"]);
            command.env("XDG_CACHE_HOME", &cache);
            command
        };

        // The first push, into an empty repository each time.
        let mut first = 0;
        let (ours, theirs) = self.pair_settled(
            || {
                first += 1;
                let location = format!("{address}/first-{first}");
                timed_ok(by_content(&location, &["--", "true"])).0
            },
            || timed_ok(whole()).0,
        );
        ratio("first push, whole run (goal at most 1.1x)", ours, theirs);
        // The push alone (`buildr inputs push`, as CI on `main` would run it), against the copy
        // phase of a run that copies whole.
        let (ours, theirs) = self.pair_settled(
            || {
                first += 1;
                let location = format!("{address}/first-{first}");
                let mut push = Command::new(super::BUILDR);
                push.args(["inputs", "push", "--inputs-registry", &location, "--repo"])
                    .arg(&repo)
                    .env("BUILDR_INSECURE_REGISTRIES", &address)
                    .env("XDG_CACHE_HOME", &cache)
                    .env("DOCKER_CONFIG", &cache);
                timed_ok(push).0
            },
            || phase(&timed_ok(whole()).1, "copy binary and inputs"),
        );
        ratio("first push alone, against the copy phase", ours, theirs);

        // A cold pod pulling everything: the snapshot is in the registry already.
        let location = format!("{address}/bench/inputs");
        timed_ok(by_content(&location, &["--", "true"]));
        let (ours, theirs) = self.pair_settled(
            || {
                phase(
                    &timed_ok(by_content(&location, &["--", "true"])).1,
                    "copy binary and inputs",
                )
            },
            || phase(&timed_ok(whole()).1, "copy binary and inputs"),
        );
        ratio("cold pod, 1 GB in (goal at most 0.5x)", ours, theirs);

        // A warm pod seeded with the snapshot; one file changed before each run.
        let seeded = self.seeded_pool(&repo, &location, &address, &cache);
        let changed = repo.join("src/changed-by-the-bench.txt");
        let mut change = 0;
        let mut inputs = Vec::new();
        let (ours, theirs) = self.pair_settled(
            || {
                self.wait_ready("seeded", 1);
                change += 1;
                std::fs::write(&changed, format!("change {change}\n")).unwrap();
                let (took, output) =
                    timed_ok(by_content(&location, &["--pool", "seeded", "--", "true"]));
                let log = String::from_utf8_lossy(&output.stderr);
                assert!(log.contains("the difference onto the pod's seed"), "{log}");
                // Every phase until the workspace is ready: the take, the diff against the
                // seed (what of it did not run alongside the take), and the copy.
                inputs.push(
                    phase(&output, "take a warm pod")
                        + phase(&output, DIFF)
                        + phase(&output, WARM_INPUTS),
                );
                took
            },
            || timed_ok(whole()).0,
        );
        inputs.sort();
        println!(
            "seeded warm pod, one file changed: input phases {:.3}s (goal at most 1 s)",
            inputs[inputs.len() / 2].as_secs_f64()
        );
        ratio(
            "seeded warm pod, whole run (goal at most 0.1x)",
            ours,
            theirs,
        );

        // The client's peak memory.
        for (what, command) in [
            (
                "cold pod by content",
                by_content(&location, &["--", "true"]),
            ),
            ("whole copy", whole()),
        ] {
            let run = super::peak::run(command);
            assert!(run.output.status.success());
            println!(
                "{what:24} client peak RSS {:.1} MiB (goal under 100 MiB)",
                run.client_kib as f64 / 1024.0
            );
            print_timeline(what, &run.output);
        }
        self.wait_ready("seeded", 1);
        let run = super::peak::run(by_content(&location, &["--pool", "seeded", "--", "true"]));
        assert!(run.output.status.success());
        println!(
            "seeded warm pod client peak RSS {:.1} MiB",
            run.client_kib as f64 / 1024.0
        );
        print_timeline("a seeded warm pod, one file changed", &run.output);
        drop(seeded);
    }

    /// [`Bench::pair_timed`], each run started once the node is settled ([`Bench::settle`]).
    fn pair_settled(
        &self,
        mut ours: impl FnMut() -> Duration,
        mut theirs: impl FnMut() -> Duration,
    ) -> (Duration, Duration) {
        self.pair_timed(
            || {
                self.settle();
                ours()
            },
            || {
                self.settle();
                theirs()
            },
        )
    }

    /// Waits (untimed) until no pod in the bench's namespace is being deleted. A pod's object
    /// goes once the kubelet has torn its volumes down, so the previous run's workspace
    /// (100,000 files) is then gone: a run is measured on its own, not against the deletion
    /// of the run before it, which in a developer's loop (change a file, run again) is long
    /// over.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        let deleting = "jsonpath={.items[?(@.metadata.deletionTimestamp)].metadata.name}";
        while Instant::now() < deadline {
            let pods = kubectl(&["-n", super::NAMESPACE, "get", "pods", "-o", deleting]);
            if pods.status.success() && pods.stdout.trim_ascii().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("pods of earlier runs were still being deleted after 300 s");
    }

    /// A BuildrPool of one pod of the bench's image, seeded with `location:main` (pushed now),
    /// and its controller, killed when the guard drops.
    fn seeded_pool(&self, repo: &Path, location: &str, address: &str, cache: &Path) -> Controller {
        ok(Command::new(super::BUILDR)
            .args([
                "inputs",
                "push",
                "--tag",
                "main",
                "--inputs-registry",
                location,
                "--repo",
            ])
            .arg(repo)
            .env("BUILDR_INSECURE_REGISTRIES", address)
            .env("XDG_CACHE_HOME", cache)
            .env("DOCKER_CONFIG", cache)
            .output()
            .unwrap());
        let spec = format!(
            // A label of its own, so that the whole copies, which name no pool, start cold.
            r#"{{"size":1,"seed":"{location}:main","container":{{"image":"{}","labels":{{"bench":"seeded"}}}}}}"#,
            self.image
        );
        let cache = cache.to_str().unwrap();
        let env = [
            ("BUILDR_INSECURE_REGISTRIES", address),
            ("DOCKER_CONFIG", cache),
        ];
        self.pool("seeded", &spec, &env)
    }
}

/// Runs `command`, which must succeed: how long it took, and its output.
fn timed_ok(mut command: Command) -> (Duration, Output) {
    let started = Instant::now();
    let output = command.stdout(Stdio::null()).output().unwrap();
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (took, output)
}

fn ratio(what: &str, ours: Duration, theirs: Duration) {
    println!(
        "{what:48} by content {:>8.3}s   whole copy {:>8.3}s   ratio {:.2}x",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
