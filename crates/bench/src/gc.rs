//! `wharf-bench gc`: what garbage collection costs (issue 15). One store of
//! `--blobs` small blobs, most of them garbage (linked in repositories but
//! named by no manifest, as after deletes) and `--referenced-pct` of them in
//! tagged images, written straight through the store crate (not over HTTP:
//! seeding 100,000 blobs through the API would take longer than the
//! measurement). Then, as `--steps` says:
//!
//! - `dry_run`: `wharf gc --dry-run` (the walk, nothing deleted): wall
//!   time and peak RSS (VmHWM) of the process;
//! - `serve`: `wharf serve` on the store, manifest GETs (`--get-conns`
//!   connections) for `--baseline-secs` with no collection, then during a
//!   collection: on the filesystem the server's own background run (`[gc]
//!   interval_secs`, the data directory being locked by the server), on S3
//!   `wharf gc` against the bucket while the server serves. p50/p99 of
//!   both, the server's RSS, the collection's duration;
//! - `cli` (filesystem): the store seeded again, `wharf gc` alone: wall
//!   time, peak RSS, what it deleted;
//! - `reference` (filesystem): the same content in Distribution's layout,
//!   `docker-registry garbage-collect` (offline: the registry must not
//!   run): wall time, peak RSS, blobs left.
//!
//! One JSON line per step on stdout; `wharf-bench gc-report` makes the
//! table.

use crate::blobgen::{random_bytes, sha256_hex};
use crate::http::{Body, Client};
use crate::procfs::{mb, mem_kib, round1, round3};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use http::Method;
use oci::{Digest, Reference, RepoName, Tag};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use store::backend::{Backend, KeyPages};
use store::{Registry, RegistryConfig};

const ACCEPT: (&str, &str) = (
    "accept",
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
);
/// Blobs per image: a config and nine layers.
const PER_IMAGE: u64 = 10;
/// Mixed into every blob's seed, so that these blobs are no other
/// benchmark's.
const SEED: u64 = 0x6763_0000_0000_0000;
/// What a collector waits after announcing itself (store::gc's
/// COLLECTOR_START_DELAY); GETs "during" a run are timed after it.
const START_DELAY: Duration = Duration::from_secs(3);

#[derive(Args, Clone)]
pub struct GcArgs {
    /// The `wharf` binary.
    #[arg(long)]
    pub wharf: PathBuf,
    /// fs or s3.
    #[arg(long, default_value = "fs")]
    pub storage: String,
    /// Work directory: the data directory and the reference's store (fs),
    /// logs and reports.
    #[arg(long)]
    pub work: PathBuf,
    /// S3 endpoint, region, bucket and key prefix (credentials:
    /// WHARF_S3_ACCESS_KEY_ID / WHARF_S3_SECRET_ACCESS_KEY).
    #[arg(long, default_value = "")]
    pub s3_endpoint: String,
    #[arg(long, default_value = "")]
    pub s3_region: String,
    #[arg(long, default_value = "")]
    pub s3_bucket: String,
    #[arg(long, default_value = "gc")]
    pub s3_prefix: String,
    /// Blobs in the store.
    #[arg(long, default_value_t = 10_000)]
    pub blobs: u64,
    /// Per cent of them in tagged images; the rest is garbage.
    #[arg(long, default_value_t = 10)]
    pub referenced_pct: u64,
    /// Bytes per blob.
    #[arg(long, default_value_t = 1024)]
    pub blob_size: usize,
    /// Repositories holding the images, and as many holding garbage.
    #[arg(long, default_value_t = 10)]
    pub repos: u64,
    /// Writes in flight while seeding.
    #[arg(long, default_value_t = 32)]
    pub seed_conns: usize,
    /// Connections for manifest GETs.
    #[arg(long, default_value_t = 64)]
    pub get_conns: usize,
    /// Seconds of manifest GETs with no collection.
    #[arg(long, default_value_t = 10.0)]
    pub baseline_secs: f64,
    /// At most this many seconds of manifest GETs during the collection.
    #[arg(long, default_value_t = 20.0)]
    pub during_secs: f64,
    /// Port of `wharf serve`.
    #[arg(long, default_value_t = 5393)]
    pub port: u16,
    /// Debian's docker-registry, for the reference's offline GC (fs).
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    pub reference: PathBuf,
    /// Steps: dry_run, serve, cli, reference.
    #[arg(
        long,
        default_value = "dry_run,serve,cli,reference",
        value_delimiter = ','
    )]
    pub steps: Vec<String>,
    /// Give up on one collection after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

