//! `buildr sandbox check`: what confines a task on this machine, and why not where it cannot.

use std::process::ExitCode;

use crate::sandbox::{Confinement, Mode, Places, Policy, Support, TaskSandbox};

/// The task's sandbox on this machine (local backend; on an ssh host, run it there).
#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Try each mechanism in a child process and print what works here and why not, then what
    /// `sandbox = "auto"` and `"strict"` would do. Exits 1 when `auto` would refuse to run.
    Check,
}

pub fn run(command: SandboxCommand) -> anyhow::Result<ExitCode> {
    match command {
        SandboxCommand::Check => check(),
    }
}

/// What each mechanism gives the task, for the table.
const GIVES: [(&str, &str); 3] = [
    (
        "namespaces",
        "user+mount: credentials and the repository covered by empty mounts; net: a private \
         loopback under egress = \"none\"",
    ),
    (
        "landlock",
        "writes only to the workspace, TMPDIR and `writable`; reads all but the hidden; no \
         tracing, nor (abi 6+) signals, outside the task",
    ),
    (
        "seccomp",
        "no mount, keyrings, bpf or modules (nor ptrace without Landlock); no inet sockets \
         under egress = \"none\" without a network namespace",
    ),
];

fn check() -> anyhow::Result<ExitCode> {
    let support = Support::probe(true);
    let states = [
        support.namespaces.clone().map(|()| "yes".to_string()),
        support.landlock.clone().map(|abi| format!("abi {abi}")),
        support.seccomp.clone().map(|()| "yes".to_string()),
    ];
    println!(
        "{:<11} {:<7} WHAT IT GIVES THE TASK, OR WHY NOT",
        "MECHANISM", "HERE"
    );
    for ((name, gives), state) in GIVES.iter().zip(states) {
        match state {
            Ok(here) => println!("{name:<11} {here:<7} {gives}"),
            Err(why) => println!("{name:<11} {:<7} {why}", "no"),
        }
    }
    let workspace = tempfile::tempdir()?;
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let places = Places {
        workspace: workspace.path(),
        tmpdir: workspace.path(),
        home: home.as_deref(),
    };
    let mut runs = true;
    for mode in [Mode::Auto, Mode::Strict] {
        let policy = Policy {
            task: TaskSandbox {
                mode,
                ..TaskSandbox::default()
            },
            ..Policy::default()
        };
        let verdict = match Confinement::prepare(&policy, &support, &places) {
            Ok(Some(confinement)) => confinement.summary,
            Ok(None) => unreachable!("only `none` confines nothing"),
            Err(refused) => {
                runs &= mode != Mode::Auto;
                format!("refused: {refused}")
            }
        };
        println!("sandbox = \"{}\": {verdict}", mode.name());
    }
    Ok(if runs {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
