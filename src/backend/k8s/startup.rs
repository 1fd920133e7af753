//! Waiting for the build pod: a watch on the one pod (no sleep loop) until its container runs,
//! failing at once, with the cause in one line, when it never will: an image that cannot be
//! pulled, a pod the scheduler cannot place, a container that cannot be created or that exits.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ContainerState, Pod, PodStatus};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::K8sError;
use super::api::{api_message, one_line};
use crate::cluster::access::is_forbidden;
use crate::timeline::Timeline;

/// What a pod's status says about its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Not running yet; what it waits for.
    Waiting(String),
    Running,
    /// It will not run; why, in one line.
    Failed(String),
}

/// Waiting reasons of a container that mean its image will not come.
const IMAGE_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "RegistryUnavailable",
    "SignatureValidationFailed",
];

/// Reads a pod's status as far as starting goes.
pub fn classify(pod: &Pod, image: &str) -> Start {
    let Some(status) = &pod.status else {
        return Start::Waiting("the pod has no status yet".to_string());
    };
    if let Some(condition) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        && condition.reason.as_deref() == Some("Unschedulable")
    {
        return Start::Failed(format!(
            "the pod cannot be scheduled: {}",
            one_line(condition.message.as_deref().unwrap_or("no reason given"))
        ));
    }
    let container = status.container_statuses.iter().flatten().next();
    if let Some(state) = container.and_then(|c| c.state.as_ref())
        && let Some(verdict) = classify_container(state, image)
    {
        return verdict;
    }
    match status.phase.as_deref() {
        Some(phase @ ("Failed" | "Succeeded")) => Start::Failed(format!(
            "the pod ended ({phase}) before the executor started: {}",
            one_line(status.message.as_deref().unwrap_or("no message"))
        )),
        _ if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none() =>
        {
            Start::Waiting("waiting to be scheduled".to_string())
        }
        _ => Start::Waiting("waiting for the container to start".to_string()),
    }
}

fn classify_container(state: &ContainerState, image: &str) -> Option<Start> {
    if state.running.is_some() {
        return Some(Start::Running);
    }
    if let Some(terminated) = &state.terminated {
        let detail = [terminated.reason.as_deref(), terminated.message.as_deref()]
            .into_iter()
            .flatten()
            .map(one_line)
            .collect::<Vec<_>>()
            .join(": ");
        return Some(Start::Failed(lacks_shell(&detail, image).unwrap_or_else(
            || {
                format!(
                    "the container exited with status {} before the executor started ({detail})",
                    terminated.exit_code
                )
            },
        )));
    }
    let waiting = state.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().unwrap_or_default();
    let message = one_line(waiting.message.as_deref().unwrap_or(reason));
    if IMAGE_FAILURES.contains(&reason) {
        return Some(Start::Failed(format!(
            "the image `{image}` cannot be pulled ({reason}): {message}"
        )));
    }
    match reason {
        "CreateContainerConfigError" => Some(Start::Failed(format!(
            "the container cannot be configured: {message}"
        ))),
        "CreateContainerError" | "RunContainerError" | "StartError" => Some(Start::Failed(
            lacks_shell(&message, image)
                .unwrap_or_else(|| format!("the container cannot start: {message}")),
        )),
        "" | "ContainerCreating" | "PodInitializing" => None,
        other => Some(Start::Waiting(format!("container {other}: {message}"))),
    }
}

/// The runtime's complaint about a missing `/bin/sh`, in words that say what the image needs.
fn lacks_shell(message: &str, image: &str) -> Option<String> {
    (message.contains("/bin/sh")
        && (message.contains("no such file") || message.contains("not found")))
    .then(|| {
        format!(
            "the image `{image}` has no /bin/sh; buildr needs an image with `sh` and `tar` \
             (the executor binary is copied in with them)"
        )
    })
}

/// Watches the pod until its container runs; records `schedule` and `start container`.
pub async fn wait_running(
    pods: &Api<Pod>,
    name: &str,
    image: &str,
    timeout: Duration,
    timeline: &mut Timeline,
) -> Result<Pod, K8sError> {
    let mut step = Instant::now();
    let mut scheduled = false;
    let mut last = "no answer from the API server yet".to_string();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(pods.clone(), config).default_backoff();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(events, deadline);
    loop {
        let event = tokio::select! {
            () = &mut deadline => {
                return Err(K8sError::StartTimeout { pod: name.to_string(), waited: timeout, last });
            }
            event = events.try_next() => event,
        };
        let pod = match event {
            Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => pod,
            Ok(Some(watcher::Event::Delete(_))) => {
                return Err(K8sError::PodFailed {
                    pod: name.to_string(),
                    reason: "the pod was deleted while starting".to_string(),
                });
            }
            Ok(Some(_)) => continue,
            Ok(None) => unreachable!("a watch with backoff never ends"),
            Err(e) => {
                // A refusal will not pass: say which permission is missing now.
                if let Some(refused) = refusal(&e) {
                    return Err(K8sError::Watch {
                        pod: name.to_string(),
                        refusal: api_message(refused),
                    });
                }
                // The watch retries with backoff; a lasting error (no server) ends in the
                // timeout with this error as the last thing seen.
                last = e.to_string();
                continue;
            }
        };
        if !scheduled
            && pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some()
        {
            scheduled = true;
            timeline.record("schedule", &mut step);
        }
        match classify(&pod, image) {
            Start::Running => {
                timeline.record("start container", &mut step);
                return Ok(pod);
            }
            Start::Failed(reason) => {
                return Err(K8sError::PodFailed {
                    pod: name.to_string(),
                    reason,
                });
            }
            Start::Waiting(what) => last = what,
        }
    }
}

