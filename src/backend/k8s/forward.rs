//! The client's way to the executor: every connection tonic opens is a fresh port-forward
//! through the API server to the executor's loopback port in the pod. One forward carries one
//! connection, so a redial after a cut (API server restart, network blip) is a new forward, and
//! the event stream resumes over it.

use std::io;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tonic::transport::Channel;

use super::api::api_message;
use super::launch::EXECUTOR_PORT;
use crate::cluster::access::is_forbidden;

/// A lazily connecting channel to the executor in `pod`.
pub fn channel(pods: Api<Pod>, pod: String) -> Channel {
    crate::client::connect::channel_through(move || {
        let pods = pods.clone();
        let pod = pod.clone();
        async move {
            let mut forwarder = pods
                .portforward(&pod, &[EXECUTOR_PORT])
                .await
                .map_err(|e| {
                    // A refusal is final: the client stops retrying on PermissionDenied.
                    let kind = if is_forbidden(&e) {
                        io::ErrorKind::PermissionDenied
                    } else {
                        io::ErrorKind::Other
                    };
                    io::Error::new(kind, format!("port-forward to {pod}: {}", api_message(&e)))
                })?;
            let stream = forwarder
                .take_stream(EXECUTOR_PORT)
                .expect("the port was asked for");
            // The forwarder's task moves the bytes and ends with the connection; it is owned by
            // the stream's lifetime, so it is left to run and only its end is logged.
            tokio::spawn(async move {
                if let Err(e) = forwarder.join().await {
                    tracing::debug!("port-forward ended: {e}");
                }
            });
            Ok(stream)
        }
    })
}