impl GcArgs {
    fn s3(&self) -> bool {
        self.storage == "s3"
    }

    fn want(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s == step)
    }

    fn data_dir(&self) -> PathBuf {
        self.work.join("data")
    }

    /// `--store` for `wharf gc`.
    fn store_spec(&self) -> String {
        if self.s3() {
            format!("s3:{}/{}", self.s3_bucket, self.s3_prefix)
        } else {
            format!("dir:{}", self.data_dir().display())
        }
    }

    /// Flags that put `wharf serve` or `wharf gc` on the bucket.
    fn s3_env(&self, cmd: &mut Command) {
        cmd.env("WHARF_S3_ENDPOINT", &self.s3_endpoint)
            .env("WHARF_S3_REGION", &self.s3_region);
    }

    fn emit(&self, step: &str, mut v: Value) {
        let m = v.as_object_mut().expect("an object");
        let mut out = serde_json::Map::new();
        out.insert("scenario".into(), json!(format!("gc_{step}")));
        out.insert("storage".into(), json!(self.storage));
        out.insert("blobs".into(), json!(self.blobs));
        out.append(m);
        println!("{}", Value::Object(out));
    }
}

// ------------------------------------------------------------ the store

/// Blob `i`: referenced or garbage, its repository and bytes.
struct Layout<'a>(&'a GcArgs);

impl Layout<'_> {
    fn referenced(&self, i: u64) -> bool {
        i % 100 < self.0.referenced_pct
    }

    /// Position of a referenced blob among the referenced ones.
    fn rank(&self, i: u64) -> u64 {
        (i / 100) * self.0.referenced_pct + i % 100
    }

    fn referenced_count(&self) -> u64 {
        (0..self.0.blobs).filter(|i| self.referenced(*i)).count() as u64
    }

    fn images(&self) -> u64 {
        self.referenced_count() / PER_IMAGE
    }

    fn keep_repo(&self, image: u64) -> String {
        format!("gcb/keep-{}", image % self.0.repos.max(1))
    }

    /// The repository blob `i` is linked in; `None`: referenced, but in no
    /// whole image (the remainder), left out.
    fn repo(&self, i: u64) -> Option<String> {
        if !self.referenced(i) {
            return Some(format!("gcb/junk-{}", i % self.0.repos.max(1)));
        }
        let image = self.rank(i) / PER_IMAGE;
        (image < self.images()).then(|| self.keep_repo(image))
    }

    fn bytes(&self, i: u64) -> Bytes {
        random_bytes(SEED ^ i, self.0.blob_size)
    }

    /// The blobs of image `j`, in order (config first).
    fn image_blobs(&self, j: u64) -> Vec<u64> {
        let first = j * PER_IMAGE;
        let mut out = Vec::with_capacity(PER_IMAGE as usize);
        let pct = self.0.referenced_pct.max(1);
        for rank in first..first + PER_IMAGE {
            out.push((rank / pct) * 100 + rank % pct);
        }
        out
    }

    fn manifest(&self, j: u64) -> Bytes {
        let blobs = self.image_blobs(j);
        let desc = |i: u64, media: &str| {
            json!({
                "mediaType": media,
                "digest": sha256_hex(&self.bytes(i)),
                "size": self.0.blob_size,
            })
        };
        let body = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc(blobs[0], "application/vnd.oci.image.config.v1+json"),
            "layers": blobs[1..].iter().map(|i| desc(*i, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
        });
        Bytes::from(body.to_string())
    }
}

async fn open_backend(a: &GcArgs) -> Result<Arc<dyn Backend>> {
    if a.s3() {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let config = store::s3::S3Config {
            endpoint: a.s3_endpoint.clone(),
            region: a.s3_region.clone(),
            bucket: a.s3_bucket.clone(),
            prefix: a.s3_prefix.clone(),
            access_key_id: env("WHARF_S3_ACCESS_KEY_ID"),
            secret_access_key: env("WHARF_S3_SECRET_ACCESS_KEY"),
            virtual_hosted: false,
            redirect: false,
            redirect_expiry: Duration::from_secs(1200),
            timeout: Duration::from_secs(30),
        };
        Ok(Arc::new(store::s3::S3Backend::connect(config).await?))
    } else {
        // No fsync while seeding: the store is the benchmark's input, not
        // something acknowledged to a client.
        Ok(Arc::new(store::fs::FsBackend::open(a.data_dir(), false)?))
    }
}

