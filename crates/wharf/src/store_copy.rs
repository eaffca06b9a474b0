//! `wharf store-copy`: copy a whole store between a data directory and an
//! S3 bucket (either way, or bucket to bucket), verifying every blob.

use clap::Args;
use std::process::ExitCode;
use store::copy::{self, CopyReport};
use store::{Registry, RegistryConfig};

#[derive(Args)]
pub struct StoreCopyArgs {
    /// The store to copy: `dir:PATH` (a data directory) or
    /// `s3:BUCKET[/PREFIX]`.
    #[arg(long, value_name = "STORE")]
    from: String,
    /// Where to copy it, in the same form. Content already there is kept.
    #[arg(long, value_name = "STORE")]
    to: String,
    #[command(flatten)]
    s3: crate::stores::S3Args,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(args: StoreCopyArgs) -> ExitCode {
    let Some(rt) = crate::runtime(None) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(copy_cmd(&args)) {
        Ok(report) => {
            let ok = report.ok();
            crate::finish_report("store-copy", args.json, &report, print_report, ok)
        }
        Err(e) => {
            eprintln!("wharf store-copy: {e}");
            ExitCode::from(2)
        }
    }
}

async fn copy_cmd(args: &StoreCopyArgs) -> anyhow::Result<CopyReport> {
    let src = crate::stores::open(&args.from, &args.s3).await?;
    let dst = crate::stores::open(&args.to, &args.s3).await?;
    let dst = Registry::new(dst, RegistryConfig::default());
    Ok(copy::copy_store(src.as_ref(), &dst, !args.quiet).await?)
}

fn print_report(report: &CopyReport) {
    outln!(
        "copied {} blobs ({} bytes, verified), {} already there, {} links, tags and catalog entries",
        report.blobs,
        report.blob_bytes,
        report.blobs_present,
        report.metadata
    );
    for e in &report.errors {
        outln!("not copied: {e}");
    }
}
