//! How the executor is laid out and started in a pod: where its binary, state, secret, tools and
//! workspace live, and the container's main process that waits for them and then becomes the
//! executor. The pod's twin of `ssh::remote`'s start script; pure, tested without a cluster.

use std::time::Duration;

use crate::backend::executor_command::{ExecutorCommand, IDLE_TIMEOUT};
use crate::executor::ListenAddr;

/// The executor's container, and the port it listens on inside the pod (loopback only).
pub const CONTAINER: &str = "executor";
pub const EXECUTOR_PORT: u16 = 7070;
/// Where the binary, the executor's state and the workspace live in the pod (emptyDirs).
pub const BUILDR_DIR: &str = "/buildr";
pub const BINARY_PATH: &str = "/buildr/bin/buildr";
/// The task's tools, first in its PATH.
pub const TOOLS_DIR: &str = "/buildr/tools";
/// The run's secret, which every call to the executor must carry (see `crate::secret`).
pub const SECRET_PATH: &str = "/buildr/secret";
/// The process id of the sleep a warm pod waits for its run's secret in: killing it, once the
/// secret is in place, starts the executor at once instead of at the next second's look.
pub const SECRET_WAITER: &str = "/buildr/secret-waiter";
pub const WORKSPACE_DIR: &str = "/workspace";
/// The environment variables prefix under which Secrets and ConfigMaps reach the executor; it
/// hands them to the task without the prefix (the executor's own environment stays its own).
pub const TASK_ENV_PREFIX: &str = "BUILDR_TASK_ENV_";

/// How long the main process waits for the binary before the pod gives up and ends.
const BINARY_WAIT: Duration = Duration::from_secs(300);
/// How often it looks for the binary: often, since the run waits on it once the copy is done.
const BINARY_POLL: Duration = Duration::from_millis(20);
/// How often a warm pod looks for its run's secret (the run wakes it at once, see
/// [`SECRET_WAITER`]).
const SECRET_POLL: Duration = Duration::from_secs(1);

/// How many looks fit in `wait`, one every `poll`: the shell counts looks, not time.
fn polls(wait: Duration, poll: Duration) -> u128 {
    wait.as_millis() / poll.as_millis()
}

/// The container's main process: waits for the binary (copied in through exec once the pod
/// runs, and renamed into place only when complete), then for the run's secret (there already
/// in a run's own pod; a warm pod waits up to `secret_wait` for the run that takes it), then
/// becomes the executor, so that the executor is the process the pod lives by and not an exec
/// session that a dropped connection would orphan. It gives up if nothing comes, so that a pod
/// whose client died early ends. A kept pod stays up after the executor, for a post-mortem,
/// until it is deleted or expires.
pub fn boot_script(keep: bool, secret_wait: Duration) -> String {
    // As PID 1 the shell would ignore SIGTERM: without the trap a deleted pod lingers for its
    // whole grace period.
    let wait = format!(
        "trap 'exit 143' TERM INT; i=0; while [ ! -x {BINARY_PATH} ]; do \
           i=$((i+1)); if [ $i -gt {binary_polls} ]; then echo 'buildr: no executor binary arrived within {binary_secs}s' >&2; exit 1; fi; \
           sleep {binary_poll}; \
         done; \
         i=0; while [ ! -e {SECRET_PATH} ]; do \
           i=$((i+1)); if [ $i -gt {secret_polls} ]; then echo 'buildr: no run came for this pod within {secret_secs}s' >&2; exit 1; fi; \
           sleep {secret_poll} & echo $! > {SECRET_WAITER}; wait $!; \
         done; ",
        binary_polls = polls(BINARY_WAIT, BINARY_POLL),
        binary_secs = BINARY_WAIT.as_secs(),
        binary_poll = BINARY_POLL.as_secs_f64(),
        secret_polls = polls(secret_wait, SECRET_POLL),
        secret_secs = secret_wait.as_secs(),
        secret_poll = SECRET_POLL.as_secs_f64(),
    );
    let executor = ExecutorCommand {
        binary: BINARY_PATH.into(),
        listen: ListenAddr::Tcp((std::net::Ipv4Addr::LOCALHOST, EXECUTOR_PORT).into()),
        state_dir: format!("{BUILDR_DIR}/state").into(),
        workspace: WORKSPACE_DIR.into(),
        secret_file: SECRET_PATH.into(),
        tools_dir: TOOLS_DIR.into(),
        idle_timeout: Some(IDLE_TIMEOUT),
        env_prefix: Some(TASK_ENV_PREFIX.to_string()),
        // The pod is the boundary; the executor's default leaves the task unconfined there.
        sandbox: None,
    };
    if keep {
        format!(
            "{wait}{}; echo 'buildr: the executor is done; the pod is kept'; while :; do sleep 3600 & wait $!; done",
            executor.shell(false)
        )
    } else {
        format!("{wait}{}", executor.shell(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_are_counted_in_looks_that_add_up_to_their_time() {
        let script = boot_script(false, Duration::from_secs(330));
        assert!(
            script.contains(
                "if [ $i -gt 15000 ]; then echo 'buildr: no executor binary arrived within 300s'"
            ),
            "{script}"
        );
        assert!(script.contains("sleep 0.02; done;"), "{script}");
        assert!(
            script.contains(
                "if [ $i -gt 330 ]; then echo 'buildr: no run came for this pod within 330s'"
            ),
            "{script}"
        );
        assert!(script.contains("sleep 1 & echo $! > /buildr/secret-waiter"));
    }

    #[test]
    fn the_scripts_are_valid_shell() {
        for keep in [false, true] {
            let script = boot_script(keep, Duration::from_secs(300));
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
    }
}
