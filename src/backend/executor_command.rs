//! The executor's command line and environment, built once for every backend: the local one
//! spawns it as a child, a pod's main process and an ssh host's shell run it as a shell line.
//! Whatever the backend, the executor gets the same flags and the task finds its tools first in
//! the PATH it inherits from the executor.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use crate::executor::ListenAddr;
use crate::sandbox::Policy;

/// How long an executor on another machine (an ssh host, a pod) stays after its task when no
/// client comes back for the result; then it exits and removes what it ran in.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How to start `buildr executor` for one run.
#[derive(Debug, Clone)]
pub struct ExecutorCommand {
    /// The `buildr` binary that serves as the executor.
    pub binary: PathBuf,
    pub listen: ListenAddr,
    /// The executor's private state: event log and archive.
    pub state_dir: PathBuf,
    pub workspace: PathBuf,
    /// The run's secret, which every call must carry.
    pub secret_file: PathBuf,
    /// The task's tools, put first in the PATH the task inherits.
    pub tools_dir: PathBuf,
    /// The executor exits when no client called for this long while no task ran.
    pub idle_timeout: Option<Duration>,
    /// Environment variables with this prefix reach the task without it.
    pub env_prefix: Option<String>,
    /// What confines the task; `None` leaves the executor's default (unconfined: a pod is the
    /// boundary there).
    pub sandbox: Option<Policy>,
}

impl ExecutorCommand {
    /// The arguments after the binary.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "executor".into(),
            "--listen".into(),
            self.listen.to_string().into(),
            "--state-dir".into(),
            self.state_dir.clone().into(),
            "--workspace".into(),
            self.workspace.clone().into(),
            "--secret-file".into(),
            self.secret_file.clone().into(),
        ];
        if let Some(idle) = self.idle_timeout {
            args.extend([
                "--idle-timeout".into(),
                format!("{}s", idle.as_secs()).into(),
            ]);
        }
        if let Some(prefix) = &self.env_prefix {
            args.extend(["--env-prefix".into(), prefix.into()]);
        }
        if let Some(sandbox) = &self.sandbox {
            args.extend(sandbox.args());
        }
        args
    }

    /// The executor's PATH on this machine, given the PATH it would inherit: the tools first.
    pub fn path(&self, inherited: &OsStr) -> OsString {
        std::env::join_paths(
            std::iter::once(self.tools_dir.clone()).chain(std::env::split_paths(inherited)),
        )
        .unwrap_or_else(|_| inherited.to_os_string())
    }

    /// The command as one line for `sh` on the executor's machine, PATH included (the shell's
    /// own PATH there, with the tools first); `exec` makes the executor replace the shell.
    pub fn shell(&self, exec: bool) -> String {
        let words: Vec<String> = std::iter::once(self.binary.clone().into_os_string())
            .chain(self.args())
            .map(|word| quote(&word.to_string_lossy()))
            .collect();
        format!(
            "export PATH={}:\"$PATH\"; {}{}",
            quote(&self.tools_dir.to_string_lossy()),
            if exec { "exec " } else { "" },
            words.join(" ")
        )
    }
}

/// `word` as `sh` reads it back, quoted only when it needs to be.
pub fn quote(word: &str) -> String {
    shlex::try_quote(word)
        .expect("paths and flags hold no NUL byte")
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> ExecutorCommand {
        ExecutorCommand {
            binary: "/buildr/bin/buildr".into(),
            listen: "127.0.0.1:7070".parse().unwrap(),
            state_dir: "/buildr/state".into(),
            workspace: "/workspace".into(),
            secret_file: "/buildr/secret".into(),
            tools_dir: "/buildr/tools".into(),
            idle_timeout: Some(Duration::from_secs(300)),
            env_prefix: Some("BUILDR_TASK_ENV_".into()),
            sandbox: None,
        }
    }

    #[test]
    fn the_shell_line_puts_the_tools_first_and_execs_the_executor() {
        assert_eq!(
            command().shell(true),
            "export PATH=/buildr/tools:\"$PATH\"; exec /buildr/bin/buildr executor \
             --listen 127.0.0.1:7070 --state-dir /buildr/state --workspace /workspace \
             --secret-file /buildr/secret --idle-timeout 300s --env-prefix BUILDR_TASK_ENV_"
        );
    }

    #[test]
    fn the_sandbox_policy_reaches_the_executor_as_flags() {
        let mut command = command();
        command.sandbox = Some(Policy {
            task: crate::sandbox::TaskSandbox {
                writable: vec!["~/.cache/go build".into()],
                ..Default::default()
            },
            ..Policy::default()
        });
        assert!(
            command
                .shell(true)
                .ends_with(" --sandbox auto --sandbox-writable '~/.cache/go build'"),
            "{}",
            command.shell(true)
        );
    }

    #[test]
    fn paths_with_spaces_are_quoted_for_the_shell() {
        let mut command = command();
        command.workspace = "/tmp/my dir/workspace".into();
        command.tools_dir = "/tmp/my dir/tools".into();
        let line = command.shell(false);
        assert!(
            line.starts_with("export PATH='/tmp/my dir/tools':\"$PATH\"; /buildr/bin/buildr"),
            "{line}"
        );
        assert!(
            line.contains("--workspace '/tmp/my dir/workspace'"),
            "{line}"
        );
    }

    #[test]
    fn the_local_path_starts_with_the_tools() {
        let path = command().path(OsStr::new("/usr/bin:/bin"));
        assert_eq!(path, "/buildr/tools:/usr/bin:/bin");
    }
}
