//! The action cache's use case in a run (see [`crate::cache`]): whether a run caches, its key
//! before the backend starts, where a stored result is looked for and in which order, the
//! replay of a hit instead of a run, and what of a run's result is stored and pushed after it.
//! Also the disk cache's size bound, which `buildr cache` reports.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::archive::{self, ArchiveError, ExtractOptions, Limits};
use crate::cache::oci::{PullBounds, Pulled, PulledEntry, Registry, RegistryError};
use crate::cache::sign::{self, SignError, SigningKey, TrustedKeys};
use crate::cache::store::DEFAULT_MAX_BYTES;
use crate::cache::{
    CacheError, Entry, Key, KeyParts, Lookup, Record, StatCache, Store, Stream, key::Platform,
    record, tree,
};
use crate::client::Outcome;
use crate::printable::Printable;
use crate::size::{SizeError, parse_size};
use crate::task::{InputFile, Task};
use crate::timeline::Timeline;
use crate::tools::Tool;

/// The environment variable that bounds the cache's size.
pub const MAX_ENV: &str = "BUILDR_CACHE_MAX";

/// This user's cache: `$XDG_CACHE_HOME/buildr` (else `~/.cache/buildr`), bounded by
/// `BUILDR_CACHE_MAX` (a size such as `5GiB`; default 5 GiB).
pub fn store() -> Result<Store, ActionError> {
    let max_bytes = match std::env::var(MAX_ENV) {
        Ok(text) => parse_size(&text).map_err(|reason| ActionError::Bound { text, reason })?,
        Err(_) => DEFAULT_MAX_BYTES,
    };
    Ok(Store::new(super::default_dir()?, max_bytes))
}

/// Why a run could not use the cache as it asked, or a hit could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{MAX_ENV}={text} is not a size (e.g. 5GiB, 500MiB)")]
    Bound {
        text: String,
        #[source]
        reason: SizeError,
    },
    #[error("cannot resolve the repository {}", path.display())]
    Repo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("cannot read the cached output")]
    ReadOutput(#[source] io::Error),
    #[error("cannot read the cached archive")]
    ReadArchive(#[source] io::Error),
    #[error("cannot extract the cached result")]
    Extract(#[source] ArchiveError),
}

/// What a run asks of the cache (`cache = true` in its task, `--cache`, `--no-cache`, the
/// registry's flags).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Cache even a task that does not say `cache = true`.
    pub cache: bool,
    /// Run even when a result is stored, and store this run's in its place.
    pub refresh: bool,
    /// The shared cache, REGISTRY/REPOSITORY; overrides the task's `cache_registry`.
    pub registry: Option<String>,
    /// Push results to the shared cache (given a signing key).
    pub push: bool,
    /// The key that signs what is pushed.
    pub signing_key: Option<PathBuf>,
    /// Public keys trusted beside the repository's `.buildr/cache-trust`.
    pub trust: Option<PathBuf>,
}

impl Options {
    /// Whether a run of `task` may be answered from the cache (it opted in).
    pub fn enabled_for(&self, task: &Task) -> bool {
        task.cache.enabled || self.cache
    }
}

/// Writes `error` with its causes, as the one line of a warning.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(&format!(": {e}"));
        cause = e.source();
    }
    line
}

/// A run that uses the cache: its key, and where entries go.
pub struct CachedRun {
    store: Store,
    /// The shared cache, with what may be done there.
    shared: Option<Shared>,
    /// The bound of what a pulled entry may bring back (`--max-output-bytes`).
    pull_bounds: PullBounds,
    verbose: bool,
    key: Key,
    /// The input tree's digest the key holds.
    tree: [u8; 32],
    task: String,
    store_failures: bool,
    refresh: bool,
}

/// The cache registry of a run: read when some key is trusted, written when this run signs.
struct Shared {
    registry: Registry,
    trusted: TrustedKeys,
    signer: Option<SigningKey>,
}

/// Where a run's cache key comes from, besides the task.
pub struct KeySource<'a> {
    pub repo: &'a Path,
    pub inputs: &'a [InputFile],
    pub platform: Platform,
    /// The executor binary that runs the task.
    pub executor: &'a Path,
    pub tools: &'a [Tool],
    /// Whether the shared cache may be used: not when the platform could not be pinned (an
    /// image whose registry could not name its digest).
    pub shareable: bool,
}

/// A stored result found for a run: on disk, or pulled and verified but too large to keep.
pub enum Hit {
    Stored(Entry),
    Pulled(PulledEntry),
}

impl Hit {
    fn record(&self) -> &Record {
        match self {
            Hit::Stored(entry) => &entry.record,
            Hit::Pulled(pulled) => &pulled.record,
        }
    }

    fn output(&self) -> io::Result<Box<dyn Read>> {
        Ok(match self {
            Hit::Stored(entry) => Box::new(entry.output()?),
            Hit::Pulled(pulled) => Box::new(rewound(&pulled.output)?),
        })
    }

