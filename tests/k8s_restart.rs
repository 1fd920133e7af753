//! The API server goes away mid-task and comes back: the port-forward breaks, buildr redials
//! and resumes the event stream, and the task, which ran on in its pod, finishes with every
//! line delivered exactly once. Its own test binary, so that no other test of the cluster runs
//! while the API server is down (cargo runs test binaries one after another).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{Namespace, base_image};
use common::stderr;

#[test]
#[ignore = "needs the cluster from tests/cluster (tests/run-all.sh)"]
fn an_api_server_restart_mid_task_loses_and_duplicates_nothing() {
    let ns = Namespace::new("apiserver-restart");
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let lines = 150;
    let script = format!(
        "i=1; while [ $i -le {lines} ]; do echo line $i; sleep 0.1; i=$((i+1)); done; echo done > result.txt"
    );
    let mut child = ns
        .command(
            repo.path(),
            out.path(),
            &base_image(),
            &["--", "sh", "-c", &script],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            seen.push(line.unwrap());
        }
        seen
    });
    // Wait until the task is well under way, then take the API server away for a while.
    std::thread::sleep(Duration::from_secs(6));
    let restart = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cluster/restart-apiserver.sh"
    ))
    .arg("3")
    .output()
    .unwrap();
    assert!(restart.status.success(), "{}", stderr(&restart));

    let output = child.wait_with_output().unwrap();
    let seen = reader.join().unwrap();
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    // The forward was cut and redialled; the exact lines below prove the stream resumed.
    assert!(
        log.contains("lost the executor; reconnecting"),
        "no cut: {log}"
    );
    let expected: Vec<String> = (1..=lines).map(|i| format!("line {i}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        std::fs::read_to_string(out.path().join("result.txt")).unwrap(),
        "done\n"
    );
    ns.assert_nothing_left();
}
