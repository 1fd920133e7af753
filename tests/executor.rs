//! The executor under hostile use, through real `buildr executor` processes and real gRPC
//! calls: the per-run secret, the workspace it was given, its state directory, requests over
//! gRPC's limit, and the event log's cap.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::{Command, Stdio};

use buildr::rpc::executor_client::ExecutorClient;
use buildr::rpc::{ResumeRequest, StartTaskRequest};
use buildr::secret::Secret;
use common::{ExecutorProcess, client_options, execute, execute_with, executor_bin, write_files};

/// An executor with a secret, its stderr captured.
struct Guarded {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    secret: Secret,
    _state: tempfile::TempDir,
    workspace: tempfile::TempDir,
}

impl Guarded {
    fn start() -> Self {
        let state = tempfile::tempdir().unwrap();
        let workspace = tempfile::tempdir().unwrap();
        let secret = Secret::generate().unwrap();
        let file = state.path().join("secret");
        secret.write_file(&file).unwrap();
        let mut child = Command::new(executor_bin())
            .args(["executor", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state.path())
            .arg("--workspace")
            .arg(workspace.path())
            .arg("--secret-file")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        Guarded {
            child,
            addr,
            secret,
            _state: state,
            workspace,
        }
    }

    fn request(&self, script: &str) -> StartTaskRequest {
        let task = buildr::task::Task::ad_hoc(vec!["sh".into(), "-c".into(), script.into()]);
        buildr::client::start_request(&task, "r1", self.workspace.path().to_str().unwrap())
    }

    /// Stops it and returns what it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        let _ = self.child.wait();
        log
    }
}

