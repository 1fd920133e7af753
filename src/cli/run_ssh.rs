//! `buildr run`'s options for the ssh backend, and their resolution against the task into the
//! backend's [`Settings`].

use std::path::PathBuf;

use crate::backend::binary::ExecutorBinary;
use crate::backend::ssh::{Settings, SshError};
use crate::task::Task;

/// `buildr run` options for the ssh backend.
#[derive(Debug, Clone, clap::Args)]
pub struct SshArgs {
    /// The machine to run on (ssh backend): `[user@]host` as ssh takes it, or a Host of your
    /// ssh config (overrides the task's `ssh.host`).
    #[arg(long, value_name = "DEST")]
    pub host: Option<String>,

    /// An argument passed to every `ssh` as it is, before the host (ssh backend; repeatable;
    /// adds to the task's `ssh.options`, and wins over them): `--ssh-option=-p2222`,
    /// `--ssh-option=-Fmy_config`. Unlike a task file's options, any ssh option is taken.
    #[arg(long = "ssh-option", value_name = "ARG", allow_hyphen_values = true)]
    pub options: Vec<String>,
}

impl SshArgs {
    /// The host: `--host`, else the task's `ssh.host`.
    pub fn destination(&self, task: &Task) -> Result<String, SshError> {
        let host = self
            .host
            .clone()
            .or_else(|| task.ssh.host.clone())
            .ok_or(SshError::NoHost)?;
        // ssh would take it for an option.
        if host.starts_with('-') {
            return Err(SshError::BadHost(host));
        }
        Ok(host)
    }

    /// Resolves the options against the task; `binary` is the buildr that will run there.
    pub fn settings(&self, task: &Task, binary: PathBuf, keep: bool) -> Result<Settings, SshError> {
        let destination = self.destination(task)?;
        if let Some(option) = self.options.iter().find(|o| !o.starts_with('-')) {
            return Err(SshError::BadOption(option.clone()));
        }
        let binary = ExecutorBinary::inspect(&binary)?;
        if let Some(warning) = binary.dynamic_warning("on hosts") {
            eprintln!("buildr: warning: {warning}");
        }
        // The command line's first: ssh keeps the first value it is given for a setting, and the
        // user's own word beats the task file's.
        let mut options = self.options.clone();
        options.extend(task.ssh.options.iter().cloned());
        Ok(Settings {
            destination,
            options,
            binary,
            tools: Vec::new(),
            keep,
            sandbox: crate::sandbox::Policy::for_run(task, None),
            known: None,
        })
    }
}
