//! `buildr inputs-apply`, on a host: the workspace built from a snapshot sent by content (see
//! [`crate::snapshot::host`]). Hidden: `buildr run` runs it there.

use std::path::PathBuf;
use std::process::ExitCode;

/// Build the workspace from a snapshot sent into a run directory.
#[derive(Debug, clap::Args)]
pub struct InputsApplyArgs {
    /// The directory holding the snapshot's index and the packs sent (packs/).
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The user's pack cache: the packs not sent are taken from there, the sent ones kept.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The workspace, existing and empty.
    #[arg(long)]
    pub to: PathBuf,
}

pub fn run(args: InputsApplyArgs) -> anyhow::Result<ExitCode> {
    crate::snapshot::host::apply_sent(&args.snapshot, args.cache.as_deref(), &args.to)?;
    Ok(ExitCode::SUCCESS)
}
