//! The archive fetch against a real tonic server on loopback that misbehaves: it streams more
//! than the size it reported, stalls mid-fetch, or sends an archive whose SHA-256 is not the one
//! it reported. Each must fail promptly, with a message that says what happened, rather than
//! fill the disk, hang, or leave anything of the archive in the destination (the extraction runs
//! while the fetch is under way).
//!
//! A small archive comes in the result message instead: from the real executor it lands exactly
//! as the fetched one does, and a hostile one (or one that does not match what the result says
//! of it) is refused exactly as the same bytes fetched are.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use buildr::archive::{self, Extracted};
use buildr::client::{ClientError, connect, fetch};
use buildr::rpc::executor_server::Executor;
use buildr::rpc::{
    AcknowledgeRequest, AcknowledgeResponse, ArchiveChunk, ArchiveInfo, CancelRequest,
    CancelResponse, FetchArchiveRequest, ResumeRequest, StartTaskRequest, TaskEvent, TaskResult,
    task_event,
};
use futures::Stream;
use tonic::{Request, Response, Status};

type Chunks = Pin<Box<dyn Stream<Item = Result<ArchiveChunk, Status>> + Send>>;
type Events = Pin<Box<dyn Stream<Item = Result<TaskEvent, Status>> + Send>>;

/// What the fake executor does when the archive is fetched.
#[derive(Clone)]
enum Misbehaviour {
    /// Refuses: the archive was in the result message, and a client must not need a fetch.
    Refuse,
    /// Streams 64 KiB chunks without end, whatever size it reported.
    Endless,
    /// Sends one chunk, then nothing, holding the stream open.
    Stall,
    /// Serves these bytes, in 64 KiB chunks (whether they match the reported SHA-256 is the
    /// test's choice).
    Serve(Vec<u8>),
}

struct Fake {
    fetch: Misbehaviour,
    /// What StartTask streams: this one result, if any.
    result: Option<TaskResult>,
}

impl Fake {
    fn fetching(fetch: Misbehaviour) -> Self {
        Self {
            fetch,
            result: None,
        }
    }
}

const CHUNK: usize = 64 << 10;

#[tonic::async_trait]
impl Executor for Fake {
    type StartTaskStream = Events;
    type ResumeStream = Events;
    type FetchArchiveStream = Chunks;

