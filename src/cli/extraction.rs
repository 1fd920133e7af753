//! What `buildr run` and `buildr archive extract` share about extracting an archive: the flags
//! that bound it and the warnings about what was left out or kept.

use crate::archive::{self, Extracted, Limits};
use crate::size::parse_size;

/// The most an archive may bring back; past either, nothing is extracted.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// The most file data an archive may bring back (e.g. `500MiB`, `20GiB`, `1000000`).
    #[arg(long, default_value = "20GiB", value_parser = parse_size)]
    pub max_output_bytes: u64,

    /// The most entries an archive may bring back, its deletions and the directories it
    /// creates included.
    #[arg(long, default_value_t = archive::DEFAULT_MAX_ENTRIES)]
    pub max_output_entries: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_output_bytes,
            max_entries: self.max_output_entries,
        }
    }
}

/// One warning line about the paths under or linking into `.git` that were left out, and one
/// about the paths deletions kept, for each that happened.
pub fn left_alone_warnings(extracted: &Extracted) -> Vec<String> {
    let git = &extracted.git_left_out;
    let kept = &extracted.kept;
    let git = (git.count > 0).then(|| git.to_string());
    let kept = (kept.count > 0).then(|| kept.to_string());
    git.into_iter()
        .chain(kept)
        .map(|warning| format!("buildr: warning: {warning}"))
        .collect()
}
