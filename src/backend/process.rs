//! The toolkit every backend uses for the processes a run starts, here or through them on the
//! other side: a child that goes when `buildr run` dies, the SIGTERM stop, a command run to its
//! end with its stdin fed and the tail of its stderr kept, and the one backoff between attempts.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How much of a command's stderr is kept for its error message: its tail says why.
const STDERR_KEPT: usize = 4096;

/// Makes `command`'s process receive SIGTERM when `buildr run` dies, even by SIGKILL, so that
/// what it started goes with it (an executor then stops its task; an ssh master closes).
pub fn dies_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(io::Error::from)
        });
    }
}

/// SIGTERM to `child` if it still runs: the processes buildr starts stop what they started on
/// SIGTERM (an executor its task's whole process group), where a plain kill would orphan it.
pub fn terminate(child: &mut Child) {
    if let Ok(None) = child.try_wait()
        && let Some(pid) = child.id()
    {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

/// The last [`STDERR_KEPT`] bytes of `stream`, as text.
pub async fn tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * STDERR_KEPT {
            kept.drain(..kept.len() - STDERR_KEPT);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Why a command run to its end ([`run_to_end`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("cannot start it")]
    Spawn(#[source] io::Error),
    #[error("it exited with status {code}{}", said(.stderr))]
    Exited { code: i32, stderr: String },
    #[error("it was killed by a signal{}", said(.stderr))]
    Killed { stderr: String },
    #[error("cannot send the data")]
    Feed(#[source] io::Error),
}

/// `; it said: LINE` with the last line of what a command said, or nothing.
pub fn said(stderr: &str) -> String {
    match last_line(stderr) {
        Some(line) => format!("; it said: {line}"),
        None => String::new(),
    }
}

/// The last line of what a command said that is not one of ssh's own warnings: the reason, in
/// its words.
pub fn last_line(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.starts_with("Warning: "))
}

/// A command's stdin, as its feed writes it: once the step that runs the command is dropped,
/// every write fails, so that the feed stops and the command sees its input end.
pub struct Stdin {
    pipe: std::fs::File,
    dropped: CancellationToken,
}

impl io::Write for Stdin {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.dropped.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the run stopped this copy",
            ));
        }
        self.pipe.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pipe.flush()
    }
}

/// What writes a command's stdin, on a blocking thread.
pub type Feed = Box<dyn FnOnce(Stdin) -> io::Result<()> + Send>;

/// Runs `command` to its end, its stdin written by `feed` (or empty), and returns its stdout
/// once it exited with status 0; else its status and the tail of its stderr. Once `dropped`
/// (the step that wanted it is gone), the feed's writes fail and the command gets `drain` more
/// to end by itself; then it is killed.
pub async fn run_to_end(
    mut command: Command,
    feed: Option<Feed>,
    dropped: CancellationToken,
    drain: Duration,
) -> Result<Vec<u8>, Failed> {
    command
        .stdin(if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(Failed::Spawn)?;
    let feeder = match (feed, child.stdin.take()) {
        (Some(feed), Some(stdin)) => {
            let pipe = std::fs::File::from(stdin.into_owned_fd().map_err(Failed::Feed)?);
            let stdin = Stdin {
                pipe,
                dropped: dropped.clone(),
            };
            Some(tokio::task::spawn_blocking(move || feed(stdin)))
        }
        _ => None,
    };
    let (mut stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read_stdout = async {
        let mut bytes = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            stdout.read_to_end(&mut bytes).await.map(|_| bytes)
        } else {
            Ok(bytes)
        }
    };
    let read_stderr = async {
        match stderr {
            Some(stderr) => tail(stderr).await,
            None => String::new(),
        }
    };
    let ended = async {
        let drained = async {
            dropped.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            status = child.wait() => return status,
            () = drained => {}
        }
        let _ = child.start_kill();
        child.wait().await
    };
    let (stdout, stderr, status) = tokio::join!(read_stdout, read_stderr, ended);
    let status = status.map_err(Failed::Spawn)?;
    let fed = match feeder {
        Some(feeder) => feeder
            .await
            .map_err(|e| Failed::Feed(io::Error::other(e)))?,
        None => Ok(()),
    };
    match status.code() {
        Some(0) => {}
        Some(code) => return Err(Failed::Exited { code, stderr }),
        None => return Err(Failed::Killed { stderr }),
    }
    // A command that succeeded may not have needed all of its stdin (tar stops at its end
    // marker); a local failure to produce it is still an error.
    match fed {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failed::Feed(e)),
        _ => stdout.map_err(Failed::Spawn),
    }
}

/// The waits between attempts at something that cannot be done yet (an API server that
/// restarts, a container the kubelet does not know yet, an executor whose connection broke):
/// short at first, since most such states pass within moments, doubling so that a longer
/// outage is not hammered, and capped so that its end is noticed soon. Each caller keeps its
/// own limit (a deadline, a number of attempts); this says only how long to wait before the
/// next one.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// 100 ms, doubling up to 2 s.
    pub fn new() -> Self {
        Self::between(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Waits from `first`, doubling up to `max`.
    pub fn between(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt: each twice the last, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// It worked: the next wait is the first again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_starts_over() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..7).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_delay().as_millis(), 100);
    }

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    #[tokio::test]
    async fn a_command_run_to_its_end_gets_its_stdin_and_gives_its_stdout() {
        let feed: Feed = Box::new(|mut stdin| io::Write::write_all(&mut stdin, b"hello"));
        let never = CancellationToken::new();
        let out = run_to_end(sh("tr a-z A-Z"), Some(feed), never, Duration::ZERO).await;
        assert_eq!(out.unwrap(), b"HELLO");
    }

    #[tokio::test]
    async fn a_command_that_fails_says_its_status_and_last_words() {
        let failed = run_to_end(
            sh("echo first >&2; echo 'no such thing' >&2; exit 3"),
            None,
            CancellationToken::new(),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert_eq!(
            failed.to_string(),
            "it exited with status 3; it said: no such thing"
        );
    }

    #[tokio::test]
    async fn a_dropped_command_is_killed_after_its_drain() {
        let dropped = CancellationToken::new();
        dropped.cancel();
        let started = std::time::Instant::now();
        let failed = run_to_end(
            sh("exec sleep 30"),
            None,
            dropped,
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(matches!(failed, Failed::Killed { .. }), "{failed:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn the_tail_keeps_the_end() {
        let said: Vec<u8> = (0..10_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let kept = tail(&said[..]).await;
        assert!(kept.ends_with("9999\n"), "{kept}");
        assert!(kept.len() <= 2 * STDERR_KEPT);
    }
}
