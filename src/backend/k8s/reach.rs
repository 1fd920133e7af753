//! Whether a request reached the API server, and if it did not, why in words: a connection
//! refused, a name that does not resolve, a TLS handshake that failed, no answer in time. A
//! request that never left asked for nothing, so nothing it would have created exists.

use std::error::Error;
use std::io::ErrorKind;

use super::kubeconfig::CONNECT_TIMEOUT;

/// Why `error`'s request never reached the API server, or `None` when it may have (the server
/// answered, or the connection broke after the request went out).
pub fn not_sent(error: &kube::Error) -> Option<String> {
    let chain = causes(error);
    // hyper's client says "connect" only when no connection was made: nothing was sent.
    chain.iter().find(|e| {
        e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect())
    })?;
    let innermost = chain.last().map(|e| e.to_string()).unwrap_or_default();
    let has_kind = |kind: ErrorKind| {
        chain.iter().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == kind)
        })
    };
    Some(if has_kind(ErrorKind::ConnectionRefused) {
        "connection refused (is the cluster up, and is this its address?)".to_string()
    } else if has_kind(ErrorKind::TimedOut) {
        format!(
            "no connection within {}s (a server that is down or a firewall that drops the \
             packets)",
            CONNECT_TIMEOUT.as_secs()
        )
    } else if has_kind(ErrorKind::InvalidData) {
        // rustls's failures reach hyper as invalid data.
        format!(
            "the TLS handshake failed: {innermost} (does the kubeconfig's certificate-authority \
             belong to this server, and does it speak TLS?)"
        )
    } else if chain.iter().any(|e| e.to_string() == "dns error") {
        // hyper's resolver names its failure only in words.
        format!("the host name does not resolve: {innermost}")
    } else {
        innermost
    })
}

/// `error` and its sources, outermost first. An I/O error's source skips the error it wraps
/// (rustls's, say): that one is taken instead.
fn causes<'a>(error: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
        None => e.source(),
    })
    .collect()
}
