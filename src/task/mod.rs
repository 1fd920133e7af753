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
//!   inputs_registry = "registry.example.com/team/inputs"        # inputs by content (k8s)
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
mod error;
mod inputs;
mod load;
mod model;
mod names;
mod parse;
pub(crate) mod quantity;
mod reader;
mod suggest;

pub use error::TaskError;
pub use inputs::{InputFile, collect_inputs};
pub use load::{TASK_DIR, TaskSet};
pub use model::{
    AD_HOC_NAME, CacheSettings, Container, DEFAULT_SHELL, Egress, InputMapping, Location, Run,
    SshHost, Task, Toleration,
};
pub use parse::parse_file;
pub(crate) use suggest::closest;
