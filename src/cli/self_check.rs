//! `buildr self-check --sha256 HEX`: the binary checks its own bytes. The Kubernetes backend
//! runs it in the pod right after copying the binary in, so that a copy cut short or changed on
//! the way is caught before the binary becomes the executor. Hidden: not for people.

use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct SelfCheckArgs {
    /// The SHA-256 this binary must have (lower-case hex).
    #[arg(long)]
    pub sha256: String,
}

pub fn run(args: SelfCheckArgs) -> anyhow::Result<ExitCode> {
    let me = std::env::current_exe().context("cannot find this binary")?;
    let actual = crate::archive::sha256_file(&me)
        .with_context(|| format!("cannot read {}", me.display()))?;
    if actual != args.sha256 {
        bail!(
            "{} has sha256 {actual}, not {} as sent: the copy was damaged",
            me.display(),
            args.sha256
        );
    }
    Ok(ExitCode::SUCCESS)
}
