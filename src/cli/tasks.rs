//! `buildr tasks`: lists the repository's tasks with their descriptions.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::task::TaskSet;

/// List the tasks defined in the repository's .buildr/*.hcl files.
#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    /// The repository whose .buildr/ directory holds the task files.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
}

pub fn run(args: TasksArgs) -> anyhow::Result<ExitCode> {
    let tasks = TaskSet::load(&args.repo)
        .with_context(|| format!("cannot load the tasks of {}", args.repo.display()))?;
    if tasks.is_empty() {
        eprintln!(
            "no tasks in {}; define them in .buildr/*.hcl",
            args.repo.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = tasks.names().map(str::len).max().unwrap_or(0);
    for task in tasks.iter() {
        println!("{:width$}  {}", task.name, task.description);
    }
    Ok(ExitCode::SUCCESS)
}