/// Write the store (again: what is there already is rewritten in place).
/// Markers a killed collector left are removed first, or they would
/// refuse these writes.
async fn seed(a: &GcArgs) -> Result<Value> {
    let start = Instant::now();
    let backend = open_backend(a).await?;
    let mut stale = Vec::new();
    let mut pages = KeyPages::new(backend.as_ref(), "_gc/", 1000);
    while let Some(page) = pages.next().await? {
        stale.extend(page);
    }
    for k in &stale {
        backend.delete(&format!("_gc/{k}")).await?;
    }
    let reg = Arc::new(Registry::new(backend, RegistryConfig::default()));
    let layout = Layout(a);
    let results: Vec<Result<()>> = futures_util::stream::iter(0..a.blobs)
        .map(|i| {
            let reg = reg.clone();
            let repo = layout.repo(i);
            let data = layout.bytes(i);
            async move {
                let Some(repo) = repo else { return Ok(()) };
                let name = RepoName::parse(&repo, 255)?;
                let d: Digest = sha256_hex(&data).parse()?;
                let body: store::ByteStream =
                    Box::pin(futures_util::stream::once(async move { Ok(data) }));
                reg.upload_whole(&name, body, &d)
                    .await
                    .with_context(|| format!("seeding blob {i}"))?;
                Ok(())
            }
        })
        .buffer_unordered(a.seed_conns.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    let images = layout.images();
    let results: Vec<Result<()>> = futures_util::stream::iter(0..images)
        .map(|j| {
            let reg = reg.clone();
            let repo = layout.keep_repo(j);
            let body = layout.manifest(j);
            async move {
                let name = RepoName::parse(&repo, 255)?;
                let tag = Reference::Tag(Tag::parse(&format!("t{j}"))?);
                reg.manifest_put(
                    &name,
                    &tag,
                    Some("application/vnd.oci.image.manifest.v1+json"),
                    body,
                    &[],
                )
                .await
                .with_context(|| format!("seeding image {j}"))?;
                Ok(())
            }
        })
        .buffer_unordered(a.seed_conns.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    drop(reg);
    // Seeding wrote without fsync: its writeback must not be charged to
    // what is measured next.
    let _ = Command::new("sync").status();
    let referenced = images * PER_IMAGE;
    Ok(json!({
        "secs": round1(start.elapsed().as_secs_f64()),
        "referenced_blobs": referenced,
        "images": images,
        "garbage_blobs": a.blobs - layout.referenced_count(),
        "stale_gc_keys_removed": stale.len(),
    }))
}

// ------------------------------------------------------------ processes

/// A finished process: wall time, the largest VmHWM seen (sampled every
/// 20 ms; VmHWM only grows, so a peak is missed only in the last 20 ms),
/// exit status, stdout.
struct Measured {
    secs: f64,
    hwm_kib: u64,
    ok: bool,
    stdout: String,
}

struct Running {
    child: std::process::Child,
    start: Instant,
    hwm_kib: u64,
    out: PathBuf,
}

impl Running {
    fn spawn(mut cmd: Command, out: PathBuf) -> Result<Running> {
        let f = std::fs::File::create(&out)?;
        let err = std::fs::File::create(out.with_extension("err"))?;
        let start = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Running {
            child,
            start,
            hwm_kib: 0,
            out,
        })
    }

    /// Sample; `Some` once it has exited.
    fn poll(&mut self) -> Result<Option<Measured>> {
        if let Some((_, hwm)) = mem_kib(self.child.id()) {
            self.hwm_kib = self.hwm_kib.max(hwm);
        }
        let Some(status) = self.child.try_wait()? else {
            return Ok(None);
        };
        Ok(Some(Measured {
            secs: self.start.elapsed().as_secs_f64(),
            hwm_kib: self.hwm_kib,
            ok: status.success(),
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
        }))
    }

    async fn wait(mut self, timeout: Duration) -> Result<Measured> {
        loop {
            if let Some(m) = self.poll()? {
                return Ok(m);
            }
            if self.start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("gave up after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn wharf_gc(a: &GcArgs, extra: &[&str]) -> Command {
    let mut cmd = Command::new(&a.wharf);
    cmd.args(["gc", "--store", &a.store_spec(), "--grace", "0", "--json"])
        .args(extra);
    if a.s3() {
        a.s3_env(&mut cmd);
    }
    cmd
}

/// The counts of a `wharf gc --json` report.
fn gc_counts(stdout: &str) -> Value {
    let r: Value = serde_json::from_str(stdout).unwrap_or(Value::Null);
    json!({
        "links_deleted": r["links_deleted"],
        "blobs_deleted": r["blobs_deleted"],
        "bytes_reclaimed": r["bytes_reclaimed"],
        "kept_after_recheck": r["kept_after_recheck"],
        "repositories": r["repositories"],
        "manifests": r["manifests"],
    })
}

async fn measure_gc(a: &GcArgs, name: &str, extra: &[&str]) -> Result<Value> {
    let run = Running::spawn(wharf_gc(a, extra), a.work.join(format!("{name}.json")))?;
    let m = run.wait(Duration::from_secs(a.timeout_secs)).await?;
    if !m.ok {
        bail!(
            "wharf gc {extra:?} failed: {}",
            std::fs::read_to_string(a.work.join(format!("{name}.err"))).unwrap_or_default()
        );
    }
    Ok(json!({
        "secs": round1(m.secs),
        "peak_rss_mb": mb(m.hwm_kib),
        "report": gc_counts(&m.stdout),
    }))
}

// ------------------------------------------------------------ GET load

#[derive(Default)]
struct Lat {
    us: Vec<u32>,
    errors: u64,
    secs: f64,
}

impl Lat {
    fn json(&mut self) -> Value {
        self.us.sort_unstable();
        let pct = |q: f64| -> f64 {
            if self.us.is_empty() {
                return 0.0;
            }
            let i = ((self.us.len() - 1) as f64 * q).round() as usize;
            round3(self.us[i] as f64 / 1000.0)
        };
        json!({
            "secs": round1(self.secs),
            "ops": self.us.len(),
            "errors": self.errors,
            "ops_s": round1(self.us.len() as f64 / self.secs.max(1e-9)),
            "p50_ms": pct(0.5),
            "p90_ms": pct(0.9),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
        })
    }
}

/// Manifest GETs on `conns` connections until `stop` is set or `max` has
/// passed.
async fn get_load(
    addr: SocketAddr,
    path: String,
    conns: usize,
    max: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Lat> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut c = Client::new(addr);
        c.connect().await?;
        let path = path.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Lat::default();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < max {
                let t = Instant::now();
                match c.call(Method::GET, &path, &[ACCEPT], Body::Empty).await {
                    Ok(r) if r.status.as_u16() == 200 => lat
                        .us
                        .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    _ => lat.errors += 1,
                }
            }
            lat
        }));
    }
    let mut all = Lat::default();
    for t in tasks {
        let l = t.await?;
        all.us.extend(l.us);
        all.errors += l.errors;
    }
    all.secs = start.elapsed().as_secs_f64();
    Ok(all)
}

