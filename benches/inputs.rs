//! `buildr inputs push` against what a user would type instead to put the same tree in a
//! registry: `tar -c` into one file, then its upload as one blob with `curl` (the registry's
//! monolithic `POST` + `PUT`, as `oras push` of a tarball does). A CNCF Distribution registry on
//! 127.0.0.1 (built by tests/cluster/build-tools.sh), a 200 MB tree of 2,000 files of
//! source-like text, each pair alternating which goes first:
//!
//! 1. the first push, the registry empty (goal: at most 1.1x)
//! 2. one file changed since the last push (goal: at most 0.1x)
//!
//! `cargo bench --bench inputs` (a plain main, harness = false). BUILDR_BENCH_RUNS sets the
//! runs per case (default 5).

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

mod common;
#[path = "../tests/common/mod.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BUILDR: &str = env!("CARGO_BIN_EXE_buildr");

fn main() {
    let runs: usize = std::env::var("BUILDR_BENCH_RUNS")
        .unwrap_or_else(|_| "5".into())
        .parse()
        .expect("BUILDR_BENCH_RUNS is a number");
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let bytes = common::make_text_tree(&repo, 2000, 200 << 20);
    println!("tree: 2,000 files, {bytes} bytes of source-like text");
    let storage = scratch.path().join("storage");
    let registry = harness::registry::RegistryServer::start(&storage, &[], false);
    let address = registry.address.clone();

    let mut first = Side::default();
    for run in 0..runs {
        // An empty repository each time, and a machine that never pushed.
        let location = format!("{address}/first-{run}");
        let cache = scratch.path().join(format!("cache-{run}"));
        let ours = || timed(|| push(&repo, &location, &cache));
        let tarball_to = format!("tarball-{run}");
        let theirs = || timed(|| curl_tarball(&repo, &address, &tarball_to, scratch.path()));
        first.pair(run, ours, theirs);
    }
    first.report(
        "first push of 200 MB (2,000 files), the registry empty",
        1.1,
    );

    let cache = scratch.path().join("cache-changes");
    let location = format!("{address}/changes");
    push(&repo, &location, &cache);
    let mut change = 0u64;
    let mut changed = Side::default();
    for run in 0..runs {
        let ours = || {
            change += 1;
            let file = repo
                .join("dir007")
                .read_dir()
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            std::fs::write(file, format!("change {change}\n")).unwrap();
            timed(|| push(&repo, &location, &cache))
        };
        let theirs = || timed(|| curl_tarball(&repo, &address, "changes-tar", scratch.path()));
        changed.pair(run, ours, theirs);
    }
    changed.report("one file changed in 200 MB", 0.1);
}

/// `buildr inputs push` of `repo` to `location`, as a machine whose cache is `cache`.
fn push(repo: &Path, location: &str, cache: &Path) {
    let output = Command::new(BUILDR)
        .args(["inputs", "push", "--tag", "main", "--repo"])
        .arg(repo)
        .args(["--inputs-registry", location])
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `tar -c repo > FILE`, then FILE uploaded to `repository` as one blob with curl.
fn curl_tarball(repo: &Path, address: &str, repository: &str, scratch: &Path) {
    let tarball = scratch.join("tree.tar");
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(repo)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let sum = Command::new("sha256sum").arg(&tarball).output().unwrap();
    let digest = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let start = Command::new("curl")
        .args(["-sf", "-X", "POST", "-D", "-", "-o", "/dev/null"])
        .arg(format!("http://{address}/v2/{repository}/blobs/uploads/"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&start.stdout);
    let upload = headers
        .lines()
        .find_map(|line| {
            line.strip_prefix("Location: ")
                .or_else(|| line.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_string();
    let separator = if upload.contains('?') { '&' } else { '?' };
    let url = if upload.starts_with("http") {
        upload.clone()
    } else {
        format!("http://{address}{upload}")
    };
    let put = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", tarball.display()))
        .arg(format!("{url}{separator}digest=sha256:{digest}"))
        .status()
        .unwrap();
    assert!(put.success(), "the upload to {url} failed");
}

/// The times of both sides of a case.
#[derive(Default)]
struct Side {
    ours: Vec<Duration>,
    theirs: Vec<Duration>,
}

impl Side {
    /// One run of each, the first one alternating.
    fn pair(
        &mut self,
        run: usize,
        mut ours: impl FnMut() -> Duration,
        mut theirs: impl FnMut() -> Duration,
    ) {
        if run.is_multiple_of(2) {
            self.ours.push(ours());
            self.theirs.push(theirs());
        } else {
            self.theirs.push(theirs());
            self.ours.push(ours());
        }
    }

    fn report(self, what: &str, goal: f64) {
        println!(
            "  buildr:   {:.3?}\n  baseline: {:.3?}",
            self.ours, self.theirs
        );
        let (ours, theirs) = (middle(self.ours), middle(self.theirs));
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        let verdict = if ratio <= goal { "met" } else { "missed" };
        println!(
            "{what}: buildr inputs push {ours:.3?}, tar + curl {theirs:.3?}: buildr takes \
             {ratio:.2}x (goal at most {goal}x: {verdict})"
        );
    }
}

fn middle(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}
