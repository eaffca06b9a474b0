//! Progress bars (bytes, speed, ETA per blob) on stderr, or nothing.

use client::{NoProgress, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;

struct Bar(ProgressBar);

impl Progress for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
        if self.0.length().is_some_and(|l| self.0.position() >= l) {
            self.0.finish();
        }
    }
    fn set_position(&self, pos: u64) {
        self.0.set_position(pos);
        if self.0.length().is_some_and(|l| pos >= l) {
            self.0.finish();
        }
    }
}

/// Makes one bar per blob, or no-ops when bars are off.
pub struct Bars {
    multi: Option<MultiProgress>,
}

impl Bars {
    pub fn new(enabled: bool) -> Bars {
        Bars {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub fn bar(&self, label: &str, size: u64) -> Arc<dyn Progress> {
        let Some(m) = &self.multi else {
            return Arc::new(NoProgress);
        };
        let style = ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let pb = m.add(ProgressBar::new(size));
        pb.set_style(style);
        pb.set_message(label.to_owned());
        Arc::new(Bar(pb))
    }
}
