//! Paces the redials after a lost connection and decides when to give up: one policy for the
//! event stream and the archive fetch alike.

use std::time::{Duration, Instant};

use tonic::{Code, Status};

use super::ClientError;
use super::session::Reconnect;
use crate::backend::process::Backoff;
use crate::printable::Printable;

/// The state of one call's reconnection: since when it has been lost, and the next delay.
pub(crate) struct Redial {
    policy: Reconnect,
    call: &'static str,
    lost_since: Option<Instant>,
    backoff: Backoff,
}

impl Redial {
    pub(crate) fn new(call: &'static str, policy: Reconnect) -> Self {
        Self {
            policy,
            call,
            lost_since: None,
            backoff: Backoff::between(policy.first_delay, policy.max_delay),
        }
    }

    /// The call works (again); says whether it had been lost, that is, whether this is a resume.
    pub(crate) fn connected(&mut self) -> bool {
        self.backoff.reset();
        self.lost_since.take().is_some()
    }

    /// The call failed with `status`: the delay before the next attempt, or the error to end
    /// with when a redial cannot help (the request was at fault) or has been tried long enough.
    pub(crate) fn lost(&mut self, status: Status) -> Result<Duration, ClientError> {
        if let Some(reason) = super::connect::denied(&status) {
            return Err(ClientError::Denied { reason });
        }
        if !is_transient(&status) {
            return Err(ClientError::Rpc {
                call: self.call,
                status: Box::new(status),
            });
        }
        let since = *self.lost_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.policy.give_up_after {
            return Err(ClientError::ConnectionLost {
                after: self.policy.give_up_after,
                last_error: status.message().to_string(),
            });
        }
        tracing::warn!(call = self.call, error = %Printable(status.message()), "lost the executor; reconnecting");
        Ok(self.backoff.next_delay())
    }
}

/// Errors that a redial can cure: the connection, not the request, was at fault.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(give_up_after: Duration) -> Reconnect {
        Reconnect {
            give_up_after,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        }
    }

    #[test]
    fn backs_off_up_to_the_maximum_and_starts_over_after_a_success() {
        let mut redial = Redial::new("StartTask", policy(Duration::from_secs(60)));
        let delays: Vec<_> = (0..4)
            .map(|_| redial.lost(Status::unavailable("cut")).unwrap())
            .collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(delays, [ms(100), ms(200), ms(300), ms(300)]);
        assert!(redial.connected(), "a success after a loss is a resume");
        assert!(!redial.connected());
        assert_eq!(redial.lost(Status::unavailable("cut")).unwrap(), ms(100));
    }

    #[test]
    fn a_request_error_is_not_retried() {
        let mut redial = Redial::new("FetchArchive", policy(Duration::from_secs(60)));
        let error = redial.lost(Status::not_found("no such run")).unwrap_err();
        assert_eq!(error.to_string(), "FetchArchive failed: no such run");
    }

    #[test]
    fn gives_up_after_the_limit() {
        let mut redial = Redial::new("StartTask", policy(Duration::ZERO));
        let error = redial.lost(Status::unavailable("refused")).unwrap_err();
        assert!(
            matches!(error, ClientError::ConnectionLost { .. }),
            "{error}"
        );
    }
}
