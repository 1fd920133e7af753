//! Warm pod pools: a `BuildrPool` ([`resource`]) keeps pods of one template started, with the
//! executor binary in, so that a run skips the pod's start and the binary's copy. The
//! controller ([`crate::cluster::controller`], `buildr k8s pool-controller`) fills each pool; a
//! run takes one pod ([`take`]), sends its own secret, tools and inputs, and deletes the pod
//! after, as it deletes a pod of its own: every pod serves one run, ever.
//!
//! All the state is in the cluster, on the pods (their names are in [`crate::backend::k8s::labels`]): the pool label
//! names the pool, [`STATE_LABEL`] says where a pod is in its life ([`State`]), and a taken
//! pod's run-id label names the run that took it. A controller that restarts counts what exists
//! and creates the difference.
//!
//! Labels say what a pod claims to be, and anyone who may create or patch pods can write them.
//! A run takes a pod only when it is what the pool made ([`warm::as_made`]: owned by the pool,
//! the spec its template gives, the binary the controller recorded) and was never taken
//! ([`TAKEN_MARK`], which no one can remove).

pub mod resource;
pub mod take;
pub mod warm;

use crate::backend::k8s::labels::{STATE_LABEL, TAKEN_MARK};
use crate::task;

/// A pool pod's life: created, then ready once the controller copied the binary in, then taken
/// by one run, which deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Ready,
    Taken,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Taken => "taken",
        }
    }

    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<State> {
        let labels = pod.metadata.labels.as_ref()?;
        match labels.get(STATE_LABEL)?.as_str() {
            "starting" => Some(State::Starting),
            "ready" => Some(State::Ready),
            "taken" => Some(State::Taken),
            _ => None,
        }
    }
}

/// Whether `pod` carries [`TAKEN_MARK`]: some run took it, whatever its labels say now.
pub fn was_taken(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations.is_some_and(|t| t.iter().any(|t| t.key.as_deref() == Some(TAKEN_MARK)))
}

/// The settings of `container` that shape the pod itself: what a run's settings and a pool's
/// template must have in common for the run to take the pool's pods without being told to. The
/// rest is the run's own even in a warm pod: its egress (its own policy), its start timeout, its
/// deadline (lowered when it takes the pod) and the pool it names.
pub fn pod_shape(container: &task::Container) -> task::Container {
    task::Container {
        egress: None,
        start_timeout: None,
        active_deadline: None,
        pool: None,
        ..container.clone()
    }
}

/// The container of a run that names a pool: the pool's template, and what is the run's own
/// even in a warm pod (see [`pod_shape`]) from the run where it sets it, else from the template
/// too. A pod of the run's own, when the pool has none ready, is made from this as well.
pub fn run_container(template: &task::Container, run: &task::Container) -> task::Container {
    task::Container {
        egress: run.egress.or(template.egress),
        start_timeout: run.start_timeout.or(template.start_timeout),
        active_deadline: run.active_deadline.or(template.active_deadline),
        pool: run.pool.clone().or_else(|| template.pool.clone()),
        ..template.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::task::Egress;

    #[test]
    fn a_run_that_names_a_pool_gets_its_template_and_keeps_what_is_its_own() {
        let template = task::Container {
            image: Some("debian:bookworm".to_string()),
            memory_limit: Some("1Gi".to_string()),
            egress: Some(Egress::None),
            ..task::Container::default()
        };
        let run = task::Container {
            image: Some("alpine:3".to_string()),
            memory_limit: Some("300Mi".to_string()),
            start_timeout: Some(Duration::from_secs(5)),
            pool: Some("warm".to_string()),
            ..task::Container::default()
        };
        let container = run_container(&template, &run);
        assert_eq!(pod_shape(&container), pod_shape(&template));
        assert_eq!(container.image.as_deref(), Some("debian:bookworm"));
        assert_eq!(container.start_timeout, Some(Duration::from_secs(5)));
        // The template's where the run says nothing.
        assert_eq!(container.egress, Some(Egress::None));
        assert_eq!(container.pool.as_deref(), Some("warm"));
    }
}
