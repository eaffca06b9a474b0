//! `wharf fsck`: check a store (docs/gc.md).

use clap::Args;
use std::process::ExitCode;
use store::gc::fsck::{self, FsckOptions, FsckReport};
use store::{Registry, RegistryConfig};

#[derive(Args)]
pub struct FsckArgs {
    /// The store: dir:PATH (a data directory no server is using) or
    /// s3:BUCKET[/PREFIX] (fine while replicas serve it).
    #[arg(long, value_name = "STORE", default_value = "dir:./wharf-data")]
    store: String,
    #[command(flatten)]
    s3: crate::stores::S3Args,
    /// Hash one blob in N instead of every blob.
    #[arg(long, value_name = "N", default_value_t = 1)]
    sample: u64,
    /// Remove links whose content is missing, content whose bytes do not
    /// match its digest (both lost already), referrer entries whose
    /// referrer is gone and orphaned upload sessions; report the rest.
    #[arg(long)]
    repair: bool,
    /// Upload sessions idle for longer than this many seconds are orphaned.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    upload_expiry: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: FsckArgs) -> ExitCode {
    let Some(rt) = crate::runtime(None) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(fsck_cmd(&args)) {
        Ok(report) => {
            let ok = report.clean() || (args.repair && only_repaired(&report));
            crate::finish_report("fsck", args.json, &report, print_report, ok)
        }
        Err(e) => {
            eprintln!("wharf fsck: {e}");
            ExitCode::from(2)
        }
    }
}

/// With --repair, is everything found something that was repaired?
fn only_repaired(r: &FsckReport) -> bool {
    r.broken_tags.is_empty()
        && r.incomplete_manifests.is_empty()
        && r.unreadable_manifests.is_empty()
}

async fn fsck_cmd(args: &FsckArgs) -> anyhow::Result<FsckReport> {
    let backend = crate::stores::open(&args.store, &args.s3).await?;
    let reg = Registry::new(backend, RegistryConfig::default());
    let opts = FsckOptions {
        sample: args.sample,
        repair: args.repair,
        upload_expiry: std::time::Duration::from_secs(args.upload_expiry),
    };
    Ok(fsck::check(&reg, &opts).await?)
}

fn print_report(r: &FsckReport) {
    outln!(
        "checked {} repositories, {} manifests, {} blobs hashed ({} bytes)",
        r.repositories,
        r.manifests,
        r.blobs_hashed,
        r.bytes_hashed
    );
    let groups = [
        ("corrupt blob", &r.corrupt_blobs),
        ("link to missing content", &r.dangling_links),
        ("tag naming a missing manifest", &r.broken_tags),
        ("manifest missing a blob", &r.incomplete_manifests),
        ("unreadable manifest", &r.unreadable_manifests),
        (
            "referrer entry of a missing manifest",
            &r.dangling_referrers,
        ),
        ("orphaned upload session", &r.stale_uploads),
    ];
    for (what, items) in groups {
        for item in items {
            outln!("{what}: {item}");
        }
    }
    if r.repaired > 0 {
        outln!("repaired (removed): {}", r.repaired);
    }
    if r.clean() {
        outln!("no problems found");
    }
}
