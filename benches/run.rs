//! End-to-end figures for `buildr run` on the local backend, through the real release binary.
//!
//! 1. Output streaming: a task printing 200 MB to stdout, against the same command run directly
//!    (to /dev/null, and through `cat` to /dev/null, which is what a user piping a log sees),
//!    with the executor's peak RSS sampled from /proc every 20 ms.
//! 2. Local run overhead: `buildr run -- true` on a repository of 1,000 × 1 KiB files, against
//!    `true` run directly, and the default sandbox's share of it: the same run with
//!    `--sandbox none`, alternating.
//!
//! A plain `main` (harness = false): `cargo bench --bench run`. Nothing here asserts on time;
//! the figures are printed and written up by hand in BENCHMARKS.md. `BUILDR_BENCH_RUNS` sets
//! the number of streaming runs (default 5); the overhead bench always takes 10.
//! `BUILDR_BENCH_ONLY=stream|overhead` runs one part.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BUILDR: &str = env!("CARGO_BIN_EXE_buildr");

/// 200 MB of 64-byte lines, generated inside the task so that no input copy is timed and the
/// command itself costs little: `yes` writes in large blocks.
const STREAM_BYTES: u64 = 200_000_000;
const STREAM_CMD: &str =
    "yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c 200000000";

const OVERHEAD_RUNS: usize = 10;
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

fn main() {
    let streaming_runs = std::env::var("BUILDR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize);
    println!("buildr: {BUILDR}");
    println!("load before: {}", loadavg());

    // `BUILDR_BENCH_ONLY=stream` or `=overhead` runs one part: the 4 GB of event log the
    // streaming part writes leaves ext4 busy for a while, which slows the file creation the
    // overhead part measures.
    let only = std::env::var("BUILDR_BENCH_ONLY").unwrap_or_default();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    // The overhead part goes first for the same reason.
    if only != "stream" {
        overhead(scratch.path());
    }
    if only != "overhead" {
        streaming(scratch.path(), streaming_runs);
    }
    println!("load after: {}", loadavg());
}

// ---- 1. Output streaming -------------------------------------------------------------------

fn streaming(scratch: &Path, runs: usize) {
    let repo = scratch.join("stream-repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(repo.join("README"), "a near-empty repository\n").unwrap();

    let direct = |sink: &str| {
        let script = format!("{STREAM_CMD} {sink}");
        move |_: usize| (timed(Command::new("sh").args(["-c", &script])), None)
    };
    let through_buildr = |sink: &'static str| {
        let repo = repo.clone();
        move |_: usize| {
            let out = tempfile::tempdir_in(scratch).expect("an output directory");
            let out = out.path();
            // The buildr client runs under this shell (alone or next to `cat`); its executor
            // is found by walking the process tree down from the shell.
            let script = format!(
                "{buildr} run --repo {repo} --out {out} -- sh -c '{STREAM_CMD}' {sink}",
                buildr = BUILDR,
                repo = repo.display(),
                out = out.display(),
            );
            let mut command = Command::new("sh");
            command.args(["-c", &script]).stdout(Stdio::null());
            let (secs, peak) = timed_with_rss(&mut command);
            (secs, Some(peak))
        }
    };

    let buildr_true = |_: usize| {
        let out = tempfile::tempdir_in(scratch).expect("an output directory");
        let secs = timed(
            Command::new(BUILDR)
                .arg("run")
                .arg("--repo")
                .arg(&repo)
                .arg("--out")
                .arg(out.path())
                .args(["--", "true"]),
        );
        (secs, None)
    };
    let cases: Vec<(&str, Box<Case<'_>>)> = vec![
        ("direct > /dev/null", Box::new(direct("> /dev/null"))),
        (
            "direct | cat > /dev/null",
            Box::new(direct("| cat > /dev/null")),
        ),
        (
            "buildr run > /dev/null",
            Box::new(through_buildr("> /dev/null")),
        ),
        (
            "buildr run | cat > /dev/null",
            Box::new(through_buildr("| cat > /dev/null")),
        ),
        // The fixed cost on the same repository (sandbox, executor start, archive of changes),
        // to tell the streaming rate itself from the start-up.
        ("buildr run -- true", Box::new(buildr_true)),
    ];

    println!();
    println!("## Output streaming: {STREAM_BYTES} bytes to stdout, {runs} runs each (median)");
    println!("command: sh -c \"{STREAM_CMD}\"");
    // Interleave the cases run by run, so that a burst of load from elsewhere hits all alike.
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut peaks: Vec<Peak> = Vec::new();
    for i in 0..runs {
        for (case, (_, run)) in cases.iter().enumerate() {
            let (secs, peak) = run(i);
            times[case].push(secs);
            if let Some(peak) = peak {
                peaks.push(peak);
            }
        }
    }
    let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9}",
        "case", "median s", "min s", "max s", "MB/s"
    );
    for (case, ((name, _), t)) in cases.iter().zip(&times).enumerate() {
        let m = median(t);
        // The `-- true` row streams nothing: no rate.
        let rate = if case == 4 {
            "-".to_string()
        } else {
            format!("{:.0}", STREAM_BYTES as f64 / 1e6 / m)
        };
        println!(
            "{:<30} {:>9.3} {:>9.3} {:>9.3} {:>9}",
            name,
            m,
            min(t),
            max(t),
            rate
        );
    }
    println!(
        "throughput ratio buildr/direct, both > /dev/null:     {:.2}",
        medians[0] / medians[2]
    );
    println!(
        "throughput ratio buildr/direct, both | cat > /dev/null: {:.2}",
        medians[1] / medians[3]
    );
    println!(
        "throughput ratio buildr > /dev/null vs direct | cat:    {:.2}",
        medians[1] / medians[2]
    );
    println!(
        "buildr streaming rate net of its fixed cost (median - median of `-- true`): \
         {:.0} MB/s to /dev/null, {:.0} MB/s through cat",
        STREAM_BYTES as f64 / 1e6 / (medians[2] - medians[4]),
        STREAM_BYTES as f64 / 1e6 / (medians[3] - medians[4]),
    );
    let executor_max = peaks.iter().filter_map(|p| p.executor_rss_kib).max();
    let executor_hwm = peaks.iter().filter_map(|p| p.executor_hwm_kib).max();
    let client_max = peaks.iter().filter_map(|p| p.client_rss_kib).max();
    let samples: usize = peaks.iter().map(|p| p.samples).sum();
    println!(
        "executor RSS: max sampled {} (VmHWM {}), client RSS max sampled {}; {} samples every {} ms",
        mib(executor_max),
        mib(executor_hwm),
        mib(client_max),
        samples,
        SAMPLE_EVERY.as_millis()
    );
}