    fn archive(&self) -> io::Result<Option<Box<dyn Read>>> {
        Ok(match self {
            Hit::Stored(entry) => entry.archive()?.map(|a| Box::new(a) as Box<dyn Read>),
            Hit::Pulled(pulled) => match &pulled.archive {
                Some(archive) => Some(Box::new(rewound(archive)?)),
                None => None,
            },
        })
    }
}

/// A second handle on `file`, at its start.
fn rewound(file: &File) -> io::Result<File> {
    let mut file = file.try_clone()?;
    io::Seek::rewind(&mut file)?;
    Ok(file)
}

impl CachedRun {
    /// The cache of a run of `task` that caches ([`Options::enabled_for`]): its key computed
    /// from everything the result can depend on. `-v` shows the key and its cost.
    pub fn prepare(
        options: &Options,
        task: &Task,
        source: KeySource<'_>,
        max_output_bytes: u64,
        verbosity: u8,
    ) -> Result<Self, ActionError> {
        let began = Instant::now();
        let store = store()?;
        store.check_private()?;
        let shared = Shared::configure(options, task, &source, verbosity)?;
        let repo = std::path::absolute(source.repo).map_err(|source_err| ActionError::Repo {
            path: source.repo.to_path_buf(),
            source: source_err,
        })?;
        let mut stat_cache = StatCache::load(store.stat_cache_file(&repo));
        let tree = tree::digest(source.inputs, &mut stat_cache)?;
        // The executor is followed if it is a link (`buildr-executor` installed as one).
        let executor = std::fs::canonicalize(source.executor)
            .map_err(|source_err| CacheError::Read {
                path: source.executor.to_path_buf(),
                source: source_err,
            })
            .and_then(|path| tree::file_digest(&path, &mut stat_cache))?;
        if let Err(e) = stat_cache.save() {
            eprintln!("buildr: warning: the next key will read every input again: {e}");
        }
        let key = KeyParts::new(
            task,
            source.platform,
            &hex::encode(executor),
            source.tools,
            tree.sha256,
        )?
        .key();
        if verbosity > 0 {
            eprintln!(
                "buildr: cache key {key}: {} inputs, {} read, in {:.3}s",
                tree.entries,
                tree.rehashed,
                began.elapsed().as_secs_f64()
            );
        }
        Ok(Self {
            store,
            shared,
            pull_bounds: PullBounds {
                max_bytes: max_output_bytes,
            },
            verbose: verbosity > 0,
            key,
            tree: tree.sha256,
            task: task.name.clone(),
            store_failures: task.cache.failures,
            refresh: options.refresh,
        })
    }

