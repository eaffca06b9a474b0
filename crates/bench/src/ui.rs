//! `wharf-bench ui`: how fast the web UI's pages are on a big repository
//! (issue 17): one repository of `--tags` tags (100,000 by default) and a
//! catalog of `--repos` repositories, written straight through the store
//! crate (no fsync; seeding over HTTP would take longer than the
//! measurement), then `wharf serve` on that data directory and, for each
//! page, `--samples` GETs one after another: time to the response head
//! (first byte) and to the end of the body, p50 and max. One JSON line per
//! page on stdout.

use crate::blobgen::sha256_hex;
use crate::http::{Body, Client};
use crate::procfs::round3;
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use http::Method;
use http_body_util::BodyExt as _;
use oci::{Digest, Reference, RepoName, Tag};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Registry, RegistryConfig};

const REPO: &str = "bench/ui";
/// A second repository, of as many tags as the UI sorts by push time.
const SMALL_REPO: &str = "bench/ui-5k";
const PUSH_SORT_TAGS: usize = 5_000;

#[derive(Args, Clone)]
pub struct UiArgs {
    /// The `wharf` binary.
    #[arg(long)]
    pub wharf: PathBuf,
    /// Work directory (the data directory goes in it).
    #[arg(long)]
    pub work: PathBuf,
    /// Tags in the big repository.
    #[arg(long, default_value_t = 100_000)]
    pub tags: usize,
    /// Repositories in the catalog (besides the big one).
    #[arg(long, default_value_t = 10_000)]
    pub repos: usize,
    /// GETs per page.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Writes in flight while seeding.
    #[arg(long, default_value_t = 64)]
    pub seed_conns: usize,
}

fn tag_name(i: usize) -> String {
    format!("t-{i:06}")
}

