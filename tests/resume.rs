//! A TCP proxy between the client and a real executor is cut mid-task: the client reconnects,
//! resumes after the last event it saw, and gets every event exactly once, then the result.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::ExecutorProcess;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

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
    let (outcome, sink) = common::execute(proxy, request, out.path()).await;
    let outcome = outcome.expect("the run survives the cuts");
    cutter.await.unwrap();

    assert_eq!(outcome.result.exit_code, 0);
    assert!(outcome.resumes >= 2, "resumed {} times", outcome.resumes);
    let expected =
        |prefix: &str| -> String { (1..=lines).map(|i| format!("{prefix} {i}\n")).collect() };
    assert_eq!(String::from_utf8(sink.stdout).unwrap(), expected("line"));
    assert_eq!(String::from_utf8(sink.stderr).unwrap(), expected("err"));
    assert_eq!(
        std::fs::read_to_string(out.path().join("result.txt")).unwrap(),
        "done\n"
    );
}

/// Forwards connections to `upstream`; the first connection to carry more than `cut_after`
/// bytes towards the client is reset there, once.
async fn start_cutting_proxy(
    upstream: SocketAddr,
    cut_after: u64,
) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let cut = armed.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let armed = cut.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = inbound.into_split();
                let (mut server_read, mut server_write) = outbound.into_split();
                let upstream_copy = async {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                };
                let downstream_copy = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0u64;
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        sent += n as u64;
                        if sent > cut_after && armed.swap(false, Ordering::SeqCst) {
                            return;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    () = upstream_copy => {}
                    () = downstream_copy => {}
                }
            });
        }
    });
    (addr, armed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cut_midway_resumes_and_the_archive_checks_out() {
    let executor = ExecutorProcess::start();
    let (proxy, armed) = start_cutting_proxy(executor.addr, 4 * 1024 * 1024).await;
    let out = tempfile::tempdir().unwrap();
    let script = "head -c 20000000 /dev/urandom > big.bin && sha256sum big.bin";
    let request = executor.request("fetch-cut-test", script);
    let (outcome, sink) = common::execute(proxy, request, out.path()).await;
    let outcome = outcome.expect("the fetch survives the cut");
    assert_eq!(outcome.result.exit_code, 0);
    assert!(
        !armed.load(Ordering::SeqCst),
        "the proxy did cut a connection"
    );

    let printed = String::from_utf8(sink.stdout).unwrap();
    let expected = printed.split_whitespace().next().unwrap();
    let fetched = std::fs::read(out.path().join("big.bin")).unwrap();
    assert_eq!(fetched.len(), 20_000_000);
    let sha = buildr::archive::sha256_file(&out.path().join("big.bin")).unwrap();
    assert_eq!(sha, expected);
}