    /// The stored result, on disk or else in the cache registry, unless `--no-cache` asked
    /// for a fresh run. A damaged entry, one that no trusted key signed, and a registry that
    /// cannot be reached are a miss (the first and last with a warning, the other with a `-v`
    /// line). A verified pull is stored on disk unless it is larger than the disk cache's
    /// bound; it is replayed either way.
    pub async fn lookup(&self) -> Result<Option<Hit>, ActionError> {
        if self.refresh {
            return Ok(None);
        }
        if let Some(entry) = self.lookup_on_disk()? {
            return Ok(Some(Hit::Stored(entry)));
        }
        let Some(shared) = self.shared.as_ref().filter(|s| !s.trusted.is_empty()) else {
            return Ok(None);
        };
        let registry = &shared.registry;
        let mut pulled = match registry
            .pull(&self.key, &shared.trusted, self.pull_bounds)
            .await
        {
            Ok(Pulled::Entry(pulled)) => pulled,
            Ok(Pulled::Missing) => return Ok(None),
            Ok(Pulled::Refused(why)) => {
                if self.verbose {
                    eprintln!(
                        "buildr: the entry for this key in {} is not replayed: {why}",
                        registry.location()
                    );
                }
                return Ok(None);
            }
            Err(e) => {
                eprintln!(
                    "buildr: warning: {}; running the task",
                    Printable(&chain(&e))
                );
                return Ok(None);
            }
        };
        match self.store.put(
            &self.key,
            &pulled.record,
            &mut pulled.output,
            pulled.archive.as_mut(),
        ) {
            Ok(_) => {}
            Err(e @ CacheError::TooLarge { .. }) => {
                if self.verbose {
                    eprintln!("buildr: the pulled entry is replayed but not kept: {e}");
                }
                return Ok(Some(Hit::Pulled(pulled)));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(self.lookup_on_disk()?.map(Hit::Stored))
    }

    fn lookup_on_disk(&self) -> Result<Option<Entry>, CacheError> {
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

    /// Whether the input tree sent to the executor (its digest, taken by the inputs archive
    /// from the bytes it sent) is the one the key holds: a file changed between the key and
    /// the upload must not store a result under a key that does not describe it.
    pub fn describes(&self, sent: Option<[u8; 32]>) -> bool {
        sent == Some(self.tree)
    }

    /// Stores a finished run if it may be: not interrupted, no error from the executor, exit
    /// status 0 unless the task says `cache_failures = true`, and its inputs sent as they were
    /// when the key was computed (`sent_as_keyed`, see [`Self::describes`]); then pushes it to
    /// the cache registry, if any and unless `--cache-push=false`. A run whose result cannot be
    /// stored or pushed still succeeds: a warning says why.
    pub async fn store(
        &self,
        outcome: &mut Outcome,
        output: Option<io::Result<File>>,
        sent_as_keyed: bool,
        took: Duration,
    ) {
        let result = &outcome.result;
        let storable = !outcome.interrupted
            && result.error.is_empty()
            && (result.exit_code == 0 || self.store_failures);
        let Some(output) = output.filter(|_| storable) else {
            return;
        };
        if !sent_as_keyed {
            eprintln!(
                "buildr: warning: the result was not cached: inputs changed while they were \
                 sent, so its key does not describe what the task was given"
            );
            return;
        }
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
        let stored = match output {
            Ok(mut output) => self
                .store
                .put(&self.key, &record, &mut output, outcome.archive.as_mut())
                .map(drop)
                .map_err(|e| chain(&e)),
            // The recorded output could not be kept (its temporary file).
            Err(e) => Err(chain(&e)),
        };
        if let Err(e) = stored {
            eprintln!("buildr: warning: the result was not cached: {e}");
            return;
        }
        let Some((registry, signer)) = self
            .shared
            .as_ref()
            .and_then(|s| Some((&s.registry, s.signer.as_ref()?)))
        else {
            return;
        };
        // What was just stored, as it was stored (it may already be evicted: then nothing).
        let pushed = match self.store.lookup(&self.key) {
            Ok(Lookup::Hit(entry)) => registry.push(&self.key, &entry, signer).await,
            Ok(_) => Ok(()),
            Err(e) => Err(RegistryError::Cache(e)),
        };
        if let Err(e) = pushed {
            eprintln!(
                "buildr: warning: the result was not shared through {}: {}",
                registry.location(),
                Printable(&chain(&e))
            );
        }
    }
}

/// Replays a hit: says on stderr that it is one, writes the recorded output to stdout and
/// stderr in its order, and extracts the recorded archive into `out` with the checks and
/// limits of a run. Returns the outcome `report` describes.
pub fn replay(
    entry: &Hit,
    out: &Path,
    options: &ExtractOptions,
    limits: Limits,
) -> Result<Outcome, ActionError> {
    let record = entry.record();
    eprintln!(
        "buildr: cached: replaying the result of task `{}` from {} (the run took {}; \
         --no-cache runs it again)",
        Printable(&record.task),
        when(record.created_at),
        humantime::format_duration(Duration::from_millis(record.duration_ms))
    );
    let mut recorded = entry.output().map_err(ActionError::ReadOutput)?;
    let mut stdout_open = true;
    while let Some((stream, data)) =
        record::read_chunk(&mut recorded).map_err(ActionError::ReadOutput)?
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
    let extracted = match entry.archive().map_err(ActionError::ReadArchive)? {
        Some(archive) => Some(
            archive::extract_within(archive, out, options, limits).map_err(ActionError::Extract)?,
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

/// When a stored run finished, as RFC 3339; a time no calendar of four-digit years holds (the
/// record came from elsewhere) as such, never a panic.
fn when(created_at: u64) -> String {
    // 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
    const LAST: u64 = 253_402_300_799;
    if created_at > LAST {
        return format!("an impossible time ({created_at} s after 1970)");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(created_at)).to_string()
}

impl Shared {
    /// The cache registry the run names, if any and if it may be used; says once, and why,
    /// when it is not read (no trusted keys) or not written (`-v`: no signing key).
    fn configure(
        options: &Options,
        task: &Task,
        source: &KeySource<'_>,
        verbosity: u8,
    ) -> Result<Option<Self>, ActionError> {
        let Some(location) = options
            .registry
            .as_deref()
            .or(task.cache.registry.as_deref())
        else {
            return Ok(None);
        };
        let registry = Registry::new(location)?;
        if !source.shareable {
            if verbosity > 0 {
                eprintln!(
                    "buildr: the cache registry {location} is not used: the image's digest \
                     could not be asked of its registry, so a key cannot pin it"
                );
            }
            return Ok(None);
        }
        let trusted = TrustedKeys::load(source.repo, options.trust.as_deref())?;
        if trusted.is_empty() && !options.refresh {
            eprintln!(
                "buildr: the cache registry {location} is not read: no key is trusted to sign \
                 its entries (list the writers' public keys in {} or BUILDR_CACHE_TRUST; see \
                 README, Caching)",
                sign::REPO_TRUST_FILE
            );
        }
        let signer = match (&options.signing_key, options.push) {
            (Some(path), true) => Some(SigningKey::load(path)?),
            (None, true) => {
                if verbosity > 0 {
                    eprintln!(
                        "buildr: results are not pushed to {location}: no signing key \
                         (--cache-signing-key or BUILDR_CACHE_SIGNING_KEY)"
                    );
                }
                None
            }
            (_, false) => None,
        };
        Ok(Some(Self {
            registry,
            trusted,
            signer,
        }))
    }
}
