//! Into the pod through exec: the executor binary, the task's tools, the run's secret and the
//! inputs, by the upload every remote backend shares ([`crate::backend::upload`]), with the exec
//! API as the way to run a command in the pod.

use std::io;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio_util::task::AbortOnDropHandle;

use super::K8sError;
use super::exec::{ExecError, Stdin, exec_with_input};
use super::launch::BUILDR_DIR;
use super::objects::{BINARY_PATH, SECRET_PATH, SECRET_WAITER, TOOLS_DIR, WORKSPACE_DIR};
use super::registry::RegistryRoute;
use crate::backend::binary::ExecutorBinary;
use crate::backend::upload::{
    self, Destination, Difference, Layout, Payload, PullFrom, Pulled, RemoteCommand, SeedDifference,
};
use crate::secret::Secret;
use crate::snapshot::Credentials;
use crate::task::InputFile;

/// Where the binary lands before it is checked and renamed to [`BINARY_PATH`], which the
/// container's main process waits for: it never sees a half-written binary.
const INCOMING: &str = "/buildr/incoming";

/// A shell in the pod's container, through the exec API.
struct PodShell<'a> {
    pods: &'a Api<Pod>,
    client: &'a kube::Client,
    pod: &'a str,
}

impl RemoteCommand for PodShell<'_> {
    type Stdin = Stdin;
    type Error = ExecError;

    async fn run<F>(&self, script: String, feed: F) -> Result<Vec<u8>, ExecError>
    where
        F: FnOnce(Stdin) -> io::Result<Stdin> + Send + 'static,
    {
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        exec_with_input(self.pods, self.client, self.pod, command, feed)
            .await
            .map(|(stdout, _stderr)| stdout)
    }

    fn exit_code(error: &ExecError) -> Option<i32> {
        match error {
            ExecError::Exited { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn said(error: &ExecError) -> Option<String> {
        match error {
            ExecError::Exited { stderr, .. } => Some(stderr.clone()),
            _ => None,
        }
    }
}

fn layout() -> Layout {
    Layout {
        binary: BINARY_PATH.to_string(),
        tools: TOOLS_DIR.to_string(),
        secret: SECRET_PATH.to_string(),
        workspace: WORKSPACE_DIR.to_string(),
        incoming: INCOMING.to_string(),
        secret_waiter: Some(SECRET_WAITER.to_string()),
    }
}

/// The binary, the tools and the secret, as far as `payload` has them, into `pod`, checked
/// there (see [`upload::binary`]); the container's main process starts the binary as soon as it
/// and the secret are in place.
pub async fn binary(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
    binary: &ExecutorBinary,
    payload: Payload<'_>,
) -> Result<(), K8sError> {
    let shell = PodShell { pods, client, pod };
    let to = in_pod(pod, image);
    Ok(upload::binary(&shell, &layout(), binary, payload, &to)
        .await
        .map_err(Box::new)?)
}

/// The inputs into the pod's workspace, and a warm pod's `secret` with them (see
/// [`upload::inputs`]).
pub async fn inputs(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
    inputs: &[InputFile],
    secret: Option<&Secret>,
) -> Result<Option<[u8; 32]>, K8sError> {
    let shell = PodShell { pods, client, pod };
    let to = in_pod(pod, image);
    Ok(upload::inputs(&shell, &layout(), inputs, secret, &to)
        .await
        .map_err(Box::new)?)
}

/// What a pod pulls its inputs from: a snapshot in the registry `route` leads to.
pub struct PodPull<'a> {
    /// `REGISTRY/REPOSITORY@sha256:…`.
    pub snapshot: &'a str,
    pub route: &'a RegistryRoute,
    pub credentials: Option<&'a Credentials>,
    /// What the workspace holds: a seed (only the difference is pulled), or nothing.
    pub seeded: Seeded,
}

/// What a pull into a pod's workspace finds there, and leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    /// An empty workspace.
    No,
    /// An empty workspace, filled with a pool's seed: its index is kept for the run.
    Seeding,
    /// The seed a pool's controller put there.
    Onto,
}

/// Where a warm pod keeps the index of the seed its workspace holds.
fn seed_index() -> String {
    format!("{BUILDR_DIR}/seed-index")
}

