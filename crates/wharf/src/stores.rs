//! `dir:PATH` and `s3:BUCKET[/PREFIX]`: a whole store named on the command
//! line (`wharf store-copy`, `wharf gc`).

use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use store::backend::Backend;
use store::fs::{FsBackend, open_failure};
use store::s3::S3Backend;

/// Where s3: stores are.
#[derive(Args)]
pub struct S3Args {
    /// S3 API endpoint for s3: stores, http(s)://host:port (empty: AWS).
    /// Credentials: WHARF_S3_ACCESS_KEY_ID / WHARF_S3_SECRET_ACCESS_KEY,
    /// else the AWS_* environment.
    #[arg(long, env = "WHARF_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region for s3: stores.
    #[arg(long, env = "WHARF_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
}

/// Open `dir:PATH` or `s3:BUCKET[/PREFIX]`.
pub async fn open(spec: &str, args: &S3Args) -> anyhow::Result<Arc<dyn Backend>> {
    if let Some(path) = spec.strip_prefix("dir:") {
        let path = PathBuf::from(path);
        let fs = FsBackend::open(&path, true)
            .map_err(|e| anyhow::anyhow!("{}", open_failure(&path, &e)))?;
        // Locked: a collector's markers in it are a dead process's.
        store::gc::forget_dead_runs(&fs).await?;
        return Ok(Arc::new(fs));
    }
    if let Some(rest) = spec.strip_prefix("s3:") {
        // The server's own reading of [storage.s3] and WHARF_S3_* keys.
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut config = server::Config::default();
        let s3 = &mut config.storage.s3;
        s3.endpoint = args.s3_endpoint.clone().unwrap_or_default();
        s3.region = args.s3_region.clone().unwrap_or_default();
        s3.bucket = bucket.to_owned();
        s3.prefix = prefix.to_owned();
        // A whole-store walk may wait on a busy store longer than a request.
        s3.timeout_secs = 30;
        let s3 = S3Backend::connect(server::s3_config(&config))
            .await
            .map_err(|e| anyhow::anyhow!("cannot use {spec}: {e}"))?;
        return Ok(Arc::new(s3));
    }
    anyhow::bail!("{spec:?}: a store is dir:PATH or s3:BUCKET[/PREFIX]")
}
