//! Backends decide where a task runs: how the workspace is prepared, how the executor is started
//! and how the client reaches it. From the connection on, every backend uses [`crate::client`].
//!
//! - [`local`]: a sandbox directory and an executor child process on this machine
//! - [`copy`]: the inputs as a `.tar.s2` stream, shared by all backends

pub mod copy;
pub mod local;

/// Where `buildr run` runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// A sandbox on this machine; needs no cluster.
    Local,
    /// A fresh pod in a Kubernetes namespace.
    K8s,
}
