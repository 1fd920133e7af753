//! `buildr run --backend ssh` against what a user would type instead, over ssh to 127.0.0.1 (a
//! real sshd for a second local user, as tests/ssh.rs starts it: needs root and
//! openssh-server; `cargo dist` must have built the static buildr). Each pair runs in one
//! process, alternating, and the medians are printed with their ratio:
//!
//! 1. a trivial task (`true`) end to end, against `ssh HOST true` (goal: at most 3x)
//! 2. 200 MB of inputs in, the host's pack cache empty (buildr's copy phase, the binary already
//!    cached on the host), against `tar -c … | ssh HOST tar -x` of the same tree (goal: at most
//!    1.0x)
//! 3. the same tree with one file changed since the last run (the inputs go by content: one
//!    pack), against the same `tar | ssh` of the whole tree, which is what a user without
//!    rsync does (goal: at most 0.1x)
//!
//! `cargo bench --bench ssh` (a plain main, harness = false). BUILDR_BENCH_RUNS sets the runs per
//! case (default 5).

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

#[path = "../tests/common/sshd.rs"]
#[allow(dead_code)] // the tests' helpers this bench does not need
#[allow(clippy::unwrap_used)] // as in the tests it comes from
mod sshd;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BUILDR: &str = env!("CARGO_BIN_EXE_buildr");
/// The copy phase of a run whose binary is cached on the host.
const COPY: &str = "copy tools and inputs (binary cached)";

fn main() {
    let runs: usize = std::env::var("BUILDR_BENCH_RUNS")
        .unwrap_or_else(|_| "5".into())
        .parse()
        .expect("BUILDR_BENCH_RUNS is a number");
    let executor = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/x86_64-unknown-linux-gnu/dist/buildr-executor"
    ));
    assert!(
        executor.is_file(),
        "cargo dist builds the static buildr-executor this bench sends"
    );
    println!("load before: {}", load());
    let server = sshd::Sshd::start();
    let config = server.dir.path().join("ssh_config");
    let scratch = tempfile::tempdir().unwrap();
    let bench = Bench {
        config,
        executor,
        scratch: scratch.path().to_path_buf(),
        runs,
    };
    bench.trivial();
    bench.inputs_in();
    bench.one_file_changed();
    println!("load after: {}", load());
}

struct Bench {
    config: PathBuf,
    executor: PathBuf,
    scratch: PathBuf,
    runs: usize,
}

impl Bench {
    /// `buildr run -v --backend ssh … -- ARGS` on `repo`, which must succeed.
    fn buildr(&self, repo: &Path, args: &[&str]) -> Output {
        let out = self.scratch.join("out");
        let _ = std::fs::remove_dir_all(&out);
        let output = Command::new(BUILDR)
            .args(["run", "-v", "--backend", "ssh", "--host", sshd::HOST])
            .arg(format!("--ssh-option=-F{}", self.config.display()))
            .args(
                [
                    ("--executor-binary", self.executor.as_path()),
                    ("--repo", repo),
                    ("--out", &out),
                ]
                .into_iter()
                .flat_map(|(flag, path)| [OsStr::new(flag), path.as_os_str()]),
            )
            .arg("--")
            .args(args)
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .output()
            .unwrap();
        succeeded(output)
    }

    /// `ssh -F CONFIG HOST COMMAND`, with `stdin`.
    fn ssh(&self, command: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-F").arg(&self.config).arg(sshd::HOST).arg(command);
        ssh
    }

