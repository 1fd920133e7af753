//! `buildr k8s gc`: deletes the pods and NetworkPolicies that runs left behind (a client killed
//! outright, a laptop closed mid-run), found by buildr's label and judged by their expiry
//! annotation, and nothing that is not buildr's.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Resource};

use crate::backend::k8s::api::{api_message, is_not_found};
use crate::backend::k8s::labels::{EXPIRES_AT_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL};

/// A collection that stopped, one variant per failing request, naming the objects.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(
        "cannot list buildr's {kind}s in namespace {namespace}: {} (`buildr k8s check` shows what is missing)",
        api_message(error)
    )]
    List {
        kind: String,
        namespace: String,
        error: Box<kube::Error>,
    },
    #[error("cannot delete {kind} {namespace}/{name}: {}", api_message(error))]
    Delete {
        kind: String,
        namespace: String,
        name: String,
        error: Box<kube::Error>,
    },
}

/// What a collection removed: `kind/name` of each object.
#[derive(Debug, Default)]
pub struct Collected {
    pub deleted: Vec<String>,
}

/// Whether an object of buildr's may go: its expiry has passed, or it is older than
/// `older_than` when that is given.
pub fn is_expired(meta: &ObjectMeta, now: SystemTime, older_than: Option<Duration>) -> bool {
    let expired = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPIRES_AT_ANNOTATION))
        .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
        .is_some_and(|at| at <= now);
    let too_old = match (older_than, &meta.creation_timestamp) {
        (Some(limit), Some(created)) => {
            let created = SystemTime::UNIX_EPOCH
                + Duration::from_secs(created.0.as_second().max(0).unsigned_abs());
            created + limit <= now
        }
        _ => false,
    };
    expired || too_old
}

/// Deletes buildr's expired pods, then its expired policies, in `namespace`.
pub async fn collect(
    client: kube::Client,
    namespace: &str,
    older_than: Option<Duration>,
) -> Result<Collected, GcError> {
    let mut collected = Collected::default();
    let now = SystemTime::now();
    sweep::<Pod>(&client, namespace, now, older_than, &mut collected).await?;
    sweep::<NetworkPolicy>(&client, namespace, now, older_than, &mut collected).await?;
    Ok(collected)
}

async fn sweep<K>(
    client: &kube::Client,
    namespace: &str,
    now: SystemTime,
    older_than: Option<Duration>,
    collected: &mut Collected,
) -> Result<(), GcError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let kind = K::kind(&());
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let objects = api.list(&selector).await.map_err(|error| GcError::List {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        error: Box::new(error),
    })?;
    for object in objects {
        let meta = object.meta();
        if !is_expired(meta, now, older_than) {
            continue;
        }
        let name = meta.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => collected.deleted.push(format!("{kind}/{name}")),
            Err(e) if is_not_found(&e) => {}
            Err(error) => {
                return Err(GcError::Delete {
                    kind: kind.to_string(),
                    namespace: namespace.to_string(),
                    name,
                    error: Box::new(error),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn meta(expires_at: Option<&str>, created_secs: i64) -> ObjectMeta {
        ObjectMeta {
            annotations: expires_at
                .map(|at| BTreeMap::from([(EXPIRES_AT_ANNOTATION.to_string(), at.to_string())])),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(created_secs).unwrap(),
            )),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn expiry_and_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let past = "1970-01-01T00:00:00Z";
        let future = "2100-01-01T00:00:00Z";
        assert!(is_expired(&meta(Some(past), 999_000), now, None));
        assert!(!is_expired(&meta(Some(future), 999_000), now, None));
        assert!(
            !is_expired(&meta(None, 0), now, None),
            "no expiry, no age limit"
        );
        let hour = Some(Duration::from_secs(3600));
        assert!(is_expired(&meta(Some(future), 990_000), now, hour));
        assert!(!is_expired(&meta(Some(future), 999_000), now, hour));
        assert!(!is_expired(&meta(Some("garbage"), 999_000), now, None));
    }
}
