//! Commands in the build pod through the exec API, with bulk stdin: how the executor binary and
//! the inputs get in, the way `kubectl cp` does it, so that the image needs only `sh` and `tar`.
//!
//! The exec stream is spoken here directly (kube opens the websocket, with the
//! `v5.channel.k8s.io` protocol) rather than through kube's `AttachedProcess`, which sends stdin
//! in 4 KiB frames: a 100 MB copy took four times as long as `kubectl cp`. Here stdin goes out in
//! 256 KiB frames (one very large frame, 28 MiB, is known to be reset by the API server), and
//! stdout and stderr are read while stdin is written, so that neither side can stall the other.
//!
//! Channel protocol: every binary message starts with its channel byte: 0 stdin, 1 stdout,
//! 2 stderr, 3 the exit status (a `Status` object); `[255, 0]` closes stdin alone (v5).

use std::io::{self, Write};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::AttachParams;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::api::{Backoff, api_message, one_line};
use super::launch::CONTAINER;

/// Bytes of stdin per websocket frame.
const FRAME: usize = 256 * 1024;
/// Frames the writer may run ahead of the socket.
const FRAMES_AHEAD: usize = 8;
/// How much of a command's stdout is kept: the copies print nothing, the image check a few
/// lines; whatever a broken image prints instead stays within this.
const STDOUT_KEPT: usize = 64 * 1024;
/// How much of a command's stderr is kept, for the error message: its tail says why it failed.
const STDERR_KEPT: usize = 4096;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot open an exec session: {}", api_message(.0))]
    Open(kube::Error),
    #[error("the API server does not speak the v5 exec protocol (Kubernetes 1.30 or newer)")]
    NoStreamClose,
    #[error("the exec session broke")]
    Session(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("the exit status cannot be read")]
    BadStatus(#[source] serde_json::Error),
    #[error("cannot send the data")]
    Feed(#[source] io::Error),
    #[error("it exited with status {code}{}", stderr_suffix(.stderr))]
    Exited { code: i32, stderr: String },
    #[error("it failed: {message}{}", stderr_suffix(.stderr))]
    Failed { message: String, stderr: String },
    #[error("the session ended without an exit status{}", stderr_suffix(.stderr))]
    NoStatus { stderr: String },
}

fn stderr_suffix(stderr: &str) -> String {
    let stderr = one_line(stderr);
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; it said: {stderr}")
    }
}

/// A command's stdin, as a blocking writer that hands frames to the socket.
pub struct Stdin {
    frame: Vec<u8>,
    frames: mpsc::Sender<Vec<u8>>,
}

impl Write for Stdin {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(FRAME - self.frame.len());
        self.frame.extend_from_slice(&bytes[..n]);
        if self.frame.len() == FRAME {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(FRAME + 1);
        frame.push(STDIN);
        frame.append(&mut self.frame);
        self.frames
            .blocking_send(frame)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the command stopped reading"))
    }
}

