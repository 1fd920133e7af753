//! The k8s commands against a cluster that cannot be used, as a new user meets one: a server that
//! refuses, a name that does not resolve, a server that does not speak TLS, one that never
//! answers, no kubeconfig at all. Each ends within seconds with one line that names the server
//! and the cause, with none of the Kubernetes client's own log lines and no claim that a pod was
//! left behind. Every server here is on 127.0.0.1 (or a name that cannot resolve): no cluster
//! needed.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Run, buildr_bin};

/// Longer than the 5 s connect timeout, far shorter than the 30 s of kube's default and of a
/// deletion's retries.
const QUICK: Duration = Duration::from_secs(10);

/// A kubeconfig whose one context points at `server`.
fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {server}
contexts:
- name: c
  context: {{cluster: c, user: u, namespace: edge}}
current-context: c
users:
- name: u
  user: {{token: not-a-real-token}}
"
        ),
    )
    .unwrap();
    path
}

/// `buildr ARGS` with `env`, from an empty repository and an empty HOME (no ~/.kube/config), a
/// quiet console; and how long it took.
fn buildr_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Run, Duration) {
    let home = dir.join("home");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    let mut cmd = Command::new(buildr_bin());
    cmd.args(args)
        .current_dir(&repo)
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", &home);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let started = Instant::now();
    let run = Run::from(cmd.output().expect("buildr runs"));
    (run, started.elapsed())
}

/// The three commands a new user tries, and the exit status each has when buildr fails.
const COMMANDS: &[(&[&str], i32)] = &[
    (
        &[
            "run",
            "--backend",
            "k8s",
            "--image",
            "busybox",
            "--",
            "true",
        ],
        125,
    ),
    (&["k8s", "check"], 1),
    (&["k8s", "gc"], 1),
];

/// Each command with `kubeconfig` as KUBECONFIG fails quickly with exactly one line, which says
/// each of `expected` once.
fn fails_with_one_line(dir: &Path, env: &[(&str, &str)], expected: &[&str]) {
    for (args, code) in COMMANDS {
        let (run, took) = buildr_in(dir, args, env);
        let what = format!("buildr {}: {}", args.join(" "), run.stderr);
        assert_eq!(run.code, Some(*code), "{what}");
        assert!(took < QUICK, "took {took:?}: {what}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line, not: {what}");
        assert!(lines[0].starts_with("buildr: "), "{what}");
        for words in expected {
            assert_eq!(
                lines[0].matches(words).count(),
                1,
                "`{words}` once in: {what}"
            );
        }
        assert!(!run.stderr.contains("left behind"), "{what}");
        assert!(run.stdout.is_empty(), "no table: {what}");
    }
}

#[test]
fn a_refused_connection_is_one_line_naming_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), "https://127.0.0.1:1");
    fails_with_one_line(
        dir.path(),
        &[("KUBECONFIG", config.to_str().unwrap())],
        &["https://127.0.0.1:1", "connection refused"],
    );
}

#[test]
fn a_name_that_does_not_resolve_is_one_line_naming_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), "https://buildr-edge-test.invalid:6443");
    fails_with_one_line(
        dir.path(),
        &[("KUBECONFIG", config.to_str().unwrap())],
        &["https://buildr-edge-test.invalid:6443", "does not resolve"],
    );
}

#[test]
fn a_server_that_does_not_speak_tls_is_one_line_naming_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers every connection in plain HTTP, as a wrong port or a proxy would.
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.read(&mut [0; 4096]);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let server = format!("https://127.0.0.1:{port}");
    let config = kubeconfig(dir.path(), &server);
    fails_with_one_line(
        dir.path(),
        &[("KUBECONFIG", config.to_str().unwrap())],
        &[&server, "TLS handshake failed"],
    );
}

#[test]
fn a_server_that_never_answers_is_one_line_within_seconds() {
    // Listening but never accepting: the kernel completes the TCP handshake, and nothing more
    // ever comes back.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("https://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &server);
    fails_with_one_line(
        dir.path(),
        &[("KUBECONFIG", config.to_str().unwrap())],
        &[&server, "no connection within 5s"],
    );
    drop(listener);
}

#[test]
fn no_kubeconfig_at_all_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("home/.kube/config");
    fails_with_one_line(
        dir.path(),
        &[],
        &[
            "no Kubernetes configuration",
            missing.to_str().unwrap(),
            "KUBECONFIG is not set",
        ],
    );
}

#[test]
fn a_kubeconfig_that_does_not_exist_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    fails_with_one_line(
        dir.path(),
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
        &["/nonexistent/kubeconfig", "No such file or directory"],
    );
}

#[test]
fn the_client_libraries_log_lines_come_with_v() {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), "https://127.0.0.1:1");
    let (run, _) = buildr_in(
        dir.path(),
        &["-v", "k8s", "gc"],
        &[("KUBECONFIG", config.to_str().unwrap())],
    );
    assert!(
        run.stderr
            .contains("failed with error client error (Connect)"),
        "{}",
        run.stderr
    );
}

/// An API server that answers buildr's first request and then is gone (a restart, a dropped
/// VPN): the pod's create never leaves, so there is no pod to delete or to report left behind.
#[test]
fn a_pod_whose_create_never_left_is_not_cleaned_up_or_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let answered = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the request ends");
            request.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":"linux/amd64"}"#;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8_lossy(&request).into_owned()
        // The listener goes with this thread: every later connection is refused.
    });
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &server);
    // A small executor binary: the test build of buildr takes seconds to hash.
    let (run, took) = buildr_in(
        dir.path(),
        &[
            "run",
            "--backend",
            "k8s",
            "--image",
            "busybox",
            "--executor-binary",
            "/bin/true",
            "--",
            "true",
        ],
        &[("KUBECONFIG", config.to_str().unwrap())],
    );
    let first = answered.join().unwrap();
    assert!(first.starts_with("GET /version"), "{first}");
    assert_eq!(run.code, Some(125), "{}", run.stderr);
    assert!(took < QUICK, "took {took:?}: {}", run.stderr);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.starts_with("buildr: warning: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {}", run.stderr);
    assert!(
        errors[0].starts_with("buildr: cannot create pod edge/buildr-")
            && errors[0].contains("connection refused"),
        "{}",
        run.stderr
    );
}
