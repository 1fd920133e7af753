//! `buildr archive`: create, list and extract `.tar.s2` archives by hand.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::extraction::LimitArgs;
use crate::archive::{self, Deletions, EntryKind, ExtractOptions, LinkPolicy, Quoted};

/// Work with .tar.s2 archives (tar in Snappy framing), the format buildr moves files in.
#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Archive a directory, or the given paths under it.
    Create {
        /// The directory the paths are relative to.
        #[arg(long)]
        from: PathBuf,
        /// The archive to write; `-` writes to stdout.
        #[arg(long)]
        to: PathBuf,
        /// Paths relative to --from (a directory means its whole tree); none means everything.
        paths: Vec<PathBuf>,
    },
    /// List the entries of an archive (`-` reads stdin).
    List { file: PathBuf },
    /// Extract an archive safely: nothing is ever written outside --to.
    Extract {
        /// The archive; `-` reads stdin.
        file: PathBuf,
        /// The destination directory (created if missing).
        #[arg(long)]
        to: PathBuf,
        /// Also delete the paths the archive records as deleted (never outside --to). A deleted
        /// directory keeps any `.git` under it, with the directories on its way.
        #[arg(long)]
        apply_deletions: bool,
        /// Symlinks that point outside --to (absolute, or climbing above it): `refuse` the
        /// archive, `skip` them with a warning, or `allow` them (a workspace's inputs). No
        /// policy writes through a link.
        #[arg(long, value_enum, default_value_t = LinkPolicy::Refuse)]
        links: LinkPolicy,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

pub fn run(command: ArchiveCommand) -> anyhow::Result<ExitCode> {
    match command {
        ArchiveCommand::Create { from, to, paths } => {
            let sources = archive::sources_under(&from, &paths)
                .with_context(|| format!("cannot read {}", Quoted(&from)))?;
            let summary = if to == Path::new("-") {
                let out = BufWriter::new(io::stdout().lock());
                let mut writer = archive::Writer::new(out);
                for source in &sources {
                    writer.append(source)?;
                }
                let (mut out, summary) = writer.finish()?;
                out.flush()?;
                summary
            } else {
                archive::create_file(&to, &sources, &[])
                    .with_context(|| format!("cannot write {}", Quoted(&to)))?
            };
            eprintln!(
                "{} entries, {} bytes in, {} bytes out, sha256 {}",
                summary.entries, summary.bytes_in, summary.bytes_out, summary.sha256
            );
        }
        ArchiveCommand::List { file } => {
            let mut stdout = io::stdout().lock();
            // Printed as read: memory stays bounded however many entries there are.
            archive::list_each(open(&file)?, |entry| {
                let kind = match entry.kind {
                    EntryKind::File => "file".to_string(),
                    EntryKind::Dir => "dir".to_string(),
                    EntryKind::Symlink => "symlink".to_string(),
                    EntryKind::Deleted => "deleted".to_string(),
                    EntryKind::Other(flag) => format!("type {:?}", flag),
                };
                let link = entry
                    .link_target
                    .map(|t| format!(" -> {}", Quoted(&t)))
                    .unwrap_or_default();
                writeln!(
                    stdout,
                    "{kind:7} {:04o} {:>12} {}{link}",
                    entry.mode & 0o7777,
                    entry.size,
                    Quoted(&entry.path)
                )?;
                Ok(())
            })
            .with_context(|| format!("cannot read {}", Quoted(&file)))?;
        }
        ArchiveCommand::Extract {
            file,
            to,
            apply_deletions,
            links,
            limits,
        } => {
            let options = ExtractOptions {
                // The task's inputs are unknown here: only the `.git` rule holds deletions back.
                deletions: if apply_deletions {
                    Deletions::All
                } else {
                    Deletions::Off
                },
                links,
                progress: None,
            };
            let extracted = archive::extract_within(open(&file)?, &to, &options, limits.limits())
                .with_context(|| format!("cannot extract {}", Quoted(&file)))?;
            for warning in extracted.left_alone_warnings() {
                eprintln!("{warning}");
            }
            for link in &extracted.skipped_links {
                eprintln!(
                    "buildr: warning: skipped symlink `{}` -> `{}`: it points outside {}",
                    Quoted(&link.path),
                    Quoted(&link.target),
                    Quoted(&to)
                );
            }
            eprintln!(
                "{} files, {} directories, {} symlinks, {} bytes; {} deleted",
                extracted.files,
                extracted.dirs,
                extracted.symlinks,
                extracted.bytes,
                extracted.deleted.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open(file: &Path) -> anyhow::Result<Box<dyn Read>> {
    if file == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let opened = File::open(file).with_context(|| format!("cannot open {}", Quoted(file)))?;
    Ok(Box::new(opened))
}
