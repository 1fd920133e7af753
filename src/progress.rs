//! Progress bars for transfers and extraction: shown on a terminal, silent otherwise (CI logs
//! and pipes get no escape codes).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar labelled `what`, hidden unless stderr is a terminal.
pub fn bytes(what: &str, total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A bar for a stream of unknown length labelled `what`: bytes so far and the rate, hidden
/// unless stderr is a terminal.
pub fn stream(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} {bytes} {bytes_per_sec}")
            .expect("a valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// A writer that moves `bar` by what goes through it.
pub struct Counted<W> {
    inner: W,
    bar: ProgressBar,
}

impl<W> Counted<W> {
    pub fn new(inner: W, bar: ProgressBar) -> Self {
        Self { inner, bar }
    }

    /// The writer, the bar cleared.
    pub fn into_inner(self) -> W {
        self.bar.finish_and_clear();
        self.inner
    }
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
