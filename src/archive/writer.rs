//! Writing `.tar.s2` archives: tar headers and file data go straight into the blocks of a
//! [`ParallelEncoder`], which compresses them on every core while this thread reads files.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::error::ArchiveError;
use super::frame::ParallelEncoder;
use super::hash::Sha256Writer;
use super::names::{check_bytes, clean_relative};
use super::tar_format::pax_record;
use super::tree_hash::TreeHasher;
use super::{
    DELETED_PREFIX, DELETIONS_KEY, ENTRIES_KEY, FORMAT_KEY, FORMAT_VERSION, SHA256_KEY, Source,
    Summary,
};

const ZEROS: [u8; 1024] = [0; 1024];
/// Longest name or link target that fits a ustar header; longer ones get a PAX header.
const USTAR_NAME_LEN: usize = 100;
/// Deletion records per global header stop growing past this many bytes (readers refuse
/// extended headers over [`MAX_EXTENDED_HEADER`](super::MAX_EXTENDED_HEADER)).
const DELETIONS_PER_HEADER: usize = 256 << 10;

/// Writes a `.tar.s2` stream (ustar + PAX tar, Snappy-framed) to `out`.
///
/// Entries are stored as they are appended; names are never rewritten beyond dropping `.`
/// components. Owners are not recorded (uid/gid 0, no names): extraction never changes owners.
/// Hard-linked files are stored as separate copies; setuid/setgid bits are stored but not
/// restored by [`extract`](super::extract).
///
/// The stream starts with buildr's format record and ends with its closing record (see the
/// [module doc](super)). After any error the stream is incomplete: drop the writer.
pub struct Writer<W: Write> {
    enc: ParallelEncoder<Sha256Writer<W>>,
    /// SHA-256 of the tar bytes, for the closing record.
    tar_hash: Sha256,
    /// The digest of the tree appended, when asked for ([`Self::hashing_tree`]).
    tree: Option<TreeHasher>,
    started: bool,
    entries: u64,
    deleted: u64,
    bytes_in: u64,
}

impl<W: Write> Writer<W> {
    /// Compresses with one worker thread per available core.
    pub fn new(out: W) -> Self {
        Self::from_encoder(ParallelEncoder::new(Sha256Writer::new(out)))
    }

    /// Compresses with `workers` threads (at least one).
    pub fn with_workers(out: W, workers: usize) -> Self {
        Self::from_encoder(ParallelEncoder::with_workers(
            Sha256Writer::new(out),
            workers,
        ))
    }

    /// Adaptive compression (see [`ParallelEncoder::adaptive`]): blocks the workers cannot
    /// take right away are stored uncompressed, so that writing keeps pace with reading. The
    /// archive is bigger when the machine is busy, and not reproducible byte for byte.
    pub fn adaptive(self, on: bool) -> Self {
        Writer {
            enc: self.enc.adaptive(on),
            ..self
        }
    }

    /// Also digests the tree as it is appended, from the very bytes that go into the archive
    /// ([`TreeHasher`]; [`Summary::tree`]): what a cache key must describe is what was sent.
    pub fn hashing_tree(self) -> Self {
        Writer {
            tree: Some(TreeHasher::new()),
            ..self
        }
    }

    fn from_encoder(enc: ParallelEncoder<Sha256Writer<W>>) -> Self {
        Writer {
            enc,
            tar_hash: Sha256::new(),
            tree: None,
            started: false,
            entries: 0,
            deleted: 0,
            bytes_in: 0,
        }
    }

