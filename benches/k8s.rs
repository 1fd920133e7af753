//! `buildr run --backend k8s` against the kubectl commands a user would pick instead, on the
//! cluster of tests/cluster/ (KUBECONFIG must point at it; `cargo dist` must have built the
//! static buildr). Each pair runs in one process, alternating, and the medians are printed with
//! their ratio:
//!
//! 1. a trivial task (`true`) end to end, against `kubectl run --rm -i --restart=Never`
//! 2. 200 MB of inputs in (buildr's `copy binary and inputs` phase: the binary's copy runs
//!    alongside), against `kubectl cp` of the same tree into a running pod
//! 3. 100 MB of results back (`fetch and extract`), against `kubectl cp` out of a pod
//! 4. 200 MB of stdout (the `task` phase), against `kubectl exec` printing the same
//! 5. the timeline of a trivial run
//! 6. a trivial run with two tools (static BusyBox and `gzip`), against the same run without:
//!    the copy may take the binary's copy time plus the tools' bytes at the binary's rate
//! 7. a trivial task through a warm pod of a BuildrPool (its controller started by the bench),
//!    against `kubectl run --rm -i --restart=Never`, its small result in the TaskResult itself
//!    (`extract`, no `fetch and extract`); and the timeline of such a run
//! 8. many small files: 100,000 files of 1–20 kB of text (1 GB) in, and 20,000 such files back,
//!    against `kubectl cp` (see `scale`)
//! 9. scale: 1 GB / 100,000 files in and 2 GB / 20,000 files back, and the same at a fifth of
//!    the size, with the peak memory of the client and of the executor's side, the timelines,
//!    and how the time grows with the bytes (see `scale`)
//! 10. inputs by content: 1 GB / 100,000 files through a registry on the node's address, cold
//!     and into a seeded warm pod, against today's whole copy (see `by_content`)
//!
//! `cargo bench --bench k8s` (a plain main, harness = false). BUILDR_BENCH_RUNS sets the runs per
//! case (default 3), BUILDR_BENCH_IMAGE the image (default buildr.local/base:1),
//! BUILDR_BENCH_CASES which cases run (numbers, e.g. `1,5`; default 1 to 7: cases 8 to 10 move
//! gigabytes and take minutes).

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

#[path = "k8s/by_content.rs"]
mod by_content;
mod common;
#[path = "../tests/common/mod.rs"]
mod harness;
#[path = "k8s/peak.rs"]
mod peak;
#[path = "k8s/scale.rs"]
mod scale;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BUILDR: &str = env!("CARGO_BIN_EXE_buildr");
const NAMESPACE: &str = "buildr-bench";

fn main() {
    let runs: usize = env_or("BUILDR_BENCH_RUNS", "3")
        .parse()
        .expect("a number of runs");
    let image = env_or("BUILDR_BENCH_IMAGE", "buildr.local/base:1");
    let executor = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-gnu/dist/buildr-executor");
    assert!(
        executor.exists(),
        "build the static buildr-executor first: cargo dist"
    );
    println!("load before: {}", loadavg());
    let _ = kubectl(&["delete", "namespace", NAMESPACE, "--wait=true"]);
    ok(kubectl(&["create", "namespace", NAMESPACE]));
    ok(kubectl(&[
        "label",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    ]));
    let bench = Bench {
        image,
        executor,
        runs,
        scratch: tempfile::tempdir().unwrap(),
    };

    let cases = env_or("BUILDR_BENCH_CASES", "1,2,3,4,5,6,7");
    let chosen = |case: &str| cases.split(',').any(|c| c.trim() == case);
    let all: [(&str, Case); 10] = [
        ("1", Bench::trivial),
        ("2", Bench::inputs_in),
        ("3", Bench::results_back),
        ("4", Bench::stdout_stream),
        ("5", Bench::timeline),
        ("6", Bench::tools),
        ("7", Bench::warm),
        ("8", Bench::small_files),
        ("9", Bench::scale),
        ("10", Bench::by_content),
    ];
    for (case, run) in all {
        if chosen(case) {
            run(&bench);
        }
    }

    let _ = kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"]);
    println!("load after: {}", loadavg());
}

/// One case of the bench, by its number in the list above.
type Case = fn(&Bench);

struct Bench {
    image: String,
    executor: PathBuf,
    runs: usize,
    scratch: tempfile::TempDir,
}

