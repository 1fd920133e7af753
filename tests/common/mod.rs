//! Helpers shared by the integration tests: the real `buildr` binary and scratch repositories.

#![allow(dead_code)] // each test file uses its own subset

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn buildr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_buildr"))
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

/// A real `buildr executor` child process on a loopback port, killed when dropped.
pub struct ExecutorProcess {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub state: tempfile::TempDir,
    pub workspace: tempfile::TempDir,
}

impl ExecutorProcess {
    pub fn start() -> Self {
        use std::io::BufRead;
        let state = tempfile::tempdir().unwrap();
        let workspace = tempfile::tempdir().unwrap();
        let mut child = Command::new(buildr_bin())
            .args(["executor", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state.path())
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
        apply_deletions: false,
        ready_timeout: std::time::Duration::from_secs(20),
        reconnect: buildr::client::Reconnect::default(),
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
    let (_interrupt, mut interrupts) = tokio::sync::mpsc::channel(1);
    let mut sink = Collected::default();
    let channel = buildr::client::connect::channel(&buildr::client::Target::Tcp(target));
    let outcome = buildr::client::execute(
        channel,
        request,
        &client_options(out),
        &mut sink,
        &mut interrupts,
    )
    .await;
    (outcome, sink)
}
