//! wharf-bench: drive one registry through the OCI distribution API and
//! print one JSON line per scenario (`run`), or turn two such result files
//! into the comparison table of issue 3 (`report`).

mod bench;
mod blobgen;
mod gc;
mod http;
mod mirror;
mod procfs;
mod report;
mod s3;
mod ui;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "wharf-bench",
    about = "Side-by-side registry benchmark (issue 3)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenarios against one registry; JSON lines on stdout.
    Run(Box<RunArgs>),
    /// Compare two result files; a Markdown table on stdout.
    Report(report::ReportArgs),
    /// The ceiling on S3: a plain S3 client's multipart PUT and GET of one
    /// big object, straight to the bucket; JSON lines on stdout.
    S3Ceiling(s3::CeilingArgs),
    /// Garbage collection (issue 15): a store of N small blobs, mostly
    /// garbage; `wharf gc` time and peak RSS, manifest GET latency without
    /// and during a collection, the reference's offline GC; JSON lines.
    Gc(Box<gc::GcArgs>),
    /// The table of `gc` results.
    GcReport(gc::GcReportArgs),
    /// The pull-through cache (issue 16): cold and warm pulls through a
    /// cache beside direct pulls from its upstream; JSON lines.
    Mirror(Box<mirror::MirrorArgs>),
    /// The table of a `mirror` run.
    MirrorReport(mirror::MirrorReportArgs),
    /// The web UI (issue 17): a repository of N tags and a catalog of M
    /// repositories; time to first byte and to the end of each page.
    Ui(Box<ui::UiArgs>),
}

/// Sizes accept K, M, G suffixes (powers of 1024): 1G, 16M, 4096.
pub(crate) fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let t = s.trim_end_matches("iB").trim_end_matches('B');
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        Some((i, 'T' | 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("bad size {s:?}"))?;
    if n < 0.0 {
        bail!("bad size {s:?}");
    }
    Ok((n * mul as f64) as u64)
}

fn parse_list(s: &str) -> Result<Vec<u64>> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().replace('_', "").parse::<u64>().map_err(Into::into))
        .collect()
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Registry base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub url: String,
    /// Label for the results ("wharf", "reference").
    #[arg(long, default_value = "registry")]
    pub name: String,
    /// The server's pid, for RSS and CPU sampling.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Pids of the storage's processes (e.g. the S3 cluster's nodes), whose
    /// CPU is reported with the server's (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub storage_pids: Vec<u32>,
    /// Scenarios to run (comma-separated): push_mono, push_chunked, pull,
    /// manifest_get, blob_head, small_push, manifest_push, tags, catalog,
    /// huge; or all.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Size of the big blob (push and pull).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub big_size: u64,
    /// Chunk size for the chunked push.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Size of the blob pushed and pulled while RSS is watched (0: skip).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub huge_size: u64,
    /// Seconds for each fixed-duration load scenario.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Connections for manifest GET and blob HEAD.
    #[arg(long, default_value_t = 64)]
    pub get_conns: usize,
    /// Connections for 4 KiB blob pushes.
    #[arg(long, default_value_t = 32)]
    pub small_conns: usize,
    /// Connections for manifest + tag pushes.
    #[arg(long, default_value_t = 16)]
    pub manifest_conns: usize,
    /// 4 KiB push mode: auto (single POST if supported), single, post-put.
    #[arg(long, default_value = "auto")]
    pub small_mode: String,
    /// When single POST is used, also measure POST+PUT.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub small_both: bool,
    /// Tag counts at which tag-list pages are timed.
    #[arg(long, default_value = "1000,10000,100000", value_parser = parse_list)]
    pub tag_sizes: std::vec::Vec<u64>,
    /// Repository counts at which catalog pages are timed.
    #[arg(long, default_value = "1000,10000", value_parser = parse_list)]
    pub repo_sizes: std::vec::Vec<u64>,
    /// Connections used to seed tags and repositories.
    #[arg(long, default_value_t = 64)]
    pub seed_conns: usize,
    /// At most this many seconds seeding tags (all sizes together); when
    /// spent, pages are timed at the count reached and larger sizes skipped.
    #[arg(long, default_value_t = 75.0)]
    pub tag_seed_secs: f64,
    /// The same for seeding repositories.
    #[arg(long, default_value_t = 50.0)]
    pub repo_seed_secs: f64,
    /// Requests per page measurement (after one warm-up).
    #[arg(long, default_value_t = 100)]
    pub page_samples: usize,
    /// ... but no more than this many seconds per page measurement.
    #[arg(long, default_value_t = 2.0)]
    pub page_max_secs: f64,
    /// Compare pulled bytes with the generator (costs client CPU).
    #[arg(long)]
    pub verify_pull: bool,
    /// Where blob digests are cached.
    #[arg(long, default_value = "target/bench-cache")]
    pub cache_dir: PathBuf,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Mixed into every content seed (blobs, manifests), so that registries
    /// sharing one store push different bytes: S3 stores such as Garage
    /// deduplicate identical blocks, which would make the second registry's
    /// pushes cheaper. 0: the default content.
    #[arg(long, default_value_t = 0)]
    pub content_seed: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Report(a) => report::run(a),
        Cmd::S3Ceiling(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.threads.max(1))
                .enable_all()
                .build()?;
            rt.block_on(s3::ceiling(a))
        }
        Cmd::GcReport(a) => gc::report(a),
        Cmd::MirrorReport(a) => mirror::report(a),
        Cmd::Mirror(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(mirror::run(*a))
        }
        Cmd::Gc(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(gc::run(*a))
        }
        Cmd::Ui(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(ui::run(*a))
        }
        Cmd::Run(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.threads.max(1))
                .enable_all()
                .build()?;
            rt.block_on(bench::Bench::new(*a)?.run())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(super::parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(super::parse_size("4096").unwrap(), 4096);
        assert_eq!(super::parse_list("1_000,10000").unwrap(), vec![1000, 10000]);
    }
}
