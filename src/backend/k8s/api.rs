//! Talking to the API server: its failures put into buildr's words, and the one backoff every
//! retry of the k8s backend waits by.

use std::time::Instant;

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

pub use crate::backend::process::Backoff;

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
    fn one_line_joins_the_lines_of_a_message() {
        assert_eq!(
            one_line("pod refused:\n  no\tquota \n"),
            "pod refused: no quota"
        );
    }
}
