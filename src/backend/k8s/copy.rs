//! Into the pod through exec: first the executor binary (a tar stream into the image's own
//! `tar`, as `kubectl cp` does), then the inputs as a `.tar.s2` stream into the copied binary's
//! own safe extractor, so that the inputs are checked on arrival by the same code that checks
//! every archive.

use std::io::{self, Write};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::K8sError;
use super::binary::ExecutorBinary;
use super::exec::{ExecError, exec_with_input};
use super::objects::{BINARY_PATH, BUILDR_DIR, SECRET_PATH, WORKSPACE_DIR};
use crate::secret::Secret;
use crate::task::InputFile;

/// Where the binary lands before it is checked and renamed to [`BINARY_PATH`], which the
/// container's main process waits for: it never sees a half-written binary.
const INCOMING: &str = "/buildr/incoming";
/// How long the binary may take to arrive: tens of megabytes, which take well under a second
/// on a healthy cluster. A stalled session ends here rather than hanging the run.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Copies the executor binary and the run's secret in (the secret travels only this way: never
/// in the pod spec), checks the binary's SHA-256 there (it hashes itself), and moves both into
/// place, the binary last: the container's main process starts it as soon as it appears.
pub async fn binary(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
    binary: &ExecutorBinary,
    secret: &Secret,
) -> Result<(), K8sError> {
    let script = format!(
        "set -e; umask 077; mkdir -p {INCOMING} {BUILDR_DIR}/bin; \
         tar -xf - -C {INCOMING}; \
         {INCOMING}/buildr self-check --sha256 {sha256}; \
         mv {INCOMING}/secret {SECRET_PATH}; \
         mv {INCOMING}/buildr {BINARY_PATH}",
        sha256 = binary.sha256
    );
    let source = binary.path.clone();
    let size = binary.size;
    let secret = format!("{}\n", secret.to_hex());
    // Asked first, with nothing to send: a command that exits without reading its stdin can
    // leave a bulk upload stalled behind a session the server keeps open.
    let has_tar = exec_with_input(pods, client, pod, sh("command -v tar".to_string()), Ok).await;
    match has_tar {
        Ok(_) => {}
        Err(ExecError::Exited { .. }) => {
            return Err(K8sError::NoTar {
                image: image.to_string(),
            });
        }
        Err(source) => return Err(copy_failed(pod, source)),
    }
    let copy = exec_with_input(pods, client, pod, sh(script), move |stdin| {
        write_binary_tar(stdin, &source, size, &secret)
    });
    match tokio::time::timeout(COPY_TIMEOUT, copy).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(copy_failed(pod, source)),
        Err(_) => Err(K8sError::CopyTimeout {
            what: "the executor binary",
            pod: pod.to_string(),
            waited: COPY_TIMEOUT,
        }),
    }
}

fn copy_failed(pod: &str, source: ExecError) -> K8sError {
    K8sError::Copy {
        what: "the executor binary",
        pod: pod.to_string(),
        source,
    }
}

/// Two entries, private to their owner: `secret`, and `buildr`, executable.
fn write_binary_tar<W: Write>(
    out: W,
    source: &std::path::Path,
    size: u64,
    secret: &str,
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
    builder.append_data(
        &mut header(secret.len() as u64, 0o600),
        "secret",
        secret.as_bytes(),
    )?;
    let mut file = std::fs::File::open(source)?;
    builder.append_data(&mut header(size, 0o700), "buildr", &mut file)?;
    builder.into_inner()
}

/// Streams the inputs as a `.tar.s2` archive into `buildr archive extract` in the pod.
pub async fn inputs(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    inputs: &[InputFile],
) -> Result<(), K8sError> {
    let command = vec![
        BINARY_PATH.to_string(),
        "archive".to_string(),
        "extract".to_string(),
        "-".to_string(),
        "--to".to_string(),
        WORKSPACE_DIR.to_string(),
        // The task's world is its own: its links go in as they are (none is written through).
        "--links".to_string(),
        "allow".to_string(),
    ];
    let inputs = inputs.to_vec();
    exec_with_input(pods, client, pod, command, move |stdin| {
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
    fn the_binary_tar_holds_the_secret_and_the_executable_both_private() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("bin");
        std::fs::write(&source, b"\x7fELF and the rest").unwrap();
        let tar = write_binary_tar(Vec::new(), &source, 17, "abc\n").unwrap();
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
                ("buildr".to_string(), 0o700, 17)
            ]
        );
    }
}
