//! The server side of the per-run secret: every call, health checks included, must carry it
//! (see [`crate::secret`]); a call without it, or with a wrong one, gets UNAUTHENTICATED and is
//! logged. An executor without a secret (a private Unix socket, or loopback) lets every call in.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::secret::{METADATA_KEY, Secret};

#[derive(Clone)]
pub struct Authenticate {
    secret: Option<Arc<Secret>>,
}

impl Authenticate {
    pub fn new(secret: Option<Secret>) -> Self {
        Self {
            secret: secret.map(Arc::new),
        }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = &self.secret else {
            return Ok(request);
        };
        let presented = request.metadata().get(METADATA_KEY).map(|v| v.as_bytes());
        if secret.accepts(presented) {
            return Ok(request);
        }
        let peer = request
            .remote_addr()
            .map_or_else(|| "a local socket".to_string(), |a| a.to_string());
        let what = if presented.is_some() {
            "a wrong secret"
        } else {
            "no secret"
        };
        tracing::warn!(%peer, "refused a call with {what}");
        Err(Status::unauthenticated(format!(
            "this executor needs its run's secret; the call carried {what}"
        )))
    }
}
