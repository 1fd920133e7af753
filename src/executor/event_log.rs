//! The run's event log: every event gets the next sequence number and is kept until the client
//! acknowledges the result, so that a client that lost its connection can resume from the last
//! number it saw and get every event exactly once.
//!
//! Events are spilled to a file as they arrive (length-delimited protobuf); memory holds only the
//! file offset of each event. A task that prints gigabytes therefore grows the disk, not the
//! executor, and a slow client never blocks the task's output pipes. The file is capped: once
//! it would pass the cap, task output is dropped (counted, and said in a log event when the
//! dropping starts and, with the count, before the result) while the task goes on. A client that
//! stopped reading thus costs a bounded amount of disk.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use prost::Message;
use tokio::sync::{mpsc, watch};

use crate::rpc::{TaskEvent, task_event::Event};

/// How many events a reader takes per batch before handing them to the stream.
const READ_BATCH: usize = 64;
/// ... and how many bytes of the log at most (always at least one event). Output events are up
/// to 64 KiB, so 64 of them made a 4 MiB read buffer plus 4 MiB decoded, per follower, on top of
/// the stream's channel: the executor's peak RSS went past 30 MiB on a 200 MB task output
/// (benches/run.rs). 512 KiB keeps the batch cheap without more reads for small events.
const READ_BATCH_BYTES: u64 = 512 * 1024;

pub struct EventLog {
    inner: Mutex<Inner>,
    /// Output that would take the file past this many bytes is dropped.
    max_bytes: u64,
    /// The highest sequence number written and whether the log is complete (has its result).
    progress: watch::Sender<Progress>,
    file: File,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    last: u64,
    complete: bool,
}

struct Inner {
    /// `offsets[i]` is where the event with sequence `i + 1` starts; `offsets[len]` is the end.
    offsets: Vec<u64>,
    complete: bool,
    scratch: Vec<u8>,
    /// Output bytes dropped at the cap.
    dropped: u64,
}

