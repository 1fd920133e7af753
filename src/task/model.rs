//! The task model: what a task file describes, and where in it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shell that runs a `script` when the task names none.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The name of the task made by [`Task::ad_hoc`].
pub const AD_HOC_NAME: &str = "ad-hoc";

/// One build step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub name: String,
    pub description: String,
    pub run: Run,
    pub env: BTreeMap<String, String>,
    /// Relative to the workspace root; `.` for the root itself.
    pub workdir: String,
    pub timeout: Option<Duration>,
    /// Empty: the whole repository is the input.
    pub inputs: Vec<InputMapping>,
    /// Glob filters on the modified paths brought back; empty: all of them.
    pub outputs: Vec<String>,
    /// Programs sent along, as written: a bare name (looked up in PATH on this machine) or a
    /// path relative to the repository (see [`crate::tools`]).
    pub tools: Vec<String>,
    pub container: Container,
    pub ssh: SshHost,
    pub cache: CacheSettings,
    /// `inputs_registry = "REGISTRY/REPOSITORY"`: where the k8s backend sends the inputs by
    /// content, for the pod to pull (see [`crate::snapshot`]).
    pub inputs_registry: Option<String>,
    /// `sandbox`, `writable` and `readable`: what confines the task on the local and ssh
    /// backends (see [`crate::sandbox`]).
    pub sandbox: crate::sandbox::TaskSandbox,
    pub defined_at: Location,
}

/// Whether a task's results are cached, and what else goes into its key (see [`crate::cache`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSettings {
    /// `cache = true`: replay a stored result when the key matches.
    pub enabled: bool,
    /// `cache_key = [...]`: strings added to the key, for what buildr cannot see.
    pub key: Vec<String>,
    /// `cache_failures = true`: store runs that did not exit 0 too.
    pub failures: bool,
    /// `cache_registry = "REGISTRY/REPOSITORY"`: the shared cache (see [`crate::cache::oci`]).
    pub registry: Option<String>,
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// An argv list, run without a shell.
    Command(Vec<String>),
    /// A script, appended as the last argument of `shell`.
    Script { shell: Vec<String>, script: String },
}

impl Task {
    /// The full command line: `Command` as is; `Script` as `shell + [script]`.
    pub fn argv(&self) -> Vec<String> {
        match &self.run {
            Run::Command(argv) => argv.clone(),
            Run::Script { shell, script } => {
                let mut argv = shell.clone();
                argv.push(script.clone());
                argv
            }
        }
    }

    /// The task behind `buildr run -- CMD ARGS`: named `ad-hoc`, the whole repository as input,
    /// everything else at its default.
    pub fn ad_hoc(argv: Vec<String>) -> Task {
        Task {
            name: AD_HOC_NAME.to_string(),
            description: String::new(),
            run: Run::Command(argv),
            env: BTreeMap::new(),
            workdir: ".".to_string(),
            timeout: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            tools: Vec::new(),
            container: Container::default(),
            ssh: SshHost::default(),
            cache: CacheSettings::default(),
            inputs_registry: None,
            sandbox: crate::sandbox::TaskSandbox::default(),
            defined_at: Location::command_line(),
        }
    }
}

/// The task's `ssh` block: where the ssh backend runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshHost {
    /// `[user@]host`, or a `Host` of the user's ssh config.
    pub host: Option<String>,
    /// Passed to ssh as they are, before the host; each starts with `-`.
    pub options: Vec<String>,
}

/// A repository path sent to a workspace path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMapping {
    /// Relative to the repository root; `.` is the whole repository.
    pub from: PathBuf,
    /// Relative to the workspace root; `.` is the workspace root.
    pub to: PathBuf,
}

