//! What a run leaves in the cluster: kept on request, or not deleted and why, each with how to
//! remove it. Returned by `clean_up` rather than printed, so that the run and a controller can
//! each say it their way; its Display is the sentence `buildr run` prints.

use std::fmt;
use std::time::Duration;

use super::api::api_message;

/// One of the run's objects that is still there after its clean-up.
#[derive(Debug)]
pub enum Leftover {
    /// The pod (and its NetworkPolicy), kept because the user asked (`--keep`).
    Kept { namespace: String, pod: String },
    /// The pod, whose deletion was not accepted; `buildr k8s gc` removes it once it expires.
    Pod {
        namespace: String,
        pod: String,
        why: NotDeleted,
    },
    /// The pod's NetworkPolicy, whose deletion was not accepted; it goes with its pod, which
    /// owns it.
    Policy {
        namespace: String,
        name: String,
        why: NotDeleted,
    },
    /// A pod whose create got no answer and whose existence could not be asked either: it may
    /// exist; `buildr k8s gc` removes it once it expires.
    MaybePod {
        namespace: String,
        pod: String,
        why: kube::Error,
    },
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::Kept { namespace: ns, pod } => write!(
                f,
                "keeping pod {ns}/{pod} (and its NetworkPolicy); look inside with \
                 `kubectl -n {ns} exec -it {pod} -- sh`, remove it with `kubectl -n {ns} delete pod {pod}`"
            ),
            Leftover::Pod {
                namespace: ns,
                pod,
                why,
            } => write!(
                f,
                "pod {ns}/{pod} is left behind (remove it with `kubectl -n {ns} delete pod \
                 {pod}`; `buildr k8s gc` removes it once it expires): {why}"
            ),
            Leftover::Policy {
                namespace: ns,
                name,
                why,
            } => write!(
                f,
                "NetworkPolicy {ns}/{name} is left until its pod is gone (the pod owns it): {why}"
            ),
            Leftover::MaybePod {
                namespace: ns,
                pod,
                why,
            } => write!(
                f,
                "pod {ns}/{pod} may be left behind (its create got no answer, and whether it \
                 exists cannot be asked: {}); `buildr k8s gc` removes it once it expires",
                api_message(why)
            ),
        }
    }
}

/// Why a deletion was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum NotDeleted {
    #[error("cannot delete it: {}", api_message(.0))]
    Failed(kube::Error),
    #[error("its deletion got no answer within {}", humantime::format_duration(*waited))]
    /// No answer within `waited`, the deletion's timeout.
    NoAnswer { waited: Duration },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_leftover_names_the_object_why_and_how_to_remove_it() {
        let (namespace, pod) = ("builds".to_string(), "buildr-x".to_string());
        let lines = [
            Leftover::Kept {
                namespace: namespace.clone(),
                pod: pod.clone(),
            },
            Leftover::Pod {
                namespace: namespace.clone(),
                pod: pod.clone(),
                why: NotDeleted::NoAnswer {
                    waited: Duration::from_secs(30),
                },
            },
            Leftover::Policy {
                namespace,
                name: pod,
                why: NotDeleted::NoAnswer {
                    waited: Duration::from_secs(10),
                },
            },
        ]
        .map(|leftover| leftover.to_string());
        assert_eq!(
            lines,
            [
                "keeping pod builds/buildr-x (and its NetworkPolicy); look inside with `kubectl -n \
                 builds exec -it buildr-x -- sh`, remove it with `kubectl -n builds delete pod \
                 buildr-x`",
                "pod builds/buildr-x is left behind (remove it with `kubectl -n builds delete pod \
                 buildr-x`; `buildr k8s gc` removes it once it expires): its deletion got no \
                 answer within 30s",
                "NetworkPolicy builds/buildr-x is left until its pod is gone (the pod owns it): \
                 its deletion got no answer within 10s",
            ]
        );
    }
}
