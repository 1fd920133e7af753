//! Staged files written on worker threads. Creating a file, writing it and setting its mtime
//! cost system calls whose price is per file (inode allocation, a directory insertion): one
//! thread doing them for 100,000 small files is the whole extraction's bottleneck while the
//! other cores idle (BENCHMARKS.md, "The bytes"). The thread that reads the
//! archive hands each small file's bytes to a worker and goes on reading; larger files it writes
//! itself, so that what is in flight stays bounded.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sys::time::TimeSpec;

use super::staging::create_in;

/// Files up to this size go to a worker: on a file system where creating a file is slow (ext4
/// skipping recently freed inodes, `find_inode_bit` in a profile) creation dominates well past
/// the sizes of source files. Larger ones are written by the reading thread as they stream.
pub(crate) const HANDED_OFF: u64 = 1 << 20;
/// Files queued for the workers: with [`HANDED_OFF`], at most 16 MiB of data waiting, and one
/// file per worker being written.
const QUEUED: usize = 16;
/// Workers at most, whatever the machine has: file creation in one directory does not scale far.
const MAX_WORKERS: usize = 4;

/// One staged file to write.
pub(crate) struct StagedFile {
    /// Its name in the staging directory.
    pub name: String,
    /// Where it goes in the destination, for the error message.
    pub rel: PathBuf,
    pub mode: u32,
    pub mtime: i64,
    pub data: Vec<u8>,
}

/// The first write that failed: where the file was going, and why.
pub(crate) type Failure = (PathBuf, io::Error);

/// Workers that create, write and date files in one directory.
pub(crate) struct FileWriters {
    files: Option<SyncSender<StagedFile>>,
    workers: Vec<JoinHandle<()>>,
    failed: Arc<Mutex<Option<Failure>>>,
}

impl FileWriters {
    /// Workers writing into `dir` (a directory opened with `O_PATH`), one per core up to
    /// [`MAX_WORKERS`].
    pub(crate) fn start(dir: BorrowedFd<'_>) -> io::Result<Self> {
        let count = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS);
        let (files, queue) = sync_channel(QUEUED);
        let queue = Arc::new(Mutex::new(queue));
        let failed = Arc::new(Mutex::new(None));
        let workers = (0..count)
            .map(|i| {
                let (dir, queue, failed) =
                    (dir.try_clone_to_owned()?, queue.clone(), failed.clone());
                std::thread::Builder::new()
                    .name(format!("buildr-write-{i}"))
                    .spawn(move || work(&dir, &queue, &failed))
            })
            .collect::<io::Result<_>>()?;
        Ok(Self {
            files: Some(files),
            workers,
            failed,
        })
    }

    /// Queues `file`; fails with the first earlier write's failure, if there was one.
    pub(crate) fn write(&mut self, file: StagedFile) -> Result<(), Failure> {
        if let Some(failure) = self.take_failure() {
            return Err(failure);
        }
        let files = self.files.as_ref().expect("not finished");
        // The workers stop only when the queue closes, so the send cannot fail.
        files.send(file).expect("the file writers are running");
        Ok(())
    }

    /// Waits until every queued file is written; the first failure, if any.
    pub(crate) fn finish(mut self) -> Result<(), Failure> {
        self.stop();
        match self.take_failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    fn take_failure(&self) -> Option<Failure> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn stop(&mut self) {
        self.files = None;
        for worker in self.workers.drain(..) {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for FileWriters {
    /// An extraction that failed elsewhere still waits for the workers, so that nothing writes
    /// into the staging directory once it is being removed.
    fn drop(&mut self) {
        self.stop();
    }
}

fn work(dir: &OwnedFd, queue: &Mutex<Receiver<StagedFile>>, failed: &Mutex<Option<Failure>>) {
    loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(file) = next else { return };
        if let Err(e) = write_one(dir, &file) {
            failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert((file.rel, e));
        }
    }
}

/// Creates `file` in `dir` (never through a link, never over an existing one), writes its data
/// and sets its mtime.
fn write_one(dir: impl AsFd, file: &StagedFile) -> io::Result<()> {
    let mut out = create_in(dir, &file.name, file.mode)?;
    out.write_all(&file.data)?;
    set_mtime(&out, file.mtime)
}

pub(crate) fn set_mtime(file: &File, mtime: i64) -> io::Result<()> {
    Ok(nix::sys::stat::futimens(
        file,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(mtime, 0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(name: &str, data: &[u8]) -> StagedFile {
        StagedFile {
            name: name.to_string(),
            rel: PathBuf::from(format!("dir/{name}")),
            mode: 0o640,
            mtime: 1_000_000_000,
            data: data.to_vec(),
        }
    }

    #[test]
    fn every_queued_file_is_written_with_its_mode_and_mtime() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let fd: OwnedFd = File::open(dir.path()).unwrap().into();
        let mut writers = FileWriters::start(fd.as_fd()).unwrap();
        for i in 0..200 {
            writers
                .write(staged(&i.to_string(), i.to_string().as_bytes()))
                .unwrap();
        }
        writers.finish().unwrap();
        for i in 0..200 {
            let path = dir.path().join(i.to_string());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), i.to_string());
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.mtime(), 1_000_000_000);
            // The owner's bits, which no umask takes.
            assert_eq!(meta.permissions().mode() & 0o700, 0o600);
            assert_eq!(meta.permissions().mode() & 0o007, 0);
        }
    }

    #[test]
    fn a_failed_write_is_reported_with_the_entry_it_was_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("taken"), "already here").unwrap();
        let fd: OwnedFd = File::open(dir.path()).unwrap().into();
        let mut writers = FileWriters::start(fd.as_fd()).unwrap();
        writers.write(staged("fine", b"x")).unwrap();
        writers.write(staged("taken", b"y")).unwrap();
        let (rel, error) = writers.finish().expect_err("the existing name must fail");
        assert_eq!(rel, PathBuf::from("dir/taken"));
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("taken")).unwrap(),
            "already here",
            "an existing file is never written through"
        );
    }
}