impl EventLog {
    /// Creates the log backed by a new file at `path` (never one that exists, nor through a
    /// symlink), holding task output up to `max_bytes`.
    pub fn create(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = File::options()
            .create_new(true)
            .read(true)
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            max_bytes,
            inner: Mutex::new(Inner {
                offsets: vec![0],
                complete: false,
                scratch: Vec::with_capacity(64 * 1024),
                dropped: 0,
            }),
            progress: watch::Sender::new(Progress::default()),
            file,
        })
    }

    /// Appends an event and returns its sequence number. A result event completes the log;
    /// anything appended after it, and output past the cap, is dropped (returns `None`).
    pub fn append(&self, event: Event) -> io::Result<Option<u64>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.complete {
            return Ok(None);
        }
        let size = inner.offsets.last().copied().unwrap_or(0);
        match &event {
            Event::Output(output) if size + output.data.len() as u64 > self.max_bytes => {
                if inner.dropped == 0 {
                    let note = format!(
                        "the event log reached its cap of {} bytes (--max-log-bytes): task output is dropped from here on; the task goes on",
                        self.max_bytes
                    );
                    self.write(&mut inner, cap_note(note))?;
                }
                inner.dropped += output.data.len() as u64;
                return Ok(None);
            }
            Event::Result(_) if inner.dropped > 0 => {
                let note = format!(
                    "{} bytes of task output were dropped past the event log's cap of {} bytes",
                    inner.dropped, self.max_bytes
                );
                self.write(&mut inner, cap_note(note))?;
            }
            _ => {}
        }
        self.write(&mut inner, event).map(Some)
    }

    fn write(&self, inner: &mut Inner, event: Event) -> io::Result<u64> {
        let sequence = inner.offsets.len() as u64;
        let is_result = matches!(event, Event::Result(_));
        let message = TaskEvent {
            sequence,
            event: Some(event),
        };
        let mut scratch = std::mem::take(&mut inner.scratch);
        scratch.clear();
        message
            .encode_length_delimited(&mut scratch)
            .expect("a Vec grows as needed");
        let written = (&self.file).write_all(&scratch);
        inner.scratch = scratch;
        written?;
        let end = inner.offsets.last().copied().unwrap_or(0) + inner.scratch.len() as u64;
        inner.offsets.push(end);
        inner.complete = is_result;
        self.progress.send_replace(Progress {
            last: sequence,
            complete: is_result,
        });
        Ok(sequence)
    }

    /// Resolves once the result has been written.
    pub async fn finished(&self) {
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(|p| p.complete).await;
    }

    /// Reads the events after `after` (up to `READ_BATCH` events or about `READ_BATCH_BYTES`), or an
    /// empty batch if none is there yet.
    fn read_after(&self, after: u64) -> io::Result<Vec<TaskEvent>> {
        let (start, ends) = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let first = after as usize;
            if first + 1 >= inner.offsets.len() {
                return Ok(Vec::new());
            }
            let start = inner.offsets[first];
            let mut last = (first + READ_BATCH).min(inner.offsets.len() - 1);
            // Stop at the byte budget, keeping the first event however large it is.
            if let Some(over) = inner.offsets[first + 2..=last]
                .iter()
                .position(|&end| end - start > READ_BATCH_BYTES)
            {
                last = first + 1 + over;
            }
            (start, inner.offsets[first + 1..=last].to_vec())
        };
        let end = *ends.last().expect("at least one event");
        let mut buf = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut buf, start)?;
        let mut slice = buf.as_slice();
        let mut events = Vec::with_capacity(ends.len());
        for _ in &ends {
            let event = TaskEvent::decode_length_delimited(&mut slice)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            events.push(event);
        }
        Ok(events)
    }

    /// Streams every event after sequence `after` into `tx`, waiting for new ones, until the
    /// result has been sent or the receiver goes away.
    pub async fn follow(&self, after: u64, tx: mpsc::Sender<io::Result<TaskEvent>>) {
        let mut progress = self.progress.subscribe();
        let mut next_after = after;
        loop {
            let batch = match self.read_after(next_after) {
                Ok(batch) => batch,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if batch.is_empty() {
                let state = *progress.borrow_and_update();
                if state.complete && state.last <= next_after {
                    return;
                }
                if state.last > next_after {
                    continue;
                }
                // A client that went away while the task is quiet ends its follower now, not at
                // the next event.
                tokio::select! {
                    changed = progress.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
                continue;
            }
            for event in batch {
                next_after = event.sequence;
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The executor's warning about the cap, as a log event.
fn cap_note(message: String) -> Event {
    Event::Log(crate::rpc::TaskLog {
        time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        level: crate::rpc::task_log::Level::Warn as i32,
        message,
        fields: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{TaskOutput, TaskResult};

    fn output(data: &[u8]) -> Event {
        Event::Output(TaskOutput {
            stream: crate::rpc::task_output::Stream::Stdout as i32,
            data: data.to_vec(),
        })
    }

    #[tokio::test]
    async fn resumes_from_any_sequence_and_ends_after_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            std::sync::Arc::new(EventLog::create(&dir.path().join("events"), u64::MAX).unwrap());
        for i in 0..200u32 {
            assert_eq!(
                log.append(output(&i.to_le_bytes())).unwrap(),
                Some(u64::from(i) + 1)
            );
        }
        log.append(Event::Result(TaskResult::default())).unwrap();
        assert_eq!(log.append(output(b"late")).unwrap(), None);

        for after in [0u64, 1, 63, 64, 150, 200, 201] {
            let (tx, mut rx) = mpsc::channel(8);
            let follower = log.clone();
            tokio::spawn(async move { follower.follow(after, tx).await });
            let mut seen = Vec::new();
            while let Some(event) = rx.recv().await {
                seen.push(event.unwrap().sequence);
            }
            assert_eq!(seen, ((after + 1)..=201).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_read_batch_stops_at_its_byte_budget_but_takes_at_least_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::create(&dir.path().join("events"), u64::MAX).unwrap();
        log.append(output(&vec![b'x'; 2 * READ_BATCH_BYTES as usize]))
            .unwrap();
        for _ in 0..20 {
            log.append(output(&[b'y'; 64 * 1024])).unwrap();
        }
        let first = log.read_after(0).unwrap();
        assert_eq!(first.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1]);
        let second = log.read_after(1).unwrap();
        assert_eq!(second.first().map(|e| e.sequence), Some(2));
        assert!(
            second.len() < 20,
            "{} events of 64 KiB in one batch",
            second.len()
        );
        let bytes: usize = second.iter().map(|e| e.encoded_len()).sum();
        assert!(
            bytes as u64 <= READ_BATCH_BYTES,
            "{bytes} bytes in one batch"
        );
    }

    #[tokio::test]
    async fn a_follower_waits_for_events_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            std::sync::Arc::new(EventLog::create(&dir.path().join("events"), u64::MAX).unwrap());
        let (tx, mut rx) = mpsc::channel(8);
        let follower = log.clone();
        tokio::spawn(async move { follower.follow(0, tx).await });
        log.append(output(b"a")).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().sequence, 1);
        log.append(Event::Result(TaskResult::default())).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().sequence, 2);
        assert!(rx.recv().await.is_none());
    }
}
