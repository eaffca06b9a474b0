//! The scenarios, run in order against one registry. Each prints one JSON
//! line (`{"registry", "scenario", ...}`) on stdout as soon as it is done.

use crate::RunArgs;
use crate::blobgen::{self, Pattern, random_bytes, sha256_hex};
use crate::http::{Body, Client, add_query};
use crate::procfs::{CpuSnap, Sampler, mb, round1, round3};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OCT: (&str, &str) = ("content-type", "application/octet-stream");
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT: (&str, &str) = (
    "accept",
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json",
);
/// The repository that holds the shared small blobs and the GET manifest.
const BASE: &str = "bench/small";
const SMALL: usize = 4096;
const HEAD_BLOBS: u64 = 16;

fn manifest(config: &str, config_size: usize, layer: &str, layer_size: usize, note: &str) -> Bytes {
    let ann = if note.is_empty() {
        String::new()
    } else {
        format!(r#","annotations":{{"bench.n":"{note}"}}"#)
    };
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_size}}}]{ann}}}"#
    ))
}

// ---------------------------------------------------------------- API calls

pub(crate) async fn push_bytes(
    c: &mut Client,
    repo: &str,
    data: Bytes,
    digest: &str,
    single: bool,
) -> Result<()> {
    if single {
        let p = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        c.call(Method::POST, &p, &[OCT], Body::full(data))
            .await?
            .expect(201, "single POST")?;
        return Ok(());
    }
    let r = c
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Body::Empty,
        )
        .await?
        .expect(202, "POST upload")?;
    let loc = add_query(&r.location()?, &format!("digest={digest}"));
    c.call(Method::PUT, &loc, &[OCT], Body::full(data))
        .await?
        .expect(201, "PUT blob")?;
    Ok(())
}

pub(crate) async fn push_mono(
    c: &mut Client,
    repo: &str,
    pat: &Pattern,
    size: u64,
    digest: &str,
) -> Result<()> {
    let r = c
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Body::Empty,
        )
        .await?
        .expect(202, "POST upload")?;
    let loc = add_query(&r.location()?, &format!("digest={digest}"));
    c.call(Method::PUT, &loc, &[OCT], Body::Gen(pat.range(0, size)))
        .await?
        .expect(201, "PUT blob")?;
    Ok(())
}

async fn push_chunked(
    c: &mut Client,
    repo: &str,
    pat: &Pattern,
    size: u64,
    chunk: u64,
    digest: &str,
) -> Result<()> {
    let r = c
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Body::Empty,
        )
        .await?
        .expect(202, "POST upload")?;
    let mut loc = r.location()?;
    let mut start = 0;
    while start < size {
        let end = (start + chunk).min(size);
        let range = format!("{}-{}", start, end - 1);
        let r = c
            .call(
                Method::PATCH,
                &loc,
                &[OCT, ("content-range", &range)],
                Body::Gen(pat.range(start, end)),
            )
            .await?
            .expect(202, "PATCH chunk")?;
        loc = r.location()?;
        start = end;
    }
    c.call(
        Method::PUT,
        &add_query(&loc, &format!("digest={digest}")),
        &[],
        Body::Empty,
    )
    .await?
    .expect(201, "PUT close")?;
    Ok(())
}

/// Mount `digest` from `from` into `repo`; if the registry will not,
/// upload `data` instead.
async fn mount(c: &mut Client, repo: &str, from: &str, digest: &str, data: &Bytes) -> Result<()> {
    let p = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
    let r = c.call(Method::POST, &p, &[], Body::Empty).await?;
    match r.status.as_u16() {
        201 => Ok(()),
        202 => {
            let loc = add_query(&r.location()?, &format!("digest={digest}"));
            c.call(Method::PUT, &loc, &[OCT], Body::full(data.clone()))
                .await?
                .expect(201, "PUT after refused mount")?;
            Ok(())
        }
        _ => r.expect(201, "mount").map(|_| ()),
    }
}

async fn put_manifest(c: &mut Client, repo: &str, reference: &str, body: Bytes) -> Result<()> {
    c.call(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("content-type", MANIFEST_TYPE)],
        Body::full(body),
    )
    .await?
    .expect(201, "PUT manifest")?;
    Ok(())
}

