//! buildr runs a build step away from the developer's machine, in a fresh local sandbox or a
//! Kubernetes pod, and brings back exactly the files it changed.
//!
//! Layout:
//! - [`cli`]: one module per subcommand; parses nothing itself beyond its own arguments.
//! - [`task`]: the task model and its loader (HCL files under `.buildr/`), and input collection.
//! - [`executor`]: the gRPC server that runs one task: process runner, event log, watcher.
//! - [`archive`]: `.tar.s2` writing, listing and safe extraction.
//! - [`client`]: the gRPC client: event rendering, resume, archive fetch.
//! - [`backend`]: how a workspace is prepared and an executor started (local, k8s).
//! - [`telemetry`]: tracing subscriber, OpenTelemetry export, trace context propagation.
//! - [`timeline`]: the phases of a run and their durations (`buildr run -v`).
//! - [`rpc`]: the generated protocol types (`proto/buildr/rpc/v1`).

pub mod archive;
pub mod backend;
pub mod cli;
pub mod client;
pub mod executor;
pub mod progress;
pub mod task;
pub mod telemetry;
pub mod timeline;

/// The generated gRPC protocol, package `buildr.rpc.v1`.
pub mod rpc {
    tonic::include_proto!("buildr.rpc.v1");
}
