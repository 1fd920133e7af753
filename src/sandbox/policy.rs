//! What the task may touch: the mode (`auto`, `none`, `strict`), the paths it may also write or
//! read, what it must not see, and whether it reaches the network. Parsed from the task file
//! and `--sandbox` on the client, carried to the executor on its command line, applied there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::task::{Egress, Task};

/// How hard the executor confines the task (`sandbox = "..."`, `--sandbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every mechanism this machine allows; refused only where none works.
    #[default]
    Auto,
    /// Unconfined: the task runs as the user, as before the sandbox existed.
    None,
    /// Every layer of the policy enforced, or the run fails naming the missing one.
    Strict,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::None => "none",
            Self::Strict => "strict",
        }
    }
}

/// The task's own part of the policy, as its file and the command line say (see
/// [`crate::task::Task::sandbox`]); part of the cache key, since it can change what a task
/// produces.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TaskSandbox {
    pub mode: Mode,
    /// Also writable: paths as written, `~/` meaning the executor's home.
    pub writable: Vec<String>,
    /// Also readable, even where the policy hides (a file under `~/.ssh`, say).
    pub readable: Vec<String>,
}

impl TaskSandbox {
    /// True for the policy every task has unless it says otherwise.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Whether the task reaches the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Net {
    /// As the machine allows (as Bazel's default, so that `cargo fetch` works).
    #[default]
    Default,
    /// A private loopback only (`egress = "none"`).
    None,
}

/// The whole policy the executor applies: the task's part, plus what only the side that starts
/// the executor knows (the repository to hide, the egress).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub task: TaskSandbox,
    /// Hidden from the task, besides the credentials under the home directory: the repository
    /// outside what was copied in, the executor's own state and secret.
    pub hide: Vec<PathBuf>,
    pub net: Net,
}

/// The credentials under the home directory a task never reads.
pub const CREDENTIALS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".netrc",
    ".git-credentials",
];

impl Policy {
    /// No confinement: what an executor started without `--sandbox` applies (a pod's, where
    /// the pod is the boundary).
    pub fn unconfined() -> Self {
        Self {
            task: TaskSandbox {
                mode: Mode::None,
                ..TaskSandbox::default()
            },
            ..Self::default()
        }
    }

    /// The policy of a run of `task` from `repo` (hidden from the task; `None` on another
    /// machine than the repository's). `egress = "none"` in the task's `container` block gives
    /// a private loopback here too.
    pub fn for_run(task: &Task, repo: Option<&Path>) -> Self {
        Self {
            task: task.sandbox.clone(),
            hide: repo
                .and_then(|r| r.canonicalize().ok())
                .into_iter()
                .collect(),
            net: match task.container.egress {
                Some(Egress::None) => Net::None,
                _ => Net::Default,
            },
        }
    }

    /// The executor's flags for this policy (read back by `buildr executor`'s arguments).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--sandbox".into(), self.task.mode.name().into()];
        if self.task.mode == Mode::None {
            return args;
        }
        for path in &self.task.writable {
            args.extend(["--sandbox-writable".into(), path.into()]);
        }
        for path in &self.task.readable {
            args.extend(["--sandbox-readable".into(), path.into()]);
        }
        for path in &self.hide {
            args.extend(["--sandbox-hide".into(), path.into()]);
        }
        if self.net == Net::None {
            args.extend(["--sandbox-net".into(), "none".into()]);
        }
        args
    }
}

/// `path` with a leading `~/` (or a lone `~`) under `home`; relative paths are refused by the
/// task file, so anything else is taken as is.
pub fn expand_home(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') => home.join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_carry_every_part_and_none_carries_nothing_else() {
        let policy = Policy {
            task: TaskSandbox {
                mode: Mode::Strict,
                writable: vec!["~/.cache/go-build".into()],
                readable: vec!["/opt/sdk".into()],
            },
            hide: vec!["/home/me/repo".into()],
            net: Net::None,
        };
        let line: Vec<_> = policy
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            line.join(" "),
            "--sandbox strict --sandbox-writable ~/.cache/go-build --sandbox-readable /opt/sdk \
             --sandbox-hide /home/me/repo --sandbox-net none"
        );
        let none = Policy {
            task: TaskSandbox {
                mode: Mode::None,
                ..policy.task.clone()
            },
            ..policy
        };
        assert_eq!(
            none.args(),
            vec![OsString::from("--sandbox"), "none".into()]
        );
    }

    #[test]
    fn a_tilde_means_the_home_directory_and_nothing_else_is_touched() {
        let home = Some(Path::new("/home/me"));
        assert_eq!(
            expand_home("~/.cache/x", home),
            Path::new("/home/me/.cache/x")
        );
        assert_eq!(expand_home("~", home), Path::new("/home/me"));
        assert_eq!(expand_home("~other/x", home), Path::new("~other/x"));
        assert_eq!(expand_home("/opt/x", home), Path::new("/opt/x"));
        assert_eq!(expand_home("~/x", None), Path::new("~/x"));
    }
}