// ------------------------------------------------------------------- load

enum Op {
    Get {
        path: String,
    },
    Head {
        paths: Vec<String>,
    },
    SmallPush {
        repo: String,
        single: bool,
        seed: u64,
    },
    ManifestPush {
        repo: String,
        empty: String,
        layer: String,
        /// Prefix of each manifest's annotation (the content seed).
        note: String,
    },
    TagPut {
        repo: String,
        body: Bytes,
    },
    RepoCreate {
        from: String,
        empty: String,
        body: Bytes,
    },
}

async fn op_once(op: &Op, c: &mut Client, w: u64, n: u64) -> Result<()> {
    match op {
        Op::Get { path } => {
            let r = c.call(Method::GET, path, &[ACCEPT], Body::Empty).await?;
            r.expect(200, "GET manifest")?;
        }
        Op::Head { paths } => {
            let p = &paths[((w + n) % paths.len() as u64) as usize];
            let r = c.call(Method::HEAD, p, &[], Body::Empty).await?;
            r.expect(200, "HEAD blob")?;
        }
        Op::SmallPush { repo, single, seed } => {
            let data = random_bytes(seed.wrapping_add(w << 40).wrapping_add(n), SMALL);
            let d = sha256_hex(&data);
            push_bytes(c, repo, data, &d, *single).await?;
        }
        Op::ManifestPush {
            repo,
            empty,
            layer,
            note,
        } => {
            let body = manifest(empty, 2, layer, SMALL, &format!("{note}{w}-{n}"));
            put_manifest(c, repo, &format!("m{w}-{n}"), body).await?;
        }
        Op::TagPut { repo, body } => {
            put_manifest(c, repo, &format!("t{n:06}"), body.clone()).await?;
        }
        Op::RepoCreate { from, empty, body } => {
            let repo = format!("cat/r{n:06}");
            mount(c, &repo, from, empty, &Bytes::from_static(b"{}")).await?;
            put_manifest(c, &repo, "latest", body.clone()).await?;
        }
    }
    Ok(())
}

enum Until {
    Elapsed(Duration),
    /// Items `from..to` (the item number is `n`), stopping at the deadline.
    Items {
        from: u64,
        to: u64,
        deadline: Instant,
    },
}

struct LoadStats {
    ops: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u32>,
    first_error: Option<String>,
    cpu: Value,
}

impl LoadStats {
    fn pct(&self, q: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() - 1) as f64 * q).round() as usize;
        round3(self.lat_us[i] as f64 / 1000.0)
    }
    fn json(&self, conns: usize) -> Value {
        json!({
            "conns": conns,
            "secs": round3(self.secs),
            "ops": self.ops,
            "errors": self.errors,
            "ops_s": round1(self.ops as f64 / self.secs),
            "p50_ms": self.pct(0.50),
            "p90_ms": self.pct(0.90),
            "p99_ms": self.pct(0.99),
            "max_ms": self.pct(1.0),
            "first_error": self.first_error,
            "cpu": self.cpu,
        })
    }
}

// ------------------------------------------------------------------ bench

pub struct Bench {
    addr: SocketAddr,
    args: RunArgs,
    sampler: Option<Sampler>,
    empty: String,
    small: Vec<(String, Bytes)>,
    single_post: bool,
    started: Instant,
    tags_have: u64,
    repos_have: u64,
}

fn now_sync() {
    let _ = std::process::Command::new("sync").status();
}

impl Bench {
    pub fn new(args: RunArgs) -> Result<Bench> {
        let hostport = args
            .url
            .strip_prefix("http://")
            .context("--url must be http://HOST:PORT")?
            .trim_end_matches('/');
        let addr: SocketAddr = hostport
            .parse()
            .with_context(|| format!("--url host must be IP:PORT (got {hostport})"))?;
        if !addr.ip().is_loopback() {
            bail!("refusing to benchmark a non-loopback address {addr}");
        }
        Ok(Bench {
            addr,
            args,
            sampler: None,
            empty: sha256_hex(b"{}"),
            small: Vec::new(),
            single_post: false,
            started: Instant::now(),
            tags_have: 0,
            repos_have: 0,
        })
    }