impl Bench {
    fn buildr(&self, repo: &Path, args: &[&str]) -> Output {
        let output = self.command(repo, args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `buildr run -v` of `args` on the k8s backend, with `repo` as inputs.
    fn command(&self, repo: &Path, args: &[&str]) -> Command {
        let out = self.scratch.path().join("out");
        let _ = fs::remove_dir_all(&out);
        let mut command = Command::new(BUILDR);
        command
            .args([
                "run",
                "-v",
                "--backend",
                "k8s",
                "-n",
                NAMESPACE,
                "--image",
                &self.image,
            ])
            .arg("--executor-binary")
            .arg(&self.executor)
            .arg("--repo")
            .arg(repo)
            .arg("--out")
            .arg(&out)
            .args(args)
            .env("RUST_LOG", "off")
            .stdout(Stdio::null());
        command
    }

    fn empty_repo(&self) -> PathBuf {
        let repo = self.scratch.path().join("empty");
        fs::create_dir_all(&repo).unwrap();
        fs::write(repo.join("README"), "nothing\n").unwrap();
        repo
    }

    /// 1. `true` end to end.
    fn trivial(&self) {
        let repo = self.empty_repo();
        let (ours, theirs) = self.pair(
            || {
                self.buildr(&repo, &["--", "true"]);
            },
            || self.kubectl_run_true(),
        );
        report(
            "trivial task end to end",
            "kubectl run --rm -i",
            ours,
            theirs,
        );
    }

    /// What a user would run instead of a trivial task: a pod of the image running `true`.
    fn kubectl_run_true(&self) {
        let overrides = restricted_overrides(&self.image, &["true"]);
        ok(kubectl(&[
            "-n",
            NAMESPACE,
            "run",
            "bench-true",
            "--rm",
            "-i",
            "--restart=Never",
            "--image",
            &self.image,
            "--overrides",
            &overrides,
            "--quiet",
        ]));
    }

    /// 7. `true` end to end through a warm pod, each run once the pool is full again.
    fn warm(&self) {
        let spec = format!(r#"{{"size":3,"container":{{"image":"{}"}}}}"#, self.image);
        let controller = self.pool("warm", &spec, &[]);
        let full = || self.wait_ready("warm", 3);
        let repo = self.empty_repo();
        let (ours, theirs) = self.pair_timed(
            || {
                full();
                let started = Instant::now();
                let output = self.buildr(&repo, &["--pool", "warm", "--", "true"]);
                let took = started.elapsed();
                let log = String::from_utf8_lossy(&output.stderr);
                assert!(log.contains("take a warm pod"), "{log}");
                // The result came in the TaskResult: no fetch round trip.
                assert!(log.contains("  extract "), "{log}");
                took
            },
            || {
                let started = Instant::now();
                self.kubectl_run_true();
                started.elapsed()
            },
        );
        report(
            "trivial task, warm pod",
            "kubectl run --rm -i",
            ours,
            theirs,
        );
        full();
        let output = self.buildr(&repo, &["--pool", "warm", "--", "true"]);
        print_timeline("a trivial run in a warm pod", &output);
        drop(controller);
        // Its pods would match the later cases' runs, which name no pool, and make them warm
        // (another case's controller keeps them filled): the pool goes with its pods.
        ok(kubectl(&[
            "-n",
            NAMESPACE,
            "delete",
            "buildrpool",
            "warm",
            "--wait=true",
        ]));
    }

    /// 2. 200 MB of inputs into a pod.
    fn inputs_in(&self) {
        let repo = self.scratch.path().join("inputs");
        make_base64_tree(&repo, 2000, 100_000);
        self.inputs_against_kubectl_cp("200 MB of inputs in", &repo, "bench-cp-in");
    }

    /// `repo` into a pod, as a run's inputs (its `copy binary and inputs` phase: the binary's
    /// copy runs alongside) and by `kubectl cp` into a sleeping pod named `pod`.
    fn inputs_against_kubectl_cp(&self, what: &str, repo: &Path, pod: &str) {
        let pod = self.sleeper(pod);
        let (ours, theirs) = self.pair_timed(
            || {
                phase(
                    &self.buildr(repo, &["--", "true"]),
                    "copy binary and inputs",
                )
            },
            || {
                let _ = kubectl(&["-n", NAMESPACE, "exec", &pod, "--", "rm", "-rf", "/w/in"]);
                kubectl_cp(repo.to_str().unwrap(), &format!("{pod}:/w/in"))
            },
        );
        report(what, "kubectl cp DIR pod:", ours, theirs);
        delete_pod(&pod);
    }

    /// 3. 100 MB of results back.
    fn results_back(&self) {
        let repo = self.empty_repo();
        let make = "mkdir -p /workspace/results && cd /workspace/results && \
                    i=0; while [ $i -lt 1000 ]; do head -c 75000 /dev/urandom | base64 > f$i; i=$((i+1)); done";
        let pod = self.sleeper("bench-cp-out");
        ok(kubectl(&[
            "-n",
            NAMESPACE,
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            &make.replace("/workspace", "/w"),
        ]));
        let local = self.scratch.path().join("kubectl-out");
        let (ours, theirs) = self.pair_timed(
            || {
                phase(
                    &self.buildr(&repo, &["--", "sh", "-c", make]),
                    "fetch and extract",
                )
            },
            || {
                let _ = fs::remove_dir_all(&local);
                kubectl_cp(&format!("{pod}:/w/results"), local.to_str().unwrap())
            },
        );
        report(
            "100 MB of results back",
            "kubectl cp pod:DIR .",
            ours,
            theirs,
        );
        delete_pod(&pod);
    }

    /// 4. 200 MB of stdout.
    fn stdout_stream(&self) {
        let repo = self.empty_repo();
        let print = "yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c 200000000";
        let pod = self.sleeper("bench-exec");
        let (ours, theirs) = self.pair_timed(
            || phase(&self.buildr(&repo, &["--", "sh", "-c", print]), "task"),
            || {
                let started = Instant::now();
                let status = Command::new("kubectl")
                    .args(["-n", NAMESPACE, "exec", &pod, "--", "sh", "-c", print])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
                started.elapsed()
            },
        );
        report("200 MB of stdout", "kubectl exec", ours, theirs);
        delete_pod(&pod);
    }

    /// 5. Where the time of a trivial run goes.
    fn timeline(&self) {
        let repo = self.empty_repo();
        let output = self.buildr(&repo, &["--", "true"]);
        print_timeline("a trivial run", &output);
    }

    /// 6. The copy with two tools against the copy of the binary alone.
    fn tools(&self) {
        let repo = self.empty_repo();
        let tools = ["/bin/busybox", "/usr/bin/gzip"];
        let tool_bytes: u64 = tools
            .iter()
            .map(|t| fs::metadata(t).expect("the bench's tools exist").len())
            .sum();
        let (with, alone) = self.pair_timed(
            || {
                let output = self.buildr(
                    &repo,
                    &["--tool", tools[0], "--tool", tools[1], "--", "true"],
                );
                phase(&output, "copy binary, tools and inputs")
            },
            || {
                phase(
                    &self.buildr(&repo, &["--", "true"]),
                    "copy binary and inputs",
                )
            },
        );
        let binary_bytes = fs::metadata(&self.executor).unwrap().len();
        let budget = alone.mul_f64(1.0 + tool_bytes as f64 / binary_bytes as f64);
        println!(
            "copy with 2 tools ({tool_bytes} B)   {:>8.3}s   binary alone ({binary_bytes} B) {:>8.3}s   \
             budget {:>8.3}s   {}",
            with.as_secs_f64(),
            alone.as_secs_f64(),
            budget.as_secs_f64(),
            if with <= budget { "within" } else { "over" }
        );
    }

    fn pair(&self, mut ours: impl FnMut(), mut theirs: impl FnMut()) -> (Duration, Duration) {
        self.pair_timed(
            || {
                let t = Instant::now();
                ours();
                t.elapsed()
            },
            || {
                let t = Instant::now();
                theirs();
                t.elapsed()
            },
        )
    }

    /// Runs both `runs` times, alternating which goes first; the medians.
    fn pair_timed(
        &self,
        mut ours: impl FnMut() -> Duration,
        mut theirs: impl FnMut() -> Duration,
    ) -> (Duration, Duration) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..self.runs {
            if i % 2 == 0 {
                a.push(ours());
                b.push(theirs());
            } else {
                b.push(theirs());
                a.push(ours());
            }
        }
        (median(a), median(b))
    }

    /// The BuildrPool `name` of `spec` (JSON) in the bench's namespace, with the CRD, and its
    /// controller (started with `env`), killed when the guard drops.
    fn pool(&self, name: &str, spec: &str, env: &[(&str, &str)]) -> Controller {
        let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/buildr/crds/buildrpools.yaml");
        ok(kubectl(&[
            "apply",
            "--server-side",
            "-f",
            crd.to_str().unwrap(),
        ]));
        let child = Command::new(BUILDR)
            .args(["k8s", "pool-controller", "-n", NAMESPACE])
            .arg("--executor-binary")
            .arg(&self.executor)
            .envs(env.iter().copied())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pool = format!(
            r#"{{"apiVersion":"buildr.dev/v1alpha1","kind":"BuildrPool","metadata":{{"name":"{name}","namespace":"{NAMESPACE}"}},"spec":{spec}}}"#
        );
        let file = self.scratch.path().join(format!("{name}.json"));
        fs::write(&file, pool).unwrap();
        ok(kubectl(&["apply", "-f", file.to_str().unwrap()]));
        Controller(child)
    }

    /// Waits (untimed) until the pool `name` has `size` ready pods.
    fn wait_ready(&self, name: &str, size: u32) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let jsonpath = "jsonpath={.status.ready}";
            let ready = kubectl(&["-n", NAMESPACE, "get", "buildrpool", name, "-o", jsonpath]);
            if String::from_utf8_lossy(&ready.stdout) == size.to_string() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the pool {name} did not fill within 300 s");
    }

    /// A restricted pod that sleeps, with an emptyDir at /w, ready.
    fn sleeper(&self, name: &str) -> String {
        let manifest = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"restartPolicy":"Never","securityContext":{{"runAsNonRoot":true,"runAsUser":65532,"seccompProfile":{{"type":"RuntimeDefault"}}}},"containers":[{{"name":"c","image":"{}","command":["sleep","3600"],"securityContext":{{"allowPrivilegeEscalation":false,"capabilities":{{"drop":["ALL"]}}}},"volumeMounts":[{{"name":"w","mountPath":"/w"}}]}}],"volumes":[{{"name":"w","emptyDir":{{}}}}]}}}}"#,
            self.image
        );
        let file = self.scratch.path().join(format!("{name}.json"));
        fs::write(&file, manifest).unwrap();
        ok(kubectl(&[
            "-n",
            NAMESPACE,
            "create",
            "-f",
            file.to_str().unwrap(),
        ]));
        ok(kubectl(&[
            "-n",
            NAMESPACE,
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=120s",
        ]));
        name.to_string()
    }
}

