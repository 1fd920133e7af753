//! Archive speed against GNU tar: `cargo bench --bench archive`.
//!
//! Builds 10,000 files / 200 MB of word-like text (deterministic) in a temporary directory,
//! warms the page cache, then times buildr create, `tar -cf`, `tar -czf`, buildr extract and
//! `tar -xf` (of the plain tar). Each step but `tar -czf` runs `BUILDR_BENCH_RUNS` times
//! (default 3), alternating with its tar counterpart; the best run is reported, with its CPU
//! time. `BUILDR_BENCH_MB` and `BUILDR_BENCH_FILES` change the tree, `BUILDR_BENCH_DIR` where
//! it goes (default: the system temporary directory; `/dev/shm` takes the file system out).
//! `BUILDR_BENCH_PROFILE=create|extract` repeats one buildr step alone, for `perf record`.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use buildr::archive::{self, ExtractOptions};

mod common;
use common::make_text_tree;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads every file once so that every step starts from a warm page cache.
fn warm(root: &Path) {
    let mut buf = vec![0; 1 << 20];
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let mut f = fs::File::open(e.path()).unwrap();
            while f.read(&mut buf).unwrap() > 0 {}
        }
    }
}

fn tar(args: &[&str], cwd: &Path) {
    let st = Command::new("tar")
        .args(args)
        .current_dir(cwd)
        .status()
        .unwrap();
    assert!(st.success(), "tar {args:?}");
}

/// User + system CPU time of this process (all threads) and its waited-for children.
fn cpu_time() -> Duration {
    use nix::libc::{RUSAGE_CHILDREN, RUSAGE_SELF, getrusage, rusage, timeval};
    let tv = |t: timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    [RUSAGE_SELF, RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            let mut u: rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage fills the struct it is given.
            assert_eq!(unsafe { getrusage(who, &mut u) }, 0);
            tv(u.ru_utime) + tv(u.ru_stime)
        })
        .sum()
}

