//! `buildr run`'s cache flags, turned into what the run asks of the cache
//! ([`crate::cache::action`] has the rules).

use std::path::PathBuf;

use crate::cache::action;

#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// Replay the stored result of an identical run instead of running, as `cache = true` in a
    /// task file does, and store this run's result otherwise (see README, Caching).
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: bool,

    /// Run even when a result is stored, and store this run's result in its place (for a task
    /// that caches).
    #[arg(long)]
    pub no_cache: bool,

    /// The shared cache: an OCI registry repository (REGISTRY/REPOSITORY) looked in on a miss
    /// on disk and pushed to after a run; overrides the task's `cache_registry`.
    #[arg(
        long,
        env = "BUILDR_CACHE_REGISTRY",
        value_name = "REGISTRY/REPOSITORY"
    )]
    pub cache_registry: Option<String>,

    /// Push results to the cache registry (`--cache-push=false` only reads from it). A push
    /// also needs --cache-signing-key.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cache_push: bool,

    /// The Ed25519 key (`buildr cache keygen FILE`) that signs what this run pushes to the
    /// cache registry; without one nothing is pushed. Give it to CI on protected branches only.
    #[arg(long, env = "BUILDR_CACHE_SIGNING_KEY", value_name = "FILE")]
    pub cache_signing_key: Option<PathBuf>,

    /// A file of public keys (one per line) whose signed entries are replayed from the cache
    /// registry, on top of those in the repository's `.buildr/cache-trust`.
    #[arg(long, env = "BUILDR_CACHE_TRUST", value_name = "FILE")]
    pub cache_trust: Option<PathBuf>,
}

impl CacheArgs {
    /// What the flags ask of the cache.
    pub fn options(&self) -> action::Options {
        action::Options {
            cache: self.cache,
            refresh: self.no_cache,
            registry: self.cache_registry.clone(),
            push: self.cache_push,
            signing_key: self.cache_signing_key.clone(),
            trust: self.cache_trust.clone(),
        }
    }
}
