//! The shell scripts a run sends to the host, and how their answers are read. They need `sh`
//! and nothing else (`tar` is the upload's, see [`crate::backend::upload`]): the run directory,
//! the binary's cache, the executor's start and its end are all plain shell.

use std::time::Duration;

use crate::backend::executor_command::{ExecutorCommand, quote};
use crate::executor::ListenAddr;
use crate::printable::Printable;
use crate::sandbox::Policy;

/// How long the executor may take to bind its socket once started.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the executor gets to stop its task and exit before it is killed: its own grace
/// between SIGTERM and SIGKILL of the task is 5 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the run directory of an executor that died stays for the client to read why.
const LINGER: Duration = Duration::from_secs(5);
/// The executor's process id, and its exit status once it exited, in the run directory.
const PID: &str = "executor.pid";
const STATUS: &str = "executor.status";
/// How often the scripts look again while they wait.
const POLL: Duration = Duration::from_millis(20);

/// The exit status of the probe when the run directory cannot be made.
pub const NO_RUN_DIR: i32 = 91;

/// The first round trip: the machine's architecture (`uname -m`), a fresh private run directory
/// under `$XDG_RUNTIME_DIR` (else `/tmp`) with its workspace, and whether the executor binary
/// `sha256` is in the user's cache. The cache is a directory only this user owns and can write,
/// used only when the host has a tool to hash with (else the binary is sent every time). A task
/// runs as this same user and can replace what is cached, so the cached file is never trusted
/// nor run: it is copied into the private run directory and that copy is hashed, by the host's
/// `sha256sum`, `shasum` or `openssl` (from the system's directories first), never by the
/// binary itself; the copy is what runs, so nothing can be swapped between the check and the
/// use. A copy that does not match is removed, and so is the cached file (the run sends the
/// binary and caches it again).
pub fn probe(run_id: &str, sha256: &str) -> String {
    format!(
        r#"echo "machine=$(uname -m)"
umask 077
{}
mkdir "$run" && mkdir "$run/workspace" || exit {NO_RUN_DIR}
echo "run=$run"
{SHA256}
cache="${{XDG_CACHE_HOME:-$HOME/.cache}}/buildr/executor"
if sha256 /dev/null >/dev/null && mkdir -p "$cache" 2>/dev/null && [ -O "$cache" ] && [ ! -L "$cache" ]; then
  case "$(ls -ld "$cache")" in
    d????w*|d???????w*) ;;
    *)
      echo "cache=$cache"
      if [ -f "$cache/{sha256}" ]; then
        if mkdir "$run/bin" && cp "$cache/{sha256}" "$run/bin/buildr" && chmod 700 "$run/bin/buildr" \
          && [ "$(sha256 "$run/bin/buildr")" = {sha256} ]; then
          echo cached
        else
          rm -f "$run/bin/buildr" "$cache/{sha256}"
        fi
      fi
      ;;
  esac
fi
packs="${{XDG_CACHE_HOME:-$HOME/.cache}}/buildr/packs"
if mkdir -p "$packs" 2>/dev/null && [ -O "$packs" ] && [ ! -L "$packs" ]; then
  case "$(ls -ld "$packs")" in
    d????w*|d???????w*) ;;
    *)
      echo "packs=$packs"
      for pack in "$packs"/*; do if [ -f "$pack" ]; then echo "pack=${{pack##*/}}"; fi; done
      ;;
  esac
fi
"#,
        locate(run_id)
    )
}

/// `sha256 FILE` prints the file's SHA-256 in hex, with whichever tool the host has, looked
/// for in the system's directories before the user's `PATH` (which a task could have changed);
/// fails when there is none.
const SHA256: &str = r#"sha256() (
  PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
  if command -v sha256sum >/dev/null; then set -- $(sha256sum < "$1")
  elif command -v shasum >/dev/null; then set -- $(shasum -a 256 < "$1")
  elif command -v openssl >/dev/null; then set -- $(openssl dgst -sha256 < "$1"); shift $(($# - 1))
  else exit 1; fi
  [ -n "$1" ] && echo "$1"
)"#;

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
    /// The user's pack cache, when it is private (inputs then go by content).
    pub packs: Option<crate::backend::by_content::HostPacks>,
}

impl Probe {
    pub fn parse(output: &str) -> Option<Probe> {
        let mut machine = None;
        let mut run_dir = None;
        let mut cache = None;
        let mut cached = false;
        let mut packs: Option<crate::backend::by_content::HostPacks> = None;
        for line in output.lines() {
            match line.split_once('=') {
                Some(("machine", value)) => machine = Some(value.to_string()),
                Some(("run", value)) => run_dir = Some(value.to_string()),
                Some(("cache", value)) => cache = Some(value.to_string()),
                Some(("packs", value)) => {
                    packs = Some(crate::backend::by_content::HostPacks {
                        dir: value.to_string(),
                        present: Default::default(),
                    })
                }
                Some(("pack", value)) => {
                    if let Some(packs) = packs.as_mut() {
                        packs.present.insert(value.to_string());
                    }
                }
                _ if line == "cached" => cached = true,
                _ => {}
            }
        }
        Some(Probe {
            machine: machine.filter(|m| !m.is_empty())?,
            run_dir: run_dir?,
            cached: cached && cache.is_some(),
            cache,
            packs,
        })
    }
}

