//! The cache key: a SHA-256 over everything a run's result can depend on that buildr can see.
//! Two runs with the same key are expected to give the same output, files and exit status.
//!
//! In the key: its own format ([`FORMAT`]), buildr's version (its client extracts the results)
//! and the executor binary's digest (it runs the task), the command line (a script included),
//! the `env` values, the working directory, the timeout, the output filters, whether failures
//! are stored (`cache_failures`), where the task runs ([`Platform`]), each tool's name and
//! content, the task's `cache_key` strings, and the input tree's digest (see [`super::tree`]).
//! Not in it, because the client cannot see them: the values behind `env_from_secrets` and
//! `env_from_config_maps` (their names are in, through the container settings), and whatever
//! the task reaches over the network. Not in it, because they cannot change a result: the
//! pool a pod is taken from (its template is in) and how long a pod may take to start.
//!
//! The parts are serialized with serde (JSON, maps sorted), never from `Debug` text, so a key
//! stays the same across builds of the same version; a change to what goes in bumps [`FORMAT`].

use crate::sandbox::TaskSandbox;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::CacheError;
use crate::task::{Container, Task};
use crate::tools::Tool;

/// The key's format: bumped whenever what goes into a key changes, so that entries keyed the
/// old way are never taken for new ones.
pub const FORMAT: u32 = 2;

/// Where a run happens, as far as its result can tell.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// A sandbox on this machine: its OS and architecture, and the environment the executor
    /// passes on to the task (`PATH`, `HOME`, `LANG` and the others of
    /// [`crate::executor::process::task_base_env`]).
    Local {
        os: String,
        arch: String,
        env: BTreeMap<String, String>,
    },
    /// A pod: its image, pinned to its digest where the registry could be asked
    /// ([`super::oci::pinned_image`]), the nodes' architecture, and the settings of the pod
    /// template it runs from (the pool's, when it is taken from one; Secret and ConfigMap
    /// names included) but its image and its start timeout.
    K8s {
        image: String,
        arch: String,
        container: serde_json::Value,
    },
    /// A host reached over ssh: where `ssh -G` resolves its destination (user, host, port,
    /// jump hosts), and its architecture.
    Ssh { destination: String, arch: String },
}

impl Platform {
    /// This machine, whose architecture (as Kubernetes names it) is `arch`.
    pub fn local(arch: &str) -> Self {
        Platform::Local {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            env: crate::executor::process::task_base_env()
                .into_iter()
                .collect(),
        }
    }

    /// The ssh host that `destination` resolves to (see [`crate::backend::ssh::resolve`]),
    /// which runs executors of architecture `arch`.
    pub fn ssh(destination: &str, arch: &str) -> Self {
        Platform::Ssh {
            destination: destination.to_string(),
            arch: arch.to_string(),
        }
    }

    /// `image` is the one the pod runs; `container` the settings of the template it runs from.
    pub fn k8s(image: &str, arch: &str, container: &Container) -> Self {
        let mut settings =
            serde_json::to_value(container).expect("container settings always serialize");
        if let Some(settings) = settings.as_object_mut() {
            // The image is keyed as it runs (pinned); how long a start may take changes nothing.
            settings.remove("image");
            settings.remove("start_timeout");
        }
        Platform::K8s {
            image: image.to_string(),
            arch: arch.to_string(),
            container: settings,
        }
    }
}

/// Everything that goes into a key, in the form that is hashed (as JSON, whose field order is
/// this struct's and whose maps are sorted).
#[derive(Debug, Clone, Serialize)]
pub struct KeyParts {
    pub format: u32,
    pub buildr: &'static str,
    /// The hex SHA-256 of the executor binary that runs the task.
    pub executor: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub timeout_ms: Option<u128>,
    pub outputs: Vec<String>,
    pub platform: Platform,
    /// Each tool's name and the hex SHA-256 of its content.
    pub tools: Vec<(String, String)>,
    pub cache_key: Vec<String>,
    /// Whether a failed run is stored (`cache_failures`): a failure stored by a task that
    /// opted in is never replayed to one that did not.
    pub cache_failures: bool,
    /// The input tree's digest, in hex.
    pub inputs: String,
    /// What confined the task: a step that reads a hidden file or writes outside its workspace
    /// gives other results unconfined. Left out at its default, so keys made before the
    /// sandbox existed still match.
    #[serde(skip_serializing_if = "TaskSandbox::is_default")]
    pub sandbox: TaskSandbox,
}

