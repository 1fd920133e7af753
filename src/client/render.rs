//! Renders a run's events on the console: the task's stdout and stderr go to ours, unchanged and
//! as they arrive; the executor's log lines go to stderr (warnings always, the rest under `-v`),
//! escaped.

use std::io::{self, Write};

use super::session::EventSink;
use crate::printable::Printable;
use crate::rpc::{TaskLog, TaskOutput, task_log::Level, task_output::Stream};

pub struct Console {
    verbose: bool,
    /// Set once our stdout is gone (a closed pipe): the task keeps running, its output is dropped.
    stdout_closed: bool,
}

impl Console {
    pub fn new(verbose: bool) -> Self {
        Self {
            verbose,
            stdout_closed: false,
        }
    }
}

impl EventSink for Console {
    fn output(&mut self, output: &TaskOutput) {
        match output.stream() {
            Stream::Stderr => {
                let mut stderr = io::stderr().lock();
                let _ = stderr.write_all(&output.data);
            }
            _ if self.stdout_closed => {}
            _ => {
                let mut stdout = io::stdout().lock();
                if stdout
                    .write_all(&output.data)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    self.stdout_closed = true;
                }
            }
        }
    }

    fn log(&mut self, log: &TaskLog) {
        let level = log.level();
        if !(self.verbose || matches!(level, Level::Warn | Level::Error)) {
            return;
        }
        let _ = writeln!(io::stderr().lock(), "{}", format_log(log));
    }
}

/// `executor WARN: message key=value ...`, fields sorted by name; the message and the fields
/// escaped (see [`Printable`]).
pub fn format_log(log: &TaskLog) -> String {
    let level = match log.level() {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
        Level::Unspecified => "LOG",
    };
    let mut fields: Vec<_> = log.fields.iter().collect();
    fields.sort();
    let mut line = format!("executor {level}: {}", Printable(&log.message));
    for (key, value) in fields {
        line.push_str(&format!(" {}={}", Printable(key), Printable(value)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_from_the_executor_cannot_drive_the_terminal() {
        let log = TaskLog {
            level: Level::Warn as i32,
            message: "watch overflow\u{1b}[1A\u{1b}[2K".to_string(),
            fields: [("path\u{7}".to_string(), "a\nb".to_string())].into(),
            ..TaskLog::default()
        };
        assert_eq!(
            format_log(&log),
            "executor WARN: watch overflow\\u{1b}[1A\\u{1b}[2K path\\u{7}=a\\nb"
        );
    }
}
