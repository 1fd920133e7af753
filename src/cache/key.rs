//! The cache key: a SHA-256 over everything a run's result can depend on that buildr can see.
//! Two runs with the same key are expected to give the same output, files and exit status.
//!
//! In the key: buildr's version (its executor runs the task), the command line (a script
//! included), the `env` values, the working directory, the timeout, the output filters, where
//! the task runs ([`Platform`]), each tool's name and content, the task's `cache_key` strings,
//! and the input tree's digest (see [`super::tree`]). Not in it, because the client cannot see
//! them: the values behind `env_from_secrets` and `env_from_config_maps` (their names are in,
//! through the container settings), and whatever the task reaches over the network.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::CacheError;
use crate::task::Task;
use crate::tools::Tool;

/// Where a run happens, as far as its result can tell.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// A sandbox on this machine: its OS and architecture.
    Local { os: String, arch: String },
    /// A pod: its image, pinned to its digest where the registry could be asked
    /// ([`super::oci::pinned_image`]), the nodes' architecture, and the task's `container`
    /// settings (Secret and ConfigMap names included).
    K8s {
        image: String,
        arch: String,
        container: String,
    },
    /// A host reached over ssh: its destination as given, and its architecture.
    Ssh { destination: String, arch: String },
}

impl Platform {
    /// This machine, whose architecture (as Kubernetes names it) is `arch`.
    pub fn local(arch: &str) -> Self {
        Platform::Local {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
        }
    }

    /// The ssh destination `destination` (`[user@]host` or a config alias), which runs
    /// executors of architecture `arch`.
    pub fn ssh(destination: &str, arch: &str) -> Self {
        Platform::Ssh {
            destination: destination.to_string(),
            arch: arch.to_string(),
        }
    }

    /// `image` is the one the pod gets (`--image` or the task's); the task's own `image`
    /// setting is left out of `container` so that only the effective one counts.
    pub fn k8s(image: &str, arch: &str, task: &Task) -> Self {
        let mut container = task.container.clone();
        container.image = None;
        Platform::K8s {
            image: image.to_string(),
            arch: arch.to_string(),
            container: format!("{container:?}"),
        }
    }
}

/// Everything that goes into a key, in the form that is hashed (as JSON, whose field order is
/// this struct's and whose maps are sorted).
#[derive(Debug, Clone, Serialize)]
pub struct KeyParts {
    pub buildr: &'static str,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub timeout_ms: Option<u128>,
    pub outputs: Vec<String>,
    pub platform: Platform,
    /// Each tool's name and the hex SHA-256 of its content.
    pub tools: Vec<(String, String)>,
    pub cache_key: Vec<String>,
    /// The input tree's digest, in hex.
    pub inputs: String,
}

impl KeyParts {
    /// The parts of `task`'s key on `platform`, with `inputs` its input tree's digest. Reads
    /// each tool to hash it.
    pub fn new(
        task: &Task,
        platform: Platform,
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
            buildr: env!("CARGO_PKG_VERSION"),
            argv: task.argv(),
            env: task.env.clone(),
            workdir: task.workdir.clone(),
            timeout_ms: task.timeout.map(|t| t.as_millis()),
            outputs: task.outputs.clone(),
            platform,
            tools,
            cache_key: task.cache.key.clone(),
            inputs: hex::encode(inputs),
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
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