    /// 1. `true` end to end.
    fn trivial(&self) {
        let repo = self.scratch.join("small");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("README"), "nothing\n").unwrap();
        // The first run puts the binary in the host's cache, as any run after the first finds it.
        self.buildr(&repo, &["true"]);
        let (ours, theirs) = self.alternate(
            || timed(|| drop(self.buildr(&repo, &["true"]))),
            || timed(|| drop(succeeded(self.ssh("true").output().unwrap()))),
        );
        report(
            "trivial task end to end",
            "ssh HOST true",
            ours,
            theirs,
            3.0,
        );
    }

    /// 2. 200 MB of inputs into the host, none of its packs there.
    fn inputs_in(&self) {
        let repo = self.scratch.join("inputs");
        write_tree(&repo, 2000, 100_000);
        let (ours, theirs) = self.alternate(
            || {
                succeeded(self.ssh("rm -rf .cache/buildr/packs").output().unwrap());
                phase(&self.buildr(&repo, &["true"]), COPY)
            },
            || self.tar_in(&repo),
        );
        report(
            "200 MB of inputs in (2,000 x 100 kB), no pack on the host",
            "tar -c DIR | ssh HOST tar -x",
            ours,
            theirs,
            1.0,
        );
    }

    /// 3. The same 200 MB, one file changed since the last run.
    fn one_file_changed(&self) {
        let repo = self.scratch.join("inputs");
        // The host holds the tree's packs, as after any earlier run.
        self.buildr(&repo, &["true"]);
        let mut change = 0u64;
        let (ours, theirs) = self.alternate(
            || {
                change += 1;
                std::fs::write(repo.join("d7/f700.txt"), format!("change {change}\n")).unwrap();
                phase(&self.buildr(&repo, &["true"]), COPY)
            },
            || self.tar_in(&repo),
        );
        let _ = self.ssh("rm -rf bench-in").output();
        report(
            "200 MB of inputs, one file changed",
            "tar -c DIR | ssh HOST tar -x",
            ours,
            theirs,
            0.1,
        );
    }

    /// `tar -c repo | ssh HOST tar -x` into a fresh directory.
    fn tar_in(&self, repo: &Path) -> Duration {
        timed(|| {
            let mut tar = Command::new("tar")
                .arg("-c")
                .arg("-C")
                .arg(repo)
                .arg(".")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let receive = "rm -rf bench-in && mkdir bench-in && tar -x -C bench-in";
            let ssh = self
                .ssh(receive)
                .stdin(tar.stdout.take().unwrap())
                .output()
                .unwrap();
            assert!(tar.wait().unwrap().success());
            succeeded(ssh);
        })
    }

    /// Runs both `runs` times, each run starting with the other one than the last; their
    /// medians.
    fn alternate(
        &self,
        ours: impl FnMut() -> Duration,
        theirs: impl FnMut() -> Duration,
    ) -> (Duration, Duration) {
        let mut sides: [(Measure, Vec<Duration>); 2] =
            [(Box::new(ours), Vec::new()), (Box::new(theirs), Vec::new())];
        for run in 0..self.runs {
            for side in [run % 2, 1 - run % 2] {
                let (measure, times) = &mut sides[side];
                times.push(measure());
            }
        }
        let [(_, ours), (_, theirs)] = sides;
        println!("  buildr:   {ours:.3?}\n  baseline: {theirs:.3?}");
        (middle(ours), middle(theirs))
    }
}

/// One side of a pair: runs it once and says how long it took.
type Measure<'a> = Box<dyn FnMut() -> Duration + 'a>;

fn succeeded(output: Output) -> Output {
    let Output { status, stderr, .. } = &output;
    assert!(status.success(), "{}", String::from_utf8_lossy(stderr));
    output
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// `count` files of `size` bytes of base64 text (compressible as source code is), under `root`.
fn write_tree(root: &Path, count: usize, size: usize) {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..count {
        let dir = root.join(format!("d{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let text: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(state % 64) as usize]
            })
            .collect();
        std::fs::write(dir.join(format!("f{i}.txt")), text).unwrap();
    }
}

/// A phase of buildr's `-v` timeline.
fn phase(output: &Output, name: &str) -> Duration {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no phase {name:?} in:\n{stderr}"));
    // The duration ends the line; a phase's name may go on with what it did.
    let seconds = line
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .trim_end_matches('s');
    Duration::from_secs_f64(seconds.parse().unwrap())
}

fn middle(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn report(what: &str, baseline: &str, ours: Duration, theirs: Duration, goal: f64) {
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    let verdict = if ratio <= goal { "met" } else { "missed" };
    println!(
        "{what}: buildr {ours:.3?}, {baseline} {theirs:.3?}: buildr takes {ratio:.2}x \
         (goal at most {goal}x: {verdict})"
    );
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}
