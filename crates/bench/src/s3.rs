//! The ceiling on S3 (issue 14): how fast a plain S3 client moves one big
//! object straight to and from the bucket the registries use, without a
//! registry in between. `object_store`'s multipart upload (`WriteMultipart`,
//! parts of `--part-size`, `--concurrency` in flight) and one streaming GET,
//! the same client library and generated content as the registry runs, so
//! that "Wharf's big-blob push as a share of the ceiling" compares like with
//! like. Prints one JSON line per scenario (`s3_put`, `s3_get`).

use crate::blobgen::Pattern;
use crate::parse_size;
use crate::procfs::{CpuSnap, round1, round3};
use anyhow::{Context as _, Result, bail};
use clap::Args;
use futures_util::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt as _, WriteMultipart};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct CeilingArgs {
    /// The S3 API, http://HOST:PORT (loopback only).
    #[arg(long, env = "WHARF_S3_ENDPOINT")]
    pub endpoint: String,
    #[arg(long, env = "WHARF_S3_REGION", default_value = "us-east-1")]
    pub region: String,
    #[arg(long, env = "WHARF_S3_BUCKET")]
    pub bucket: String,
    /// Objects are written under this prefix (and deleted at the end).
    #[arg(long, default_value = "wharf-bench-ceiling")]
    pub prefix: String,
    /// Size of the object (as the registries' big blob).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub size: u64,
    /// Multipart part size.
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub part_size: u64,
    /// Parts in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Upload and download this many times (new content each time: Garage
    /// deduplicates identical blocks); the best of each is reported.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Content seed of the first object (the next ones: +1, +2...); to be
    /// kept apart from the registries' (`run --content-seed`).
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
    /// Pids of the storage's processes, whose CPU is reported.
    #[arg(long, value_delimiter = ',')]
    pub storage_pids: Vec<u32>,
    /// Label for the results.
    #[arg(long, default_value = "s3-client")]
    pub name: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Only loopback endpoints: this is a benchmark of a local cluster.
fn check_loopback(endpoint: &str) -> Result<()> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .context("--endpoint must be http(s)://HOST:PORT")?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let host = match hostport.strip_prefix('[') {
        Some(h) => h.split(']').next().unwrap_or_default(),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    let ok = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("refusing to benchmark a non-loopback endpoint {endpoint}");
    }
    Ok(())
}

fn line(name: &str, scenario: &str, mut v: Value) {
    let mut out = serde_json::Map::new();
    out.insert("registry".into(), json!(name));
    out.insert("scenario".into(), json!(scenario));
    if let Some(m) = v.as_object_mut() {
        out.append(m);
    }
    println!("{}", Value::Object(out));
}

/// The client's and the storage's CPU over `secs` (the server fields of
/// `CpuSnap` do not apply: there is no server).
fn cpu_json(snap: &CpuSnap, storage: &[u32], secs: f64) -> Value {
    let mut v = snap.since(None, storage, secs);
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with("server_"));
    }
    v
}

pub async fn ceiling(a: CeilingArgs) -> Result<()> {
    check_loopback(&a.endpoint)?;
    if a.part_size < 5 << 20 {
        bail!("--part-size must be at least 5 MiB (S3's minimum part)");
    }
    // Credentials as Wharf takes them: WHARF_S3_*, else the AWS_* chain.
    // (The client options first: they replace the builder's, allow_http
    // included.)
    let mut b = AmazonS3Builder::from_env()
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout_disabled(),
        )
        .with_endpoint(&a.endpoint)
        .with_allow_http(a.endpoint.starts_with("http://"))
        .with_region(&a.region)
        .with_bucket_name(&a.bucket)
        .with_virtual_hosted_style_request(false);
    if let Ok(k) = std::env::var("WHARF_S3_ACCESS_KEY_ID") {
        b = b.with_access_key_id(k);
    }
    if let Ok(k) = std::env::var("WHARF_S3_SECRET_ACCESS_KEY") {
        b = b.with_secret_access_key(k);
    }
    let store = b.build().context("S3 client")?;
    let prefix = a.prefix.trim_matches('/');

    let mut puts = Vec::new();
    let mut gets = Vec::new();
    for rep in 0..a.repeat.max(1) as u64 {
        let seed = a.seed.wrapping_add(rep);
        let path = Path::parse(format!("{prefix}/big-{}-{seed}", a.size)).context("object path")?;
        let pat = Pattern::new(seed);
        let _ = std::process::Command::new("sync").status();
        let cpu = CpuSnap::now(None, &a.storage_pids);
        let t = Instant::now();
        let upload = store
            .put_multipart(&path)
            .await
            .context("S3 CreateMultipartUpload")?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, a.part_size as usize);
        for frame in pat.range(0, a.size) {
            w.wait_for_capacity(a.concurrency.max(1))
                .await
                .context("S3 UploadPart")?;
            w.put(frame);
        }
        w.finish().await.context("S3 CompleteMultipartUpload")?;
        let secs = t.elapsed().as_secs_f64();
        puts.push((secs, cpu_json(&cpu, &a.storage_pids, secs)));

        let _ = std::process::Command::new("sync").status();
        let cpu = CpuSnap::now(None, &a.storage_pids);
        let t = Instant::now();
        let mut stream = store.get(&path).await.context("S3 GET")?.into_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            n += chunk.context("S3 GET (reading)")?.len() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        if n != a.size {
            bail!("S3 GET: {n} bytes, wanted {}", a.size);
        }
        gets.push((secs, cpu_json(&cpu, &a.storage_pids, secs)));
        store.delete(&path).await.context("S3 DELETE")?;
    }

    let mb_s = |secs: f64| round1(a.size as f64 / 1e6 / secs);
    for (scenario, runs) in [("s3_put", &puts), ("s3_get", &gets)] {
        let best = runs
            .iter()
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .expect("one run");
        line(
            &a.name,
            scenario,
            json!({
                "bytes": a.size,
                "part_size": if scenario == "s3_put" { Some(a.part_size) } else { None },
                "concurrency": if scenario == "s3_put" { Some(a.concurrency) } else { None },
                "secs": round3(best.0),
                "mb_s": mb_s(best.0),
                "runs_mb_s": runs.iter().map(|r| mb_s(r.0)).collect::<Vec<_>>(),
                "cpu": best.1,
            }),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_only() {
        assert!(super::check_loopback("http://127.0.0.1:3900").is_ok());
        assert!(super::check_loopback("http://localhost:3900/").is_ok());
        assert!(super::check_loopback("http://[::1]:3900").is_ok());
        assert!(super::check_loopback("http://10.0.0.1:3900").is_err());
        assert!(super::check_loopback("https://s3.amazonaws.com").is_err());
    }
}