/// The inputs into the pod's workspace from the registry, by content (see [`upload::pull`]);
/// a warm pod's `secret` goes first.
pub async fn pull(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
    from: PodPull<'_>,
    secret: Option<&Secret>,
) -> Result<Pulled, K8sError> {
    let shell = PodShell { pods, client, pod };
    let to = in_pod(pod, image);
    let insecure = [("BUILDR_INSECURE_REGISTRIES", from.route.registry.as_str())];
    // The packs wait beside the binary until they are applied.
    let packs = format!("{BUILDR_DIR}/packs");
    let seed_index = seed_index();
    let from = PullFrom {
        snapshot: from.snapshot,
        credentials: from.credentials,
        env: if from.route.plain_http {
            &insecure
        } else {
            &[]
        },
        packs: &packs,
        onto: (from.seeded == Seeded::Onto).then_some(seed_index.as_str()),
        keep_index: (from.seeded == Seeded::Seeding).then_some(seed_index.as_str()),
    };
    Ok(upload::pull(&shell, &layout(), from, secret, &to)
        .await
        .map_err(Box::new)?)
}

/// A seeded warm pod's workspace brought to the run's tree by a difference from its seed, in
/// a session through exec opened as soon as the pod is taken (see [`upload::onto_seed`]): the
/// exec's set-up and the pod's `secret` go while the client still scans the tree and makes the
/// difference. The session is aborted when this is dropped (the run is stopped).
pub struct OntoSeed {
    difference: std::sync::mpsc::SyncSender<Difference>,
    session: AbortOnDropHandle<Result<Option<Pulled>, K8sError>>,
}

impl OntoSeed {
    pub fn open(
        pods: Api<Pod>,
        client: kube::Client,
        pod: String,
        image: String,
        secret: Option<Secret>,
    ) -> Self {
        let (difference, to_send) = std::sync::mpsc::sync_channel(1);
        let session = tokio::spawn(async move {
            let shell = PodShell {
                pods: &pods,
                client: &client,
                pod: &pod,
            };
            let (dir, seed_index) = (format!("{BUILDR_DIR}/difference"), seed_index());
            let to_seed = SeedDifference {
                dir: &dir,
                seed_index: &seed_index,
            };
            let (layout, to) = (layout(), in_pod(&pod, &image));
            let sent = upload::onto_seed(&shell, &layout, to_seed, to_send, secret.as_ref(), &to);
            Ok(sent.await.map_err(Box::new)?)
        });
        Self {
            difference,
            session: AbortOnDropHandle::new(session),
        }
    }

    /// Sends the difference (a [`crate::snapshot::delta::Delta`]'s bytes and the packs of what
    /// it writes): how its apply ended.
    pub async fn send(self, difference: Difference) -> Result<Pulled, K8sError> {
        // A session that has ended already says why when it is awaited.
        let _ = self.difference.send(difference);
        let ended = self.session.await.expect("a session does not panic")?;
        // `None` is a session cancelled, which the sender, held until now, cannot have been.
        Ok(ended.expect("a session sent its difference is not cancelled"))
    }

    /// Sends nothing (the inputs go otherwise) and waits for the session to end: the workspace
    /// holds its seed still, and the secret is in place.
    pub async fn cancel(self) -> Result<(), K8sError> {
        drop(self.difference);
        self.session.await.expect("a session does not panic")?;
        Ok(())
    }
}

/// Empties the workspace of a warm pod whose seed a run does not build on (its inputs are
/// copied whole): what the seed left, read-only directories included.
pub async fn clear_workspace(
    pods: &Api<Pod>,
    client: &kube::Client,
    pod: &str,
    image: &str,
) -> Result<(), K8sError> {
    let shell = PodShell { pods, client, pod };
    let workspace = crate::backend::executor_command::quote(WORKSPACE_DIR);
    // The workspace itself may be the volume's root, which its user cannot chmod; a glob
    // that matches nothing stays as it is written, which `rm -f` passes over.
    let script = format!(
        "cd {workspace} && {{ chmod -R u+w -- ./* ./.[!.]* ./..?* 2>/dev/null; \
         rm -rf -- ./* ./.[!.]* ./..?*; }}"
    );
    shell.run(script, Ok).await.map_err(|source| {
        K8sError::Upload(Box::new(upload::UploadError::Failed {
            what: upload::INPUTS,
            to: in_pod(pod, image),
            source,
        }))
    })?;
    Ok(())
}

fn in_pod(pod: &str, image: &str) -> Destination {
    Destination::Pod {
        pod: pod.to_string(),
        image: image.to_string(),
    }
}
