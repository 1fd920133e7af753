//! Commands in the build pod through the exec API, with bulk stdin: how the executor binary and
//! the inputs get in, the way `kubectl cp` does it, so that the image needs only `sh` and `tar`.
//!
//! kube's `AttachedProcess` has traps this module exists to avoid: dropping the stdin writer
//! sends no EOF (it must be shut down, which on the v5 channel protocol closes stdin alone);
//! stdout and stderr must be drained while stdin is written, or their buffers fill and stall
//! the one loop that carries all three; and the process must not be dropped before its status
//! arrives, or it is aborted and the copy may be cut short.

use std::io::{self, Write};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, SimplexStream, WriteHalf};
use tokio_util::io::SyncIoBridge;

use super::objects::CONTAINER;

/// Buffers between this process and kube's websocket loop. kube sends stdin in 4 KiB frames
/// whatever this is; a large buffer lets the archive writer run ahead of the socket.
const BUFFER: usize = 4 * 1024 * 1024;
/// How much of a failed command's stderr is kept for the error message.
const STDERR_KEPT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot open an exec session")]
    Open(#[source] kube::Error),
    #[error("the exec session broke")]
    Session(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    let stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; it said: {stderr}")
    }
}

/// A command's stdin, as a blocking writer.
pub type Stdin = SyncIoBridge<WriteHalf<SimplexStream>>;

/// Runs `command` in the build container; `feed` writes its stdin on a blocking thread and
/// hands it back to be closed. Returns stdout and stderr once the command exited with status 0.
pub async fn exec_with_input<F>(
    pods: &Api<Pod>,
    pod: &str,
    command: Vec<String>,
    feed: F,
) -> Result<(Vec<u8>, Vec<u8>), ExecError>
where
    F: FnOnce(Stdin) -> io::Result<Stdin> + Send + 'static,
{
    let mut process = open(pods, pod, &command).await?;
    let stdin = process.stdin().expect("stdin was asked for");
    let stdout = process.stdout().expect("stdout was asked for");
    let stderr = process.stderr().expect("stderr was asked for");
    let status = process.take_status().expect("the status is taken once");

    let feeding = async move {
        let bridge = SyncIoBridge::new(stdin);
        let bridge = tokio::task::spawn_blocking(move || {
            let mut bridge = feed(bridge)?;
            bridge.flush()?;
            Ok::<_, io::Error>(bridge)
        })
        .await
        .expect("the feeding thread does not panic")?;
        bridge.into_inner().shutdown().await
    };
    let (fed, stdout, stderr, status) =
        tokio::join!(feeding, read_all(stdout), read_all(stderr), status);
    let joined = process.join().await;
    let stderr = String::from_utf8_lossy(tail(&stderr, STDERR_KEPT)).into_owned();
    // The command's own verdict explains a broken stdin better than the broken pipe does.
    match status {
        Some(status) if is_success(&status) => {}
        Some(status) => return Err(failure(&status, stderr)),
        None => {
            return Err(match joined {
                Err(e) => ExecError::Session(Box::new(e)),
                Ok(()) => ExecError::NoStatus { stderr },
            });
        }
    }
    fed.map_err(ExecError::Feed)?;
    joined.map_err(|e| ExecError::Session(Box::new(e)))?;
    Ok((stdout, stderr.into_bytes()))
}

/// Opens the session, retrying while the container is not yet known to the kubelet's streaming
/// server: an exec right after the pod turns Running can fail with "container not found".
async fn open(
    pods: &Api<Pod>,
    pod: &str,
    command: &[String],
) -> Result<AttachedProcess, ExecError> {
    let params = AttachParams {
        container: Some(CONTAINER.to_string()),
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
        max_stdin_buf_size: Some(BUFFER),
        max_stdout_buf_size: Some(BUFFER),
        max_stderr_buf_size: Some(BUFFER),
    };
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        match pods.exec(pod, command.to_vec(), &params).await {
            Ok(process) => return Ok(process),
            Err(e) if attempts < 8 && is_not_ready(&e) => {
                attempts += 1;
                tracing::debug!("exec not possible yet ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(ExecError::Open(e)),
        }
    }
}

fn is_not_ready(error: &kube::Error) -> bool {
    let text = error.to_string();
    text.contains("container not found") || text.contains("unable to upgrade connection")
}

async fn read_all(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut bytes = Vec::new();
    // A read error means the session broke; the status (or its absence) says so.
    let _ = reader.read_to_end(&mut bytes).await;
    bytes
}

fn tail(bytes: &[u8], keep: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(keep)..]
}

fn is_success(status: &Status) -> bool {
    status.status.as_deref() == Some("Success")
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
}
