//! Tasks: the build steps buildr runs, their loader and their inputs.
//!
//! Tasks are defined in HCL files, `*.hcl` directly under `<repo>/.buildr/`. All of them are
//! read, in order of file name; a task name defined twice (in one file or in two) is an error
//! naming both places. A repository without `.buildr/` simply has no tasks.
//!
//! ```hcl
//! task "hello" {
//!   description = "Greets and writes out/hello.txt"
//!
//!   # Exactly one of `command` (an argv list, run as is, no shell) or `script` (a string,
//!   # run by `shell`).
//!   script  = <<-EOT
//!     echo "hello from $GREETING"
//!     mkdir -p out && echo hi > out/hello.txt
//!   EOT
//!   shell   = ["/bin/sh", "-eu", "-c"]  # default ["/bin/sh", "-c"]; the script is the last arg
//!   # command = ["make", "-j4"]
//!
//!   env     = { GREETING = "buildr" }  # string values only
//!   workdir = "."                      # relative to the workspace root; default "."
//!   timeout = "10m"                    # a humantime duration ("90s", "1h 30m"); default none
//!
//!   # Inputs: repository path (the label) -> workspace path (`to`). Repeatable. A file or a
//!   # directory. Without any `input` block the whole repository is the input.
//!   input "src" { to = "src" }
//!
//!   # Glob filters (globset syntax) on the modified paths brought back; default: all of them.
//!   outputs = ["out/**"]
//!
//!   # Programs the image may lack, sent along into a directory that comes first in PATH: a
//!   # bare name is looked up in this machine's PATH, a path is relative to the repository.
//!   tools = ["jq", "./bin/mylint"]
//!
//!   # What confines the task on the local and ssh backends (see `crate::sandbox`; ignored in
//!   # pods): "auto" (default: what the machine allows), "none" (unconfined) or "strict"
//!   # (every layer, or the run fails). `writable` and `readable` add paths, absolute or `~/`
//!   # (the home of the machine the task runs on).
//!   sandbox  = "auto"
//!   writable = ["~/.cache/go-build"]
//!   readable = ["~/.ssh/known_hosts"]
//!
//!   # The action cache (see `crate::cache`): replay the stored result of a run with the same
//!   # key instead of running again. Off by default.
//!   cache          = true
//!   cache_key      = ["gcc-13"]   # strings added to the key, for what buildr cannot see
//!   cache_failures = false        # also store runs that did not exit 0
//!   cache_registry = "registry.example.com/team/buildr-cache"   # the shared cache
//!
//!   # Read by the Kubernetes backend; all optional.
//!   container {
//!     image          = "debian:bookworm"
//!     cpu_request    = "500m"  # Kubernetes quantities, checked on load, passed as written
//!     cpu_limit      = "2"
//!     memory_request = "256Mi"
//!     memory_limit   = "1Gi"
//!
//!     # Bounds every pod has; these are the defaults.
//!     ephemeral_storage_request = "1Gi"   # local disk the pod is scheduled for
//!     ephemeral_storage_limit   = "10Gi"  # the most it may use: layer, logs, emptyDirs
//!     workspace_size_limit      = "10Gi"  # the workspace emptyDir; default: the limit above
//!     active_deadline = "24h"     # pod's life; default: `timeout` + 10m if set, else 24h
//!
//!     node_selector   = { "disktype" = "ssd" }             # node labels to schedule on
//!     labels          = { team = "infra" }                 # extra pod labels
//!     annotations     = { "example.com/owner" = "me" }     # extra pod annotations
//!     service_account = "builder"                          # its token is never mounted
//!     image_pull_secrets   = ["regcred"]                   # Secret names
//!     env_from_secrets     = ["build-tokens"]              # Secrets whose keys become env vars
//!     env_from_config_maps = ["build-settings"]            # ConfigMaps, likewise
//!     egress          = "dns"     # what the pod may reach: "none", "dns",
//!                                 # "no-link-local" (default) or "all"
//!     start_timeout   = "3m"      # scheduling + image pull + start; a humantime duration
//!     run_as_user     = 1000      # a number, not a string; never 0 (root)
//!     pool            = "warm"    # a BuildrPool to take a warm pod from (an object name)
//!
//!     # Repeatable; absent attributes take Kubernetes' defaults.
//!     toleration {
//!       key                = "dedicated"
//!       operator           = "Equal"       # "Equal" (default) or "Exists"
//!       value              = "builds"      # not with "Exists"
//!       effect             = "NoExecute"   # "NoSchedule", "PreferNoSchedule" or "NoExecute"
//!       toleration_seconds = 60            # only with effect "NoExecute"
//!     }
//!   }
//!
//!   # Read by the ssh backend; all optional (`--host` and `--ssh-option` add to them).
//!   ssh {
//!     host    = "builder@build-box"   # as ssh takes it: [user@]host, or a Host of ~/.ssh/config
//!     options = ["-p2222"]            # arguments to ssh that only choose where to connect:
//!                                     # -p -l -J -4 -6 -C, -o Port, User, ProxyJump, timeouts...
//!   }
//! }
//! ```
//!
//! Rules:
//! - Task names (the label, quoted or bare) are non-empty, without whitespace, not starting
//!   with `-`.
//! - Values are literals: strings, lists of strings, objects of strings, and whole numbers
//!   where a number is expected (`run_as_user`, `toleration_seconds`). Interpolation
//!   (`${...}`) and template directives (`%{...}`) are refused: write `$VAR` in a script and
//!   let the shell expand it (`$GREETING`, without braces, is plain text to HCL). To pass a
//!   literal `${HOME}` to the shell, escape it as `$${HOME}` (and `%{` as `%%{`). In a heredoc,
//!   backslashes are literal (`printf 'a\n'` reaches the shell as written); in a quoted string
//!   they are HCL escapes (`"\n"` is a newline).
//! - `<<-EOT` heredocs are dedented by their smallest indentation; `<<EOT` ones are kept as is.
//! - Paths (`workdir`, input labels and `to`, `tools` with a `/`) are relative and may not
//!   contain `..`. Tools are sent under their file names, each name once.
//! - `shell` only goes with `script`.
//! - In `container`, Kubernetes' own rules are checked on load rather than at pod creation:
//!   `labels`, `annotations` and `node_selector` keys are qualified names (an optional
//!   DNS-subdomain prefix and `/`, then at most 63 letters, digits, `-`, `_`, `.`, alphanumeric
//!   at both ends), `labels` and `node_selector` values follow the same rule or are empty;
//!   Secret, ConfigMap and service-account names are DNS subdomains (lowercase, at most 253
//!   characters). A key or a name is given at most once. Label keys starting with `buildr.dev/`
//!   or `app.kubernetes.io/managed-by` are buildr's own and refused. `run_as_user` is from 1 to
//!   2147483647. Quantities are Kubernetes quantities (`500m`, `256Mi`, `10Gi`, `2G`, `1e9`):
//!   requests zero or more, limits and `workspace_size_limit` more than zero, a request at most
//!   its limit when both are given. An unset ephemeral-storage request or limit never
//!   contradicts the other: the default request is lowered to a smaller limit, the default limit
//!   raised to a larger request. `active_deadline` is whole seconds, longer than `timeout`. A toleration has a `key` unless its operator is `Exists`, has no `value` with
//!   `Exists`, and `toleration_seconds` (0 or more) only with effect `NoExecute`.
//! - Every error names `file:line:column` and what was expected there.
//!
//! Inputs are gathered by [`collect_inputs`]: the mapped paths (or the whole repository), minus
//! `.git`, minus what `.gitignore` files (at any depth, whether or not the repository is a git
//! repository) and `.buildrignore` files (same syntax) exclude.

