//! What `buildr run` and `buildr archive extract` share about extracting an archive: the flags
//! that bound it.

use crate::archive::{self, Limits};
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
