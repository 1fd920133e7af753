//! The action cache's part of `buildr run` (see [`crate::cache`]): the key before the backend
//! starts, the replay of a hit instead of a run, and the storing of a run's result after it.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::archive::{self, ExtractOptions, Limits};
use crate::cache::{
    Entry, Key, KeyParts, Lookup, Record, StatCache, Store, Stream, key::Platform, oci::Registry,
    record, tree,
};
use crate::client::Outcome;
use crate::printable::Printable;
use crate::task::{InputFile, Task};
use crate::timeline::Timeline;
use crate::tools::Tool;

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

    /// Push results to the cache registry (`--cache-push=false` only reads from it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cache_push: bool,
}

/// A run that uses the cache: its key, and where entries go.
pub struct CachedRun {
    store: Store,
    registry: Option<Registry>,
    push: bool,
    key: Key,
    task: String,
    store_failures: bool,
    refresh: bool,
}

impl CacheArgs {
    /// Whether a run of `task` may be answered from the cache (it opted in).
    pub fn enabled_for(&self, task: &Task) -> bool {
        task.cache.enabled || self.cache
    }
}

impl CachedRun {
    /// The cache of a run of `task` on `platform`, if the task or `--cache` asks for one: its
    /// key computed from everything the result can depend on. `-v` shows the key and its cost.
    pub fn prepare(
        args: &CacheArgs,
        task: &Task,
        repo: &Path,
        inputs: &[InputFile],
        platform: Platform,
        tools: &[Tool],
        verbosity: u8,
    ) -> anyhow::Result<Option<Self>> {
        if !args.enabled_for(task) {
            return Ok(None);
        }
        let began = Instant::now();
        let store = super::cache::store()?;
        let registry = args
            .cache_registry
            .as_deref()
            .or(task.cache.registry.as_deref())
            .map(Registry::new)
            .transpose()?;
        let repo = std::path::absolute(repo)
            .with_context(|| format!("cannot resolve the repository {}", repo.display()))?;
        let mut stat_cache = StatCache::load(store.stat_cache_file(&repo));
        let tree = tree::digest(inputs, &mut stat_cache)?;
        if let Err(e) = stat_cache.save() {
            eprintln!("buildr: warning: the next key will read every input again: {e}");
        }
        let key = KeyParts::new(task, platform, tools, tree.sha256)?.key();
        if verbosity > 0 {
            eprintln!(
                "buildr: cache key {key}: {} inputs, {} read, in {:.3}s",
                tree.entries,
                tree.rehashed,
                began.elapsed().as_secs_f64()
            );
        }
        Ok(Some(Self {
            store,
            registry,
            push: args.cache_push,
            key,
            task: task.name.clone(),
            store_failures: task.cache.failures,
            refresh: args.no_cache,
        }))
    }

    /// The stored result, on disk or else in the cache registry, unless `--no-cache` asked
    /// for a fresh run. A damaged entry and a registry that cannot be reached are warnings and
    /// a miss.
    pub async fn lookup(&self) -> anyhow::Result<Option<Entry>> {
        if self.refresh {
            return Ok(None);
        }
        if let Some(entry) = self.lookup_on_disk()? {
            return Ok(Some(entry));
        }
        let Some(registry) = &self.registry else {
            return Ok(None);
        };
        match registry.pull(&self.key, &self.store).await {
            Ok(true) => self.lookup_on_disk(),
            Ok(false) => Ok(None),
            Err(e) => {
                eprintln!(
                    "buildr: warning: {}; running the task",
                    Printable(&format!("{e:#}"))
                );
                Ok(None)
            }
        }
    }

    fn lookup_on_disk(&self) -> anyhow::Result<Option<Entry>> {
        Ok(match self.store.lookup(&self.key)? {
            Lookup::Hit(entry) => Some(entry),
            Lookup::Miss => None,
            Lookup::Corrupt { path, reason } => {
                eprintln!(
                    "buildr: warning: the cache entry {} was damaged ({reason}) and is deleted; \
                     running the task",
                    path.display()
                );
                None
            }
        })
    }

    /// Stores a finished run if it may be: not interrupted, no error from the executor, and
    /// exit status 0 unless the task says `cache_failures = true`; then pushes it to the cache
    /// registry, if any and unless `--cache-push=false`. A run whose result cannot be stored
    /// or pushed still succeeds: a warning says why.
    pub async fn store(
        &self,
        outcome: &mut Outcome,
        output: Option<io::Result<File>>,
        took: Duration,
    ) {
        let result = &outcome.result;
        let storable = !outcome.interrupted
            && result.error.is_empty()
            && (result.exit_code == 0 || self.store_failures);
        let Some(output) = output.filter(|_| storable) else {
            return;
        };
        let record = Record {
            task: self.task.clone(),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            exit_code: result.exit_code,
            signal: result.signal,
            error: result.error.clone(),
            deleted_paths: result.deleted_paths.clone(),
        };
        let stored = output.map_err(anyhow::Error::from).and_then(|mut output| {
            Ok(self
                .store
                .put(&self.key, &record, &mut output, outcome.archive.as_mut())?)
        });
        if let Err(e) = stored {
            eprintln!("buildr: warning: the result was not cached: {e:#}");
            return;
        }
        let Some(registry) = self.registry.as_ref().filter(|_| self.push) else {
            return;
        };
        // What was just stored, as it was stored (it may already be evicted: then nothing).
        let pushed = match self.store.lookup(&self.key) {
            Ok(Lookup::Hit(entry)) => registry.push(&self.key, &entry).await.map_err(Into::into),
            Ok(_) => Ok(()),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        if let Err(e) = pushed {
            eprintln!(
                "buildr: warning: the result was not shared through {}: {}",
                registry.location(),
                Printable(&format!("{e:#}"))
            );
        }
    }
}

/// Replays a hit: says on stderr that it is one, writes the recorded output to stdout and
/// stderr in its order, and extracts the recorded archive into `out` with the checks and
/// limits of a run. Returns the outcome `report` describes.
pub fn replay(
    entry: &Entry,
    out: &Path,
    options: &ExtractOptions,
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let record = &entry.record;
    let when = UNIX_EPOCH + Duration::from_secs(record.created_at);
    eprintln!(
        "buildr: cached: replaying the result of task `{}` from {} (the run took {}; \
         --no-cache runs it again)",
        record.task,
        humantime::format_rfc3339_seconds(when),
        humantime::format_duration(Duration::from_millis(record.duration_ms))
    );
    let mut recorded = entry.output().context("cannot read the cached output")?;
    let mut stdout_open = true;
    while let Some((stream, data)) =
        record::read_chunk(&mut recorded).context("cannot read the cached output")?
    {
        match stream {
            Stream::Stderr => {
                let _ = io::stderr().lock().write_all(&data);
            }
            // A closed stdout drops the rest of it, as a live run does.
            Stream::Stdout if stdout_open => {
                let mut stdout = io::stdout().lock();
                stdout_open = stdout
                    .write_all(&data)
                    .and_then(|()| stdout.flush())
                    .is_ok();
            }
            Stream::Stdout => {}
        }
    }
    let extracted = match entry.archive().context("cannot read the cached archive")? {
        Some(archive) => Some(
            archive::extract_within(archive, out, options, limits)
                .context("cannot extract the cached result")?,
        ),
        None => None,
    };
    Ok(Outcome {
        result: record.task_result(),
        interrupted: false,
        extracted,
        archive: None,
        resumes: 0,
        timeline: Timeline::default(),
    })
}