mod blocks;
mod inputs;
mod names;
mod parse;
pub(crate) mod quantity;
mod reader;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use inputs::{InputFile, collect_inputs};
pub use parse::parse_file;

/// The directory, under the repository root, that holds the task files.
pub const TASK_DIR: &str = ".buildr";

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

/// Why tasks could not be loaded, found or their inputs gathered.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A task file or directory could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid HCL.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// The file is valid HCL but not a valid task file; `message` says what was expected.
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    /// The same task name is defined twice.
    #[error("{at}: task \"{name}\" is defined twice; it is also defined at {first}")]
    Duplicate {
        name: String,
        at: Location,
        first: Location,
    },
    /// No task has this name.
    #[error("{}", missing_message(name, available, suggestion.as_deref(), dir))]
    Missing {
        name: String,
        /// The names of all tasks, sorted.
        available: Vec<String>,
        /// The closest name, if any is close.
        suggestion: Option<String>,
        /// The task directory searched.
        dir: PathBuf,
    },
    /// An input mapping's `from` is not in the repository.
    #[error("input `{}` does not exist: {} not found", from.display(), path.display())]
    MissingInput { from: PathBuf, path: PathBuf },
    /// An input mapping's `from` is excluded by `.gitignore` or `.buildrignore`.
    #[error(
        "input `{}` is excluded by a .gitignore or .buildrignore file; un-ignore it or map another path",
        from.display()
    )]
    IgnoredInput { from: PathBuf },
    /// An input mapping has an absolute path or `..` in it.
    #[error("input mapping `{}` -> `{}`: {reason}", from.display(), to.display())]
    BadInputMapping {
        from: PathBuf,
        to: PathBuf,
        reason: String,
    },
    /// Two inputs would land on the same workspace path.
    #[error(
        "inputs {} and {} both map to `{}` in the workspace",
        first.display(), second.display(), dest.display()
    )]
    InputConflict {
        dest: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
    /// A `.gitignore` or `.buildrignore` line is not a valid pattern. It is an error, not a
    /// warning: a pattern dropped silently would send what it was meant to keep back.
    #[error("{}:{line}: {message}", file.display())]
    BadIgnorePattern {
        file: PathBuf,
        line: u64,
        message: String,
    },
    /// Walking the repository failed.
    #[error("failed to walk the inputs under {}", root.display())]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
}