/// The store: one image whose manifest `--tags` tags name, and `--repos`
/// small repositories (a blob each).
async fn seed(a: &UiArgs) -> Result<serde_json::Value> {
    let start = Instant::now();
    let data = a.work.join("data");
    std::fs::create_dir_all(&data)?;
    let backend: Arc<dyn store::Backend> = Arc::new(store::fs::FsBackend::open(&data, false)?);
    let reg = Arc::new(Registry::new(backend.clone(), RegistryConfig::default()));
    let name = RepoName::parse(REPO, 255)?;
    let small = RepoName::parse(SMALL_REPO, 255)?;
    let config = Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/app"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let layer = Bytes::from(vec![7u8; 4096]);
    let mut descs = Vec::new();
    for (b, mt) in [
        (config, "application/vnd.oci.image.config.v1+json"),
        (layer, "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let d: Digest = sha256_hex(&b).parse()?;
        let len = b.len();
        for repo in [&name, &small] {
            let b = b.clone();
            let body: store::ByteStream =
                Box::pin(futures_util::stream::once(async move { Ok(b) }));
            reg.upload_whole(repo, body, &d).await?;
        }
        descs.push(json!({"mediaType": mt, "digest": d.to_string(), "size": len}));
    }
    let manifest_body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descs[0],
        "layers": [descs[1]],
    }))?;
    let put = reg
        .manifest_put(
            &name,
            &Reference::Tag(Tag::parse(&tag_name(0))?),
            Some("application/vnd.oci.image.manifest.v1+json"),
            Bytes::from(manifest_body.clone()),
            &[],
        )
        .await?;
    let digest = put.digest.to_string();
    // The tags: one object each, as a push writes them.
    let results: Vec<Result<()>> = futures_util::stream::iter(1..a.tags)
        .map(|i| {
            let backend = backend.clone();
            let value = Bytes::from(digest.clone());
            let name = name.clone();
            async move {
                let tag = Tag::parse(&tag_name(i))?;
                backend
                    .put(&store::keys::tag(&name, &tag), value)
                    .await
                    .with_context(|| format!("tag {i}"))?;
                Ok(())
            }
        })
        .buffer_unordered(a.seed_conns.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    // A repository at the limit of sorting by push time.
    let results: Vec<Result<()>> = futures_util::stream::iter(0..PUSH_SORT_TAGS)
        .map(|i| {
            let reg = reg.clone();
            let small = small.clone();
            let body = Bytes::from(manifest_body.clone());
            async move {
                reg.manifest_put(
                    &small,
                    &Reference::Tag(Tag::parse(&tag_name(i))?),
                    Some("application/vnd.oci.image.manifest.v1+json"),
                    body,
                    &[],
                )
                .await
                .with_context(|| format!("tag {i} of {SMALL_REPO}"))?;
                Ok(())
            }
        })
        .buffer_unordered(a.seed_conns.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    let results: Vec<Result<()>> = futures_util::stream::iter(0..a.repos)
        .map(|i| {
            let reg = reg.clone();
            async move {
                let name = RepoName::parse(&format!("team{:02}/app-{i:05}", i % 50), 255)?;
                let b = Bytes::from(format!("repository {i}"));
                let d: Digest = sha256_hex(&b).parse()?;
                let body: store::ByteStream =
                    Box::pin(futures_util::stream::once(async move { Ok(b) }));
                reg.upload_whole(&name, body, &d).await?;
                Ok(())
            }
        })
        .buffer_unordered(a.seed_conns.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    drop(reg);
    drop(backend);
    let _ = Command::new("sync").status();
    Ok(json!({
        "step": "seed",
        "tags": a.tags,
        "repos": a.repos,
        "secs": round3(start.elapsed().as_secs_f64()),
    }))
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

/// `samples` GETs of `path`: first byte and complete, p50 and max.
async fn time_page(addr: SocketAddr, path: &str, samples: usize) -> Result<serde_json::Value> {
    let mut c = Client::new(addr);
    let mut first = Vec::new();
    let mut full = Vec::new();
    let mut bytes = 0;
    let mut cold = Duration::ZERO;
    // The first GET is reported apart (the filesystem backend reads a
    // directory into its listing index on its first listing).
    for i in 0..=samples {
        let start = Instant::now();
        let r = c.send(Method::GET, path, &[], Body::Empty).await?;
        let head = start.elapsed();
        let status = r.status();
        let body = r.into_body().collect().await?.to_bytes();
        let done = start.elapsed();
        if status != 200 {
            bail!("GET {path}: HTTP {status}");
        }
        if i == 0 {
            cold = done;
        } else {
            first.push(head);
            full.push(done);
            bytes = body.len();
        }
    }
    first.sort();
    full.sort();
    let p50 = |v: &[Duration]| v.get(v.len() / 2).copied().unwrap_or_default();
    let max = |v: &[Duration]| v.last().copied().unwrap_or_default();
    Ok(json!({
        "step": "page",
        "path": path,
        "samples": samples,
        "bytes": bytes,
        "first_get_ms": ms(cold),
        "first_byte_p50_ms": ms(p50(&first)),
        "first_byte_max_ms": ms(max(&first)),
        "complete_p50_ms": ms(p50(&full)),
        "complete_max_ms": ms(max(&full)),
    }))
}

pub async fn run(a: UiArgs) -> Result<()> {
    if a.tags == 0 {
        bail!("--tags must be at least 1");
    }
    println!("{}", seed(&a).await?);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log = std::fs::File::create(a.work.join("wharf.log"))?;
    let mut child = Command::new(&a.wharf)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(a.work.join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting wharf serve")?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut c = Client::new(addr);
            if let Ok(r) = c.call(Method::GET, "/v2/", &[], Body::Empty).await
                && r.status == 200
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("wharf serve did not answer within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mid = tag_name(a.tags / 2);
        let near_end = tag_name(a.tags.saturating_sub(10));
        let pages = [
            format!("/ui/r/{REPO}"),
            format!("/ui/r/{REPO}?last={mid}"),
            format!("/ui/r/{REPO}?last={near_end}"),
            format!("/ui/r/{REPO}?n=500"),
            format!("/ui/r/{REPO}?sort=pushed"),
            format!("/ui/r/{SMALL_REPO}"),
            format!("/ui/r/{SMALL_REPO}?sort=pushed"),
            format!("/ui/r/{REPO}/-/manifest/{mid}"),
            "/ui/".to_owned(),
            "/ui/?q=app-0999".to_owned(),
            "/ui/?q=team49/&match=prefix".to_owned(),
        ];
        for p in &pages {
            println!("{}", time_page(addr, p, a.samples).await?);
        }
        Ok(())
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result
}
