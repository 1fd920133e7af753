//! buildr runs a build step away from the developer's machine, in a fresh local sandbox, a
//! Kubernetes pod or an ssh host, and brings back exactly the files it changed.
//!
//! Layout:
//! - [`cli`]: one module per subcommand; parses nothing itself beyond its own arguments.
//! - [`task`]: the task model and its loader (HCL files under `.buildr/`), and input collection.
//! - [`executor`]: the gRPC server that runs one task: process runner, event log, watcher.
//! - [`sandbox`]: what confines the task on the local and ssh backends (namespaces, Landlock,
//!   seccomp).
//! - [`archive`]: `.tar.s2` writing, listing and safe extraction.
//! - [`client`]: the gRPC client: event rendering, resume, archive fetch.
//! - [`run`]: one `buildr run`, whatever the backend: tools, cache, start, task, report.
//! - [`backend`]: how a workspace is prepared and an executor started (local, k8s, ssh).
//! - [`cluster`]: the cluster's administration: `buildr k8s check`, `gc`, the pool controller.
//! - [`cache`]: the action cache: keys, the input tree's digest, entries on disk, replay.
//! - [`snapshot`]: input snapshots by content in an OCI registry: index, packs, push.
//! - [`tools`]: the programs a task brings along (`tools = [...]`, `--tool`), checked and sent.
//! - [`elf`]: what an executable needs to run (architecture, loader, libraries).
//! - [`secret`]: the per-run secret every call to an executor carries.
//! - [`size`]: byte counts as people write them (`500MiB`).
//! - [`printable`]: text from the other side (executor, pod, kubelet) escaped for the terminal.
//! - [`telemetry`]: tracing subscriber, OpenTelemetry export, trace context propagation.
//! - [`timeline`]: the phases of a run and their durations (`buildr run -v`).
//! - [`rpc`]: the generated protocol types (`proto/buildr/rpc/v1`).

pub mod archive;
pub mod backend;
pub mod cache;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod elf;
pub mod executor;
pub mod printable;
pub mod progress;
pub mod run;
pub mod sandbox;
pub mod secret;
pub mod size;
pub mod snapshot;
pub mod task;
pub mod telemetry;
pub mod timeline;
pub mod tls_roots;
pub mod tools;

/// The generated gRPC protocol, package `buildr.rpc.v1`.
pub mod rpc {
    tonic::include_proto!("buildr.rpc.v1");
}
