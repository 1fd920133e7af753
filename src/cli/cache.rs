//! `buildr cache`: what the action cache holds, and emptying it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::cache::action::{MAX_ENV, store};
use crate::cache::sign::SigningKey;
use crate::tools::human_size as size;

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Where the cache is, how many entries it holds and their size, and its bound.
    Info,
    /// Delete cached results: all of them, or those not used for a while.
    Prune {
        /// Only the entries last used longer ago than this (e.g. `7d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
    /// Make a key that signs the entries a run pushes to the cache registry: writes the
    /// private key to FILE (mode 0600; never overwrites) and prints its public key, the line
    /// readers add to `.buildr/cache-trust` (see README, Caching).
    Keygen {
        /// Where the private key goes (give it to `--cache-signing-key` or
        /// `BUILDR_CACHE_SIGNING_KEY`).
        file: PathBuf,
    },
}

pub fn run(command: CacheCommand) -> anyhow::Result<ExitCode> {
    match command {
        // Needs no cache directory.
        CacheCommand::Keygen { file } => {
            let key = SigningKey::generate_into(&file)?;
            println!("{}", key.public());
        }
        CacheCommand::Info => {
            let store = store()?;
            let info = store.info()?;
            println!("directory: {}", store.dir().display());
            println!("entries:   {}", info.entries);
            println!(
                "size:      {} of {} ({MAX_ENV})",
                size(info.bytes),
                size(store.max_bytes())
            );
            if let Some(used) = info.oldest_use {
                let age = SystemTime::now().duration_since(used).unwrap_or_default();
                println!("oldest:    last used {} ago", round(age));
            }
        }
        CacheCommand::Prune { older_than } => {
            let store = store()?;
            let (entries, bytes) = store.prune(older_than)?;
            println!(
                "deleted {entries} entr{} ({})",
                if entries == 1 { "y" } else { "ies" },
                size(bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration to the second, as humantime writes it.
pub fn round(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(duration.as_secs()))
}
