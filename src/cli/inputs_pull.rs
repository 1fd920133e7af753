//! `buildr inputs-pull`, in a pod: the workspace built from a snapshot in the registry (see
//! [`crate::snapshot::pull`]). Hidden: `buildr run` runs it there.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

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
    /// The workspace: existing, and empty unless --onto says what it holds.
    #[arg(long)]
    pub to: PathBuf,
    /// The index of the seed snapshot the workspace holds: only the difference is pulled.
    #[arg(long)]
    pub onto: Option<PathBuf>,
    /// Keep the pulled snapshot's index in this file (a warm pod's seed).
    #[arg(long)]
    pub keep_index: Option<PathBuf>,
    /// Read the registry's credentials from the first line of stdin (JSON, as `buildr run`
    /// sends them) instead of Docker's config.
    #[arg(long)]
    pub credentials_stdin: bool,
}

pub async fn run(args: InputsPullArgs) -> anyhow::Result<ExitCode> {
    let mut credentials = None;
    if args.credentials_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the registry's credentials from stdin")?;
        let read = serde_json::from_str(&line).context("the registry's credentials are damaged")?;
        credentials = Some(read);
    }
    let to = crate::snapshot::pull::PullTo {
        workspace: &args.to,
        packs: &args.packs,
        onto: args.onto.as_deref(),
        keep_index: args.keep_index.as_deref(),
    };
    let pulled = crate::snapshot::pull(&args.snapshot, credentials, to);
    match pulled.await {
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
            // One line for the run's warning: what failed, and the deepest cause (the client's
            // own chain repeats the URL at every level).
            let said = e.to_string();
            let error = anyhow::Error::from(e);
            match error.chain().count() {
                1 => eprintln!("{said}"),
                _ => {
                    let failed = said.split(": ").next().unwrap_or_default();
                    eprintln!("{failed}: {}", error.root_cause());
                }
            }
            Ok(ExitCode::from(crate::snapshot::pull::EXIT_UNREACHABLE))
        }
        Err(e) => Err(e.into()),
    }
}
