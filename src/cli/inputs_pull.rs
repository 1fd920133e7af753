//! `buildr inputs-pull`, in a pod: the workspace built from a snapshot in the registry (see
//! [`crate::snapshot::pull`]). Hidden: `buildr run` runs it there.

use std::path::PathBuf;
use std::process::ExitCode;

/// The exit status that says the registry could not be reached or asked from here: the run
/// then copies the inputs whole. Any other failure stops the run.
pub const EXIT_UNREACHABLE: u8 = 75;

/// Build the workspace from a snapshot in the registry (credentials as Docker keeps them, in
/// `$DOCKER_CONFIG`; plain HTTP for the registries in `BUILDR_INSECURE_REGISTRIES`).
#[derive(Debug, clap::Args)]
pub struct InputsPullArgs {
    /// The snapshot, pinned: REGISTRY/REPOSITORY@sha256:DIGEST.
    #[arg(long)]
    pub snapshot: String,
    /// Where the packs are kept until they are applied (created, then removed).
    #[arg(long)]
    pub packs: PathBuf,
    /// The workspace, existing and empty.
    #[arg(long)]
    pub to: PathBuf,
}

pub async fn run(args: InputsPullArgs) -> anyhow::Result<ExitCode> {
    match crate::snapshot::pull(&args.snapshot, &args.packs, &args.to).await {
        Ok(applied) => {
            tracing::info!(
                "pulled {} files, {} bytes from {}",
                applied.files,
                applied.bytes,
                args.snapshot
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_unreachable() => {
            eprintln!("{:#}", anyhow::Error::from(e));
            Ok(ExitCode::from(EXIT_UNREACHABLE))
        }
        Err(e) => Err(e.into()),
    }
}