/// Runs `command` in the build container; `feed` writes its stdin on a blocking thread and hands
/// it back, then stdin is closed. Returns stdout and stderr once the command exited with status 0.
pub async fn exec_with_input<F>(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    command: Vec<String>,
    feed: F,
) -> Result<(Vec<u8>, Vec<u8>), ExecError>
where
    F: FnOnce(Stdin) -> io::Result<Stdin> + Send + 'static,
{
    let connection = open(pods, client, pod, &command).await?;
    if !connection.supports_stream_close() {
        return Err(ExecError::NoStreamClose);
    }
    let (mut sink, mut stream) = connection.into_stream().split();
    let (frames, mut to_send) = mpsc::channel(FRAMES_AHEAD);
    let feeder = tokio::task::spawn_blocking(move || {
        let stdin = Stdin {
            frame: Vec::with_capacity(FRAME),
            frames,
        };
        feed(stdin)?.flush()
    });

    // Owns the frame receiver: when it is dropped, a feeder still writing gets a broken pipe.
    let sending = async move {
        while let Some(frame) = to_send.recv().await {
            sink.send(Message::binary(frame)).await?;
        }
        // The feeder is done (or gave up): stdin ends, the rest of the session goes on.
        sink.send(Message::binary(vec![CLOSE, STDIN])).await
    };
    let receiving = async {
        let (mut stdout, mut stderr) = (Tail::new(STDOUT_KEPT), Tail::new(STDERR_KEPT));
        let mut status = None;
        while let Some(message) = stream.next().await {
            let data = match message? {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first() {
                Some(&STDOUT) => stdout.push(&data[1..]),
                Some(&STDERR) => stderr.push(&data[1..]),
                Some(&STATUS) => {
                    status = Some(data[1..].to_vec());
                    break;
                }
                _ => {}
            }
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>((stdout, stderr, status))
    };
    // Both at once; once the command has ended (its status is in), sending stops: a command
    // that exits early (no `tar` in the image) reads no more, and its session may stay open.
    let received = {
        tokio::pin!(sending, receiving);
        let mut sending_done = false;
        loop {
            tokio::select! {
                received = &mut receiving => break received,
                sent = &mut sending, if !sending_done => {
                    sending_done = true;
                    if let Err(e) = sent {
                        tracing::debug!("exec stdin broke: {e}");
                    }
                }
            }
        }
    };
    let fed = feeder.await.expect("the feeding thread does not panic");
    let (stdout, stderr, status) = received.map_err(ExecError::Session)?;
    let (stdout, stderr) = (stdout.into_bytes(), stderr.into_bytes());
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    // The command's own verdict explains a broken stdin better than the broken pipe does.
    let Some(status) = status else {
        return Err(ExecError::NoStatus { stderr });
    };
    let status: Status = serde_json::from_slice(&status).map_err(ExecError::BadStatus)?;
    if status.status.as_deref() != Some("Success") {
        return Err(failure(&status, stderr));
    }
    // A command that succeeded may not have needed all of its stdin (tar stops at its end
    // marker); a local failure to produce it is still an error.
    match fed {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(ExecError::Feed(e)),
        _ => {}
    }
    Ok((stdout, stderr.into_bytes()))
}

/// Opens the session, retrying while the container is not yet known to the kubelet's streaming
/// server: an exec right after the pod turns Running can fail with "container not found".
async fn open(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    command: &[String],
) -> Result<kube::client::Connection, ExecError> {
    let params = AttachParams {
        container: Some(CONTAINER.to_string()),
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
        ..AttachParams::default()
    };
    let mut backoff = Backoff::new();
    let mut attempts = 0;
    loop {
        let request = kube::core::Request::new(pods.resource_url())
            .exec(pod, command.to_vec(), &params)
            .map_err(|e| ExecError::Open(kube::Error::BuildRequest(e)))?;
        match client.connect(request).await {
            Ok(connection) => return Ok(connection),
            Err(e) if attempts < 8 && is_not_ready(&e) => {
                attempts += 1;
                let delay = backoff.next_delay();
                tracing::debug!("exec not possible yet ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(ExecError::Open(e)),
        }
    }
}

fn is_not_ready(error: &kube::Error) -> bool {
    let text = error.to_string();
    text.contains("container not found") || text.contains("unable to upgrade connection")
}

/// The last `keep` bytes of a stream, in memory bounded by twice that whatever the command
/// prints, and how many came before them.
struct Tail {
    keep: usize,
    bytes: Vec<u8>,
    cut: u64,
}

impl Tail {
    fn new(keep: usize) -> Self {
        Self {
            keep,
            bytes: Vec::new(),
            cut: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        // Trimmed only once twice the tail is held: each byte is moved at most once.
        if self.bytes.len() > 2 * self.keep {
            self.trim();
        }
    }

    fn trim(&mut self) {
        let excess = self.bytes.len().saturating_sub(self.keep);
        self.bytes.drain(..excess);
        self.cut += excess as u64;
    }

    /// The tail, after a note of what was cut before it when something was.
    fn into_bytes(mut self) -> Vec<u8> {
        self.trim();
        if self.cut == 0 {
            return self.bytes;
        }
        let mut bytes = format!("[{} earlier bytes cut] ", self.cut).into_bytes();
        bytes.append(&mut self.bytes);
        bytes
    }
}

/// The exit code of a failed command is in `details.causes[reason=ExitCode].message`.
fn failure(status: &Status, stderr: String) -> ExecError {
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse().ok());
    match code {
        Some(code) => ExecError::Exited { code, stderr },
        None => ExecError::Failed {
            message: status.message.clone().unwrap_or_default(),
            stderr,
        },
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    use super::*;

    #[test]
    fn the_exit_code_is_read_from_the_status_causes() {
        let status = Status {
            status: Some("Failure".to_string()),
            reason: Some("NonZeroExitCode".to_string()),
            message: Some("command terminated with non-zero exit code".to_string()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".to_string()),
                    message: Some("127".to_string()),
                    ..StatusCause::default()
                }]),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        let error = failure(&status, "sh: tar: not found\n".to_string());
        assert!(matches!(error, ExecError::Exited { code: 127, .. }));
        assert_eq!(
            error.to_string(),
            "it exited with status 127; it said: sh: tar: not found"
        );
    }

    #[test]
    fn output_beyond_the_cap_keeps_its_tail_and_says_how_much_was_cut() {
        let mut tail = Tail::new(100);
        let mut sent = Vec::new();
        for i in 0..1000u32 {
            let line = format!("line {i}\n");
            sent.extend_from_slice(line.as_bytes());
            tail.push(line.as_bytes());
            assert!(tail.bytes.len() <= 200, "{} bytes held", tail.bytes.len());
        }
        let kept = tail.into_bytes();
        let note = format!("[{} earlier bytes cut] ", sent.len() - 100);
        assert!(kept.starts_with(note.as_bytes()), "{kept:?}");
        assert_eq!(&kept[note.len()..], &sent[sent.len() - 100..]);
        assert!(kept.ends_with(b"line 999\n"));
    }

    #[test]
    fn output_within_the_cap_is_kept_whole() {
        let mut tail = Tail::new(100);
        tail.push(b"sh: tar: not found\n");
        assert_eq!(tail.into_bytes(), b"sh: tar: not found\n");
    }

    #[test]
    fn stdin_goes_out_in_full_frames_with_the_channel_byte() {
        let (frames, mut sent) = mpsc::channel(16);
        let writer = std::thread::spawn(move || {
            let mut stdin = Stdin {
                frame: Vec::new(),
                frames,
            };
            stdin.write_all(&vec![7u8; FRAME * 2 + 10]).unwrap();
            stdin.flush().unwrap();
        });
        writer.join().unwrap();
        let mut sizes = Vec::new();
        while let Ok(frame) = sent.try_recv() {
            assert_eq!(frame[0], STDIN);
            sizes.push(frame.len() - 1);
        }
        assert_eq!(sizes, [FRAME, FRAME, 10]);
    }
}
