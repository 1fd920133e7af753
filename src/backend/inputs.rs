//! Sends a task's inputs to a workspace as a `.tar.s2` stream. The local backend pipes the
//! stream into an extraction on this machine; the Kubernetes and ssh backends pipe the same
//! stream into `buildr archive extract` in the pod or on the host ([`super::upload`]), so every
//! backend prepares a workspace the same way.

use std::io::Write;
use std::path::Path;

use crate::archive::{self, ArchiveError, Extracted, Limits, Source, Summary};
use crate::task::InputFile;

/// Writes the inputs as a `.tar.s2` stream into `out`; the summary holds the digest of the
/// tree it sent ([`Summary::tree`]), read from the bytes that went into the stream.
pub fn write_inputs<W: Write + Send + 'static>(
    inputs: &[InputFile],
    out: W,
) -> Result<(W, Summary), ArchiveError> {
    let mut writer = archive::Writer::new(out).hashing_tree();
    for input in inputs {
        writer.append(&Source {
            source: input.source.clone(),
            name: input.dest.clone(),
        })?;
    }
    writer.finish()
}

/// Streams the inputs into a workspace on this machine through a pipe: one thread writes the
/// archive while this one extracts it, exactly as a pod would. Returns what was extracted and
/// the digest of the tree sent.
pub fn copy_to_dir(
    inputs: &[InputFile],
    workspace: &Path,
) -> Result<(Extracted, Option<[u8; 32]>), ArchiveError> {
    let (reader, writer) = std::io::pipe().map_err(ArchiveError::WriteArchive)?;
    std::thread::scope(|scope| {
        let sender = scope.spawn(move || write_inputs(inputs, writer).map(|(_, sent)| sent.tree));
        let options = archive::ExtractOptions {
            deletions: archive::Deletions::Off,
            // The task's world is its own: its links go in as they are.
            links: archive::LinkPolicy::Allow,
            progress: None,
        };
        let extracted = archive::extract_within(reader, workspace, &options, Limits::NONE);
        let sent = sender
            .join()
            .expect("the archive writer thread does not panic");
        // A failed writer explains a truncated stream better than the reader's error does.
        let tree = sent?;
        Ok((extracted?, tree))
    })
}
