//! What `buildr run` and `buildr archive extract` share about extracting an archive: the flags
//! that bound it and the warnings about what was left out or kept.

use crate::archive::{self, Extracted, Limits};

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

/// A byte count: a number, optionally followed by `B`, `K`/`KB`/`KiB`, `M…`, `G…` or `T…`
/// (all powers of 1024; case and spaces before the unit do not matter).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 20GiB, 500MiB, 1000000)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "unknown unit in `{text}` (use B, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500 MiB"), Ok(500 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("7B"), Ok(7));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
