//! Progress bars (bytes, speed, ETA per blob) on stderr, or nothing.
//!
//! A bar appears only once bytes move; a blob that needs no transfer
//! (already in the registry, mounted, cached) gets one finished line that
//! says so instead of an empty bar.

use client::{NoProgress, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::{Arc, OnceLock};

struct Bar {
    multi: MultiProgress,
    label: String,
    size: u64,
    bar: OnceLock<ProgressBar>,
}

impl Bar {
    /// The bar, drawn from the first call on.
    fn shown(&self) -> &ProgressBar {
        self.bar.get_or_init(|| {
            let style = ProgressStyle::with_template(
                "{msg:>14} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let pb = self.multi.add(ProgressBar::new(self.size));
            pb.set_style(style);
            pb.set_message(self.label.clone());
            pb
        })
    }

    fn finish_if_done(&self, pb: &ProgressBar) {
        if pb.length().is_some_and(|l| pb.position() >= l) {
            pb.finish();
        }
    }
}

impl Progress for Bar {
    fn inc(&self, n: u64) {
        let pb = self.shown();
        pb.inc(n);
        self.finish_if_done(pb);
    }
    fn set_position(&self, pos: u64) {
        let pb = self.shown();
        pb.set_position(pos);
        self.finish_if_done(pb);
    }
    fn skipped(&self, why: &str) {
        if self.bar.get().is_some() {
            return;
        }
        let style = ProgressStyle::with_template("{msg:>14} {prefix}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let pb = self.bar.get_or_init(|| self.multi.add(ProgressBar::new(0)));
        pb.set_style(style);
        pb.set_message(self.label.clone());
        pb.set_prefix(why.to_owned());
        pb.finish();
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
        match &self.multi {
            None => Arc::new(NoProgress),
            Some(m) => Arc::new(Bar {
                multi: m.clone(),
                label: label.to_owned(),
                size,
                bar: OnceLock::new(),
            }),
        }
    }
}