    fn want(&self, s: &str) -> bool {
        self.args.scenarios.iter().any(|x| x == "all" || x == s)
    }

    fn emit(&self, scenario: &str, mut v: Value) {
        let m = v.as_object_mut().expect("object");
        if let Some(sm) = &self.sampler {
            m.insert("rss_max_mb".into(), json!(mb(sm.take_scenario_max_kib())));
        }
        m.insert("registry".into(), json!(self.args.name));
        m.insert("scenario".into(), json!(scenario));
        m.insert(
            "t".into(),
            json!(round1(self.started.elapsed().as_secs_f64())),
        );
        // Stable key order: registry, scenario first.
        let mut out = serde_json::Map::new();
        out.insert("registry".into(), m.remove("registry").unwrap());
        out.insert("scenario".into(), m.remove("scenario").unwrap());
        out.append(m);
        println!("{}", Value::Object(out));
        eprintln!(
            "  [{:>6.1}s] {scenario} done",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn client(&self) -> Client {
        Client::new(self.addr)
    }

    fn cpu(&self) -> CpuSnap {
        CpuSnap::now(self.args.pid, &self.args.storage_pids)
    }

    pub async fn run(mut self) -> Result<()> {
        self.wait_ready().await?;
        if let Some(pid) = self.args.pid {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (rss, _) =
                crate::procfs::mem_kib(pid).context("cannot read the server's /proc status")?;
            self.emit("idle_rss", json!({ "rss_mb": mb(rss), "pid": pid }));
            self.sampler = Some(Sampler::start(pid));
        }
        self.setup().await?;

        let scenarios: [(&str, Scenario); 9] = [
            ("push_mono", |b| Box::pin(b.big_push(false))),
            ("push_chunked", |b| Box::pin(b.big_push(true))),
            ("pull", |b| Box::pin(b.big_pull())),
            ("manifest_get", |b| Box::pin(b.manifest_get())),
            ("blob_head", |b| Box::pin(b.blob_head())),
            ("small_push", |b| Box::pin(b.small_push())),
            ("manifest_push", |b| Box::pin(b.manifest_push())),
            ("tags", |b| Box::pin(b.tags())),
            ("catalog", |b| Box::pin(b.catalog())),
        ];
        for (name, f) in scenarios {
            if self.want(name) {
                eprintln!(
                    "  [{:>6.1}s] {name} ...",
                    self.started.elapsed().as_secs_f64()
                );
                if let Err(e) = f(&mut self).await {
                    self.emit(name, json!({ "failed": format!("{e:#}") }));
                }
            }
        }
        if self.want("huge")
            && self.args.huge_size > 0
            && let Err(e) = self.huge().await
        {
            self.emit("huge", json!({ "failed": format!("{e:#}") }));
        }
        if let Some(s) = &self.sampler {
            let (max, hwm, samples, gone) = s.totals();
            self.emit(
                "peak_rss",
                json!({
                    "rss_max_sampled_mb": mb(max),
                    "hwm_mb": mb(hwm),
                    "rss_end_mb": mb(s.rss_now_kib()),
                    "samples": samples,
                    "server_gone": gone,
                    "total_secs": round1(self.started.elapsed().as_secs_f64()),
                }),
            );
        }
        Ok(())
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut c = self.client();
            match c.call(Method::GET, "/v2/", &[], Body::Empty).await {
                Ok(r) if r.status.as_u16() == 200 => return Ok(()),
                Ok(r) => bail!("GET /v2/ answered {}", r.status),
                Err(e) if Instant::now() > deadline => return Err(e.context("registry not ready")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Small blobs, the `{}` config, the manifest for GETs; and whether
    /// the registry takes a blob in a single POST.
    async fn setup(&mut self) -> Result<()> {
        let mut c = self.client();
        let e = Bytes::from_static(b"{}");
        push_bytes(&mut c, BASE, e, &self.empty.clone(), false).await?;
        for i in 0..HEAD_BLOBS {
            let data = random_bytes(self.salted(1000 + i), SMALL);
            let d = sha256_hex(&data);
            push_bytes(&mut c, BASE, data.clone(), &d, false).await?;
            self.small.push((d, data));
        }
        let m = manifest(&self.empty, 2, &self.small[0].0, SMALL, "");
        put_manifest(&mut c, BASE, "latest", m).await?;

        // Single-POST detection.
        let data = random_bytes(self.salted(999), SMALL);
        let d = sha256_hex(&data);
        let p = format!("/v2/{BASE}/blobs/uploads/?digest={d}");
        let r = c
            .call(Method::POST, &p, &[OCT], Body::full(data.clone()))
            .await?;
        self.single_post = match r.status.as_u16() {
            201 => true,
            202 => {
                let loc = add_query(&r.location()?, &format!("digest={d}"));
                c.call(Method::PUT, &loc, &[OCT], Body::full(data))
                    .await?
                    .expect(201, "PUT")?;
                false
            }
            s => bail!("single POST probe: HTTP {s}"),
        };
        let mode = match self.args.small_mode.as_str() {
            "single" => true,
            "post-put" => false,
            _ => self.single_post,
        };
        self.emit(
            "setup",
            json!({ "single_post_supported": self.single_post, "small_push_mode": if mode { "single-post" } else { "post-put" } }),
        );
        self.single_post = mode;
        Ok(())
    }

    /// A content seed, mixed with --content-seed.
    fn salted(&self, s: u64) -> u64 {
        blobgen::salted(s, self.args.content_seed)
    }

    fn pattern_digest(&self, seed: u64, size: u64) -> Result<(Pattern, String, f64)> {
        let pat = Pattern::new(self.salted(seed));
        let (d, secs) = blobgen::digest_of(&self.args.cache_dir, &pat, size)?;
        Ok((pat, d, secs))
    }

    async fn big_push(&mut self, chunked: bool) -> Result<()> {
        let size = self.args.big_size;
        let (pat, d, pre) = self.pattern_digest(if chunked { 2 } else { 1 }, size)?;
        let mut c = self.client();
        c.call(Method::GET, "/v2/", &[], Body::Empty).await?;
        now_sync();
        let cpu = self.cpu();
        let t = Instant::now();
        if chunked {
            push_chunked(&mut c, "bench/big", &pat, size, self.args.chunk_size, &d).await?;
        } else {
            push_mono(&mut c, "bench/big", &pat, size, &d).await?;
        }
        let secs = t.elapsed().as_secs_f64();
        let name = if chunked { "push_chunked" } else { "push_mono" };
        self.emit(
            name,
            json!({
                "bytes": size,
                "chunk": if chunked { Some(self.args.chunk_size) } else { None },
                "secs": round3(secs),
                "mb_s": round1(size as f64 / 1e6 / secs),
                "digest_precompute_s": round3(pre),
                "cpu": cpu.since(self.args.pid, &self.args.storage_pids, secs),
            }),
        );
        Ok(())
    }

    /// GET a blob, discarding (or, with --verify-pull, comparing) the bytes.
    async fn pull(&self, c: &mut Client, pat: &Pattern, d: &str, size: u64) -> Result<(f64, bool)> {
        let verify = self.args.verify_pull;
        let t = Instant::now();
        let (status, n) = c
            .call_stream(
                Method::GET,
                &format!("/v2/bench/big/blobs/{d}"),
                &[],
                |off, data| {
                    if verify && !pat.matches(off, data) {
                        bail!("content differs at offset {off}");
                    }
                    Ok(())
                },
            )
            .await?;
        let secs = t.elapsed().as_secs_f64();
        if status.as_u16() != 200 {
            bail!("GET blob: HTTP {status}");
        }
        if n != size {
            bail!("GET blob: {n} bytes, wanted {size}");
        }
        Ok((secs, verify))
    }

    async fn big_pull(&mut self) -> Result<()> {
        let size = self.args.big_size;
        let (pat, d, _) = self.pattern_digest(1, size)?;
        let mut c = self.client();
        let r = c
            .call(
                Method::HEAD,
                &format!("/v2/bench/big/blobs/{d}"),
                &[],
                Body::Empty,
            )
            .await?;
        if r.status.as_u16() != 200 {
            push_mono(&mut c, "bench/big", &pat, size, &d).await?;
        }
        now_sync();
        let cpu = self.cpu();
        let (secs, verified) = self.pull(&mut c, &pat, &d, size).await?;
        self.emit(
            "pull",
            json!({
                "bytes": size,
                "secs": round3(secs),
                "mb_s": round1(size as f64 / 1e6 / secs),
                "verified": if verified { "content" } else { "length only" },
                "cpu": cpu.since(self.args.pid, &self.args.storage_pids, secs),
            }),
        );
        Ok(())
    }

    async fn run_workers(&self, op: Arc<Op>, conns: usize, until: Until) -> Result<LoadStats> {
        let mut clients = Vec::with_capacity(conns);
        for _ in 0..conns {
            let mut c = self.client();
            c.connect().await?;
            clients.push(c);
        }
        let cpu = self.cpu();
        let start = Instant::now();
        let next = Arc::new(AtomicU64::new(match until {
            Until::Items { from, .. } => from,
            Until::Elapsed(_) => 0,
        }));
        let mut handles = Vec::with_capacity(conns);
        for (w, mut c) in clients.into_iter().enumerate() {
            let op = op.clone();
            let next = next.clone();
            let (deadline, to) = match until {
                Until::Elapsed(d) => (start + d, None),
                Until::Items { to, deadline, .. } => (deadline, Some(to)),
            };
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 14);
                let mut errors = 0u64;
                let mut first = None;
                let mut n = 0u64;
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    let item = match to {
                        None => {
                            n += 1;
                            n - 1
                        }
                        Some(to) => {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= to {
                                break;
                            }
                            i
                        }
                    };
                    // Seeding retries an item twice; timed load does not.
                    let tries = if to.is_some() { 3 } else { 1 };
                    let mut ok = false;
                    for _ in 0..tries {
                        match op_once(&op, &mut c, w as u64, item).await {
                            Ok(()) => {
                                ok = true;
                                break;
                            }
                            Err(e) => {
                                errors += 1;
                                if first.is_none() {
                                    first = Some(format!("{e:#}"));
                                }
                            }
                        }
                    }
                    if ok {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else if to.is_some() {
                        break; // a seeding worker that cannot make progress stops
                    }
                }
                (lat, errors, first)
            }));
        }
        let mut lat_us = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        for h in handles {
            let (l, e, f) = h.await?;
            lat_us.extend(l);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        lat_us.sort_unstable();
        Ok(LoadStats {
            ops: lat_us.len() as u64,
            errors,
            secs,
            lat_us,
            first_error,
            cpu: cpu.since(self.args.pid, &self.args.storage_pids, secs),
        })
    }

    fn dur(&self) -> Until {
        Until::Elapsed(Duration::from_secs_f64(self.args.duration))
    }

    async fn manifest_get(&mut self) -> Result<()> {
        let op = Op::Get {
            path: format!("/v2/{BASE}/manifests/latest"),
        };
        let n = self.args.get_conns;
        let s = self.run_workers(Arc::new(op), n, self.dur()).await?;
        self.emit("manifest_get", s.json(n));
        Ok(())
    }

    async fn blob_head(&mut self) -> Result<()> {
        let paths = self
            .small
            .iter()
            .map(|(d, _)| format!("/v2/{BASE}/blobs/{d}"))
            .collect();
        let n = self.args.get_conns;
        let s = self
            .run_workers(Arc::new(Op::Head { paths }), n, self.dur())
            .await?;
        self.emit("blob_head", s.json(n));
        Ok(())
    }

    async fn small_push(&mut self) -> Result<()> {
        let n = self.args.small_conns;
        let single = self.single_post;
        let op = Op::SmallPush {
            repo: "bench/small-push".into(),
            single,
            seed: self.salted(1 << 62),
        };
        now_sync();
        let s = self.run_workers(Arc::new(op), n, self.dur()).await?;
        let mut v = s.json(n);
        v["mode"] = json!(if single { "single-post" } else { "post-put" });
        self.emit("small_push", v);
        if single && self.args.small_both {
            // The same operation as the reference gets: POST + PUT.
            let op = Op::SmallPush {
                repo: "bench/small-push".into(),
                single: false,
                seed: self.salted(2 << 62),
            };
            now_sync();
            let s = self.run_workers(Arc::new(op), n, self.dur()).await?;
            let mut v = s.json(n);
            v["mode"] = json!("post-put");
            self.emit("small_push_postput", v);
        }
        Ok(())
    }

    async fn prepare_repo(&self, c: &mut Client, repo: &str) -> Result<()> {
        mount(c, repo, BASE, &self.empty, &Bytes::from_static(b"{}")).await?;
        let (d, data) = &self.small[0];
        mount(c, repo, BASE, d, data).await
    }

    async fn manifest_push(&mut self) -> Result<()> {
        let repo = "bench/mpush";
        self.prepare_repo(&mut self.client(), repo).await?;
        let op = Op::ManifestPush {
            repo: repo.into(),
            empty: self.empty.clone(),
            layer: self.small[0].0.clone(),
            note: match self.args.content_seed {
                0 => String::new(),
                s => format!("s{s}-"),
            },
        };
        let n = self.args.manifest_conns;
        now_sync();
        let s = self.run_workers(Arc::new(op), n, self.dur()).await?;
        self.emit("manifest_push", s.json(n));
        Ok(())
    }

    /// Time a page: a warm-up request, then up to --page-samples requests
    /// (at least 3, at most --page-max-secs), one connection.
    async fn page(&self, path: &str, key: &str) -> Result<Value> {
        // Timed on a settled machine, not under the seeding's writeback.
        now_sync();
        let mut c = self.client();
        let mut times = Vec::new();
        let start = Instant::now();
        let mut last = None;
        for i in 0..=self.args.page_samples {
            let t = Instant::now();
            let r = c.call(Method::GET, path, &[], Body::Empty).await?;
            let dt = t.elapsed().as_secs_f64() * 1000.0;
            let r = r.expect(200, path)?;
            if i > 0 {
                times.push(dt);
            }
            last = Some(r);
            if times.len() >= 3 && start.elapsed().as_secs_f64() > self.args.page_max_secs {
                break;
            }
        }
        let r = last.expect("one response");
        let v: Value = serde_json::from_slice(&r.body).context("page is not JSON")?;
        let entries = v.get(key).and_then(|a| a.as_array()).map_or(0, |a| a.len());
        times.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| round3(times[((times.len() - 1) as f64 * p).round() as usize]);
        Ok(json!({
            "path": path,
            "median_ms": q(0.5),
            "p90_ms": q(0.9),
            "samples": times.len(),
            "entries": entries,
            "bytes": r.body.len(),
            "link": r.headers.contains_key("link"),
        }))
    }

    async fn seed(
        &mut self,
        what: &str,
        op: Op,
        have: u64,
        to: u64,
        deadline: Instant,
    ) -> Result<u64> {
        let s = self
            .run_workers(
                Arc::new(op),
                self.args.seed_conns,
                Until::Items {
                    from: have,
                    to,
                    deadline,
                },
            )
            .await?;
        let reached = have + s.ops;
        self.emit(
            &format!("{what}_seed_{to}"),
            json!({
                "from": have,
                "to": to,
                "reached": reached,
                "secs": round3(s.secs),
                "ops_s": round1(s.ops as f64 / s.secs),
                "errors": s.errors,
                "first_error": s.first_error,
                "p99_ms": s.pct(0.99),
                "cpu": s.cpu,
            }),
        );
        Ok(reached)
    }

    async fn tags(&mut self) -> Result<()> {
        let repo = "bench/tags";
        self.prepare_repo(&mut self.client(), repo).await?;
        let body = manifest(&self.empty, 2, &self.small[0].0, SMALL, "");
        let mut sizes = self.args.tag_sizes.clone();
        sizes.sort_unstable();
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.tag_seed_secs);
        for mut size in sizes {
            let mut partial = false;
            if size > self.tags_have {
                let op = Op::TagPut {
                    repo: repo.into(),
                    body: body.clone(),
                };
                self.tags_have = self
                    .seed("tags", op, self.tags_have, size, deadline)
                    .await?;
                if self.tags_have < size {
                    eprintln!(
                        "  tags: seeding budget spent at {} of {size}; pages timed there",
                        self.tags_have
                    );
                    size = self.tags_have;
                    partial = true;
                }
            }
            let start = self
                .page(&format!("/v2/{repo}/tags/list?n=100"), "tags")
                .await?;
            self.emit(
                &format!("tags_list_start_{size}"),
                json!({ "size": size, "page": start }),
            );
            let mid = format!("/v2/{repo}/tags/list?n=100&last=t{:06}", size / 2);
            let mid = self.page(&mid, "tags").await?;
            self.emit(
                &format!("tags_list_middle_{size}"),
                json!({ "size": size, "page": mid }),
            );
            if partial {
                break;
            }
        }
        Ok(())
    }

    async fn catalog(&mut self) -> Result<()> {
        let body = manifest(&self.empty, 2, &self.empty, 2, "");
        let mut sizes = self.args.repo_sizes.clone();
        sizes.sort_unstable();
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.repo_seed_secs);
        for mut size in sizes {
            let mut partial = false;
            if size > self.repos_have {
                let op = Op::RepoCreate {
                    from: BASE.into(),
                    empty: self.empty.clone(),
                    body: body.clone(),
                };
                self.repos_have = self
                    .seed("catalog", op, self.repos_have, size, deadline)
                    .await?;
                if self.repos_have < size {
                    eprintln!(
                        "  catalog: seeding budget spent at {} of {size}; pages timed there",
                        self.repos_have
                    );
                    size = self.repos_have;
                    partial = true;
                }
            }
            let start = self.page("/v2/_catalog?n=100", "repositories").await?;
            self.emit(
                &format!("catalog_start_{size}"),
                json!({ "size": size, "page": start }),
            );
            let mid = format!("/v2/_catalog?n=100&last=cat/r{:06}", size / 2);
            let mid = self.page(&mid, "repositories").await?;
            self.emit(
                &format!("catalog_middle_{size}"),
                json!({ "size": size, "page": mid }),
            );
            if partial {
                break;
            }
        }
        Ok(())
    }

