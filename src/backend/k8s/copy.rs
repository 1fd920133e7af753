//! Into the pod through exec: the executor binary and the task's tools (a tar stream into the
//! image's own `tar`, as `kubectl cp` does) and, in a session opened at the same time, the
//! inputs as a `.tar.s2` stream into the copied binary's own safe extractor, so that the inputs
//! are checked on arrival by the same code that checks every archive.

use std::io::{self, Write};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::K8sError;
use super::binary::ExecutorBinary;
use super::exec::{ExecError, exec_with_input};
use super::objects::{
    BINARY_PATH, BUILDR_DIR, SECRET_PATH, SECRET_WAITER, TOOLS_DIR, WORKSPACE_DIR,
};
use crate::archive::Limits;
use crate::secret::Secret;
use crate::task::InputFile;
use crate::tools::{Check, Tool};

/// Where the binary lands before it is checked and renamed to [`BINARY_PATH`], which the
/// container's main process waits for: it never sees a half-written binary.
const INCOMING: &str = "/buildr/incoming";
/// How long the binary may take to arrive: tens of megabytes, which take well under a second
/// on a healthy cluster. A stalled session ends here rather than hanging the run.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How often the inputs' session looks for the binary in place.
const BINARY_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The exit status of the preflight when the image has no `tar`.
const NO_TAR: i32 = 90;

/// What one upload carries into a pod, in one tar stream.
#[derive(Clone, Copy)]
pub struct Payload<'a> {
    /// The executor binary; `false` when a pool's controller put it in already.
    pub binary: bool,
    pub tools: &'a [Tool],
    /// The run's secret; `None` when a pool's controller fills a warm pod, which waits for the
    /// secret of the run that takes it (sent with the inputs, see [`inputs`]).
    pub secret: Option<&'a Secret>,
}

/// Copies the payload in: the executor binary, the task's tools and the run's secret (the
/// secret travels only this way: never in the pod spec). The binary's SHA-256 is checked there
/// (it hashes itself), and everything is moved into place, the binary last: the container's
/// main process starts the executor as soon as both are there. The image is asked at the same time whether it has `tar` and what
/// the tools need, and its answer wins: a copy that cannot land is dropped the moment it says
/// no.
pub async fn binary(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
    binary: &ExecutorBinary,
    payload: Payload<'_>,
) -> Result<(), K8sError> {
    let check = Check::new(payload.tools, &binary.arch);
    let checked = preflight(pods, client, pod, image, &check);
    let mut script = format!(
        "set -e; umask 077; mkdir -p {INCOMING} {BUILDR_DIR}/bin; tar -xf - -C {INCOMING}; \
         if [ -d {INCOMING}/tools ]; then mv {INCOMING}/tools {TOOLS_DIR}; fi; "
    );
    let mut files = Vec::new();
    if payload.binary {
        script += &format!(
            "{INCOMING}/buildr self-check --sha256 {sha256}; ",
            sha256 = binary.sha256
        );
        files.push((
            binary.path.clone(),
            binary.size,
            "buildr".to_string(),
            0o700,
        ));
    }
    if payload.secret.is_some() {
        script += &format!("mv {INCOMING}/secret {SECRET_PATH}; ");
    }
    if payload.binary {
        script += &format!("mv {INCOMING}/buildr {BINARY_PATH}");
    }
    for tool in payload.tools {
        let name = format!("tools/{}", tool.name);
        files.push((tool.source.clone(), tool.size, name, 0o755));
    }
    let secret = payload
        .secret
        .map(|secret| format!("{}\n", secret.to_hex()));
    let copy = exec_with_input(pods, client, pod, sh(script), move |stdin| {
        write_binary_tar(stdin, secret.as_deref(), &files)
    });
    let copy = tokio::time::timeout(COPY_TIMEOUT, copy);
    tokio::pin!(checked, copy);
    // One round trip instead of two: the copy does not wait for the answer. A copy that fails
    // first (no `tar` to read it) still waits for the answer, which says why in better words.
    let copied = tokio::select! {
        answer = &mut checked => {
            answer?;
            copy.await
        }
        copied = &mut copy => {
            checked.await?;
            copied
        }
    };
    match copied {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(copy_failed(pod, source)),
        Err(_) => Err(K8sError::CopyTimeout {
            what: "the executor binary",
            pod: pod.to_string(),
            waited: COPY_TIMEOUT,
        }),
    }
}