/// A pool's controller, killed when dropped.
struct Controller(std::process::Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` files of `size` bytes of base64 text (random, so compressible only as text is).
fn make_base64_tree(root: &Path, count: usize, size: usize) {
    use std::io::Read;
    fs::create_dir_all(root).unwrap();
    let mut random = fs::File::open("/dev/urandom").unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for i in 0..count {
        let dir = root.join(format!("d{}", i % 20));
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = vec![0u8; size];
        random.read_exact(&mut bytes).unwrap();
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = if j % 77 == 76 {
                b'\n'
            } else {
                alphabet[(*b & 63) as usize]
            };
        }
        fs::write(dir.join(format!("f{i}.txt")), bytes).unwrap();
    }
}

/// The `-v` timeline of a run, under a heading naming `what` it was.
fn print_timeline(what: &str, output: &Output) {
    println!("timeline of {what}:");
    let text = String::from_utf8_lossy(&output.stderr);
    for line in text.lines().skip_while(|l| !l.contains("timeline")).skip(1) {
        println!("{line}");
    }
}

/// The duration of `name` in a `buildr run -v` timeline.
fn phase(output: &Output, name: &str) -> Duration {
    let text = String::from_utf8_lossy(&output.stderr);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(name) && l.trim_end().ends_with('s'))
        .unwrap_or_else(|| panic!("no `{name}` in the timeline: {text}"));
    let seconds: f64 = line
        .trim_end()
        .trim_end_matches('s')
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Duration::from_secs_f64(seconds)
}

fn restricted_overrides(image: &str, command: &[&str]) -> String {
    let command: Vec<String> = command.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        r#"{{"spec":{{"securityContext":{{"runAsNonRoot":true,"runAsUser":65532,"seccompProfile":{{"type":"RuntimeDefault"}}}},"containers":[{{"name":"bench-true","image":"{image}","command":[{}],"stdin":true,"securityContext":{{"allowPrivilegeEscalation":false,"capabilities":{{"drop":["ALL"]}}}}}}]}}}}"#,
        command.join(",")
    )
}

fn report(what: &str, baseline: &str, ours: Duration, theirs: Duration) {
    println!(
        "{what:28} buildr {:>8.3}s   {baseline:22} {:>8.3}s   ratio (baseline / buildr) {:.2}",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// How long `kubectl cp FROM TO` took in the bench's namespace.
fn kubectl_cp(from: &str, to: &str) -> Duration {
    let started = Instant::now();
    ok(kubectl(&["-n", NAMESPACE, "cp", from, to]));
    started.elapsed()
}

fn delete_pod(pod: &str) {
    ok(kubectl(&[
        "-n",
        NAMESPACE,
        "delete",
        "pod",
        pod,
        "--wait=false",
    ]));
}

fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl runs")
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}
