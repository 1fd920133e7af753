//! `buildr inputs push`: the repository's input tree (or a task's) as a snapshot in the team's
//! registry, by content: only the packs the registry lacks are sent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::task::{InputMapping, TaskSet, collect_inputs};

/// Input snapshots in an OCI registry.
#[derive(Debug, clap::Subcommand)]
pub enum InputsCommand {
    /// Push the input tree as a content-addressed snapshot: only what the registry does not
    /// hold travels. Prints the snapshot's pinned reference.
    Push(PushArgs),
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The task whose inputs to push; without one, the whole repository (as `buildr run --`
    /// sends it).
    pub task: Option<String>,

    /// The repository.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,

    /// Where snapshots go: REGISTRY/REPOSITORY (plain HTTP only for a loopback registry or one
    /// in BUILDR_INSECURE_REGISTRIES).
    #[arg(
        long,
        env = "BUILDR_INPUTS_REGISTRY",
        value_name = "REGISTRY/REPOSITORY"
    )]
    pub inputs_registry: String,

    /// The tag to give the snapshot (e.g. `main`); by default one made from its content.
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
}

pub async fn run(command: InputsCommand) -> anyhow::Result<ExitCode> {
    let InputsCommand::Push(args) = command;
    let mappings: Vec<InputMapping> = match &args.task {
        Some(name) => {
            let tasks = TaskSet::load(&args.repo)
                .with_context(|| format!("cannot load the tasks of {}", args.repo.display()))?;
            tasks.get(name)?.inputs.clone()
        }
        None => Vec::new(),
    };
    let inputs = collect_inputs(&args.repo, &mappings)?;
    let records = crate::snapshot::known::Records::of(&args.repo);
    let pushed = crate::snapshot::push::push_recorded(
        &args.inputs_registry,
        args.tag.as_deref(),
        &inputs,
        records.as_ref(),
    )
    .await?;
    eprintln!(
        "buildr: {} entries in {} packs; pushed {} ({}) in {:.1}s, tagged {}",
        pushed.entries,
        pushed.packs,
        pushed.packs_pushed,
        crate::tools::human_size(pushed.bytes_pushed),
        pushed.seconds,
        pushed.tag,
    );
    println!("{}", pushed.reference);
    Ok(ExitCode::SUCCESS)
}