/// Is a collector at work (a `_gc/active/` key)? Filesystem stores only.
fn fs_collector_active(data: &Path) -> bool {
    std::fs::read_dir(data.join("_gc/active"))
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with('~'))
        })
        .unwrap_or(false)
}

/// Manifest GETs without and during a collection, on a running server.
async fn serve_step(a: &GcArgs) -> Result<Value> {
    let addr: SocketAddr = format!("127.0.0.1:{}", a.port).parse()?;
    // On the filesystem the server collects itself, first after `interval`:
    // long enough for the baseline to be over.
    let interval = (a.baseline_secs + 10.0).ceil() as u64;
    let mut cmd = Command::new(&a.wharf);
    cmd.args(["serve", "--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(a.data_dir());
    if a.s3() {
        cmd.args(["--storage", "s3", "--s3-bucket", &a.s3_bucket])
            .args(["--s3-prefix", &a.s3_prefix]);
        a.s3_env(&mut cmd);
    } else {
        let config = a.work.join("serve-gc.toml");
        std::fs::write(
            &config,
            format!("[gc]\ninterval_secs = {interval}\ngrace_secs = 0\n"),
        )?;
        cmd.arg("--config").arg(&config);
    }
    let server_started = Instant::now();
    let mut server = Running::spawn(cmd, a.work.join("serve.log"))?;
    let pid = server.child.id();
    let path = format!("/v2/{}/manifests/t0", Layout(a).keep_repo(0));
    let result = async {
        wait_ready(addr, &path).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_idle = mem_kib(pid).map_or(0, |m| m.0);
        let stop = Arc::new(AtomicBool::new(false));
        let mut baseline = get_load(
            addr,
            path.clone(),
            a.get_conns,
            Duration::from_secs_f64(a.baseline_secs),
            stop.clone(),
        )
        .await?;
        let rss_after_baseline = mem_kib(pid).map_or(0, |m| m.0);

        // Start (or wait for) the collection.
        let mut gc_run = None;
        let gc_started = if a.s3() {
            gc_run = Some(Running::spawn(
                wharf_gc(a, &[]),
                a.work.join("gc-during-serve.json"),
            )?);
            Instant::now()
        } else {
            let deadline = server_started + Duration::from_secs(interval + 60);
            while !fs_collector_active(&a.data_dir()) {
                if Instant::now() > deadline {
                    bail!("the server's collection did not start");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Instant::now()
        };
        tokio::time::sleep(START_DELAY).await;
        // Load until the collection ends (or `during_secs`), watching the
        // server's RSS and the collector's.
        let during_stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(get_load(
            addr,
            path.clone(),
            a.get_conns,
            Duration::from_secs_f64(a.during_secs),
            during_stop.clone(),
        ));
        let mut rss_max = 0u64;
        let mut finished: Option<Measured> = None;
        let mut gc_secs = None;
        let timeout = Duration::from_secs(a.timeout_secs);
        loop {
            rss_max = rss_max.max(mem_kib(pid).map_or(0, |m| m.0));
            let over = match gc_run.as_mut() {
                Some(r) => {
                    if let Some(m) = r.poll()? {
                        finished = Some(m);
                        true
                    } else {
                        false
                    }
                }
                None => !fs_collector_active(&a.data_dir()),
            };
            if over {
                gc_secs = Some(gc_started.elapsed().as_secs_f64());
                during_stop.store(true, Ordering::Relaxed);
                break;
            }
            if load.is_finished() && gc_started.elapsed() > timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut during = load.await??;
        // No collection again (on the filesystem the next run starts one
        // interval after this one ended, later than this).
        let mut after = get_load(
            addr,
            path.clone(),
            a.get_conns,
            Duration::from_secs_f64(a.baseline_secs),
            Arc::new(AtomicBool::new(false)),
        )
        .await?;
        let mut v = json!({
            "baseline": baseline.json(),
            "during": during.json(),
            "after": after.json(),
            "collector": if a.s3() { "wharf gc against the bucket" } else { "the server's background run ([gc] interval_secs)" },
            "gc_secs": gc_secs.map(round1),
            "server_rss_idle_mb": mb(rss_idle),
            "server_rss_after_baseline_mb": mb(rss_after_baseline),
            "server_rss_max_during_gc_mb": mb(rss_max),
            // What the server keeps once the run is over (the filesystem
            // backend's listing index holds every directory it listed).
            "server_rss_after_gc_mb": mb(mem_kib(pid).map_or(0, |m| m.0)),
            "server_hwm_mb": mb(mem_kib(pid).map_or(0, |m| m.1)),
        });
        if let Some(m) = finished {
            v["gc_peak_rss_mb"] = json!(mb(m.hwm_kib));
            v["gc_ok"] = json!(m.ok);
            v["report"] = gc_counts(&m.stdout);
        }
        // During ÷ the better of the two runs without a collection.
        let without = [&v["baseline"]["p99_ms"], &v["after"]["p99_ms"]]
            .iter()
            .filter_map(|x| x.as_f64())
            .filter(|x| *x > 0.0)
            .fold(f64::INFINITY, f64::min);
        if let Some(d) = v["during"]["p99_ms"].as_f64()
            && without.is_finite()
        {
            v["p99_ratio"] = json!(round3(d / without));
        }
        Ok::<Value, anyhow::Error>(v)
    }
    .await;
    // SIGTERM, then SIGKILL.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.poll()?.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    result
}

async fn wait_ready(addr: SocketAddr, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = Client::new(addr);
        if let Ok(r) = c.call(Method::GET, path, &[ACCEPT], Body::Empty).await {
            if r.status.as_u16() == 200 {
                return Ok(());
            }
            bail!("GET {path} answered {}", r.status);
        }
        if Instant::now() > deadline {
            bail!("wharf serve did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------ reference

/// The hex part of the SHA-256 of `data`.
fn hex_of(data: &[u8]) -> String {
    sha256_hex(data).trim_start_matches("sha256:").to_owned()
}

/// The same content in Distribution 2.8's filesystem layout.
fn seed_reference(a: &GcArgs, root: &Path) -> Result<()> {
    let v2 = root.join("docker/registry/v2");
    let layout = Layout(a);
    let write = |p: PathBuf, data: &[u8]| -> Result<()> {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&p, data)?;
        Ok(())
    };
    let blob = |hex: &str, data: &[u8]| {
        write(
            v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
            data,
        )
    };
    let link = |repo: &str, rel: String, hex: &str| {
        write(
            v2.join(format!("repositories/{repo}/{rel}/link")),
            format!("sha256:{hex}").as_bytes(),
        )
    };
    for i in 0..a.blobs {
        let Some(repo) = layout.repo(i) else { continue };
        let data = layout.bytes(i);
        let hex = hex_of(&data);
        blob(&hex, &data)?;
        link(&repo, format!("_layers/sha256/{hex}"), &hex)?;
    }
    for j in 0..layout.images() {
        let repo = layout.keep_repo(j);
        let body = layout.manifest(j);
        let hex = hex_of(&body);
        blob(&hex, &body)?;
        link(&repo, format!("_manifests/revisions/sha256/{hex}"), &hex)?;
        link(&repo, format!("_manifests/tags/t{j}/current"), &hex)?;
        link(
            &repo,
            format!("_manifests/tags/t{j}/index/sha256/{hex}"),
            &hex,
        )?;
    }
    Ok(())
}

fn count_reference_blobs(root: &Path) -> u64 {
    let dir = root.join("docker/registry/v2/blobs/sha256");
    let Ok(prefixes) = std::fs::read_dir(dir) else {
        return 0;
    };
    prefixes
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path()).ok())
        .map(|d| d.flatten().count() as u64)
        .sum()
}

async fn reference_step(a: &GcArgs) -> Result<Value> {
    let root = a.work.join("reference");
    let start = Instant::now();
    seed_reference(a, &root)?;
    let seed_secs = start.elapsed().as_secs_f64();
    let before = count_reference_blobs(&root);
    let config = a.work.join("reference.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n",
            root.display(),
            a.port + 1
        ),
    )?;
    let mut cmd = Command::new(&a.reference);
    cmd.arg("garbage-collect").arg(&config);
    cmd.env_remove("AWS_CA_BUNDLE");
    let m = Running::spawn(cmd, a.work.join("reference-gc.log"))?
        .wait(Duration::from_secs(a.timeout_secs))
        .await?;
    if !m.ok {
        bail!(
            "docker-registry garbage-collect failed: {}",
            std::fs::read_to_string(a.work.join("reference-gc.err")).unwrap_or_default()
        );
    }
    Ok(json!({
        "seed_secs": round1(seed_secs),
        "secs": round1(m.secs),
        "peak_rss_mb": mb(m.hwm_kib),
        "blobs_before": before,
        "blobs_after": count_reference_blobs(&root),
    }))
}

// ------------------------------------------------------------ the run

pub async fn run(a: GcArgs) -> Result<()> {
    if !matches!(a.storage.as_str(), "fs" | "s3") {
        bail!("--storage is fs or s3");
    }
    std::fs::create_dir_all(&a.work)?;
    let step = |name: &str, r: Result<Value>| match r {
        Ok(v) => a.emit(name, v),
        Err(e) => a.emit(name, json!({ "failed": format!("{e:#}") })),
    };
    eprintln!("  gc {} blobs on {}: seeding", a.blobs, a.storage);
    step("seed", seed(&a).await);
    if a.want("dry_run") {
        eprintln!("  gc: wharf gc --dry-run");
        step(
            "dry_run",
            measure_gc(&a, "gc-dry-run", &["--dry-run"]).await,
        );
    }
    if a.want("serve") {
        eprintln!("  gc: manifest GETs without and during a collection");
        step("serve", serve_step(&a).await);
    }
    if a.want("cli") && !a.s3() {
        eprintln!("  gc: seeding again; wharf gc alone");
        step("reseed", seed(&a).await);
        step("cli", measure_gc(&a, "gc-cli", &[]).await);
    }
    if a.want("reference") && !a.s3() && a.reference.exists() {
        eprintln!("  gc: the reference's offline garbage-collect");
        step("reference", reference_step(&a).await);
    }
    Ok(())
}

// ------------------------------------------------------------ the table

#[derive(Args)]
pub struct GcReportArgs {
    /// JSON lines of `wharf-bench gc` runs (any sizes, both storages).
    pub files: Vec<PathBuf>,
}

pub fn report(a: GcReportArgs) -> Result<()> {
    let mut lines = Vec::new();
    for f in &a.files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        for l in text.lines().filter(|l| l.starts_with('{')) {
            lines.push(serde_json::from_str::<Value>(l)?);
        }
    }
    let find = |storage: &str, blobs: u64, scenario: &str| -> Option<&Value> {
        lines
            .iter()
            .rev()
            .find(|v| v["storage"] == storage && v["blobs"] == blobs && v["scenario"] == scenario)
    };
    let mut sizes: Vec<(String, u64)> = lines
        .iter()
        .filter_map(|v| Some((v["storage"].as_str()?.to_owned(), v["blobs"].as_u64()?)))
        .collect();
    sizes.sort();
    sizes.dedup();
    let f = |v: Option<&Value>, path: &[&str]| -> String {
        let mut cur = v;
        for p in path {
            cur = cur.and_then(|c| c.get(*p));
        }
        match cur {
            Some(Value::Null) | None => "—".into(),
            Some(Value::String(s)) => s.clone(),
            Some(x) => x.to_string(),
        }
    };
    println!(
        "| store | blobs | garbage | `wharf gc` s | peak RSS MB | dry run s / MB | server run s | GET p50 / p99 ms, before GC | during GC | after GC | p99 during ÷ without | reference GC s / MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (storage, blobs) in &sizes {
        let seed = find(storage, *blobs, "gc_seed");
        let dry = find(storage, *blobs, "gc_dry_run");
        let serve = find(storage, *blobs, "gc_serve");
        let cli = find(storage, *blobs, "gc_cli");
        let refr = find(storage, *blobs, "gc_reference");
        // On S3 the `wharf gc` run is the one during the GETs.
        let (cli_secs, cli_mb) = if storage == "s3" {
            (f(serve, &["gc_secs"]), f(serve, &["gc_peak_rss_mb"]))
        } else {
            (f(cli, &["secs"]), f(cli, &["peak_rss_mb"]))
        };
        let server_run = if storage == "s3" {
            "—".to_owned()
        } else {
            f(serve, &["gc_secs"])
        };
        println!(
            "| {storage} | {blobs} | {} | {cli_secs} | {cli_mb} | {} / {} | {server_run} | {} / {} | {} / {} | {} / {} | {} | {} / {} |",
            f(seed, &["garbage_blobs"]),
            f(dry, &["secs"]),
            f(dry, &["peak_rss_mb"]),
            f(serve, &["baseline", "p50_ms"]),
            f(serve, &["baseline", "p99_ms"]),
            f(serve, &["during", "p50_ms"]),
            f(serve, &["during", "p99_ms"]),
            f(serve, &["after", "p50_ms"]),
            f(serve, &["after", "p99_ms"]),
            f(serve, &["p99_ratio"]),
            f(refr, &["secs"]),
            f(refr, &["peak_rss_mb"]),
        );
    }
    for v in &lines {
        if let Some(e) = v.get("failed") {
            println!(
                "\n{} {} {}: FAILED: {e}",
                v["storage"], v["blobs"], v["scenario"]
            );
        }
    }
    Ok(())
}
