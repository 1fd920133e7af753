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
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap();
            // The test may have stopped listening: the lines are kept all the same.
            let _ = lines_tx.send(line.clone());
            seen.push(line);
        }
        seen
    });
    // Once the task is well under way (its lines reach the terminal), take the API server away
    // for a while: whatever the pod's start took, the cut falls mid-task.
    let under_way = "line 20";
    let started = std::time::Instant::now();
    let reached = loop {
        let left = Duration::from_secs(120).saturating_sub(started.elapsed());
        match lines_rx.recv_timeout(left) {
            Ok(line) if line == under_way => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    assert!(reached, "the task never printed `{under_way}`");
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
