//! The report of a run, or of a replayed one: what was written, what was left out and why, on
//! stderr; and the exit status.

use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_BUILDR_FAILED, EXIT_INTERRUPTED};
use crate::archive::Quoted;
use crate::client::Outcome;
use crate::printable::Printable;

/// Tells what happened on stderr and picks the exit status.
pub fn report(outcome: &Outcome, out: &Path, deletions_applied: bool) -> ExitCode {
    let result = &outcome.result;
    if let Some(extracted) = &outcome.extracted {
        for link in &extracted.skipped_links {
            eprintln!(
                "buildr: warning: skipped symlink `{}` -> `{}`: it points outside {} \
                 (--allow-external-links brings it back)",
                Quoted(&link.path),
                Quoted(&link.target),
                Quoted(out)
            );
        }
        for warning in extracted.left_alone_warnings() {
            eprintln!("{warning}");
        }
        // What was written, not what the executor claims.
        let changed = extracted.files + extracted.dirs + extracted.symlinks;
        if changed > 0 {
            eprintln!(
                "buildr: {changed} changed path{} written to {}",
                if changed == 1 { "" } else { "s" },
                out.display()
            );
        }
        let deleted = result.deleted_paths.len();
        if deleted > 0 && !deletions_applied {
            eprintln!(
                "buildr: the task deleted {deleted} path{}; not applied (use --apply-deletions)",
                if deleted == 1 { "" } else { "s" }
            );
        }
    }
    if !result.error.is_empty() {
        eprintln!("buildr: {}", Printable(&result.error));
    }
    if outcome.interrupted {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    match u8::try_from(result.exit_code) {
        Ok(code) => ExitCode::from(code),
        Err(_) => ExitCode::from(EXIT_BUILDR_FAILED),
    }
}