    /// A 4 GiB blob pushed and pulled while the sampler watches RSS.
    async fn huge(&mut self) -> Result<()> {
        eprintln!(
            "  [{:>6.1}s] huge ...",
            self.started.elapsed().as_secs_f64()
        );
        let size = self.args.huge_size;
        let (pat, d, pre) = self.pattern_digest(3, size)?;
        let mut c = self.client();
        c.call(Method::GET, "/v2/", &[], Body::Empty).await?;
        now_sync();
        let s = self.sampler.as_ref();
        let before = s.map_or(0, |s| s.window_reset());
        let cpu = self.cpu();
        let t = Instant::now();
        push_mono(&mut c, "bench/big", &pat, size, &d).await?;
        let push_secs = t.elapsed().as_secs_f64();
        let push_cpu = cpu.since(self.args.pid, &self.args.storage_pids, push_secs);
        let max_push = s.map_or(0, |s| s.window_max_kib());
        let after_push = s.map_or(0, |s| s.window_reset());
        now_sync();
        let cpu = self.cpu();
        let (pull_secs, verified) = self.pull(&mut c, &pat, &d, size).await?;
        let pull_cpu = cpu.since(self.args.pid, &self.args.storage_pids, pull_secs);
        let max_pull = s.map_or(0, |s| s.window_max_kib());
        let after = s.map_or(0, |s| s.rss_now_kib());
        self.emit(
            "huge",
            json!({
                "bytes": size,
                "digest_precompute_s": round3(pre),
                "push_mb_s": round1(size as f64 / 1e6 / push_secs),
                "pull_mb_s": round1(size as f64 / 1e6 / pull_secs),
                "verified": if verified { "content" } else { "length only" },
                "rss_before_mb": mb(before),
                "rss_max_push_mb": mb(max_push),
                "rss_after_push_mb": mb(after_push),
                "rss_max_pull_mb": mb(max_pull),
                "rss_after_mb": mb(after),
                "rss_growth_mb": round1(mb(max_push.max(max_pull)) - mb(before)),
                "push_cpu": push_cpu,
                "pull_cpu": pull_cpu,
            }),
        );
        Ok(())
    }
}

type ScenarioFut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;
type Scenario = for<'a> fn(&'a mut Bench) -> ScenarioFut<'a>;
