//! `wharf gc`: one garbage collection run against a store (docs/gc.md).

use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use store::gc::{self, GcOptions, GcReport};
use store::{Registry, RegistryConfig};

#[derive(Args)]
pub struct GcArgs {
    /// The store: dir:PATH (a data directory no server is using; a running
    /// server collects its own with [gc] interval_secs) or
    /// s3:BUCKET[/PREFIX] (safe while replicas serve it).
    #[arg(long, value_name = "STORE", default_value = "dir:./wharf-data")]
    store: String,
    #[command(flatten)]
    s3: crate::stores::S3Args,
    /// Keep unreferenced links and content younger than this many seconds
    /// [default: the config's [gc] grace_secs, else 3600].
    #[arg(long, value_name = "SECS")]
    grace: Option<u64>,
    /// A server config file: its [[retention]] rules are applied, its
    /// [[immutable_tags]] never removed, its [gc] grace_secs used.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Remove upload sessions idle for longer than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    upload_expiry: u64,
    /// Storage requests kept in flight (marks, looks, deletes)
    /// [default: the config's [gc] concurrency, else 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: Option<u16>,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: GcArgs) -> ExitCode {
    let Some(rt) = crate::runtime(None) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(gc_cmd(&args)) {
        Ok(report) => crate::finish_report("gc", args.json, &report, print_report, true),
        Err(e) => {
            eprintln!("wharf gc: {e}");
            ExitCode::from(2)
        }
    }
}

async fn gc_cmd(args: &GcArgs) -> anyhow::Result<GcReport> {
    let config = match &args.config {
        Some(path) => {
            let c = server::config::Config::from_file(path)?;
            c.validate()?;
            c
        }
        None => server::config::Config::default(),
    };
    let backend = crate::stores::open(&args.store, &args.s3).await?;
    let reg = Registry::new(
        backend,
        RegistryConfig {
            immutable_tags: config.immutable_tag_rules()?,
            ..RegistryConfig::default()
        },
    );
    let opts = GcOptions {
        grace: Duration::from_secs(args.grace.unwrap_or(config.gc.grace_secs)),
        upload_expiry: Duration::from_secs(args.upload_expiry),
        dry_run: args.dry_run,
        retention: config.retention_rules()?,
        concurrency: args.concurrency.map_or(config.gc.concurrency, usize::from),
        ..GcOptions::default()
    };
    gc::collect(&reg, &opts)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn print_report(r: &GcReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    if r.tags_deleted > 0 || r.manifests_deleted > 0 {
        outln!(
            "retention: {verb} {} tags and {} manifests",
            r.tags_deleted,
            r.manifests_deleted
        );
        for item in &r.removed_by_retention {
            outln!("  {item}");
        }
    }
    outln!(
        "{verb} {} blob links and {} blobs ({} bytes) in {} repositories ({} manifests); {} kept after a second look; {} upload sessions expired",
        r.links_deleted,
        r.blobs_deleted,
        r.bytes_reclaimed,
        r.repositories,
        r.manifests,
        r.kept_after_recheck,
        r.uploads_expired
    );
    if r.referrers_deleted > 0 || r.repositories_deleted > 0 {
        outln!(
            "{verb} {} referrer entries of missing manifests and the catalog entries of {} empty repositories",
            r.referrers_deleted,
            r.repositories_deleted
        );
    }
    for item in &r.deleted {
        outln!("  {item}");
    }
}
