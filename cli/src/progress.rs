//! Progress on a terminal while a command waits: a spinner on stderr with
//! what is awaited and for how long. Nothing is drawn when stderr is not a
//! terminal or the output is JSON, so scripts see only their results.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::output::Format;

/// A spinner, or nothing.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A spinner labelled `label`, shown only for text output on a terminal.
    pub fn start(fmt: Format, label: &str) -> Progress {
        if fmt != Format::Text || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new_spinner();
        let style = ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
            .expect("a valid progress template")
            .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "✓"]);
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// Nothing shown (for callers that report progress their own way).
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// Whether anything is shown.
    pub fn visible(&self) -> bool {
        self.0.is_some()
    }

    /// What the wait is at now.
    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.set_message(msg.into());
        }
    }

    /// Ends the spinner, leaving `msg` on its line.
    pub fn finish(&self, msg: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.finish_with_message(msg.into());
        }
    }

    /// Removes the spinner's line.
    pub fn clear(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            if !b.is_finished() {
                b.finish_and_clear();
            }
        }
    }
}

/// Runs `work` with a spinner labelled `label` (text output on a terminal only).
pub async fn with_progress<T>(fmt: Format, label: &str, work: impl std::future::Future<Output = T>) -> T {
    let p = Progress::start(fmt, label);
    let out = work.await;
    p.finish("done");
    out
}
