//! What a run leaves for its replay: its stdout and stderr as the chunks arrived, each tagged by
//! stream, in order; and a small [`Record`] of how it ended.
//!
//! The recorded output is a sequence of chunks: one byte for the stream (1 stdout, 2 stderr),
//! the length as 4 bytes little-endian, then the data.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use serde::{Deserialize, Serialize};

use crate::client::EventSink;
use crate::rpc::{TaskLog, TaskOutput, TaskResult, task_output};

/// How a stored run ended, and when it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub task: String,
    /// When the original run finished, in seconds since the Unix epoch.
    pub created_at: u64,
    /// How long the original run took, end to end, in milliseconds.
    pub duration_ms: u64,
    pub exit_code: i32,
    pub signal: i32,
    /// The executor's error, if any (a timeout, say).
    pub error: String,
    pub deleted_paths: Vec<String>,
}

impl Record {
    /// The result a replay reports, as the original run's client saw it.
    pub fn task_result(&self) -> TaskResult {
        TaskResult {
            error: self.error.clone(),
            exit_code: self.exit_code,
            signal: self.signal,
            deleted_paths: self.deleted_paths.clone(),
            ..TaskResult::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

/// An [`EventSink`] that passes every event on to `inner` and, when recording, keeps the
/// output chunks in a temporary file. A recording that cannot be written is dropped, never the
/// run.
pub struct Recorder<S> {
    inner: S,
    out: Option<io::Result<BufWriter<File>>>,
}

impl<S: EventSink> Recorder<S> {
    pub fn new(inner: S, record: bool) -> Self {
        let out = record.then(|| tempfile::tempfile().map(BufWriter::new));
        Self { inner, out }
    }

    /// The recording, rewound, or why there is none; `None` when not recording.
    pub fn finish(self) -> Option<io::Result<File>> {
        self.out.map(|out| {
            let mut file = out?.into_inner().map_err(io::IntoInnerError::into_error)?;
            io::Seek::rewind(&mut file)?;
            Ok(file)
        })
    }
}

impl<S: EventSink> EventSink for Recorder<S> {
    fn output(&mut self, output: &TaskOutput) {
        self.inner.output(output);
        let stream = match output.stream() {
            task_output::Stream::Stderr => Stream::Stderr,
            _ => Stream::Stdout,
        };
        if let Some(Ok(out)) = &mut self.out
            && let Err(e) = write_chunk(out, stream, &output.data)
        {
            self.out = Some(Err(e));
        }
    }

    fn log(&mut self, log: &TaskLog) {
        self.inner.log(log);
    }
}

fn write_chunk(out: &mut impl Write, stream: Stream, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(io::Error::other)?;
    out.write_all(&[stream.tag()])?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(data)
}

/// Reads recorded chunks back, in order. A malformed recording is an
/// [`io::ErrorKind::InvalidData`] error.
pub fn read_chunk(input: &mut impl Read) -> io::Result<Option<(Stream, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match input.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    input.read_exact(&mut head[1..])?;
    let stream = match head[0] {
        1 => Stream::Stdout,
        2 => Stream::Stderr,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown stream tag {other} in the recorded output"),
            ));
        }
    };
    let len = u32::from_le_bytes(head[1..].try_into().expect("4 bytes")) as usize;
    let mut data = vec![0u8; len];
    input.read_exact(&mut data)?;
    Ok(Some((stream, data)))
}
