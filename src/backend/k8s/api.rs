//! Talking to the API server: its failures put into buildr's words, and the one backoff every
//! retry of the k8s backend waits by.

use std::time::{Duration, Instant};

use super::{access, reach};

/// The API server's own words for a failed request (kube's Display adds a debug dump); for a
/// refusal by the authorizer (403, RBAC), which permission is missing and what shows them all (see
/// [`access::Denial`]). Every error of the k8s path that carries a `kube::Error` shows it here.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if access::is_forbidden(error) => {
            access::Denial::from_message(&status.message).to_string()
        }
        kube::Error::Api(status) => status.message.clone(),
        other => match reach::not_sent(other) {
            Some(cause) => format!("cannot reach the API server: {cause}"),
            None => other.to_string(),
        },
    }
}

/// `text` with every run of whitespace (newlines included) made one space: the API server's and
/// the kubelet's messages span lines, buildr's errors take one.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// The waits between attempts at a request the cluster cannot take yet (an API server that
/// restarts, a container the kubelet does not know yet): short at first, since most such
/// states pass within moments, doubling so that a longer outage is not hammered, and capped so
/// that its end is noticed soon. Each caller keeps its own limit (a deadline, a number of
/// attempts); this says only how long to wait before the next one.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait before the next attempt: each twice the last, up to 2 s.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `call` until the API server answers it (a refusal is an answer) or `deadline` passes.
pub async fn until_reachable<T, F, Fut>(deadline: Instant, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = Backoff::new();
    loop {
        let result = call().await;
        let delay = backoff.next_delay();
        match result {
            Err(e) if !matches!(e, kube::Error::Api(_)) && Instant::now() + delay < deadline => {
                tracing::debug!("the API server is not reachable ({e}); retrying");
                tokio::time::sleep(delay).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..7).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn one_line_joins_the_lines_of_a_message() {
        assert_eq!(
            one_line("pod refused:\n  no\tquota \n"),
            "pod refused: no quota"
        );
    }
}