/// StartTask over a plain generated client, with `authorization` set to `value` (if any).
async fn raw_start(
    addr: std::net::SocketAddr,
    request: StartTaskRequest,
    value: Option<&str>,
) -> tonic::Status {
    let mut client = ExecutorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(request);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    match client.start_task(request).await {
        Ok(_) => tonic::Status::ok("started"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn every_call_needs_the_runs_secret() {
    let ex = Guarded::start();
    let marker = ex.workspace.path().join("ran");
    let script = format!("touch {}", marker.display());
    let wrong = Secret::generate().unwrap();
    for value in [None, Some(wrong.header_value()), Some(ex.secret.to_hex())] {
        let status = raw_start(ex.addr, ex.request(&script), value.as_deref()).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    // Resume and health too.
    let mut client = ExecutorClient::connect(format!("http://{}", ex.addr))
        .await
        .unwrap();
    let status = client
        .resume(ResumeRequest {
            run_id: "r1".into(),
            after_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let channel = buildr::client::connect::channel(&buildr::client::Target::Tcp(ex.addr));
    let err =
        buildr::client::connect::wait_ready(&channel, None, std::time::Duration::from_secs(1))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("secret"), "{err}");
    assert!(!marker.exists(), "a call without the secret ran the task");

    // With it, the whole run goes through.
    let out = tempfile::tempdir().unwrap();
    let mut options = client_options(out.path());
    options.secret = Some(ex.secret.clone());
    let (outcome, _) = execute_with(ex.addr, ex.request(&script), &options).await;
    assert_eq!(outcome.unwrap().result.exit_code, 0);
    assert!(marker.exists());
    let log = ex.stop();
    assert_eq!(
        log.matches("refused a call with no secret").count(),
        3,
        "{log}"
    );
    assert_eq!(
        log.matches("refused a call with a wrong secret").count(),
        2,
        "{log}"
    );
}

fn executor_output(args: &[&str]) -> std::process::Output {
    let ws = tempfile::tempdir().unwrap();
    let mut child = Command::new(executor_bin())
        .arg("executor")
        .arg("--workspace")
        .arg(ws.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // One that starts prints its address and serves: stop it after that line.
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    if !line.is_empty() {
        let _ = child.kill();
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = line.into_bytes();
    out
}

#[test]
fn a_non_loopback_listener_needs_a_secret() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().join("s");
    let out = executor_output(&[
        "--listen",
        "0.0.0.0:0",
        "--state-dir",
        state_arg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a secret"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let secret = state.path().join("secret");
    Secret::generate().unwrap().write_file(&secret).unwrap();
    let out = executor_output(&[
        "--listen",
        "0.0.0.0:0",
        "--state-dir",
        state_arg.to_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("listening on 0.0.0.0:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A secret file others can read is refused.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let out = executor_output(&[
        "--listen",
        "127.0.0.1:0",
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not private"), "{stderr}");
}

#[tokio::test]
async fn a_request_for_another_workspace_is_refused() {
    let ex = ExecutorProcess::start();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::create_dir(ex.workspace.path().join("sub")).unwrap();
    let sneaky = format!("{}/sub/../..", ex.workspace.path().display());
    for root in [elsewhere.path().to_str().unwrap(), sneaky.as_str()] {
        let task = buildr::task::Task::ad_hoc(vec!["touch".into(), "pwned".into()]);
        let request = buildr::client::start_request(&task, "r1", root);
        let status = raw_start(ex.addr, request, None).await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("serves the workspace"),
            "{status:?}"
        );
    }
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    // Its own workspace still works.
    let out = tempfile::tempdir().unwrap();
    let (outcome, _) = execute(ex.addr, ex.request("r2", "echo ok > f"), out.path()).await;
    assert_eq!(outcome.unwrap().result.exit_code, 0);
    assert_eq!(fs::read(out.path().join("f")).unwrap(), b"ok\n");
}

#[test]
fn a_state_directory_others_can_write_to_is_refused() {
    let shared = tempfile::tempdir().unwrap();
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let out = executor_output(&[
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        shared.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("others can write to it"), "{stderr}");
    // A symlink as the state directory is refused too.
    let real = tempfile::tempdir().unwrap();
    let link = shared.path().join("link");
    symlink(real.path(), &link).unwrap();
    let out = executor_output(&[
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        link.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("symlink"), "{stderr}");
    // Without --state-dir it makes a private one of its own.
    let out = executor_output(&["--listen", "127.0.0.1:0"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("listening on"));
}

#[tokio::test]
async fn a_planted_symlink_in_the_state_directory_is_never_written_through() {
    let ex = ExecutorProcess::start();
    let victim = tempfile::NamedTempFile::new().unwrap();
    fs::write(victim.path(), "precious").unwrap();
    // The archive's name for run `r1`, planted before the run.
    symlink(victim.path(), ex.state.path().join("r1.tar.s2")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (outcome, _) = execute(ex.addr, ex.request("r1", "echo new > f"), out.path()).await;
    let result = outcome.unwrap().result;
    assert!(result.error.contains("archive"), "{result:?}");
    assert_eq!(fs::read(victim.path()).unwrap(), b"precious");
    // And the event log's name.
    let ex = ExecutorProcess::start();
    symlink(victim.path(), ex.state.path().join("r2.events")).unwrap();
    let status = raw_start(ex.addr, ex.request("r2", "true"), None).await;
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_eq!(fs::read(victim.path()).unwrap(), b"precious");
}

#[test]
fn a_request_over_grpcs_limit_is_refused_before_anything_starts() {
    let repo = tempfile::tempdir().unwrap();
    let marker = repo.path().join("ran");
    let big = "x".repeat(5 << 20);
    let task = format!(
        "task \"big\" {{\n  script = <<-EOT\n    touch {}\n    : {big}\n  EOT\n}}\n",
        marker.display()
    );
    write_files(repo.path(), &[(".buildr/big.hcl", task.as_str())]);
    let out = tempfile::tempdir().unwrap();
    let output = common::buildr(&[
        "run",
        "--repo",
        repo.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "big",
    ]);
    let err = common::stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("too big to send") && err.contains("4194304"),
        "{err}"
    );
    assert!(!marker.exists());
}

#[tokio::test]
async fn the_event_log_is_capped_and_says_how_much_output_it_dropped() {
    let ex = ExecutorProcess::start_with(&["--max-log-bytes", "100000"]);
    let out = tempfile::tempdir().unwrap();
    let script = "head -c 3000000 /dev/zero | tr '\\0' x; echo done > f";
    let (outcome, collected) = execute(ex.addr, ex.request("r1", script), out.path()).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.result.exit_code, 0, "the task goes on");
    assert_eq!(fs::read(out.path().join("f")).unwrap(), b"done\n");
    assert!(
        collected.stdout.len() <= 100_000,
        "{}",
        collected.stdout.len()
    );
    let notes: Vec<_> = collected.logs.iter().map(|l| l.message.clone()).collect();
    let dropped = 3_000_000 - collected.stdout.len();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("{dropped} bytes of task output were dropped"))),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("cap of 100000 bytes")),
        "{notes:?}"
    );
    let events = fs::metadata(ex.state.path().join("r1.events"))
        .unwrap()
        .len();
    assert!(
        events < 100_000 + 64 * 1024,
        "the log file is {events} bytes"
    );
}

/// The lean build serves the other side of a run (executor, extractor, self-check) and has
/// no client in it.
#[test]
fn the_lean_executor_serves_the_other_side_of_a_run_only() {
    let help = Command::new(executor_bin()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("executor") && help.contains("archive"),
        "{help}"
    );
    let run = Command::new(executor_bin())
        .args(["run", "hello"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert!(stderr.contains("unrecognized subcommand 'run'"), "{stderr}");
}
