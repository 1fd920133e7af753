//! A seeded pool's seed (`spec.seed: REGISTRY/REPOSITORY:TAG`), as each reconcile finds it:
//! the tag pinned to the snapshot it names now (pods made from another are replaced), the way
//! to its registry (the pods' policy lets them reach it), and the controller's credentials for
//! it (sent on the pull's stdin).

use crate::backend::k8s::registry::{RegistryRoute, route};
use crate::snapshot::{Credentials, Repository};

/// How often a seeded pool is looked at again, to notice a tag that moved.
pub const SEED_RECHECK: std::time::Duration = std::time::Duration::from_secs(20);

/// The seed of a pool, now.
#[derive(Clone)]
pub struct Seed {
    /// `REGISTRY/REPOSITORY@sha256:…`.
    pub pinned: String,
    pub route: RegistryRoute,
    pub credentials: Option<Credentials>,
}

/// The seed `REGISTRY/REPOSITORY:TAG` as its registry has it now; why not, in one line.
pub async fn resolve(seed: &str) -> Result<Seed, String> {
    let bad = || format!("its seed `{seed}` is not REGISTRY/REPOSITORY:TAG");
    let (location, tag) = seed.rsplit_once(':').ok_or_else(bad)?;
    if tag.contains('/') || !location.contains('/') {
        return Err(bad());
    }
    let cannot = |e: crate::snapshot::registry::RepositoryError| {
        format!("cannot resolve its seed {seed}: {e}")
    };
    let repository = Repository::open(location).await.map_err(cannot)?;
    let digest = repository
        .digest(tag)
        .await
        .map_err(cannot)?
        .ok_or_else(|| {
            format!(
                "its seed {seed} does not exist (push it with `buildr inputs push --tag {tag}`)"
            )
        })?;
    let route = route(location)
        .await
        .map_err(|why| format!("cannot reach its seed's registry: {why}"))?;
    let credentials = Credentials::of(location).map_err(cannot)?;
    Ok(Seed {
        pinned: format!("{location}@{digest}"),
        route,
        credentials,
    })
}
