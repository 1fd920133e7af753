//! Cases 8 and 9: trees the size of real repositories, in and out of a pod.
//!
//! Inputs are text shaped like source code (`common::make_text_tree`: 1–20 kB files of
//! word-like text, 10.5 kB on average). Results back are made in the pod by the task itself:
//! small files as a copy of the inputs it was given, large ones as base64 of random bytes cut
//! into 100 kB files.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

use std::path::Path;
use std::time::Duration;

use super::common::make_text_tree;
use super::{Bench, delete_pod, kubectl_cp, phase, print_timeline, report};

/// Bytes per file of the small-file trees, on average.
const SMALL_FILE: usize = 10_500;
/// Bytes per file of the large results.
const LARGE_FILE: usize = 100_000;

/// The script of a task that writes `files` files of `LARGE_FILE` bytes of base64 under
/// `results/` of the workspace.
fn large_results(files: usize) -> String {
    let random = files * LARGE_FILE / 4 * 3;
    format!(
        "mkdir -p results && cd results && head -c {random} /dev/urandom | base64 -w 76 | \
         split -a 5 -b {LARGE_FILE} - f"
    )
}

impl Bench {
    /// A tree of `files` small text files, made once per bench.
    pub(super) fn small_tree(&self, files: usize) -> std::path::PathBuf {
        let repo = self.scratch.path().join(format!("small-{files}"));
        if !repo.exists() {
            make_text_tree(&repo.join("src"), files, files * SMALL_FILE);
        }
        repo
    }

    /// Case 8: 100,000 small files in and 20,000 back, against `kubectl cp`.
    pub(super) fn small_files(&self) {
        let repo = self.small_tree(100_000);
        self.inputs_against_kubectl_cp("100,000 files (1 GB) in", &repo, "bench-small-in");

        let repo = self.small_tree(20_000);
        let pod = self.sleeper("bench-small-out");
        kubectl_cp(repo.to_str().unwrap(), &format!("{pod}:/w/in"));
        let local = self.scratch.path().join("kubectl-out");
        let (ours, theirs) = self.pair_timed(
            || {
                let output = self.buildr(&repo, &["--", "cp", "-r", "src", "results"]);
                phase(&output, "fetch and extract")
            },
            || {
                let _ = std::fs::remove_dir_all(&local);
                kubectl_cp(&format!("{pod}:/w/in/src"), local.to_str().unwrap())
            },
        );
        report(
            "20,000 files (210 MB) back",
            "kubectl cp pod:DIR .",
            ours,
            theirs,
        );
        delete_pod(&pod);
    }

    /// Case 9: 1 GB / 100,000 files in and 2 GB / 20,000 files back, and a fifth of each: the
    /// time of each copy, the peak memory of both sides, and the timelines.
    pub(super) fn scale(&self) {
        let empty = self.empty_repo();
        let mut inputs = Vec::new();
        let mut results = Vec::new();
        for fifth in [1, 5] {
            let files = 20_000 * fifth;
            let repo = self.small_tree(files);
            let what = format!("{} MB / {files} files in", files * SMALL_FILE / 1_000_000);
            inputs.push(self.measured(&what, &repo, &["--", "true"], "copy binary and inputs"));

            let files = 4_000 * fifth;
            let what = format!("{} MB / {files} files back", files * LARGE_FILE / 1_000_000);
            let script = large_results(files);
            let args = ["--", "sh", "-c", script.as_str()];
            results.push(self.measured(&what, &empty, &args, "fetch and extract"));
        }
        for (what, times) in [("in", &inputs), ("back", &results)] {
            println!(
                "5x the bytes {what}: {:.2}x the time (linear: 5x; goal at most 5.5x)",
                times[1].as_secs_f64() / times[0].as_secs_f64()
            );
        }
    }

    /// One run of `args`, its `phase`, the peak memory of both sides and its timeline, printed.
    fn measured(&self, what: &str, repo: &Path, args: &[&str], phase_name: &str) -> Duration {
        let run = super::peak::run(self.command(repo, args));
        assert!(
            run.output.status.success(),
            "{}",
            String::from_utf8_lossy(&run.output.stderr)
        );
        let took = phase(&run.output, phase_name);
        println!(
            "{what:32} {phase_name} {:>8.3}s   peak RSS: client {:.1} MiB, executor side {:.1} MiB",
            took.as_secs_f64(),
            run.client_kib as f64 / 1024.0,
            run.executor_kib as f64 / 1024.0,
        );
        print_timeline(what, &run.output);
        took
    }
}
