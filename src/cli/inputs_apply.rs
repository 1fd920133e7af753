//! `buildr inputs-apply`, on a host or in a pod: the workspace built from a snapshot sent by
//! content (see [`crate::snapshot::host`]), or a seeded workspace brought to the run's tree by
//! the difference sent (see [`crate::snapshot::delta`]). Hidden: `buildr run` runs it there.

use std::path::PathBuf;
use std::process::ExitCode;

/// Build the workspace from a snapshot, or a difference, sent into a run directory.
#[derive(Debug, clap::Args)]
pub struct InputsApplyArgs {
    /// The directory holding what was sent: the snapshot's index (or, with --onto, the
    /// difference) and the packs sent (packs/).
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The user's pack cache: the packs not sent are taken from there, the sent ones kept.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The index of the seed the workspace holds: what was sent is the difference from it.
    #[arg(long, conflicts_with = "cache")]
    pub onto: Option<PathBuf>,
    /// The workspace, existing and empty (unless --onto says what it holds).
    #[arg(long)]
    pub to: PathBuf,
}

pub fn run(args: InputsApplyArgs) -> anyhow::Result<ExitCode> {
    let Some(onto) = &args.onto else {
        crate::snapshot::host::apply_sent(&args.snapshot, args.cache.as_deref(), &args.to)?;
        return Ok(ExitCode::SUCCESS);
    };
    match crate::snapshot::delta::apply_sent(&args.snapshot, onto, &args.to) {
        Ok(applied) => {
            tracing::info!(
                "applied the difference: {} files, {} bytes written",
                applied.files,
                applied.bytes
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_other_seed() => {
            // One line for the run's warning; the run then copies the inputs whole.
            eprintln!("{e}");
            Ok(ExitCode::from(crate::snapshot::pull::EXIT_UNREACHABLE))
        }
        Err(e) => Err(e.into()),
    }
}
