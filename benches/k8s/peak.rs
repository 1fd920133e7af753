//! The peak memory of a run: of the client (the kernel's own figure, from `wait4`) and of the
//! executor's side in the pod (its processes are this machine's too: every `buildr` process
//! started from the copied binary is sampled for its high-water mark while the run lasts).

#![allow(clippy::unwrap_used)] // a benchmark fails loudly by design

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the executor binary is in the pod; the command line of every process started from it.
const POD_BINARY: &str = "/buildr/bin/buildr";
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// A finished run and its peaks, in KiB.
pub struct Measured {
    pub output: Output,
    pub client_kib: u64,
    pub executor_kib: u64,
}

/// Runs `command` (stdout is dropped, stderr kept) and measures its peaks.
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, not by `Child::wait`"
)]
pub fn run(mut command: Command) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(executor_high_water_mark());
                std::thread::sleep(SAMPLE_EVERY);
            }
            peak
        })
    };
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        stderr.read_to_end(&mut text).unwrap();
        text
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, which wait4 overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the child is ours and not waited for elsewhere; both pointers are valid.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32, "wait4 on the run");
    stop.store(true, Ordering::Relaxed);
    Measured {
        output: Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: Vec::new(),
            stderr: reader.join().unwrap(),
        },
        // Linux gives ru_maxrss in KiB.
        client_kib: usage.ru_maxrss as u64,
        executor_kib: sampler.join().unwrap(),
    }
}

/// The highest VmHWM among the processes running the pod's copy of the binary now.
fn executor_high_water_mark() -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).next() == Some(POD_BINARY.as_bytes()))
        })
        .filter_map(|e| {
            let status = fs::read_to_string(e.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}
