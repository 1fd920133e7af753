//! Snappy framing compressed on several threads.
//!
//! Snappy frames are independent, so the byte stream is cut into [`BLOCK_SIZE`] blocks, each
//! block is compressed by a worker with its own `snap::write::FrameEncoder`, and the results are
//! written in order. Every block's encoder starts with the stream identifier chunk; all but the
//! first are dropped, so the output is byte for byte what one `FrameEncoder` writes when fed the
//! whole stream in one `write` (blocks are a multiple of the 64 KiB frame size).
//!
//! Blocks go to the workers in rotation and a queue of pending blocks (which worker has each)
//! gives the output order, so no reorder buffer is needed. At most two blocks per worker are
//! in flight, queues are bounded accordingly, and buffers are recycled.
//!
//! In [adaptive](ParallelEncoder::adaptive) mode a block that finds every worker busy is
//! stored as uncompressed chunks instead (with the masked CRC-32C the format requires).

use std::collections::VecDeque;
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
    /// Blocks handed out and not yet written, in stream order.
    pending: VecDeque<Pending>,
    /// Blocks handed to workers so far (picks the next worker, round-robin).
    assigned: u64,
    /// Pending blocks that are with a worker.
    in_workers: usize,
    max_inflight: usize,
    wrote_ident: bool,
    adaptive: bool,
}

enum Pending {
    /// Being compressed by this worker (each worker answers in the order it was given jobs).
    Worker(usize),
    /// Stored uncompressed by the adaptive path, ready to write.
    Stored(Vec<u8>),
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
            pending: VecDeque::new(),
            assigned: 0,
            in_workers: 0,
            max_inflight,
            wrote_ident: false,
            adaptive: false,
        }
    }

    /// Adaptive mode: when every worker is busy and the queue is full, the next block is
    /// stored as uncompressed Snappy chunks (still valid framing, CRC and all) instead of
    /// waiting, so the writer keeps pace with its input at the cost of a bigger stream.
    /// The output then depends on timing and is no longer reproducible byte for byte.
    pub fn adaptive(mut self, on: bool) -> Self {
        self.adaptive = on;
        self
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
        // Write whatever is already done, so output flows while we go on reading.
        while self.collect(false)? {}
        if self.in_workers >= self.max_inflight {
            // Stored blocks wait behind the oldest compressing one: bound them too.
            if self.adaptive && self.pending.len() < 4 * self.max_inflight {
                let mut stored = self.free_outputs.pop().unwrap_or_default();
                store_uncompressed(&self.block[..self.fill], &mut stored);
                self.fill = 0;
                self.pending.push_back(Pending::Stored(stored));
                return Ok(());
            }
            while self.in_workers >= self.max_inflight {
                self.collect(true)?;
            }
        }
        let n = self.pool.workers.len();
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
        let w = (self.assigned % n as u64) as usize;
        self.pool.workers[w]
            .jobs
            .as_ref()
            .expect("workers live until finish")
            .send(job)
            .map_err(|_| worker_gone())?;
        self.assigned += 1;
        self.in_workers += 1;
        self.pending.push_back(Pending::Worker(w));
        Ok(())
    }

    /// Writes the oldest pending block; returns false if there is none, or if it is not
    /// ready and `block` is false.
    fn collect(&mut self, block: bool) -> io::Result<bool> {
        let (output, input) = match self.pending.front_mut() {
            None => return Ok(false),
            Some(Pending::Stored(data)) => (std::mem::take(data), None),
            Some(Pending::Worker(w)) => {
                let results = &self.pool.workers[*w].results;
                let job = if block {
                    results.recv().map_err(|_| worker_gone())?
                } else {
                    match results.try_recv() {
                        Ok(job) => job,
                        Err(TryRecvError::Empty) => return Ok(false),
                        Err(TryRecvError::Disconnected) => return Err(worker_gone()),
                    }
                };
                self.in_workers -= 1;
                (job.output, Some(job.input))
            }
        };
        self.pending.pop_front();
        debug_assert!(output.starts_with(STREAM_IDENTIFIER));
        let data = if self.wrote_ident {
            &output[STREAM_IDENTIFIER.len()..]
        } else {
            &output[..]
        };
        self.out.write_all(data)?;
        self.wrote_ident = true;
        self.free_inputs.extend(input);
        self.free_outputs.push(output);
        Ok(true)
    }

    /// Compresses and writes what is left, flushes, stops the workers and returns the writer.
    /// An empty stream is written as the stream identifier alone (a valid, empty frame stream).
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch()?;
        while self.collect(true)? {}
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

/// Snappy's largest chunk of uncompressed data.
const MAX_CHUNK: usize = 1 << 16;

/// Frames `data` as uncompressed chunks (type 0x01), after a stream identifier like the
/// workers' output, into `out`.
fn store_uncompressed(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(STREAM_IDENTIFIER);
    for chunk in data.chunks(MAX_CHUNK) {
        let len = (chunk.len() + 4) as u32;
        out.push(0x01);
        out.extend_from_slice(&len.to_le_bytes()[..3]);
        out.extend_from_slice(&crc32c_masked(chunk).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// The framing format's masked CRC-32C (Castagnoli) of `data`.
fn crc32c_masked(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_sse42(data) };
    }
    crc32c_bitwise(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut crc = !0u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut crc = crc as u32;
    for &b in words.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    !crc
}

fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & 0u32.wrapping_sub(crc & 1));
        }
    }
    !crc
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

    #[test]
    fn crc32c_known_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_bitwise(b"123456789"), 0xe306_9283);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 7, 8, 9, 999] {
            assert_eq!(crc32c(&data[..len]), crc32c_bitwise(&data[..len]));
        }
    }

    #[test]
    fn stored_blocks_decode() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut out = Vec::new();
        store_uncompressed(&data, &mut out);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut snap::read::FrameDecoder::new(&out[..]), &mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