/// The paths of a run on the host, all in its run directory but the cached binary.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: String,
    /// Where the binary, once sent, is also kept for the next runs (`cache/<sha256>`); `None`
    /// when it came from there, or the host has no private cache.
    pub cache_as: Option<String>,
}

impl RunDir {
    pub fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// The binary that runs: the run's own copy, sent or checked out of the cache.
    pub fn binary(&self) -> String {
        self.path("bin/buildr")
    }

    pub fn socket(&self) -> String {
        self.path("executor.sock")
    }
}

/// Starts the executor detached from the session (so that a broken connection leaves it
/// running, for the client to come back to), waits until it listens and returns. Its wrapper
/// removes the run directory when it exits, unless the run is kept: a client killed outright
/// leaves an executor that ends on its idle timeout and takes its directory with it.
pub fn launch(run: &RunDir, idle_timeout: Duration, keep: bool, sandbox: &Policy) -> String {
    let executor = ExecutorCommand {
        binary: run.binary().into(),
        listen: ListenAddr::Unix(run.socket().into()),
        state_dir: run.path("state").into(),
        workspace: run.path("workspace").into(),
        secret_file: run.path("secret").into(),
        tools_dir: run.path("tools").into(),
        idle_timeout: Some(idle_timeout),
        env_prefix: None,
        sandbox: Some(sandbox.clone()),
    };
    let dir = quote(&run.dir);
    let (out, log, pid, status) = (
        quote(&run.path("executor.out")),
        quote(&run.path("executor.log")),
        quote(&run.path(PID)),
        quote(&run.path(STATUS)),
    );
    // After an exit the run did not ask for, the directory (its status and log) is left a while
    // for the client's check to read, or its clean-up to remove.
    let remove = if keep {
        String::new()
    } else {
        format!(
            "; [ $s -eq 0 ] || {{ i=0; while [ -d {dir} ] && [ $i -lt {polls} ]; do sleep 0.1; \
             i=$((i+1)); done; }}; rm -rf {dir}",
            polls = LINGER.as_millis() / 100,
        )
    };
    // A binary that was sent is kept for the next runs, which check their own copy of it; a
    // failure to keep it costs only a later copy.
    let store = match &run.cache_as {
        Some(cache_as) => {
            let (binary, cached, incoming) = (
                quote(&run.binary()),
                quote(cache_as),
                format!("{}.incoming-$$", quote(cache_as)),
            );
            format!(
                "cp {binary} {incoming} 2>/dev/null && mv -f {incoming} {cached} 2>/dev/null \
                 || rm -f {incoming}\n"
            )
        }
        None => String::new(),
    };
    let polls = LISTEN_TIMEOUT.as_millis() / POLL.as_millis();
    format!(
        "{store}( trap '' HUP; {} & echo $! > {pid}; wait $!; s=$?; echo $s > {status}{remove} ) </dev/null >{out} 2>{log} &
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
if [ -f \"$run/{PID}\" ] && read -r pid < \"$run/{PID}\" && [ -n \"$pid\" ]; then
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

/// Whether the executor still runs, and if not, its exit status and the end of its log (see
/// [`Check::parse`]).
pub fn check(run: &RunDir) -> String {
    let (pid, status, log) = (
        quote(&run.path(PID)),
        quote(&run.path(STATUS)),
        quote(&run.path("executor.log")),
    );
    format!(
        "if read -r pid < {pid} && kill -0 \"$pid\"; then echo alive; exit 0; fi 2>/dev/null
echo gone
if read -r s < {status}; then echo \"status=$s\"; tail -n 5 {log}; fi 2>/dev/null
"
    )
}

/// The answer to [`check`].
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Alive,
    /// The executor's process is gone: how it ended, when its run directory still said.
    Gone {
        status: Option<i32>,
        /// The last line of its log.
        said: Option<String>,
    },
}

impl Check {
    pub fn parse(answer: &str) -> Option<Check> {
        // Whatever the login shell says first is not the answer.
        let mut lines = answer
            .lines()
            .skip_while(|line| *line != "alive" && *line != "gone");
        match lines.next()? {
            "alive" => Some(Check::Alive),
            "gone" => {
                let status = lines
                    .next()
                    .and_then(|line| line.strip_prefix("status="))
                    .and_then(|status| status.trim().parse().ok());
                let log: Vec<&str> = lines.collect();
                let said = crate::backend::process::last_line(&log.join("\n")).map(str::to_string);
                Some(Check::Gone { status, said })
            }
            _ => None,
        }
    }

    /// What happened to the executor, in words: `killed by SIGKILL`, `exited with status 3`.
    pub fn describe(&self) -> Option<String> {
        let Check::Gone { status, said } = self else {
            return None;
        };
        let ending = match said {
            Some(line) => format!(" (its log ends: {})", Printable(line)),
            None => String::new(),
        };
        // The shell's status of a process killed by signal N is 128 + N.
        Some(match status {
            Some(code @ 129..=192) => {
                let signal = nix::sys::signal::Signal::try_from(code - 128).map_or_else(
                    |_| format!("signal {}", code - 128),
                    |s| s.as_str().to_string(),
                );
                format!("killed by {signal}")
            }
            Some(code) => format!("exited with status {code}{ending}"),
            None => "its process is gone".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answer_is_read_line_by_line() {
        let output = "machine=x86_64\nrun=/tmp/buildr-abc\ncache=/home/u/.cache/buildr/executor\n\
                      cached\npacks=/home/u/.cache/buildr/packs\npack=ab12\npack=cd34\n";
        assert_eq!(
            Probe::parse(output),
            Some(Probe {
                machine: "x86_64".to_string(),
                run_dir: "/tmp/buildr-abc".to_string(),
                cache: Some("/home/u/.cache/buildr/executor".to_string()),
                cached: true,
                packs: Some(crate::backend::by_content::HostPacks {
                    dir: "/home/u/.cache/buildr/packs".to_string(),
                    present: ["ab12".to_string(), "cd34".to_string()].into(),
                }),
            })
        );
        assert_eq!(Probe::parse("machine=\nrun=/tmp/x\n"), None);
    }

    #[test]
    fn a_check_says_how_the_executor_ended() {
        let gone = |answer: &str| Check::parse(answer).unwrap().describe();
        assert_eq!(Check::parse("alive\n"), Some(Check::Alive));
        assert_eq!(Check::Alive.describe(), None);
        assert_eq!(gone("gone\nstatus=137\n").unwrap(), "killed by SIGKILL");
        assert_eq!(
            gone("gone\nstatus=143\nstopping\n").unwrap(),
            "killed by SIGTERM"
        );
        assert_eq!(
            gone("gone\nstatus=101\nstarting\npanicked at x.rs:1\n\n").unwrap(),
            "exited with status 101 (its log ends: panicked at x.rs:1)"
        );
        assert_eq!(gone("gone\n").unwrap(), "its process is gone");
        assert_eq!(Check::parse("Last login: today\n"), None);
        assert_eq!(
            Check::parse("Last login: today\nalive\n"),
            Some(Check::Alive)
        );
    }

    /// The probe, run by this machine's `sh` in a scratch home: what it says, and what is in
    /// the run directory and the cache after it.
    fn probe_here(home: &std::path::Path, binary: &[u8]) -> (Probe, Option<Vec<u8>>, bool) {
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(binary));
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe("abc", &sha256))
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home)
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let probe = Probe::parse(&String::from_utf8_lossy(&output.stdout)).unwrap();
        let copy = std::fs::read(home.join("buildr-abc/bin/buildr")).ok();
        let still_cached = home.join(".cache/buildr/executor").join(&sha256).exists();
        std::fs::remove_dir_all(home.join("buildr-abc")).unwrap();
        (probe, copy, still_cached)
    }

    #[test]
    fn a_cached_binary_is_hashed_by_the_host_in_the_runs_own_copy_never_run() {
        use sha2::Digest;
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let binary = b"#!/bin/sh\necho the real one\n";
        let cached = home
            .path()
            .join(".cache/buildr/executor")
            .join(hex::encode(sha2::Sha256::digest(binary)));

        // Nothing cached yet: the cache is named, for the run to keep its binary there.
        let (probe, copy, _) = probe_here(home.path(), binary);
        assert_eq!(
            probe.cache,
            Some(format!("{}/.cache/buildr/executor", home.path().display()))
        );
        assert!(!probe.cached);
        assert_eq!(copy, None);

        // The same bytes: the run gets its own checked copy.
        std::fs::write(&cached, binary).unwrap();
        let (probe, copy, still_cached) = probe_here(home.path(), binary);
        assert!(probe.cached);
        assert_eq!(copy.as_deref(), Some(&binary[..]));
        assert!(still_cached);

        // Replaced (as a task running as the same user could): neither run nor used, and
        // removed, so that the run sends the binary and caches it again.
        let canary = home.path().join("canary");
        std::fs::write(
            &cached,
            format!("#!/bin/sh\necho ran > {}\n", canary.display()),
        )
        .unwrap();
        std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (probe, copy, still_cached) = probe_here(home.path(), binary);
        assert!(!probe.cached);
        assert_eq!(copy, None);
        assert!(!still_cached);
        assert!(!canary.exists());
    }

    /// Every script parses as `sh` reads it (`sh -n`); what they do on a host is tested over a
    /// real sshd in tests/ssh.rs.
    #[test]
    fn the_scripts_are_valid_shell() {
        for script in [
            probe("abc", "00"),
            launch(
                &RunDir {
                    dir: "/tmp/x y".into(),
                    cache_as: Some("/c/d e/00".into()),
                },
                Duration::from_secs(300),
                false,
                &Policy::default(),
            ),
            clean_up("abc", true),
            check(&RunDir {
                dir: "/tmp/x y".into(),
                cache_as: None,
            }),
        ] {
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
    }
}
