//! The action cache's costs: `cargo bench --bench cache`.
//!
//! 1. The key of an input tree, through the library as `buildr run` computes it (the input walk,
//!    then the tree digest with its stat cache): first with an empty stat cache (every file
//!    read), then unchanged (no file read). On 100,000 files of 100 bytes in 1,000 directories,
//!    and on 2,000 files of 100 KB (200 MB).
//! 2. `buildr run --cache -- true` end to end on the 200 MB tree and on a one-file repository:
//!    a hit against the same run without the cache, alternating.
//! 3. What a signature adds to a push (signing an entry's message) and to a hit pulled from the
//!    registry (verifying it against the trusted keys), through the library.
//!
//! A plain `main` (harness = false); nothing asserts on time, the figures are printed and
//! written up in BENCHMARKS.md. `BUILDR_BENCH_RUNS` sets the runs per case (default 5);
//! `BUILDR_BENCH_ONLY=key|run|sign` runs one part.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use buildr::cache::{StatCache, tree};
use buildr::task::collect_inputs;

const BUILDR: &str = env!("CARGO_BIN_EXE_buildr");

fn main() {
    let runs = std::env::var("BUILDR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    let only = std::env::var("BUILDR_BENCH_ONLY").unwrap_or_default();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    println!("buildr: {BUILDR}");
    println!("load before: {}", load_average());
    if only == "sign" {
        signature_cost(scratch.path());
        return;
    }

    let small = scratch.path().join("100k");
    make_tree(&small, 100_000, 100);
    let big = scratch.path().join("200mb");
    make_tree(&big, 2_000, 100_000);
    let one = scratch.path().join("one");
    make_tree(&one, 1, 100);
    if only != "run" {
        key_cost("100,000 files of 100 B", &small, scratch.path(), runs);
        key_cost("2,000 files of 100 KB", &big, scratch.path(), runs);
    }
    if only != "key" {
        hit_against_cold("one file", &one, scratch.path(), runs);
        hit_against_cold("200 MB, 2,000 files", &big, scratch.path(), runs);
    }
    signature_cost(scratch.path());
    println!("load after: {}", load_average());
}

/// Signing an entry (a push) and verifying it against a trust file (a pulled hit), each
/// timed over 1,000 rounds with an entry of three layers, as a real one has.
fn signature_cost(scratch: &Path) {
    use buildr::cache::Key;
    use buildr::cache::sign::{self, SignedLayer, SigningKey, TrustedKeys};
    const ROUNDS: u32 = 1_000;
    let key_file = scratch.join("signing.key");
    let signer = SigningKey::generate_into(&key_file).expect("a signing key");
    let trust = scratch.join("trust");
    fs::write(&trust, format!("{}\n", signer.public())).unwrap();
    let trusted = TrustedKeys::load(scratch, Some(&trust)).unwrap();
    let key = Key::from_hex(&"ab".repeat(32)).unwrap();
    let digest = format!("sha256:{}", "cd".repeat(32));
    let layers: Vec<SignedLayer<'_>> = ["record", "output", "archive"]
        .iter()
        .map(|media_type| SignedLayer {
            media_type,
            digest: &digest,
            size: 1 << 20,
        })
        .collect();
    let public = signer.public().to_string();
    let started = Instant::now();
    let mut signature = String::new();
    for _ in 0..ROUNDS {
        // Loading the key is part of every push.
        let signer = SigningKey::load(&key_file).unwrap();
        signature = signer.sign(&sign::message(&key, &layers));
    }
    let push = started.elapsed() / ROUNDS;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let message = sign::message(&key, &layers);
        trusted
            .verify(Some(&public), Some(&signature), &message)
            .expect("a valid signature");
    }
    let hit = started.elapsed() / ROUNDS;
    println!("a signature's cost ({ROUNDS} rounds each; mean per entry):");
    println!(
        "  push: load the key and sign     {:.3} ms",
        push.as_secs_f64() * 1e3
    );
    println!(
        "  hit: verify against the trust   {:.3} ms",
        hit.as_secs_f64() * 1e3
    );
}

/// `files` files of `size` bytes, 100 to a directory, each with distinct content.
fn make_tree(root: &Path, files: usize, size: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        let mut content = format!("{i:>20}").into_bytes();
        content.resize(size, b'x');
        fs::write(dir.join(format!("f{i:06}")), content).unwrap();
    }
}

/// The walk, and the digest with a cold then a warm stat cache.
fn key_cost(name: &str, repo: &Path, scratch: &Path, runs: usize) {
    let (mut walk, mut first, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let stat_file = scratch.join(format!("stat-{run}"));
        let started = Instant::now();
        let inputs = collect_inputs(repo, &[]).unwrap();
        walk.push(started.elapsed());
        for times in [&mut first, &mut unchanged] {
            let started = Instant::now();
            let mut stat_cache = StatCache::load(stat_file.clone());
            tree::digest(&inputs, &mut stat_cache).unwrap();
            stat_cache.save().unwrap();
            times.push(started.elapsed());
        }
    }
    println!("key of {name} ({runs} runs; median, min, max in ms):");
    for (case, times) in [
        ("input walk", walk),
        ("digest, first", first),
        ("digest, unchanged", unchanged),
    ] {
        println!("  {case:<20} {}", summary(times));
    }
}

/// `buildr run --cache -- true` on `repo`, a hit, against the same run without the cache.
fn hit_against_cold(name: &str, repo: &Path, scratch: &Path, runs: usize) {
    let xdg = scratch.join("xdg");
    let out = scratch.join("out");
    let run = |flags: &[&str]| {
        let started = Instant::now();
        let status = Command::new(BUILDR)
            .arg("run")
            .args(flags)
            .arg("--repo")
            .arg(repo)
            .arg("--out")
            .arg(&out)
            .args(["--", "true"])
            .env("XDG_CACHE_HOME", &xdg)
            .status()
            .unwrap();
        assert!(status.success());
        started.elapsed()
    };
    run(&["--cache"]);
    let (mut hits, mut colds) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        colds.push(run(&[]));
        hits.push(run(&["--cache"]));
    }
    let ratio = median(&hits).as_secs_f64() / median(&colds).as_secs_f64();
    println!("buildr run -- true on {name} ({runs} alternating pairs; median, min, max in ms):");
    println!("  cold (no cache)      {}", summary(colds));
    println!("  hit (--cache)        {}", summary(hits));
    println!("  hit / cold           {ratio:.3}x");
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn summary(times: Vec<Duration>) -> String {
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:>9.1} {:>9.1} {:>9.1}",
        ms(&median(&times)),
        ms(times.iter().min().unwrap()),
        ms(times.iter().max().unwrap())
    )
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