/// Container settings, read by the Kubernetes backend. Quantities are Kubernetes quantity
/// strings, checked on load and passed to Kubernetes as written. Unset bounds take the
/// backend's defaults (see `crate::backend::k8s::objects`).
///
/// A `BuildrPool`'s pod template is this same type (`crate::backend::k8s::pool::resource`), with
/// the task file's names and durations written as in a task file (`"10m"`).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct Container {
    pub image: Option<String>,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    /// Local disk the container is scheduled for and may use in all (its writable layer, its
    /// logs and both emptyDirs); past the limit the kubelet evicts the pod.
    pub ephemeral_storage_request: Option<String>,
    pub ephemeral_storage_limit: Option<String>,
    /// The `sizeLimit` of the workspace's emptyDir.
    pub workspace_size_limit: Option<String>,
    /// The pod's `activeDeadlineSeconds`: how long it may live, whatever becomes of its client.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub active_deadline: Option<Duration>,
    /// Node labels the pod must be scheduled on (on top of the binary's OS and architecture).
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// The pod's service account; its token is never mounted.
    pub service_account: Option<String>,
    /// Names of Secrets in the pod's namespace to pull the image with.
    pub image_pull_secrets: Vec<String>,
    /// Extra labels and annotations on the pod (buildr's own labels win).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Secrets and ConfigMaps whose keys become the task's environment variables. By reference:
    /// the values are never in the pod spec, on the console or in the logs.
    pub env_from_secrets: Vec<String>,
    pub env_from_config_maps: Vec<String>,
    /// What the pod may reach; ingress is always denied.
    pub egress: Option<Egress>,
    /// How long the pod may take to start (scheduling, image pull, container start).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub start_timeout: Option<Duration>,
    /// The numeric user the pod runs as (never root).
    pub run_as_user: Option<i64>,
    /// The `BuildrPool` whose warm pods the task runs in (a task file's `pool`; never part of a
    /// pool's own template).
    #[serde(skip)]
    #[schemars(skip)]
    pub pool: Option<String>,
}

/// A Kubernetes toleration; absent fields take Kubernetes' defaults.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Toleration {
    pub key: Option<String>,
    /// `Equal` or `Exists`.
    pub operator: Option<String>,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: Option<String>,
    pub toleration_seconds: Option<i64>,
}

/// What a build pod may reach on the network.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Egress {
    /// Nothing at all.
    None,
    /// Only DNS (port 53, UDP and TCP).
    Dns,
    /// Anything but link-local addresses (169.254.0.0/16 and fe80::/10), where the cloud
    /// metadata service hands out the node's credentials (the default: a build downloads its
    /// dependencies as it would on the developer's machine).
    #[default]
    NoLinkLocal,
    /// Anything, link-local addresses included.
    All,
}

/// A place in a task file. Line and column are one-based; the column counts characters.
/// Displayed as `file:line:col`, or just `file` when `line` is 0 (a task not from a file).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of a task given on the command line.
    pub fn command_line() -> Location {
        Location {
            file: PathBuf::from("<command line>"),
            line: 0,
            column: 0,
        }
    }

    /// The location of byte `offset` in `source`, read from `file`.
    pub fn from_offset(file: &Path, source: &str, offset: usize) -> Location {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: file.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters() {
        let source = "ab\nçd = 1\n";
        let at = Location::from_offset(Path::new("f.hcl"), source, 6);
        assert_eq!(at.to_string(), "f.hcl:2:3");
        let at = Location::from_offset(Path::new("f.hcl"), source, 0);
        assert_eq!(at.to_string(), "f.hcl:1:1");
    }

    #[test]
    fn argv_appends_the_script_to_the_shell() {
        let mut task = Task::ad_hoc(vec!["make".into(), "-j4".into()]);
        assert_eq!(task.argv(), ["make", "-j4"]);
        assert_eq!(task.name, "ad-hoc");
        assert!(task.inputs.is_empty());
        task.run = Run::Script {
            shell: vec!["/bin/sh".into(), "-c".into()],
            script: "echo hi".into(),
        };
        assert_eq!(task.argv(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(task.defined_at.to_string(), "<command line>");
    }
}
