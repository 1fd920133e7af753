//! Writing `.tar.s2` archives: tar headers and file data go straight into the blocks of a
//! [`ParallelEncoder`], which compresses them on every core while this thread reads files.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::error::ArchiveError;
use super::frame::ParallelEncoder;
use super::hash::Sha256Writer;
use super::names::clean_relative;
use super::{DELETED_KEY, Source, Summary};

const ZEROS: [u8; 1024] = [0; 1024];
/// Longest name or link target that fits a ustar header; longer ones get a PAX header.
const USTAR_NAME_LEN: usize = 100;

/// Writes a `.tar.s2` stream (ustar + PAX tar, Snappy-framed) to `out`.
///
/// Entries are stored as they are appended; names are never rewritten beyond dropping `.`
/// components. Owners are not recorded (uid/gid 0, no names): extraction never changes owners.
/// Hard-linked files are stored as separate copies; setuid/setgid bits are stored but not
/// restored by [`extract`](super::extract).
///
/// After any error the stream is incomplete: drop the writer.
pub struct Writer<W: Write> {
    enc: ParallelEncoder<Sha256Writer<W>>,
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

    fn from_encoder(enc: ParallelEncoder<Sha256Writer<W>>) -> Self {
        Writer {
            enc,
            entries: 0,
            deleted: 0,
            bytes_in: 0,
        }
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
        let ft = meta.file_type();
        let name = name.as_os_str().as_bytes();
        if ft.is_file() {
            self.append_file(&src.source, name, &meta)?;
        } else if ft.is_dir() {
            let mut dir_name = name.to_vec();
            dir_name.push(b'/');
            self.header(&dir_name, EntryType::Directory, &meta, 0, None)
                .map_err(ArchiveError::WriteArchive)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src.source).map_err(read_err)?;
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

    fn append_file(
        &mut self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
    ) -> Result<(), ArchiveError> {
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
                    self.enc.commit(n);
                    remaining -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        self.pad(size).map_err(ArchiveError::WriteArchive)?;
        self.bytes_in += size;
        Ok(())
    }

    /// Records `paths` (relative, like entry names) as deleted, in a PAX global header with one
    /// `BUILDR.deleted` record per path. GNU tar skips this header when extracting (it may
    /// warn about an unknown keyword). [`extract`](super::extract) applies deletions in stream
    /// order, so record them before appending anything that replaces a deleted path.
    pub fn record_deleted(&mut self, paths: &[PathBuf]) -> Result<(), ArchiveError> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        for p in paths {
            let clean = clean_relative(p).map_err(|reason| ArchiveError::InvalidName {
                name: p.clone(),
                reason,
            })?;
            pax_record(&mut records, DELETED_KEY, clean.as_os_str().as_bytes());
        }
        let mut h = Header::new_ustar();
        set_name(&mut h, b"pax_global_header");
        h.set_entry_type(EntryType::XGlobalHeader);
        h.set_mode(0o644);
        h.set_size(records.len() as u64);
        h.set_cksum();
        self.write_all(h.as_bytes())
            .and_then(|()| self.write_all(&records))
            .and_then(|()| self.pad(records.len() as u64))
            .map_err(ArchiveError::WriteArchive)?;
        self.deleted += paths.len() as u64;
        Ok(())
    }

    /// Ends the tar stream, flushes the compressor and returns the writer with a summary.
    pub fn finish(mut self) -> Result<(W, Summary), ArchiveError> {
        self.write_all(&ZEROS).map_err(ArchiveError::WriteArchive)?;
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
            },
        ))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.enc.write_all(buf)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let pad = (512 - (size % 512) as usize) % 512;
        self.write_all(&ZEROS[..pad])
    }

    /// Writes the header of one entry, preceded by a PAX header when the name or link target
    /// does not fit ustar's 100 bytes.
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
        if name.len() > USTAR_NAME_LEN {
            pax_record(&mut pax, "path", name);
        }
        if let Some(link) = link.filter(|l| l.len() > USTAR_NAME_LEN) {
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
            field[..n].copy_from_slice(&link[..n]);
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

/// Copies `name` (truncated to 100 bytes: a PAX `path` record carries the rest) into a header.
fn set_name(h: &mut Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
}

/// Appends one PAX record, `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Archives `sources` into the file at `to`, after recording `deleted`. On error the partial
/// file is removed.
pub fn create_file(
    to: &Path,
    sources: &[Source],
    deleted: &[PathBuf],
) -> Result<Summary, ArchiveError> {
    let file = File::create(to).map_err(|source| ArchiveError::CreateFile {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        for vlen in [0, 1, 5, 90, 93, 94, 95, 200, 990, 996, 1000] {
            let mut v = Vec::new();
            pax_record(&mut v, "path", &vec![b'a'; vlen]);
            let sp = v.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&v[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, v.len(), "value length {vlen}");
        }
    }
}