/// Wall and CPU time of one run of `step`.
fn timed(step: impl FnOnce()) -> (Duration, Duration) {
    let cpu = cpu_time();
    let t = Instant::now();
    step();
    (t.elapsed(), cpu_time() - cpu)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Single-threaded Snappy framing throughput on the plain tar, in memory (MB/s).
fn snap_speed(plain: &Path) -> (f64, f64) {
    use std::io::Write;
    let data = fs::read(plain).unwrap();
    let t = Instant::now();
    let mut enc = snap::write::FrameEncoder::new(Vec::with_capacity(data.len()));
    enc.write_all(&data).unwrap();
    let compressed = enc.into_inner().unwrap();
    let c = data.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut out = Vec::with_capacity(data.len());
    snap::read::FrameDecoder::new(&compressed[..])
        .read_to_end(&mut out)
        .unwrap();
    let d = data.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
    (c, d)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let runs = env_or("BUILDR_BENCH_RUNS", 3).max(1);
    let files = env_or("BUILDR_BENCH_FILES", 10_000);
    let total = env_or("BUILDR_BENCH_MB", 200) << 20;
    let tmp = match std::env::var_os("BUILDR_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let src = tmp.path().join("src");
    let bytes = make_text_tree(&src, files, total);
    let mb = bytes as f64 / 1e6;
    let s2 = tmp
        .path()
        .join(format!("tree.{}", archive::ARCHIVE_EXTENSION));
    let plain = tmp.path().join("tree.tar");
    let gz = tmp.path().join("tree.tar.gz");
    let out = tmp.path().join("out");
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("load average before: {}", load_average());
    println!("directory: {}", tmp.path().display());
    println!(
        "tree: {files} files, {mb:.1} MB of word-like text; {workers} cores; best of {runs} runs"
    );
    warm(&src);
    if let Ok(step) = std::env::var("BUILDR_BENCH_PROFILE") {
        // For `perf record`: one buildr step alone, over and over.
        let sources = archive::sources_under(&src, &[]).unwrap();
        archive::create_file(&s2, &sources, &[]).unwrap();
        for run in 0..runs {
            let t = Instant::now();
            if step == "create" {
                let sources = archive::sources_under(&src, &[]).unwrap();
                archive::create_file(&s2, &sources, &[]).unwrap();
            } else {
                let dir = out.join(run.to_string());
                archive::extract_file(&s2, &dir, &ExtractOptions::default()).unwrap();
            }
            println!("{step}: {:.3} s", t.elapsed().as_secs_f64());
        }
        return;
    }

    let sync = || {
        let _ = Command::new("sync").status();
    };
    // The runs of buildr and tar alternate, and which goes first alternates too, so that both
    // see the same machine (others may be busy on it). Each extraction goes into a directory of
    // its own, all removed at the end: removing the previous run's files just before makes
    // ext4 hunt through recently deleted inodes (`recently_deleted`) on every create, which
    // costs more than the extraction itself.
    let none = (Duration::MAX, Duration::ZERO);
    let (mut create, mut tar_c, mut extract, mut tar_x) = (none, none, none, none);
    let mut adaptive = none;
    let s2_adaptive = tmp
        .path()
        .join(format!("adaptive.{}", archive::ARCHIVE_EXTENSION));
    for run in 0..runs {
        let (a, b) = (
            out.join(format!("buildr-{run}")),
            out.join(format!("tar-{run}")),
        );
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        for buildr_turn in [run % 2 == 0, run % 2 == 1] {
            sync();
            if buildr_turn {
                create = create.min(timed(|| {
                    let sources = archive::sources_under(&src, &[]).unwrap();
                    archive::create_file(&s2, &sources, &[]).unwrap();
                }));
            } else {
                tar_c = tar_c.min(timed(|| tar(&["-cf", plain.to_str().unwrap(), "."], &src)));
            }
        }
        sync();
        adaptive = adaptive.min(timed(|| {
            let sources = archive::sources_under(&src, &[]).unwrap();
            let file = fs::File::create(&s2_adaptive).unwrap();
            let mut w = archive::Writer::new(file).adaptive(true);
            for s in &sources {
                w.append(s).unwrap();
            }
            w.finish().unwrap();
        }));
        for buildr_turn in [run % 2 == 0, run % 2 == 1] {
            sync();
            if buildr_turn {
                extract = extract.min(timed(|| {
                    archive::extract_file(&s2, &a, &ExtractOptions::default()).unwrap();
                }));
            } else {
                tar_x = tar_x.min(timed(|| tar(&["-xf", plain.to_str().unwrap()], &b)));
            }
        }
    }
    sync();
    let tar_cz = timed(|| tar(&["-czf", gz.to_str().unwrap(), "."], &src));

    let (snap_c, snap_d) = snap_speed(&plain);
    println!("snap on one core, in memory: compress {snap_c:.0} MB/s, decompress {snap_d:.0} MB/s");
    println!("load average after the runs: {}", load_average());
    let size = |p: &Path| fs::metadata(p).unwrap().len() as f64 / 1e6;
    println!(
        "sizes: .tar.s2 {:.1} MB (adaptive: {:.1} MB, last run), .tar {:.1} MB, .tar.gz {:.1} MB",
        size(&s2),
        size(&s2_adaptive),
        size(&plain),
        size(&gz)
    );
    println!();
    println!("| step | wall s | MB/s | vs tar (wall) | CPU s |");
    println!("|---|---:|---:|---:|---:|");
    let row = |name: &str,
               (d, cpu): (Duration, Duration),
               base: (Duration, Duration),
               base_name: &str| {
        let s = d.as_secs_f64();
        println!(
            "| {name} | {s:.3} | {:.0} | {:.2}x {base_name} | {:.3} |",
            mb / s,
            s / base.0.as_secs_f64(),
            cpu.as_secs_f64()
        );
    };
    row("buildr create (.tar.s2)", create, tar_c, "tar -cf");
    row("buildr create, adaptive", adaptive, tar_c, "tar -cf");
    row("tar -cf", tar_c, tar_c, "tar -cf");
    row("tar -czf", tar_cz, tar_c, "tar -cf");
    row("buildr extract (.tar.s2)", extract, tar_x, "tar -xf");
    row("tar -xf", tar_x, tar_x, "tar -xf");
}