impl KeyParts {
    /// The parts of `task`'s key on `platform`, run by the executor binary whose SHA-256 is
    /// `executor`, with `inputs` its input tree's digest. Reads each tool to hash it.
    pub fn new(
        task: &Task,
        platform: Platform,
        executor: &str,
        tools: &[Tool],
        inputs: [u8; 32],
    ) -> Result<Self, CacheError> {
        let tools = tools
            .iter()
            .map(|tool| {
                let digest = crate::archive::sha256_file(&tool.source).map_err(|source| {
                    CacheError::Read {
                        path: tool.source.clone(),
                        source,
                    }
                })?;
                Ok((tool.name.clone(), digest))
            })
            .collect::<Result<_, CacheError>>()?;
        Ok(Self {
            format: FORMAT,
            buildr: env!("CARGO_PKG_VERSION"),
            executor: executor.to_string(),
            argv: task.argv(),
            env: task.env.clone(),
            workdir: task.workdir.clone(),
            timeout_ms: task.timeout.map(|t| t.as_millis()),
            outputs: task.outputs.clone(),
            platform,
            tools,
            cache_key: task.cache.key.clone(),
            cache_failures: task.cache.failures,
            inputs: hex::encode(inputs),
            sandbox: task.sandbox.clone(),
        })
    }

    pub fn key(&self) -> Key {
        let json = serde_json::to_vec(self).expect("key parts always serialize");
        Key(hex::encode(Sha256::digest(&json)))
    }
}

/// A cache key: 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key as it is written (a registry tag, `-v`'s line): 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Key(hex.to_ascii_lowercase()))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key_on(container: &Container) -> Key {
        let task = Task::ad_hoc(vec!["true".to_string()]);
        let platform = Platform::k8s("img@sha256:00", "amd64", container);
        KeyParts::new(&task, platform, "e", &[], [0; 32])
            .unwrap()
            .key()
    }

    #[test]
    fn the_pod_templates_settings_are_in_the_key_but_its_pool_and_start_timeout_are_not() {
        let template = Container {
            cpu_limit: Some("2".to_string()),
            ..Container::default()
        };
        let base = key_on(&template);
        let named = Container {
            pool: Some("warm".to_string()),
            start_timeout: Some(Duration::from_secs(600)),
            ..template.clone()
        };
        assert_eq!(
            key_on(&named),
            base,
            "the pool and start timeout change nothing"
        );
        let other_template = Container {
            cpu_limit: Some("4".to_string()),
            ..template.clone()
        };
        assert_ne!(key_on(&other_template), base);
        let other_secret = Container {
            env_from_secrets: vec!["db".to_string()],
            ..template
        };
        assert_ne!(key_on(&other_secret), base);
    }

    #[test]
    fn the_key_is_stable_across_builds() {
        // Serialized from the types, not from Debug text: this exact key for these parts, as
        // long as FORMAT is 2.
        let task = Task::ad_hoc(vec!["make".to_string()]);
        let platform = Platform::Ssh {
            destination: "me@box:22".to_string(),
            arch: "amd64".to_string(),
        };
        let parts = KeyParts::new(&task, platform, "e", &[], [0; 32]).unwrap();
        let json = serde_json::to_string(&parts).unwrap();
        assert!(json.starts_with(r#"{"format":2,"buildr":""#), "{json}");
        assert!(
            json.contains(r#""platform":{"ssh":{"destination":"me@box:22","arch":"amd64"}}"#),
            "{json}"
        );
    }
}