/// Asks the image, with nothing to send, whether it has `tar` and what the tools need: a
/// command that exits without reading its stdin can leave a bulk upload stalled behind a
/// session the server keeps open, so it is this answer, not the copy's, that says no.
async fn preflight(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
    tools: &Check,
) -> Result<(), K8sError> {
    let script = format!(
        "command -v tar >/dev/null || exit {NO_TAR}\n{}",
        tools.script()
    );
    match exec_with_input(pods, client, pod, sh(script), Ok).await {
        Ok((stdout, _)) => {
            let place = format!("in the image `{image}`");
            Ok(tools.verdict(&String::from_utf8_lossy(&stdout), &place)?)
        }
        Err(ExecError::Exited { code: NO_TAR, .. }) => Err(K8sError::NoTar {
            image: image.to_string(),
        }),
        Err(source) => Err(copy_failed(pod, source)),
    }
}

fn copy_failed(pod: &str, source: ExecError) -> K8sError {
    K8sError::Copy {
        what: "the executor binary",
        pod: pod.to_string(),
        source,
    }
}

/// `secret` if any, private to its owner, then each of `files`: (source, size, name, mode).
fn write_binary_tar<W: Write>(
    out: W,
    secret: Option<&str>,
    files: &[(std::path::PathBuf, u64, String, u32)],
) -> io::Result<W> {
    let header = |size: u64, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        header
    };
    let mut builder = tar::Builder::new(out);
    if let Some(secret) = secret {
        builder.append_data(
            &mut header(secret.len() as u64, 0o600),
            "secret",
            secret.as_bytes(),
        )?;
    }
    for (source, size, name, mode) in files {
        let mut file = std::fs::File::open(source)?;
        builder.append_data(&mut header(*size, *mode), name, &mut file)?;
    }
    builder.into_inner()
}

/// Streams the inputs as a `.tar.s2` archive into `buildr archive extract` in the pod. Its
/// session opens alongside the binary's copy, to save a round trip: in the pod it waits for the
/// checked binary to be moved into place and then becomes that extractor, so the inputs are
/// read by nothing else. Until then what is sent waits in the session's buffers.
///
/// A warm pod has its binary already: then the run's `secret` goes first in this same
/// stream, one line that the shell's `read` takes (it reads a pipe byte by byte, so the archive
/// after it stays whole), and is moved into place before the extractor starts: one exec
/// session in all, and the secret is never on a command line.
pub async fn inputs(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    inputs: &[InputFile],
    secret: Option<&Secret>,
) -> Result<(), K8sError> {
    let polls = COPY_TIMEOUT.as_millis() / BINARY_POLL.as_millis();
    // The task's world is its own: its links go in as they are (none is written through), and
    // the caps on what a task sends back do not bound the user's own inputs.
    let take_secret = if secret.is_some() {
        format!(
            "IFS= read -r secret; (umask 077; printf '%s\\n' \"$secret\" > {SECRET_PATH}.incoming); \
             mv {SECRET_PATH}.incoming {SECRET_PATH}; unset secret; \
             kill $(cat {SECRET_WAITER} 2>/dev/null) 2>/dev/null; "
        )
    } else {
        String::new()
    };
    let script = format!(
        "i=0; while [ ! -x {BINARY_PATH} ]; do \
           i=$((i+1)); if [ $i -gt {polls} ]; then echo 'no executor binary arrived' >&2; exit 1; fi; \
           sleep {poll}; \
         done; {take_secret}\
         exec {BINARY_PATH} archive extract - --to {WORKSPACE_DIR} --links allow \
           --max-output-bytes {max_bytes} --max-output-entries {max_entries}",
        poll = BINARY_POLL.as_secs_f64(),
        max_bytes = Limits::NONE.max_bytes,
        max_entries = Limits::NONE.max_entries,
    );
    let inputs = inputs.to_vec();
    let secret = secret.map(|secret| format!("{}\n", secret.to_hex()));
    exec_with_input(pods, client, pod, sh(script), move |mut stdin| {
        if let Some(secret) = secret {
            stdin.write_all(secret.as_bytes())?;
        }
        crate::backend::copy::write_inputs(&inputs, stdin)
            .map(|(stdin, _summary)| stdin)
            .map_err(io::Error::other)
    })
    .await
    .map(|_| ())
    .map_err(|source| K8sError::Copy {
        what: "the inputs",
        pod: pod.to_string(),
        source,
    })
}

fn sh(script: String) -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string(), script]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_tar_holds_the_secret_the_executable_and_the_tools() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("bin");
        std::fs::write(&source, b"\x7fELF and the rest").unwrap();
        let files = [
            (source.clone(), 17, "buildr".to_string(), 0o700),
            (source, 17, "tools/jq".to_string(), 0o755),
        ];
        let tar = write_binary_tar(Vec::new(), Some("abc\n"), &files).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    e.size(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("secret".to_string(), 0o600, 4),
                ("buildr".to_string(), 0o700, 17),
                ("tools/jq".to_string(), 0o755, 17)
            ]
        );
    }
}
