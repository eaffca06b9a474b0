//! `wharf store-copy`: copy a whole store between a data directory and an
//! S3 bucket (either way, or bucket to bucket), verifying every blob.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use store::backend::Backend;
use store::copy::{self, CopyReport};
use store::fs::FsBackend;
use store::s3::{S3Backend, S3Config};
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
    /// S3 API endpoint for s3: stores, http(s)://host:port (empty: AWS).
    /// Credentials: WHARF_S3_ACCESS_KEY_ID / WHARF_S3_SECRET_ACCESS_KEY,
    /// else the AWS_* environment.
    #[arg(long, env = "WHARF_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region for s3: stores.
    #[arg(long, env = "WHARF_S3_REGION", value_name = "REGION")]
    s3_region: Option<String>,
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
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => outln!("{s}"),
                    Err(e) => {
                        eprintln!("wharf store-copy: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
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
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("wharf store-copy: {e}");
            ExitCode::from(2)
        }
    }
}

async fn copy_cmd(args: &StoreCopyArgs) -> anyhow::Result<CopyReport> {
    let src = open(&args.from, args).await?;
    let dst = open(&args.to, args).await?;
    let dst = Registry::new(dst, RegistryConfig::default());
    Ok(copy::copy_store(src.as_ref(), &dst, !args.quiet).await?)
}

/// Open `dir:PATH` or `s3:BUCKET[/PREFIX]`.
async fn open(spec: &str, args: &StoreCopyArgs) -> anyhow::Result<Arc<dyn Backend>> {
    if let Some(path) = spec.strip_prefix("dir:") {
        let path = PathBuf::from(path);
        let fs = FsBackend::open(&path, true)
            .map_err(|e| anyhow::anyhow!("cannot open data directory {}: {e}", path.display()))?;
        return Ok(Arc::new(fs));
    }
    if let Some(rest) = spec.strip_prefix("s3:") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let config = S3Config {
            endpoint: args.s3_endpoint.clone().unwrap_or_default(),
            region: args.s3_region.clone().unwrap_or_default(),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            access_key_id: env("WHARF_S3_ACCESS_KEY_ID"),
            secret_access_key: env("WHARF_S3_SECRET_ACCESS_KEY"),
            timeout: Duration::from_secs(30),
            ..S3Config::default()
        };
        let s3 = S3Backend::connect(config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot use {spec}: {e}"))?;
        return Ok(Arc::new(s3));
    }
    anyhow::bail!("{spec:?}: a store is dir:PATH or s3:BUCKET[/PREFIX]")
}
