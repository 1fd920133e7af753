//! The toolkit every backend uses for the processes a run starts, here or through them on the
//! other side: a child that goes when `buildr run` dies, the SIGTERM stop, the kept tail of
//! what a command said on stderr, and the one backoff between attempts.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

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