fn missing_message(
    name: &str,
    available: &[String],
    suggestion: Option<&str>,
    dir: &Path,
) -> String {
    let mut message = format!("no task named `{name}`");
    if let Some(suggestion) = suggestion {
        message.push_str(&format!("; did you mean `{suggestion}`?"));
    }
    if available.is_empty() {
        message.push_str(&format!(
            "; no tasks are defined (task files are {}/*.hcl)",
            dir.display()
        ));
    } else {
        let sep = if suggestion.is_some() { " " } else { "; " };
        message.push_str(&format!(
            "{sep}{} tasks: {}",
            if suggestion.is_some() {
                "Available"
            } else {
                "available"
            },
            available.join(", ")
        ));
    }
    message
}

/// All the tasks of a repository, by name.
#[derive(Debug, Clone, Default)]
pub struct TaskSet {
    dir: PathBuf,
    tasks: BTreeMap<String, Task>,
}

impl TaskSet {
    /// Loads every `*.hcl` file directly under `<repo>/.buildr/`, in order of file name.
    /// No `.buildr` directory gives an empty set.
    pub fn load(repo: &Path) -> Result<TaskSet, TaskError> {
        let dir = repo.join(TASK_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TaskSet {
                    dir,
                    tasks: BTreeMap::new(),
                });
            }
            Err(source) => return Err(TaskError::Read { path: dir, source }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| TaskError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            // Follows symlinks: a linked task file counts, a directory named `x.hcl` does not.
            if path.extension().is_some_and(|ext| ext == "hcl") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();

        let mut set = TaskSet {
            dir,
            tasks: BTreeMap::new(),
        };
        for path in files {
            let source = std::fs::read_to_string(&path).map_err(|source| TaskError::Read {
                path: path.clone(),
                source,
            })?;
            for task in parse_file(&path, &source)? {
                set.insert(task)?;
            }
        }
        Ok(set)
    }

    fn insert(&mut self, task: Task) -> Result<(), TaskError> {
        if let Some(first) = self.tasks.get(&task.name) {
            return Err(TaskError::Duplicate {
                name: task.name,
                at: task.defined_at,
                first: first.defined_at.clone(),
            });
        }
        self.tasks.insert(task.name.clone(), task);
        Ok(())
    }

    /// The task called `name`; if there is none, the error lists the names there are and
    /// suggests the closest one.
    pub fn get(&self, name: &str) -> Result<&Task, TaskError> {
        self.tasks.get(name).ok_or_else(|| TaskError::Missing {
            name: name.to_string(),
            available: self.tasks.keys().cloned().collect(),
            suggestion: closest(name, self.tasks.keys().map(String::as_str)).map(str::to_string),
            dir: self.dir.clone(),
        })
    }

    /// The tasks, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The task names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The task directory (`<repo>/.buildr`), whether or not it exists.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo
/// (at most a third of the word's length, at least 1), or if one starts with the other.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let distance = edit_distance(word, candidate);
            let prefix = !word.is_empty()
                && (candidate.starts_with(word) || word.starts_with(candidate))
                && !candidate.is_empty();
            (distance <= limit || prefix).then_some((distance, candidate))
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting a swap of two neighbouring characters as one edit (optimal string
/// alignment), in characters: "tset" is one edit from "test".
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("comand", "command"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("tset", "test"), 1);
    }

    #[test]
    fn closest_suggests_typos_and_prefixes_only() {
        let names = ["hello", "test", "fail"];
        assert_eq!(closest("helo", names), Some("hello"));
        assert_eq!(closest("tset", names), Some("test"));
        assert_eq!(closest("hel", names), Some("hello"));
        assert_eq!(closest("deploy", names), None);
    }

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
