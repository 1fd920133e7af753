//! Snappy framing compressed on several threads.
//!
//! Snappy frames are independent, so the byte stream is cut into [`BLOCK_SIZE`] blocks, each
//! block is compressed by a worker with its own `snap::write::FrameEncoder`, and the results are
//! written in order. Every block's encoder starts with the stream identifier chunk; all but the
//! first are dropped, so the output is byte for byte what one `FrameEncoder` writes when fed the
//! whole stream in one `write` (blocks are a multiple of the 64 KiB frame size).
//!
//! Block `i` goes to worker `i % n` and results are collected from the workers in the same
//! rotation, so order needs no reorder buffer. Queues are bounded by [`ParallelEncoder`]'s
//! in-flight limit, and buffers are recycled.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

/// Bytes of uncompressed stream per block handed to a worker: 16 Snappy frames.
pub const BLOCK_SIZE: usize = 1 << 20;
/// The Snappy framing format's stream identifier chunk.
pub const STREAM_IDENTIFIER: &[u8; 10] = b"\xff\x06\x00\x00sNaPpY";

struct Job {
    input: Vec<u8>,
    len: usize,
    output: Vec<u8>,
}

struct WorkerHandle {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Job>,
    thread: Option<JoinHandle<()>>,
}

/// Owns the worker threads: dropping it closes their queues and joins them.
struct Pool {
    workers: Vec<WorkerHandle>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs = None;
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn worker_gone() -> io::Error {
    io::Error::other("a compression worker stopped unexpectedly")
}

fn compress_loop(jobs: Receiver<Job>, results: SyncSender<Job>) {
    while let Ok(mut job) = jobs.recv() {
        job.output.clear();
        {
            let mut enc = snap::write::FrameEncoder::new(&mut job.output);
            // Writing into a Vec cannot fail.
            enc.write_all(&job.input[..job.len])
                .and_then(|()| enc.flush())
                .expect("compressing into memory");
        }
        if results.send(job).is_err() {
            break;
        }
    }
}

/// A `Write` that Snappy-frame-compresses everything written to it on worker threads.
///
/// Call [`finish`](Self::finish) to flush the last block and get the inner writer back;
/// dropping it without `finish` stops the workers and loses the buffered tail.
pub struct ParallelEncoder<W: Write> {
    out: W,
    block: Vec<u8>,
    fill: usize,
    free_inputs: Vec<Vec<u8>>,
    free_outputs: Vec<Vec<u8>>,
    pool: Pool,
    sent: u64,
    done: u64,
    max_inflight: u64,
    wrote_ident: bool,
}

impl<W: Write> ParallelEncoder<W> {
    /// One worker per available core.
    pub fn new(out: W) -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_workers(out, n)
    }

    pub fn with_workers(out: W, workers: usize) -> Self {
        let workers = workers.max(1);
        // Two blocks queued per worker keeps every worker busy while the writer fills the next.
        let max_inflight = 2 * workers;
        let pool = Pool {
            workers: (0..workers)
                .map(|i| {
                    let (jobs_tx, jobs_rx) = sync_channel(max_inflight);
                    let (res_tx, res_rx) = sync_channel(max_inflight);
                    let thread = std::thread::Builder::new()
                        .name(format!("buildr-snappy-{i}"))
                        .spawn(move || compress_loop(jobs_rx, res_tx))
                        .expect("spawning a compression thread");
                    WorkerHandle {
                        jobs: Some(jobs_tx),
                        results: res_rx,
                        thread: Some(thread),
                    }
                })
                .collect(),
        };
        ParallelEncoder {
            out,
            block: vec![0; BLOCK_SIZE],
            fill: 0,
            free_inputs: Vec::new(),
            free_outputs: Vec::new(),
            pool,
            sent: 0,
            done: 0,
            max_inflight: max_inflight as u64,
            wrote_ident: false,
        }
    }

    /// The unfilled rest of the current block (never empty), to read data straight into;
    /// follow with [`commit`](Self::commit).
    pub fn spare(&mut self) -> io::Result<&mut [u8]> {
        if self.fill == BLOCK_SIZE {
            self.dispatch()?;
        }
        Ok(&mut self.block[self.fill..])
    }

    /// Marks `n` bytes of [`spare`](Self::spare) as written.
    pub fn commit(&mut self, n: usize) {
        assert!(self.fill + n <= BLOCK_SIZE, "commit past the block");
        self.fill += n;
    }

    /// The inner writer (e.g. to read a running count or hash).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        while self.sent - self.done >= self.max_inflight {
            self.collect(true)?;
        }
        let n = self.pool.workers.len() as u64;
        let fresh = self
            .free_inputs
            .pop()
            .unwrap_or_else(|| vec![0; BLOCK_SIZE]);
        let job = Job {
            input: std::mem::replace(&mut self.block, fresh),
            len: self.fill,
            output: self.free_outputs.pop().unwrap_or_default(),
        };
        self.fill = 0;
        let worker = &self.pool.workers[(self.sent % n) as usize];
        worker
            .jobs
            .as_ref()
            .expect("workers live until finish")
            .send(job)
            .map_err(|_| worker_gone())?;
        self.sent += 1;
        // Write whatever is already done, so output flows while we go on reading.
        while self.done < self.sent && self.collect(false)? {}
        Ok(())
    }

    /// Writes the next block in order; returns false if it is not ready and `block` is false.
    fn collect(&mut self, block: bool) -> io::Result<bool> {
        let n = self.pool.workers.len() as u64;
        let results = &self.pool.workers[(self.done % n) as usize].results;
        let job = if block {
            results.recv().map_err(|_| worker_gone())?
        } else {
            match results.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => return Err(worker_gone()),
            }
        };
        debug_assert!(job.output.starts_with(STREAM_IDENTIFIER));
        let data = if self.wrote_ident {
            &job.output[STREAM_IDENTIFIER.len()..]
        } else {
            &job.output[..]
        };
        self.out.write_all(data)?;
        self.wrote_ident = true;
        self.done += 1;
        self.free_inputs.push(job.input);
        self.free_outputs.push(job.output);
        Ok(true)
    }

    /// Compresses and writes what is left, flushes, stops the workers and returns the writer.
    /// An empty stream is written as the stream identifier alone (a valid, empty frame stream).
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch()?;
        while self.done < self.sent {
            self.collect(true)?;
        }
        if !self.wrote_ident {
            self.out.write_all(STREAM_IDENTIFIER)?;
        }
        self.out.flush()?;
        drop(self.pool);
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let spare = self.spare()?;
        let n = spare.len().min(buf.len());
        spare[..n].copy_from_slice(&buf[..n]);
        self.commit(n);
        Ok(n)
    }

    /// Does not cut a block: data reaches the inner writer as blocks fill and at `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_identifier_matches_snap() {
        let mut v = Vec::new();
        let mut e = snap::write::FrameEncoder::new(&mut v);
        e.write_all(b"x").unwrap();
        drop(e);
        assert!(v.starts_with(STREAM_IDENTIFIER));
    }
}