/// One benchmark case: run number in, wall time and (for buildr) peak memory out.
type Case<'a> = dyn Fn(usize) -> (f64, Option<Peak>) + 'a;

/// Peak memory seen while one `buildr run` went on, in KiB.
#[derive(Default, Debug, Clone, Copy)]
struct Peak {
    executor_rss_kib: Option<u64>,
    /// The kernel's own high-water mark for the executor, read at the last sample before it
    /// exited: catches a peak shorter than the sampling interval.
    executor_hwm_kib: Option<u64>,
    client_rss_kib: Option<u64>,
    samples: usize,
}

/// Runs `command` to its end and samples, every 20 ms, the RSS of the `buildr run` client and
/// of the `buildr executor` below it (found among the descendants of the spawned process).
fn timed_with_rss(command: &mut Command) -> (f64, Peak) {
    let start = Instant::now();
    let mut child = command.spawn().expect("the benchmark command starts");
    let root = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(Peak::default()));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let mut p = peak.lock().unwrap();
                for pid in descendants(root) {
                    let Some(cmdline) = cmdline(pid) else {
                        continue;
                    };
                    let is_buildr = cmdline.first().is_some_and(|a| a.ends_with("buildr"));
                    let slot = match cmdline.get(1).map(String::as_str) {
                        Some("executor") if is_buildr => &mut p.executor_rss_kib,
                        Some("run") if is_buildr => &mut p.client_rss_kib,
                        _ => continue,
                    };
                    if let Some(rss) = status_kib(pid, "VmRSS:") {
                        *slot = Some(slot.unwrap_or(0).max(rss));
                        p.samples += 1;
                    }
                    if cmdline.get(1).map(String::as_str) == Some("executor")
                        && let Some(hwm) = status_kib(pid, "VmHWM:")
                    {
                        p.executor_hwm_kib = Some(p.executor_hwm_kib.unwrap_or(0).max(hwm));
                    }
                }
                drop(p);
                thread::sleep(SAMPLE_EVERY);
            }
        })
    };
    let status = child.wait().expect("the benchmark command runs");
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(status.success(), "the benchmark command failed: {status}");
    let peak = *peak.lock().unwrap();
    (secs, peak)
}

