//! Helpers shared by the integration tests: the real `buildr` binary, other programs run to
//! completion, and scratch repositories.
//!
//! - `cluster`: the real cluster of tests/cluster: kubectl, throw-away namespaces, buildr runs
//!   with the k8s backend.
//! - `helm`: Helm releases of charts/buildr that uninstall themselves.
//! - `manifests`: pods and NetworkPolicies: buildr's own as its code builds them, shaped like
//!   buildr's, or plain.
//! - `pool`: BuildrPools and a pool controller of the test's own.
//! - `round_trip`: a task touching every kind of file, whose pod result must equal the local one.
//! - `sshd`: a real OpenSSH server on 127.0.0.1 for a second local user, for the ssh backend.
//! - `frames`: Snappy frame streams taken apart and put back together, for the archive tests.

// Helpers of tests and benchmarks fail loudly by design: `unwrap()` is their assertion.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // each test file uses its own subset

pub mod cluster;
pub mod frames;
pub mod helm;
pub mod manifests;
pub mod pool;
pub mod registry;
pub mod round_trip;
pub mod sshd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn buildr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_buildr"))
}

/// `buildr-executor`, the lean build that runs send: the executor tests run it, so that they
/// prove it serves.
pub fn executor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_buildr-executor"))
}

/// `buildr ARGS` with a quiet console, run to completion.
pub fn buildr(args: &[&str]) -> Output {
    Command::new(buildr_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("buildr runs")
}

/// Writes `files` (path, contents) under `root`, creating directories.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// Every path under `root`, relative and sorted, directories included.
pub fn tree(root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path.clone());
            }
            paths.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    paths.sort();
    paths
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a command printed and how it ended.
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            ok: output.status.success(),
            code: output.status.code(),
            stdout: stdout(&output),
            stderr: stderr(&output),
        }
    }
}

/// Runs PROGRAM ARGS with STDIN, from the repository's root (where charts/ and manifests/ are).
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin is piped");
        w.write_all(input.as_bytes()).expect("write stdin");
    }
    Run::from(child.wait_with_output().expect("wait for command"))
}

/// The child process of `parent` whose command line contains `marker`, waited for up to 10 s.
pub fn child_of(parent: u32, marker: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the command name, which may hold spaces and parentheses.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let ppid: u32 = after_name.split(' ').nth(1).unwrap().parse().unwrap();
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if ppid == parent && cmdline.contains(marker) {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no child of {parent} runs {marker:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls F every 300 ms until it returns true or TIMEOUT passes; says whether it did.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A real `buildr executor` child process on a loopback port, killed when dropped.
pub struct ExecutorProcess {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub state: tempfile::TempDir,
    pub workspace: tempfile::TempDir,
}

impl ExecutorProcess {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with `extra` arguments too.
    pub fn start_with(extra: &[&str]) -> Self {
        use std::io::BufRead;
        let state = tempfile::tempdir().unwrap();
        let workspace = tempfile::tempdir().unwrap();
        let mut child = Command::new(executor_bin())
            .args(["executor", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state.path())
            .arg("--workspace")
            .arg(workspace.path())
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the executor starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("the executor reports its address")
            .parse()
            .unwrap();
        Self {
            child,
            addr,
            state,
            workspace,
        }
    }

    /// A request to run `sh -c script` in this executor's workspace.
    pub fn request(&self, run_id: &str, script: &str) -> buildr::rpc::StartTaskRequest {
        let task = buildr::task::Task::ad_hoc(vec!["sh".into(), "-c".into(), script.into()]);
        buildr::client::start_request(&task, run_id, self.workspace.path().to_str().unwrap())
    }
}

impl Drop for ExecutorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects what a run streams.
#[derive(Default)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub logs: Vec<buildr::rpc::TaskLog>,
}

impl buildr::client::EventSink for Collected {
    fn output(&mut self, output: &buildr::rpc::TaskOutput) {
        use buildr::rpc::task_output::Stream;
        match output.stream() {
            Stream::Stderr => self.stderr.extend_from_slice(&output.data),
            _ => self.stdout.extend_from_slice(&output.data),
        }
    }

    fn log(&mut self, log: &buildr::rpc::TaskLog) {
        self.logs.push(log.clone());
    }
}

/// Client options that extract into `out`.
pub fn client_options(out: &Path) -> buildr::client::Options {
    buildr::client::Options {
        out: out.to_path_buf(),
        deletions: buildr::archive::Deletions::Off,
        secret: None,
        links: buildr::archive::LinkPolicy::Skip,
        limits: buildr::archive::Limits::default(),
        fetch_idle_timeout: buildr::client::fetch::DEFAULT_IDLE_TIMEOUT,
        ready_timeout: std::time::Duration::from_secs(20),
        reconnect: buildr::client::Reconnect::default(),
        keep_archive: false,
    }
}

/// Runs `request` through the client library against an executor reachable at `target`,
/// collecting what it streams; Ctrl-C never comes.
pub async fn execute(
    target: std::net::SocketAddr,
    request: buildr::rpc::StartTaskRequest,
    out: &Path,
) -> (
    Result<buildr::client::Outcome, buildr::client::ClientError>,
    Collected,
) {
    execute_with(target, request, &client_options(out)).await
}

/// [`execute`] with these client options.
pub async fn execute_with(
    target: std::net::SocketAddr,
    request: buildr::rpc::StartTaskRequest,
    options: &buildr::client::Options,
) -> (
    Result<buildr::client::Outcome, buildr::client::ClientError>,
    Collected,
) {
    let (_interrupt, mut interrupts) = tokio::sync::mpsc::channel(1);
    let mut sink = Collected::default();
    let channel = buildr::client::connect::channel(&buildr::client::Target::Tcp(target));
    let outcome =
        buildr::client::execute(channel, request, options, &mut sink, &mut interrupts).await;
    (outcome, sink)
}

/// A fake executor `fake` on a loopback port, with a health service that says it serves.
pub async fn serve_fake<E: buildr::rpc::executor_server::Executor>(
    fake: E,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(buildr::rpc::executor_server::ExecutorServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}
