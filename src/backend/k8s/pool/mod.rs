//! Warm pod pools: a `BuildrPool` ([`resource`]) keeps pods of one template started, with the
//! executor binary in, so that a run skips the pod's start and the binary's copy. The
//! controller ([`controller`], `buildr k8s pool-controller`) fills each pool; a run takes one
//! pod ([`take`]), sends its own secret, tools and inputs, and deletes the pod after, as it
//! deletes a pod of its own: every pod serves one run, ever.
//!
//! All the state is in the cluster, on the pods: [`POOL_LABEL`] names the pool, [`STATE_LABEL`]
//! says where a pod is in its life ([`State`]), and a taken pod's `buildr.dev/run-id` names the
//! run that took it. A controller that restarts counts what exists and creates the difference.

pub mod controller;
pub mod resource;
pub mod take;
mod warm;

use crate::task;

/// The pool a warm pod was made for (kept once it is taken, so that the pool's deny-all
/// policy still holds it).
pub const POOL_LABEL: &str = "buildr.dev/pool";
/// Where a pool's pod is in its life: see [`State`].
pub const STATE_LABEL: &str = "buildr.dev/state";
/// When the binary was in and the pod became ready (RFC 3339): it is replaced once it has
/// waited longer than the pool's `maxIdle`.
pub const READY_AT_ANNOTATION: &str = "buildr.dev/ready-at";
/// A digest of the template a warm pod was made from: a pod of an older template is replaced.
pub const TEMPLATE_ANNOTATION: &str = "buildr.dev/template";

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