    async fn start_task(&self, _: Request<StartTaskRequest>) -> Result<Response<Events>, Status> {
        let result = self
            .result
            .clone()
            .ok_or_else(|| Status::unimplemented("only FetchArchive"))?;
        let event = TaskEvent {
            sequence: 1,
            event: Some(task_event::Event::Result(result)),
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(event)]))))
    }

    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("only FetchArchive"))
    }

    async fn cancel(&self, _: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        Err(Status::unimplemented("only FetchArchive"))
    }

    async fn fetch_archive(
        &self,
        request: Request<FetchArchiveRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let mut offset = request.into_inner().offset;
        let misbehaviour = self.fetch.clone();
        if let Misbehaviour::Refuse = misbehaviour {
            return Err(Status::failed_precondition(
                "the archive was in the result message",
            ));
        }
        let stream = async_stream(move |tx| async move {
            loop {
                let data = match &misbehaviour {
                    Misbehaviour::Serve(bytes) => {
                        let start = (offset as usize).min(bytes.len());
                        let end = (start + CHUNK).min(bytes.len());
                        if start == end {
                            return;
                        }
                        bytes[start..end].to_vec()
                    }
                    _ => vec![b'x'; CHUNK],
                };
                let len = data.len() as u64;
                if tx.send(Ok(ArchiveChunk { offset, data })).await.is_err() {
                    return;
                }
                offset += len;
                if let Misbehaviour::Stall = misbehaviour {
                    // Hold the stream open without sending anything more.
                    tx.closed().await;
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn acknowledge(
        &self,
        _: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        Ok(Response::new(AcknowledgeResponse {}))
    }
}

/// A stream fed by `produce` through a channel.
fn async_stream<F, Fut>(produce: F) -> Chunks
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ArchiveChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A client of a fake executor that `misbehaves`.
async fn client_of(misbehaviour: Misbehaviour) -> connect::Client {
    let addr = common::serve_fake(Fake::fetching(misbehaviour)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    connect::client(channel, None)
}

/// Fetches and extracts into `out` what a fake executor that `misbehaves` serves as the archive
/// `info`, with a 500 ms idle timeout; the whole fetch is given 20 s.
async fn fetch_from(
    misbehaviour: Misbehaviour,
    info: ArchiveInfo,
    out: &Path,
    keep_archive: bool,
) -> (Result<(Extracted, Option<File>), ClientError>, Duration) {
    let mut client = client_of(misbehaviour).await;
    let mut options = common::client_options(out);
    options.fetch_idle_timeout = Duration::from_millis(500);
    options.keep_archive = keep_archive;
    let started = Instant::now();
    let fetched = fetch::fetch_and_extract(&mut client, "run", &info, &options);
    let result = tokio::time::timeout(Duration::from_secs(20), fetched)
        .await
        .expect("the fetch must end on its own, not hang or stream forever");
    (result, started.elapsed())
}

/// An archive reported as 100 KiB with a SHA-256 nothing has.
fn reported_100_kib() -> ArchiveInfo {
    ArchiveInfo {
        path: "/archive.tar.s2".to_string(),
        size: 100 << 10,
        sha256: "0".repeat(64),
        content: None,
    }
}

/// A real archive of 300 files (3 MB, several chunks), and the tree it was made of.
fn real_archive(scratch: &Path) -> (Vec<u8>, PathBuf) {
    let tree = scratch.join("tree");
    for i in 0..300 {
        let dir = tree.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        let body: Vec<u8> = (0..10_000u32).map(|j| (j * 31 + i) as u8).collect();
        fs::write(dir.join(format!("f{i}")), body).unwrap();
    }
    let paths: Vec<PathBuf> = (0..7).map(|d| PathBuf::from(format!("d{d}"))).collect();
    let sources = archive::sources_under(&tree, &paths).unwrap();
    let file = scratch.join("a.tar.s2");
    archive::create_file(&file, &sources, &[]).unwrap();
    (fs::read(&file).unwrap(), tree)
}

#[tokio::test]
async fn more_bytes_than_reported_fail_the_fetch() {
    let out = tempfile::tempdir().unwrap();
    let (result, _) =
        fetch_from(Misbehaviour::Endless, reported_100_kib(), out.path(), false).await;
    let err = result.expect_err("more than the reported size must fail");
    assert!(matches!(err, ClientError::ArchiveTooLong { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("sent more than the 102400 bytes it reported"),
        "{err}"
    );
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_stalled_fetch_fails_after_the_idle_timeout() {
    let out = tempfile::tempdir().unwrap();
    let (result, took) =
        fetch_from(Misbehaviour::Stall, reported_100_kib(), out.path(), false).await;
    let err = result.expect_err("a stall must fail");
    assert!(matches!(err, ClientError::FetchStalled { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("stalled: nothing arrived for 500ms at byte 65536 of 102400"),
        "{message}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_whole_archive_whose_sha256_differs_extracts_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let (bytes, _) = real_archive(scratch.path());
    let out = scratch.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("mine"), "the user's own file\n").unwrap();
    let mut sha256 = archive::sha256_hex(&bytes);
    sha256.replace_range(..1, if sha256.starts_with('0') { "1" } else { "0" });
    let info = ArchiveInfo {
        path: "/archive.tar.s2".to_string(),
        size: bytes.len() as u64,
        sha256,
        content: None,
    };
    let (result, _) = fetch_from(Misbehaviour::Serve(bytes), info, &out, false).await;
    let err = result.expect_err("a SHA-256 other than the reported one must fail");
    assert!(matches!(err, ClientError::ArchiveMismatch { .. }), "{err}");
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["mine"],
        "nothing of the archive may be left in the destination"
    );
    assert_eq!(
        fs::read(out.join("mine")).unwrap(),
        b"the user's own file\n"
    );
}

#[tokio::test]
async fn a_matching_archive_is_extracted_and_kept_as_fetched() {
    let scratch = tempfile::tempdir().unwrap();
    let (bytes, tree) = real_archive(scratch.path());
    let out = scratch.path().join("out");
    let info = ArchiveInfo {
        path: "/archive.tar.s2".to_string(),
        size: bytes.len() as u64,
        sha256: archive::sha256_hex(&bytes),
        content: None,
    };
    let (result, _) = fetch_from(Misbehaviour::Serve(bytes.clone()), info, &out, true).await;
    let (extracted, kept) = result.expect("a matching archive is extracted");
    assert_eq!(extracted.files, 300);
    for i in [0, 150, 299] {
        let path = format!("d{}/f{i}", i % 7);
        assert_eq!(
            fs::read(out.join(&path)).unwrap(),
            fs::read(tree.join(&path)).unwrap(),
            "{path}"
        );
    }
    let mut kept_bytes = Vec::new();
    kept.expect("the archive was asked for")
        .read_to_end(&mut kept_bytes)
        .unwrap();
    assert!(kept_bytes == bytes, "the kept archive is the fetched one");
}

/// What a build leaves, with modes to keep: executables, private files and directories, a
/// link, and 200 kB of random bytes. Its archive (about 200 kB) is small enough to come in the
/// result message.
const SMALL_RESULT: &str = r#"
    set -eu
    mkdir -p bin private/keys docs
    printf '#!/bin/sh\necho run\n' > bin/tool && chmod 755 bin/tool
    echo key > private/keys/id && chmod 600 private/keys/id && chmod 700 private/keys
    echo readme > docs/README && chmod 444 docs/README
    ln -s ../bin/tool docs/tool
    head -c 200000 /dev/urandom > random.bin
"#;

#[tokio::test]
async fn a_small_result_arrives_inline_and_lands_exactly_as_the_fetched_one() {
    let executor = common::ExecutorProcess::start();
    let channel = connect::channel(&buildr::client::Target::Tcp(executor.addr));
    let mut client = connect::client(channel, None);
    let (_never, mut interrupts) = tokio::sync::mpsc::channel(1);
    let finished = buildr::client::session::follow(
        &mut client,
        executor.request("inline", SMALL_RESULT),
        &mut common::Collected::default(),
        &mut interrupts,
        buildr::client::Reconnect::default(),
    )
    .await
    .unwrap();
    assert_eq!(finished.result.exit_code, 0, "{}", finished.result.error);
    let mut info = finished
        .result
        .archive
        .expect("the result names an archive");
    let content = info
        .content
        .take()
        .expect("a small archive comes in the result message");
    assert!(content.len() > 200_000, "{} bytes", content.len());

    // The one archive both ways: from the result, and fetched from the executor.
    let scratch = tempfile::tempdir().unwrap();
    let (inline, fetched) = (
        scratch.path().join("inline"),
        scratch.path().join("fetched"),
    );
    let mut options = common::client_options(&inline);
    options.keep_archive = true;
    let (by_inline, kept_inline) =
        fetch::receive_and_extract(fetch::Source::Inline(content), &info, &options)
            .await
            .unwrap();
    options.out = fetched.clone();
    let (by_fetch, kept_fetched) = fetch::fetch_and_extract(&mut client, "inline", &info, &options)
        .await
        .unwrap();

    let tree = common::cluster::snapshot(&inline);
    assert_eq!(tree, common::cluster::snapshot(&fetched));
    let umask = current_umask();
    let mode = |path: &str| {
        let (_, kind, _) = tree.iter().find(|(p, _, _)| p == path).unwrap();
        kind.clone()
    };
    assert_eq!(mode("bin/tool"), format!("file {:o}", 0o755 & !umask));
    assert_eq!(mode("private/keys/id"), "file 600");
    assert_eq!(mode("private/keys"), "dir 700");
    assert_eq!(mode("docs/README"), format!("file {:o}", 0o444 & !umask));
    assert_eq!(mode("docs/tool"), "link 777");
    assert_eq!(
        fs::read(inline.join("random.bin")).unwrap(),
        fs::read(executor.workspace.path().join("random.bin")).unwrap()
    );
    assert_eq!(format!("{by_inline:?}"), format!("{by_fetch:?}"));
    let read = |file: Option<File>| {
        let mut bytes = Vec::new();
        file.expect("kept").read_to_end(&mut bytes).unwrap();
        bytes
    };
    assert!(
        read(kept_inline) == read(kept_fetched),
        "the archive kept for the cache is the same either way"
    );
}

/// The process's umask, which extraction applies to modes as `tar` does.
fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

/// A `.tar.s2` archive of one file named `name` exactly as given, `..` and all (the tar crate's
/// own path setters refuse such names).
fn archive_of_one_file_named(name: &str) -> Vec<u8> {
    let data = b"pwned\n";
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append(&header, &data[..]).unwrap();
    common::frames::snappy(&tar.into_inner().unwrap())
}

/// The error and each of its causes, as `buildr` prints them.
fn chain(error: &ClientError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        text += &format!(": {e}");
        cause = e.source();
    }
    text
}

#[tokio::test]
async fn a_hostile_inline_result_is_refused_as_the_same_archive_fetched() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("mine"), "the user's own file\n").unwrap();
    let escape = archive_of_one_file_named("../outside/pwned");
    let absolute = archive_of_one_file_named(&format!("{}/pwned", scratch.path().display()));
    let (real, _) = real_archive(&scratch.path().join("real"));
    let honest = |bytes: &[u8]| (bytes.len() as u64, archive::sha256_hex(bytes));
    let cases = [
        (
            "a path that leaves the destination",
            escape.clone(),
            honest(&escape),
        ),
        ("an absolute path", absolute.clone(), honest(&absolute)),
        (
            "more bytes than reported",
            real.clone(),
            (1000, honest(&real).1),
        ),
        (
            "fewer bytes than reported",
            real[..1000].to_vec(),
            honest(&real),
        ),
        (
            "another SHA-256",
            real.clone(),
            (real.len() as u64, "0".repeat(64)),
        ),
    ];
    for (case, bytes, (size, sha256)) in cases {
        let mut refusals = Vec::new();
        for inline in [true, false] {
            let info = ArchiveInfo {
                path: "/state/run.tar.s2".to_string(),
                size,
                sha256: sha256.clone(),
                content: inline.then(|| bytes.clone()),
            };
            let fake = Fake {
                fetch: if inline {
                    Misbehaviour::Refuse
                } else {
                    Misbehaviour::Serve(bytes.clone())
                },
                result: Some(TaskResult {
                    archive: Some(info),
                    ..TaskResult::default()
                }),
            };
            let addr = common::serve_fake(fake).await;
            let request = buildr::client::start_request(
                &buildr::task::Task::ad_hoc(vec!["true".to_string()]),
                "run",
                "/workspace",
            );
            let (outcome, _) = common::execute(addr, request, &out).await;
            let error = outcome.expect_err(case);
            refusals.push(chain(&error));
            let left: Vec<_> = fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, ["mine"], "{case}: nothing of the archive lands");
            assert!(!scratch.path().join("outside").exists(), "{case}");
            assert!(!scratch.path().join("pwned").exists(), "{case}");
        }
        assert_eq!(refusals[0], refusals[1], "{case}: inline, then fetched");
    }
}