    /// Writes the format record before anything else.
    fn start(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            let mut records = Vec::new();
            pax_record(&mut records, FORMAT_KEY, FORMAT_VERSION.as_bytes());
            self.global_header(&records)?;
        }
        Ok(())
    }

    /// A PAX global header holding `records`.
    fn global_header(&mut self, records: &[u8]) -> io::Result<()> {
        let mut h = Header::new_ustar();
        set_name(&mut h, b"pax_global_header");
        h.set_entry_type(EntryType::XGlobalHeader);
        h.set_mode(0o644);
        h.set_size(records.len() as u64);
        h.set_cksum();
        self.write_all(h.as_bytes())?;
        self.write_all(records)?;
        self.pad(records.len() as u64)
    }

    /// Adds `src.source` under `src.name`: a regular file (data, permission bits, mtime), a
    /// directory (permission bits, mtime) or a symlink (its target as-is, never followed).
    /// FIFOs, sockets and devices are refused.
    pub fn append(&mut self, src: &Source) -> Result<(), ArchiveError> {
        let name = clean_relative(&src.name).map_err(|reason| ArchiveError::InvalidName {
            name: src.name.clone(),
            reason,
        })?;
        let read_err = |source| ArchiveError::ReadSource {
            path: src.source.clone(),
            source,
        };
        let meta = fs::symlink_metadata(&src.source).map_err(read_err)?;
        self.start().map_err(ArchiveError::WriteArchive)?;
        let ft = meta.file_type();
        let name = name.as_os_str().as_bytes();
        // The tree's names are the inputs' own (as the cache key names them).
        let tree_name = src.name.as_os_str().as_bytes();
        let mode = meta.mode() & 0o7777;
        if ft.is_file() {
            let content = self.append_file(&src.source, name, &meta)?;
            if let (Some(tree), Some(content)) = (&mut self.tree, content) {
                tree.file(tree_name, mode, &content);
            }
        } else if ft.is_dir() {
            if let Some(tree) = &mut self.tree {
                tree.dir(tree_name, mode);
            }
            let mut dir_name = name.to_vec();
            dir_name.push(b'/');
            self.header(&dir_name, EntryType::Directory, &meta, 0, None)
                .map_err(ArchiveError::WriteArchive)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src.source).map_err(read_err)?;
            check_bytes(&target).map_err(|reason| ArchiveError::InvalidName {
                name: target.clone(),
                reason,
            })?;
            if let Some(tree) = &mut self.tree {
                tree.symlink(tree_name, mode, target.as_os_str().as_bytes());
            }
            self.header(
                name,
                EntryType::Symlink,
                &meta,
                0,
                Some(target.as_os_str().as_bytes()),
            )
            .map_err(ArchiveError::WriteArchive)?;
        } else {
            let kind = if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_char_device() {
                "character device"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "special"
            };
            return Err(ArchiveError::UnsupportedSource {
                path: src.source.clone(),
                kind,
            });
        }
        self.entries += 1;
        Ok(())
    }

    /// Appends a regular file; returns the SHA-256 of its content as read when the tree is
    /// being digested.
    fn append_file(
        &mut self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
    ) -> Result<Option<[u8; 32]>, ArchiveError> {
        let read_err = |source| ArchiveError::ReadSource {
            path: path.to_path_buf(),
            source,
        };
        // O_NOFOLLOW: if the file was swapped for a symlink since the lstat, fail, don't follow.
        let mut file = File::options()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(read_err)?;
        let size = meta.len();
        self.header(name, EntryType::Regular, meta, size, None)
            .map_err(ArchiveError::WriteArchive)?;
        // Read straight into the compressor's block: no intermediate buffer.
        let mut content = self.tree.as_ref().map(|_| Sha256::new());
        let mut remaining = size;
        while remaining > 0 {
            let spare = self.enc.spare().map_err(ArchiveError::WriteArchive)?;
            let want = spare
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            match file.read(&mut spare[..want]) {
                Ok(0) => {
                    return Err(ArchiveError::SourceChanged {
                        path: path.to_path_buf(),
                        expected: size,
                        read: size - remaining,
                    });
                }
                Ok(n) => {
                    self.tar_hash.update(&spare[..n]);
                    if let Some(content) = &mut content {
                        content.update(&spare[..n]);
                    }
                    self.enc.commit(n);
                    remaining -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        self.pad(size).map_err(ArchiveError::WriteArchive)?;
        self.bytes_in += size;
        Ok(content.map(|c| c.finalize().into()))
    }

    /// Records `paths` (relative, like entry names) as deleted, in PAX global headers with one
    /// `BUILDR.deleted.<n>` record per path (`n` counts across the archive, so that every
    /// deletion has a key of its own). GNU tar skips these headers silently when extracting.
    /// [`extract`](super::extract) applies deletions in stream order, so record them before
    /// appending anything that replaces a deleted path.
    pub fn record_deleted(&mut self, paths: &[PathBuf]) -> Result<(), ArchiveError> {
        self.start().map_err(ArchiveError::WriteArchive)?;
        let mut records = Vec::new();
        for p in paths {
            let clean = clean_relative(p).map_err(|reason| ArchiveError::InvalidName {
                name: p.clone(),
                reason,
            })?;
            let key = format!("{DELETED_PREFIX}{}", self.deleted);
            pax_record(&mut records, &key, clean.as_os_str().as_bytes());
            self.deleted += 1;
            if records.len() >= DELETIONS_PER_HEADER {
                self.global_header(&records)
                    .map_err(ArchiveError::WriteArchive)?;
                records.clear();
            }
        }
        if !records.is_empty() {
            self.global_header(&records)
                .map_err(ArchiveError::WriteArchive)?;
        }
        Ok(())
    }

    /// Writes the closing record and tar's end-of-archive marker, flushes the compressor and
    /// returns the writer with a summary.
    pub fn finish(mut self) -> Result<(W, Summary), ArchiveError> {
        self.start().map_err(ArchiveError::WriteArchive)?;
        let mut closing = Vec::new();
        pax_record(
            &mut closing,
            ENTRIES_KEY,
            self.entries.to_string().as_bytes(),
        );
        pax_record(
            &mut closing,
            DELETIONS_KEY,
            self.deleted.to_string().as_bytes(),
        );
        let sha = hex::encode(self.tar_hash.clone().finalize());
        pax_record(&mut closing, SHA256_KEY, sha.as_bytes());
        // Python's tarfile cannot end on a PAX header (it wants a member after one): an empty
        // GNU volume header follows, which GNU tar skips silently and creates nothing for.
        let mut anchor = Header::new_gnu();
        set_name(&mut anchor, b"buildr archive end");
        anchor.set_entry_type(EntryType::new(b'V'));
        anchor.set_mode(0o644);
        anchor.set_size(0);
        anchor.set_cksum();
        self.global_header(&closing)
            .and_then(|()| self.write_all(anchor.as_bytes()))
            .and_then(|()| self.write_all(&ZEROS))
            .map_err(ArchiveError::WriteArchive)?;
        let hashed = self.enc.finish().map_err(ArchiveError::WriteArchive)?;
        let (out, sha256, bytes_out) = hashed.finish();
        Ok((
            out,
            Summary {
                entries: self.entries,
                deleted: self.deleted,
                bytes_in: self.bytes_in,
                bytes_out,
                sha256,
                tree: self.tree.map(TreeHasher::finish),
            },
        ))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.tar_hash.update(buf);
        self.enc.write_all(buf)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let pad = (512 - (size % 512) as usize) % 512;
        self.write_all(&ZEROS[..pad])
    }

    /// Writes the header of one entry, preceded by a PAX header when the name or link target
    /// does not fit ustar's 100 bytes or is not ASCII (as GNU tar and Go write them).
    fn header(
        &mut self,
        name: &[u8],
        kind: EntryType,
        meta: &Metadata,
        size: u64,
        link: Option<&[u8]>,
    ) -> io::Result<()> {
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        let mut pax = Vec::new();
        let needs_pax = |s: &[u8]| s.len() > USTAR_NAME_LEN || !s.is_ascii();
        if needs_pax(name) {
            pax_record(&mut pax, "path", name);
        }
        if let Some(link) = link.filter(|l| needs_pax(l)) {
            pax_record(&mut pax, "linkpath", link);
        }
        if !pax.is_empty() {
            let mut h = Header::new_ustar();
            set_name(&mut h, b"././@PaxHeader");
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.write_all(h.as_bytes())?;
            self.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let mut h = Header::new_ustar();
        set_name(&mut h, name);
        if let Some(link) = link {
            let field = &mut h.as_old_mut().linkname;
            let n = link.len().min(field.len());
            field[..n].copy_from_slice(&ascii_fallback(&link[..n]));
        }
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(size);
        h.set_cksum();
        self.write_all(h.as_bytes())
    }
}

/// Copies `name` into a header, truncated to 100 bytes and made ASCII: a PAX `path` record
/// carries the real name when it differs.
fn set_name(h: &mut Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&ascii_fallback(&name[..n]));
}

/// `bytes` with every non-ASCII byte as `_`, for the ustar fields of a name that a PAX record
/// carries in full (readers without PAX see a legible stand-in, not raw bytes).
fn ascii_fallback(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b.is_ascii() { b } else { b'_' })
        .collect()
}

/// Archives `sources` into the file at `to` (replaced if it exists; a symlink there is an
/// error, never followed), after recording `deleted`. On error the partial file is removed.
pub fn create_file(
    to: &Path,
    sources: &[Source],
    deleted: &[PathBuf],
) -> Result<Summary, ArchiveError> {
    create_with(
        File::options().write(true).create(true).truncate(true),
        to,
        sources,
        deleted,
    )
}

/// [`create_file`] into a new file only (`O_EXCL`): whatever is at `to` already, file or
/// symlink, is an error and stays as it was.
pub fn create_new_file(
    to: &Path,
    sources: &[Source],
    deleted: &[PathBuf],
) -> Result<Summary, ArchiveError> {
    create_with(
        File::options().write(true).create_new(true),
        to,
        sources,
        deleted,
    )
}

fn create_with(
    options: &mut std::fs::OpenOptions,
    to: &Path,
    sources: &[Source],
    deleted: &[PathBuf],
) -> Result<Summary, ArchiveError> {
    let file = options
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o644)
        .open(to)
        .map_err(|source| ArchiveError::CreateFile {
            path: to.to_path_buf(),
            source,
        })?;
    let result = (|| {
        let mut w = Writer::new(file);
        w.record_deleted(deleted)?;
        for s in sources {
            w.append(s)?;
        }
        let (_file, summary) = w.finish()?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs::remove_file(to);
    }
    result
}

/// Every file, directory and symlink under `root` (links not followed), named relative to
/// `root`, parents before children, sorted. With `paths` (relative to `root`), only those: a
/// directory path brings its whole subtree, a symlink is stored as a symlink, and the parent
/// directories of a path are not included (extraction creates them with default modes).
/// FIFOs, sockets and devices are skipped with a warning.
pub fn sources_under(root: &Path, paths: &[PathBuf]) -> Result<Vec<Source>, ArchiveError> {
    // The root itself is followed if it is a symlink (it is the caller's directory); a PATH
    // that is a symlink is stored as one.
    let follow_root = paths.is_empty();
    let starts = if paths.is_empty() {
        vec![PathBuf::new()]
    } else {
        paths
            .iter()
            .map(|p| {
                clean_relative(p).map_err(|reason| ArchiveError::InvalidName {
                    name: p.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?
    };
    let mut found = BTreeMap::new();
    for rel in starts {
        let start = root.join(&rel);
        let walk = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .follow_root_links(follow_root);
        for entry in walk {
            let entry = entry.map_err(|e| ArchiveError::Walk {
                path: e.path().unwrap_or(&start).to_path_buf(),
                source: e.into(),
            })?;
            let Ok(name) = entry.path().strip_prefix(root) else {
                continue;
            };
            if name.as_os_str().is_empty() {
                continue;
            }
            let ft = entry.file_type();
            if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
                tracing::warn!(path = %entry.path().display(), "skipping a special file");
                continue;
            }
            found.insert(name.to_path_buf(), entry.into_path());
        }
    }
    Ok(found
        .into_iter()
        .map(|(name, source)| Source { source, name })
        .collect())
}
