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
use super::objects::{BINARY_PATH, BUILDR_DIR, WORKSPACE_DIR};
use crate::task::InputFile;

/// Where the binary lands before it is checked and renamed to [`BINARY_PATH`], which the
/// container's main process waits for: it never sees a half-written binary.
const INCOMING: &str = "/buildr/incoming";
/// The exit status of `sh` for a command it cannot find.
const COMMAND_NOT_FOUND: i32 = 127;

/// Copies the executor binary in, checks its SHA-256 there (the binary hashes itself), and
/// moves it into place.
pub async fn binary(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
    binary: &ExecutorBinary,
) -> Result<(), K8sError> {
    let script = format!(
        "set -e; umask 077; mkdir -p {INCOMING} {BUILDR_DIR}/bin; \
         tar -xf - -C {INCOMING}; \
         {INCOMING}/buildr self-check --sha256 {sha256}; \
         mv {INCOMING}/buildr {BINARY_PATH}",
        sha256 = binary.sha256
    );
    let source = binary.path.clone();
    let size = binary.size;
    let copied = exec_with_input(pods, client, pod, sh(script), move |stdin| {
        write_binary_tar(stdin, &source, size)
    })
    .await;
    match copied {
        Ok(_) => Ok(()),
        Err(ExecError::Exited { code, stderr })
            if code == COMMAND_NOT_FOUND && stderr.contains("tar") =>
        {
            Err(K8sError::NoTar {
                image: image.to_string(),
            })
        }
        Err(source) => Err(K8sError::Copy {
            what: "the executor binary",
            pod: pod.to_string(),
            source,
        }),
    }
}

/// One entry, `buildr`, executable by its owner only.
fn write_binary_tar<W: Write>(out: W, source: &std::path::Path, size: u64) -> io::Result<W> {
    let mut file = std::fs::File::open(source)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o700);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    let mut builder = tar::Builder::new(out);
    builder.append_data(&mut header, "buildr", &mut file)?;
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
    fn the_binary_tar_holds_one_private_executable() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("bin");
        std::fs::write(&source, b"\x7fELF and the rest").unwrap();
        let tar = write_binary_tar(Vec::new(), &source, 17).unwrap();
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
        assert_eq!(entries, [("buildr".to_string(), 0o700, 17)]);
    }
}
