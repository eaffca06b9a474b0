//! Figures read when `/metrics` is scraped: the process (from `/proc/self`
//! on Linux; elsewhere only what needs no `/proc`), uptime, upload
//! sessions open, and the pull-through cache's upstream traffic.

use super::Sources;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    kind: &'static str,
}

pub struct Collector {
    sources: Sources,
    started: Instant,
    /// Unix time the process started (when metrics were set up, which is
    /// at startup).
    start_time: f64,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

impl Collector {
    pub fn new(sources: Sources) -> Collector {
        Collector {
            sources,
            started: Instant::now(),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// `VmRSS` / `VmSize` of `/proc/self/status`, in bytes.
fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .and_then(|kb| kb.checked_mul(1024))
    };
    Some((field("VmRSS:")?, field("VmSize:")?))
}

/// Open file descriptors: the entries of `/proc/self/fd`.
fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    // The directory handle being read is one of them.
    u64::try_from(n.saturating_sub(1)).ok()
}

/// The soft limit on open files (`Max open files` of `/proc/self/limits`).
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if let Some((rss, virt)) = memory() {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                virt,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors (files, sockets, pipes)",
                n,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "The most file descriptors the process may open (soft limit)",
                n,
            )?;
        }
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            self.start_time,
        )?;
        gauge(
            &mut encoder,
            "wharf_uptime_seconds",
            "Seconds since the server started",
            self.started.elapsed().as_secs_f64(),
        )?;
        gauge(
            &mut encoder,
            "wharf_upload_sessions_open",
            "Upload sessions this process opened that have not ended (committed, cancelled or expired); counted while an upload limit is set (the default)",
            u64::try_from(self.sources.upload_slots.open()).unwrap_or(u64::MAX),
        )?;
        let Some(mirror) = &self.sources.mirror else {
            return Ok(());
        };
        {
            let c = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "wharf_mirror_upstream_bytes",
                "Body bytes received from each upstream of the pull-through cache (manifests and blobs)",
                None,
                c.metric_type(),
            )?;
            for (name, stats) in mirror.stats() {
                let labels = UpstreamLabels {
                    upstream: name.to_owned(),
                };
                let m = family.encode_family(&labels)?;
                ConstCounter::new(stats.bytes.load(Ordering::Relaxed)).encode(m)?;
            }
        }
        let c = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "wharf_mirror_upstream_errors",
            "Failed requests to each upstream, by kind: unavailable (unreachable, timed out, 429 or 5xx), denied (401, 403), bad (malformed answer, digest mismatch, unexpected status), broken (a blob transfer cut off)",
            None,
            c.metric_type(),
        )?;
        for (name, stats) in mirror.stats() {
            for (kind, n) in [
                ("unavailable", &stats.unavailable),
                ("denied", &stats.denied),
                ("bad", &stats.bad),
                ("broken", &stats.broken),
            ] {
                let labels = UpstreamErrorLabels {
                    upstream: name.to_owned(),
                    kind,
                };
                let m = family.encode_family(&labels)?;
                ConstCounter::new(n.load(Ordering::Relaxed)).encode(m)?;
            }
        }
        Ok(())
    }
}
