//! The names of the labels, annotations and marks buildr puts on the objects it creates: what
//! the run, the pool controller, `buildr k8s gc` and `buildr k8s check` find each other's
//! objects by. One list, so that a name is never spelled twice.

/// The label every object buildr creates carries, and by which `buildr k8s gc` finds them.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "buildr";
/// The run an object belongs to; the policy selects its pod by it.
pub const RUN_ID_LABEL: &str = "buildr.dev/run-id";
/// When the object may be deleted by `buildr k8s gc` (RFC 3339), whatever became of its client.
pub const EXPIRES_AT_ANNOTATION: &str = "buildr.dev/expires-at";
/// The task the pod runs, for people reading `kubectl get pods`.
pub const TASK_ANNOTATION: &str = "buildr.dev/task";

/// The pool a warm pod was made for (kept once it is taken, so that the pool's deny-all
/// policy still holds it).
pub const POOL_LABEL: &str = "buildr.dev/pool";
/// Where a pool's pod is in its life: see `pool::State`.
pub const STATE_LABEL: &str = "buildr.dev/state";
/// When the binary was in and the pod became ready (RFC 3339): it is replaced once it has
/// waited longer than the pool's `maxIdle`.
pub const READY_AT_ANNOTATION: &str = "buildr.dev/ready-at";
/// A digest of the template a warm pod was made from and of the executor binary it gets: a pod
/// of an older template or binary is replaced.
pub const TEMPLATE_ANNOTATION: &str = "buildr.dev/template";
/// The SHA-256 of the executor binary the controller puts into the pod, recorded when it
/// creates the pod (and part of [`TEMPLATE_ANNOTATION`]'s digest).
pub const EXECUTOR_ANNOTATION: &str = "buildr.dev/executor-sha256";
/// The key of the toleration a run adds to the pod it takes: the mark that it was taken. A
/// toleration because the API server lets a pod's tolerations only grow, so that not even
/// someone who may patch pods can take the mark off and pass a used pod for a fresh one.
pub const TAKEN_MARK: &str = "buildr.dev/taken";

/// On a warm pod of a seeded pool: the seed snapshot its workspace holds, pinned
/// (`REGISTRY/REPOSITORY@sha256:…`).
pub const SEED_ANNOTATION: &str = "buildr.dev/seed";
