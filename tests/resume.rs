//! A TCP proxy between the client and a real executor is cut mid-task: the client reconnects,
//! resumes after the last event it saw, and gets every event exactly once, then the result.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use buildr::client::{self, Target};
use common::{Collected, ExecutorProcess, client_options};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};

/// Forwards connections to `upstream` until told to cut every open one.
async fn start_proxy(upstream: SocketAddr) -> (SocketAddr, broadcast::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, _) = broadcast::channel(4);
    let cutter = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut stop = cutter.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = stop.recv() => {}
                }
                // Dropping both ends resets the connection mid-stream.
            });
        }
    });
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_loses_and_duplicates_nothing() {
    let executor = ExecutorProcess::start();
    let (proxy, cut) = start_proxy(executor.addr).await;
    let out = tempfile::tempdir().unwrap();
    let lines = 80;
    let script = format!(
        "i=1; while [ $i -le {lines} ]; do echo line $i; echo err $i >&2; sleep 0.05; i=$((i+1)); done; echo done > result.txt"
    );
    let request = executor.request("resume-test", &script);

    let cutter = tokio::spawn(async move {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let _ = cut.send(());
        }
    });
    let (_interrupt, mut interrupts) = mpsc::channel(1);
    let mut sink = Collected::default();
    let channel = client::connect::channel(&Target::Tcp(proxy));
    let outcome = client::execute(
        channel,
        request,
        &client_options(out.path()),
        &mut sink,
        &mut interrupts,
    )
    .await
    .expect("the run survives the cuts");
    cutter.await.unwrap();

    assert_eq!(outcome.result.exit_code, 0);
    assert!(outcome.resumes >= 2, "resumed {} times", outcome.resumes);
    let expected = |prefix: &str| -> String {
        (1..=lines).map(|i| format!("{prefix} {i}\n")).collect()
    };
    assert_eq!(String::from_utf8(sink.stdout).unwrap(), expected("line"));
    assert_eq!(String::from_utf8(sink.stderr).unwrap(), expected("err"));
    assert_eq!(
        std::fs::read_to_string(out.path().join("result.txt")).unwrap(),
        "done\n"
    );
}