/// Every process below `root` (children, grandchildren, ...), from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = status_kib(pid, "PPid:") {
            parents.push((pid, ppid as u32));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The number after `key` in /proc/PID/status (kB for the Vm* lines).
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

// ---- 2. Local run overhead -----------------------------------------------------------------

fn overhead(scratch: &Path) {
    let repo = scratch.join("overhead-repo");
    let files = small_repo(&repo);
    let mut direct = Vec::new();
    let mut copy = Vec::new();
    let mut buildr = Vec::new();
    let mut unconfined = Vec::new();
    for i in 0..OVERHEAD_RUNS {
        direct.push(timed(&mut Command::new("true")));
        // What creating the same 1,000 files costs on this file system, for reference: the
        // sandbox gets a copy of the repository.
        let copied = scratch.join(format!("overhead-copy-{i}"));
        copy.push(timed(Command::new("cp").arg("-r").arg(&repo).arg(&copied)));
        let out = scratch.join(format!("overhead-out-{i}"));
        buildr.push(timed(
            Command::new(BUILDR)
                .arg("run")
                .arg("--repo")
                .arg(&repo)
                .arg("--out")
                .arg(&out)
                .args(["--", "true"]),
        ));
        let out = scratch.join(format!("overhead-out-none-{i}"));
        unconfined.push(timed(
            Command::new(BUILDR)
                .args(["run", "--sandbox", "none", "--repo"])
                .arg(&repo)
                .arg("--out")
                .arg(&out)
                .args(["--", "true"]),
        ));
    }
    println!();
    println!("## Local run overhead: {files} files of 1 KiB, {OVERHEAD_RUNS} runs each");
    println!("command: {BUILDR} run --repo R --out O -- true");
    println!(
        "{:<30} {:>9} {:>9} {:>9}",
        "case", "median ms", "min ms", "max ms"
    );
    for (name, t) in [
        ("true", &direct),
        ("cp -r R (reference)", &copy),
        ("buildr run -- true", &buildr),
        ("buildr run --sandbox none", &unconfined),
    ] {
        println!(
            "{:<30} {:>9.1} {:>9.1} {:>9.1}",
            name,
            median(t) * 1e3,
            min(t) * 1e3,
            max(t) * 1e3
        );
    }
    println!(
        "overhead (median difference): {:.1} ms",
        (median(&buildr) - median(&direct)) * 1e3
    );
    println!(
        "the default sandbox against --sandbox none: {:.3}x ({:+.1} ms)",
        median(&buildr) / median(&unconfined),
        (median(&buildr) - median(&unconfined)) * 1e3
    );
}

/// 1,000 files of 1 KiB in 10 × 10 nested directories; returns the number of files.
fn small_repo(repo: &Path) -> usize {
    let mut n = 0;
    for a in 0..10 {
        for b in 0..10 {
            let dir: PathBuf = repo.join(format!("d{a}")).join(format!("e{b}"));
            fs::create_dir_all(&dir).unwrap();
            for c in 0..10 {
                let body: Vec<u8> = (0..1024).map(|i| b'a' + ((i + n) % 26) as u8).collect();
                fs::write(dir.join(format!("f{c}.txt")), body).unwrap();
                n += 1;
            }
        }
    }
    n
}

// ---- helpers -------------------------------------------------------------------------------

/// Wall time of `command` with its stdout on /dev/null; panics if it fails.
fn timed(command: &mut Command) -> f64 {
    let start = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .status()
        .expect("the benchmark command starts");
    let secs = start.elapsed().as_secs_f64();
    assert!(status.success(), "the benchmark command failed: {status}");
    secs
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn median(t: &[f64]) -> f64 {
    let mut s = t.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(t: &[f64]) -> f64 {
    t.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(t: &[f64]) -> f64 {
    t.iter().copied().fold(0.0, f64::max)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}