/// The API server's refusal (403) behind a watch's failure, if that is what it is.
pub fn refusal(error: &watcher::Error) -> Option<&kube::Error> {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => is_forbidden(e).then_some(e),
        _ => None,
    }
}

/// Resolves when the pod's container has stopped or the pod is gone, saying how.
pub async fn wait_stopped(pods: &Api<Pod>, name: &str) -> String {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(pods.clone(), config).default_backoff();
    tokio::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                if let Some(how) = stopped(&pod) {
                    return how;
                }
            }
            Ok(watcher::Event::Delete(_)) => return "the pod was deleted".to_string(),
            Ok(_) | Err(_) => {}
        }
    }
    "the watch on the pod ended".to_string()
}

/// How the pod's container ended, if it has.
fn stopped(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("the pod is being deleted".to_string());
    }
    // Before the container's own exit, which is only the result of it.
    if let Some(why) = stopped_by_kubernetes(status) {
        return Some(why);
    }
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref());
    match (terminated, status.phase.as_deref()) {
        (Some(t), _) => Some(format!(
            "its container exited with status {}{}",
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        (None, Some(phase @ ("Failed" | "Succeeded"))) => Some(format!(
            "the pod is {phase}: {}",
            status.message.as_deref().unwrap_or("no message")
        )),
        _ => None,
    }
}

/// Why Kubernetes itself stopped the pod, if it did and says so, and what in the task to
/// change: the pod's deadline (`activeDeadlineSeconds`), or an eviction by the kubelet whose
/// container did not exit cleanly (a kept pod's; an executor stopped by the kubelet exits
/// cleanly and its pod ends Succeeded, without a reason).
fn stopped_by_kubernetes(status: &PodStatus) -> Option<String> {
    let reason = status.reason.as_deref()?;
    let fix = match reason {
        "DeadlineExceeded" => {
            "; raise `active_deadline` in the task's `container` block (default: its timeout \
             plus 10m, else 24h)"
        }
        "Evicted" => {
            "; if it ran out of disk, raise `ephemeral_storage_limit` or `workspace_size_limit` \
             in the task's `container` block"
        }
        _ => "",
    };
    Some(format!(
        "Kubernetes stopped the pod ({reason}: {}){fix}",
        status.message.as_deref().unwrap_or("no message").trim()
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodSpec, PodStatus,
    };

    use super::*;

    fn pod_with(state: ContainerState) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: Some("node".to_string()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".to_string()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "executor".to_string(),
                    state: Some(state),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
            }),
            ..ContainerState::default()
        }
    }

    #[test]
    fn a_missing_image_fails_at_once() {
        let pod = pod_with(waiting(
            "ErrImagePull",
            "failed to pull\n  \"nope:1\": not found",
        ));
        assert_eq!(
            classify(&pod, "nope:1"),
            Start::Failed(
                "the image `nope:1` cannot be pulled (ErrImagePull): failed to pull \"nope:1\": not found"
                    .to_string()
            )
        );
    }

    #[test]
    fn an_unschedulable_pod_says_why() {
        let mut pod = pod_with(ContainerState::default());
        pod.spec = None;
        pod.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".to_string(),
            status: "False".to_string(),
            reason: Some("Unschedulable".to_string()),
            message: Some(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
                    .to_string(),
            ),
            ..PodCondition::default()
        }]);
        let Start::Failed(reason) = classify(&pod, "img") else {
            panic!("not a failure")
        };
        assert!(
            reason.starts_with("the pod cannot be scheduled: 0/1 nodes"),
            "{reason}"
        );
    }

    #[test]
    fn an_image_without_a_shell_is_named() {
        let pod = pod_with(waiting(
            "CreateContainerError",
            "exec: \"/bin/sh\": stat /bin/sh: no such file or directory",
        ));
        let Start::Failed(reason) = classify(&pod, "scratch:1") else {
            panic!("not a failure")
        };
        assert!(reason.contains("`scratch:1` has no /bin/sh"), "{reason}");
    }

    #[test]
    fn running_pending_and_exited() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        };
        assert_eq!(classify(&pod_with(running), "i"), Start::Running);
        assert!(matches!(
            classify(&pod_with(waiting("ContainerCreating", "")), "i"),
            Start::Waiting(_)
        ));
        let exited = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                reason: Some("Error".to_string()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        let pod = pod_with(exited);
        assert!(matches!(classify(&pod, "i"), Start::Failed(r) if r.contains("status 1")));
        assert_eq!(
            stopped(&pod).as_deref(),
            Some("its container exited with status 1 (Error)")
        );
    }

    #[test]
    fn a_pod_stopped_by_kubernetes_says_why_and_which_bound_to_raise() {
        let exited = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".to_string()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        let mut pod = pod_with(exited);
        let status = pod.status.as_mut().unwrap();
        status.phase = Some("Failed".to_string());
        status.reason = Some("DeadlineExceeded".to_string());
        status.message =
            Some("Pod was active on the node longer than the specified deadline".to_string());
        assert_eq!(
            stopped(&pod).as_deref(),
            Some(
                "Kubernetes stopped the pod (DeadlineExceeded: Pod was active on the node longer \
                 than the specified deadline); raise `active_deadline` in the task's `container` \
                 block (default: its timeout plus 10m, else 24h)"
            )
        );
        let status = pod.status.as_mut().unwrap();
        status.reason = Some("Evicted".to_string());
        status.message =
            Some("Usage of EmptyDir volume \"workspace\" exceeds the limit \"1Gi\". ".to_string());
        assert!(
            stopped(&pod)
                .unwrap()
                .ends_with("raise `ephemeral_storage_limit` or `workspace_size_limit` in the task's `container` block")
        );
    }
}
