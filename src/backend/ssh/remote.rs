//! The shell scripts a run sends to the host, and how their answers are read. They need `sh`
//! and nothing else (`tar` is the upload's, see [`crate::backend::upload`]): the run directory,
//! the binary's cache, the executor's start and its end are all plain shell.

use std::time::Duration;

use crate::backend::executor_command::{ExecutorCommand, quote};
use crate::executor::ListenAddr;

/// How long the executor may take to bind its socket once started.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the executor gets to stop its task and exit before it is killed: its own grace
/// between SIGTERM and SIGKILL of the task is 5 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the scripts look again while they wait.
const POLL: Duration = Duration::from_millis(20);

/// The exit status of the probe when the run directory cannot be made.
pub const NO_RUN_DIR: i32 = 91;

/// The first round trip: the machine's architecture (`uname -m`), a fresh private run directory
/// under `$XDG_RUNTIME_DIR` (else `/tmp`) with its workspace, and whether the executor binary
/// `sha256` is already in the user's cache and intact. The cache is a directory only this user
/// owns and can write (else it is not used); a damaged binary there is removed.
pub fn probe(run_id: &str, sha256: &str) -> String {
    format!(
        r#"echo "machine=$(uname -m)"
umask 077
{}
mkdir "$run" && mkdir "$run/workspace" || exit {NO_RUN_DIR}
echo "run=$run"
cache="${{XDG_CACHE_HOME:-$HOME/.cache}}/buildr/executor"
if mkdir -p "$cache" 2>/dev/null && [ -O "$cache" ] && [ ! -L "$cache" ]; then
  case "$(ls -ld "$cache")" in
    d????w*|d???????w*) ;;
    *)
      echo "cache=$cache"
      bin="$cache/{sha256}"
      if [ -x "$bin" ] && "$bin" self-check --sha256 {sha256} >/dev/null 2>&1; then
        echo cached
      else
        rm -f "$bin"
      fi
      ;;
  esac
fi
"#,
        locate(run_id)
    )
}

/// Sets `$run` to the run's directory on the host: under `$XDG_RUNTIME_DIR` when that is a
/// writable directory, else `/tmp`. The probe makes it there; the clean-up finds it the same
/// way, so that a run cut short before the probe's answer still removes it.
fn locate(run_id: &str) -> String {
    format!(
        r#"base=${{XDG_RUNTIME_DIR:-/tmp}}
[ -d "$base" ] && [ -w "$base" ] || base=/tmp
run="$base/buildr-{run_id}""#
    )
}

/// What the probe found.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    /// `uname -m`.
    pub machine: String,
    pub run_dir: String,
    /// The user's binary cache, when it is private.
    pub cache: Option<String>,
    /// The binary is in the cache and checked.
    pub cached: bool,
}

impl Probe {
    pub fn parse(output: &str) -> Option<Probe> {
        let mut machine = None;
        let mut run_dir = None;
        let mut cache = None;
        let mut cached = false;
        for line in output.lines() {
            match line.split_once('=') {
                Some(("machine", value)) => machine = Some(value.to_string()),
                Some(("run", value)) => run_dir = Some(value.to_string()),
                Some(("cache", value)) => cache = Some(value.to_string()),
                _ if line == "cached" => cached = true,
                _ => {}
            }
        }
        Some(Probe {
            machine: machine.filter(|m| !m.is_empty())?,
            run_dir: run_dir?,
            cached: cached && cache.is_some(),
            cache,
        })
    }
}

/// The paths of a run on the host, all in its run directory but the cached binary.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: String,
    pub binary: String,
}

impl RunDir {
    pub fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    pub fn socket(&self) -> String {
        self.path("executor.sock")
    }
}

/// Starts the executor detached from the session (so that a broken connection leaves it
/// running, for the client to come back to), waits until it listens and returns. Its wrapper
/// removes the run directory when it exits, unless the run is kept: a client killed outright
/// leaves an executor that ends on its idle timeout and takes its directory with it.
pub fn launch(run: &RunDir, idle_timeout: Duration, keep: bool) -> String {
    let executor = ExecutorCommand {
        binary: run.binary.clone().into(),
        listen: ListenAddr::Unix(run.socket().into()),
        state_dir: run.path("state").into(),
        workspace: run.path("workspace").into(),
        secret_file: run.path("secret").into(),
        tools_dir: run.path("tools").into(),
        idle_timeout: Some(idle_timeout),
        env_prefix: None,
    };
    let dir = quote(&run.dir);
    let (out, log, pid) = (
        quote(&run.path("executor.out")),
        quote(&run.path("executor.log")),
        quote(&run.path("executor.pid")),
    );
    let remove = if keep {
        String::new()
    } else {
        format!("; rm -rf {dir}")
    };
    let polls = LISTEN_TIMEOUT.as_millis() / POLL.as_millis();
    format!(
        "( trap '' HUP; {} & echo $! > {pid}; wait $!{remove} ) </dev/null >{out} 2>{log} &
wrapper=$!
i=0
while :; do
  line=; read -r line < {out} 2>/dev/null
  case $line in 'listening on '*) exit 0 ;; esac
  if ! kill -0 $wrapper 2>/dev/null; then cat {log} >&2 2>/dev/null; echo 'the executor exited before it listened' >&2; exit 1; fi
  i=$((i+1)); if [ $i -gt {polls} ]; then echo 'the executor did not listen within {secs}s' >&2; exit 1; fi
  sleep {poll}
done
",
        executor.shell(false),
        secs = LISTEN_TIMEOUT.as_secs(),
        poll = POLL.as_secs_f64(),
    )
}

/// Ends the run `run_id` on the host: SIGTERM to the executor (it stops its task's whole
/// process group, SIGKILL after its grace), SIGKILL if it is still there after
/// [`STOP_TIMEOUT`], and the run directory removed unless it is kept.
pub fn clean_up(run_id: &str, keep: bool) -> String {
    let polls = STOP_TIMEOUT.as_millis() / POLL.as_millis();
    let remove = if keep { "" } else { "rm -rf \"$run\"" };
    format!(
        "{}
if [ -f \"$run/executor.pid\" ] && read -r pid < \"$run/executor.pid\" && [ -n \"$pid\" ]; then
  kill -TERM $pid 2>/dev/null
  i=0
  while kill -0 $pid 2>/dev/null; do
    i=$((i+1)); if [ $i -gt {polls} ]; then kill -KILL $pid 2>/dev/null; break; fi
    sleep {poll}
  done
fi
{remove}
",
        locate(run_id),
        poll = POLL.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answer_is_read_line_by_line() {
        let output =
            "machine=x86_64\nrun=/tmp/buildr-abc\ncache=/home/u/.cache/buildr/executor\ncached\n";
        assert_eq!(
            Probe::parse(output),
            Some(Probe {
                machine: "x86_64".to_string(),
                run_dir: "/tmp/buildr-abc".to_string(),
                cache: Some("/home/u/.cache/buildr/executor".to_string()),
                cached: true,
            })
        );
        assert_eq!(Probe::parse("machine=\nrun=/tmp/x\n"), None);
    }

    /// The scripts are run by `sh` on this machine as they would be on the host: the executor
    /// starts, the clean-up stops it and removes the directory.
    #[test]
    fn the_scripts_are_valid_shell() {
        for script in [
            probe("abc", "00"),
            launch(
                &RunDir {
                    dir: "/tmp/x y".into(),
                    binary: "/b".into(),
                },
                Duration::from_secs(300),
                false,
            ),
            clean_up("abc", true),
        ] {
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
    }
}
