//! `wharf-bench mirror`: pulls through the pull-through cache (issue 16)
//! side by side with direct pulls from its upstream, in the same run.
//!
//! An upstream `wharf serve` holds one image of `--layers` layers of
//! `--layer-size` bytes (pushed once, generated content). Each repetition
//! then starts a cache (`wharf serve` with one `[[upstreams]]` entry for
//! the upstream, on a fresh data directory) and times three pulls of the
//! image, each a manifest GET by tag and then every blob, `--conns` at a
//! time (as the Docker daemon pulls three layers at once), the bytes
//! counted and dropped:
//!
//! - `direct`: from the upstream;
//! - `cold`: through the cache, which has nothing: every blob is fetched
//!   from the upstream, stored (verified, fsync'ed) and streamed to the
//!   client at the same time;
//! - `warm`: through the cache again: all from its store.
//!
//! One JSON line per repetition on stdout, then a summary line with the
//! medians and the ratios to the direct pull; `wharf-bench mirror-report`
//! makes the table. Everything runs on loopback; the client, both servers
//! and the disk share the machine, as in the other scenarios.

use crate::bench::{push_bytes, push_mono};
use crate::blobgen::{Pattern, digest_of, salted};
use crate::http::{Body, Client};
use crate::procfs::{CpuSnap, round3};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Args;
use http::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCEPT: (&str, &str) = (
    "accept",
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
);
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The repository at the upstream, and its cache prefix.
const REPO: &str = "bench/mirror";
const PREFIX: &str = "up";
/// Mixed into every layer's seed: these blobs are no other benchmark's.
const SEED: u64 = 0x6d69_7272_6f72_0000;

#[derive(Args, Clone)]
pub struct MirrorArgs {
    /// The `wharf` binary.
    #[arg(long)]
    pub wharf: PathBuf,
    /// Work directory: both servers' data directories and logs.
    #[arg(long)]
    pub work: PathBuf,
    /// Layers of the image.
    #[arg(long, default_value_t = 4)]
    pub layers: u64,
    /// Bytes per layer.
    #[arg(long, default_value = "64M", value_parser = crate::parse_size)]
    pub layer_size: u64,
    /// Blobs pulled at a time.
    #[arg(long, default_value_t = 3)]
    pub conns: usize,
    /// Repetitions (the medians are reported).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Port of the upstream; the cache listens on the next one.
    #[arg(long, default_value_t = 5396)]
    pub port: u16,
    /// Where blob digests are cached.
    #[arg(long, default_value = "target/bench-cache")]
    pub cache_dir: PathBuf,
    /// Extra `wharf serve` flags for the cache (e.g. --log-level warn).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub cache_args: String,
}

/// A `wharf serve` child, stopped (TERM, then KILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(a: &MirrorArgs, name: &str, port: u16, extra: &[String]) -> Result<Server> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(a.work.join(format!("{name}.log")))?;
        let child = Command::new(&a.wharf)
            .args(["serve", "--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(a.work.join(format!("{name}-data")))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", a.wharf.display()))?;
        Ok(Server { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut c = Client::new(self.addr);
            if let Ok(r) = c.call(Method::GET, "/v2/", &[], Body::Empty).await
                && r.status.as_u16() == 200
            {
                return Ok(());
            }
            if let Some(s) = self.child.try_wait()? {
                bail!("wharf serve on {} exited: {s}", self.addr);
            }
            if Instant::now() > deadline {
                bail!("wharf serve on {} did not answer within 60 s", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The image: its manifest and (digest, size) of every blob.
struct Image {
    manifest: Bytes,
    blobs: Vec<(String, u64)>,
}

async fn push_image(a: &MirrorArgs, addr: SocketAddr) -> Result<Image> {
    let mut c = Client::new(addr);
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"bench":"mirror {}x{}"}}"#,
        a.layers, a.layer_size
    ));
    let config_digest = crate::blobgen::sha256_hex(&config);
    push_bytes(&mut c, REPO, config.clone(), &config_digest, false).await?;
    let mut layers = Vec::new();
    for i in 0..a.layers {
        let pat = Pattern::new(salted(SEED, i));
        let (digest, _) = digest_of(&a.cache_dir, &pat, a.layer_size)?;
        push_mono(&mut c, REPO, &pat, a.layer_size, &digest).await?;
        layers.push((digest, a.layer_size));
    }
    let layer_json: Vec<String> = layers
        .iter()
        .map(|(d, n)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#
            )
        })
        .collect();
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_json.join(",")
    ));
    c.call(
        Method::PUT,
        &format!("/v2/{REPO}/manifests/v1"),
        &[("content-type", MANIFEST_TYPE)],
        Body::full(manifest.clone()),
    )
    .await?
    .expect(201, "PUT manifest")?;
    let mut blobs = vec![(config_digest, config.len() as u64)];
    blobs.extend(layers);
    Ok(Image { manifest, blobs })
}

/// One pull of `repo:v1` from `addr`: the manifest, then every blob,
/// `conns` at a time. Returns the seconds it took and the bytes received;
/// fails unless every answer is 200 with the expected manifest and sizes.
async fn pull(addr: SocketAddr, repo: &str, img: &Image, conns: usize) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut c = Client::new(addr);
    let m = c
        .call(
            Method::GET,
            &format!("/v2/{repo}/manifests/v1"),
            &[ACCEPT],
            Body::Empty,
        )
        .await?
        .expect(200, "GET manifest")?;
    if m.body != img.manifest {
        bail!("{addr} /v2/{repo}: not the pushed manifest");
    }
    let queue = Arc::new(Mutex::new(img.blobs.clone()));
    let mut workers = Vec::new();
    for _ in 0..conns.max(1) {
        let queue = queue.clone();
        let repo = repo.to_owned();
        workers.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            let mut total = 0u64;
            loop {
                let next = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                let Some((digest, size)) = next else {
                    return Ok::<u64, anyhow::Error>(total);
                };
                let path = format!("/v2/{repo}/blobs/{digest}");
                let (status, n) = c
                    .call_stream(Method::GET, &path, &[], |_, _| Ok(()))
                    .await?;
                if status.as_u16() != 200 || n != size {
                    bail!("GET {path}: HTTP {status}, {n} of {size} bytes");
                }
                total += n;
            }
        }));
    }
    let mut bytes = m.body.len() as u64;
    for w in workers {
        bytes += w.await??;
    }
    Ok((start.elapsed().as_secs_f64(), bytes))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub async fn run(a: MirrorArgs) -> Result<()> {
    std::fs::create_dir_all(&a.work)?;
    let total = a.layer_size.saturating_mul(a.layers);
    eprintln!(
        "  mirror: upstream with one image of {} x {} MiB; {} repetitions",
        a.layers,
        a.layer_size >> 20,
        a.repeat
    );
    let mut up = Server::start(&a, "upstream", a.port, &[])?;
    up.ready().await?;
    let img = push_image(&a, up.addr).await?;
    let config = a.work.join("cache.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nname = \"up\"\nurl = \"http://{}\"\nprefix = \"{PREFIX}\"\n",
            up.addr
        ),
    )?;
    let mut extra = vec!["--config".to_owned(), config.display().to_string()];
    extra.extend(a.cache_args.split_whitespace().map(str::to_owned));
    let local = format!("{PREFIX}/{REPO}");
    let (mut direct, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_direct, mut cpu_cold, mut cpu_warm) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..a.repeat {
        let data = a.work.join("cache-data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let mut cache = Server::start(&a, "cache", a.port.saturating_add(1), &extra)?;
        cache.ready().await?;
        // The CPU both servers (and this client) use during each pull: on a
        // busy machine the wall times follow it.
        let snap = || {
            (
                CpuSnap::now(Some(up.pid()), &[]),
                CpuSnap::now(Some(cache.pid()), &[]),
            )
        };
        let cpu = |(u, c): (CpuSnap, CpuSnap), secs: f64| {
            json!({
                "upstream": u.since(Some(up.pid()), &[], secs),
                "cache": c.since(Some(cache.pid()), &[], secs),
            })
        };
        let before = snap();
        let (d, bytes) = pull(up.addr, REPO, &img, a.conns).await?;
        let direct_cpu = cpu(before, d);
        let before = snap();
        let (c, _) = pull(cache.addr, &local, &img, a.conns).await?;
        let cold_cpu = cpu(before, c);
        let before = snap();
        let (w, _) = pull(cache.addr, &local, &img, a.conns).await?;
        let warm_cpu = cpu(before, w);
        drop(cache);
        let line = json!({
            "scenario": "mirror_pull",
            "rep": rep,
            "bytes": bytes,
            "direct_s": round3(d),
            "cold_s": round3(c),
            "warm_s": round3(w),
            "direct_cpu": direct_cpu,
            "cold_cpu": cold_cpu,
            "warm_cpu": warm_cpu,
        });
        println!("{line}");
        eprintln!("  mirror: #{rep}: direct {d:.2} s, cold {c:.2} s, warm {w:.2} s");
        direct.push(d);
        cold.push(c);
        warm.push(w);
        let total_of = |v: &Value, who: &str| {
            v[who]["server_cpu_user_s"].as_f64().unwrap_or(0.0)
                + v[who]["server_cpu_sys_s"].as_f64().unwrap_or(0.0)
        };
        cpu_direct.push(total_of(&line["direct_cpu"], "upstream"));
        cpu_cold
            .push(total_of(&line["cold_cpu"], "cache") + total_of(&line["cold_cpu"], "upstream"));
        cpu_warm.push(total_of(&line["warm_cpu"], "cache"));
    }
    let (cd, cc, cw) = (
        median(&mut cpu_direct),
        median(&mut cpu_cold),
        median(&mut cpu_warm),
    );
    let (d, c, w) = (median(&mut direct), median(&mut cold), median(&mut warm));
    let mbs = |s: f64| if s > 0.0 { total as f64 / s / 1e6 } else { 0.0 };
    let ratio = |s: f64| if d > 0.0 { s / d } else { 0.0 };
    println!(
        "{}",
        json!({
            "scenario": "mirror_summary",
            "layers": a.layers,
            "layer_size": a.layer_size,
            "conns": a.conns,
            "repeat": a.repeat,
            "direct_s": round3(d),
            "cold_s": round3(c),
            "warm_s": round3(w),
            "direct_mbs": round3(mbs(d)),
            "cold_mbs": round3(mbs(c)),
            "warm_mbs": round3(mbs(w)),
            "cold_ratio": round3(ratio(c)),
            "warm_ratio": round3(ratio(w)),
            "direct_cpu_s": round3(cd),
            "cold_cpu_s": round3(cc),
            "warm_cpu_s": round3(cw),
        })
    );
    Ok(())
}

// ------------------------------------------------------------ the table

#[derive(Args)]
pub struct MirrorReportArgs {
    /// JSON lines of a `wharf-bench mirror` run.
    pub file: PathBuf,
}

pub fn report(a: MirrorReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("{}", a.file.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let Some(s) = lines.iter().find(|v| v["scenario"] == "mirror_summary") else {
        bail!("{}: no mirror_summary line", a.file.display());
    };
    let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
    let mib = s["layer_size"].as_u64().unwrap_or(0) >> 20;
    println!(
        "One image of {} layers x {mib} MiB, {} blobs at a time; median of {} repetitions.\n",
        s["layers"], s["conns"], s["repeat"]
    );
    println!("| pull | median | throughput | vs direct | goal | | servers' CPU (median) |");
    println!("|---|---:|---:|---:|---|---|---:|");
    println!(
        "| direct from the upstream | {:.2} s | {:.0} MB/s | 1.00x | | | {:.2} s |",
        f("direct_s"),
        f("direct_mbs"),
        f("direct_cpu_s")
    );
    let verdict = |r: f64, goal: f64| if r <= goal { "pass" } else { "FAIL" };
    println!(
        "| cold, through the cache | {:.2} s | {:.0} MB/s | {:.2}x | ≤ 1.2x | {} | {:.2} s |",
        f("cold_s"),
        f("cold_mbs"),
        f("cold_ratio"),
        verdict(f("cold_ratio"), 1.2),
        f("cold_cpu_s")
    );
    println!(
        "| warm, through the cache | {:.2} s | {:.0} MB/s | {:.2}x | ≤ 1.0x | {} | {:.2} s |",
        f("warm_s"),
        f("warm_mbs"),
        f("warm_ratio"),
        verdict(f("warm_ratio"), 1.0),
        f("warm_cpu_s")
    );
    println!();
    println!(
        "CPU seconds per pull (user + system; the client's not counted), and the wall time:\n"
    );
    println!(
        "| repetition | direct: upstream | cold: cache + upstream | warm: cache | direct | cold | warm |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for v in lines.iter().filter(|v| v["scenario"] == "mirror_pull") {
        let secs = |pull: &str, who: &str| {
            let c = &v[format!("{pull}_cpu")][who];
            c["server_cpu_user_s"].as_f64().unwrap_or(0.0)
                + c["server_cpu_sys_s"].as_f64().unwrap_or(0.0)
        };
        println!(
            "| {} | {:.2} s | {:.2} + {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            v["rep"],
            secs("direct", "upstream"),
            secs("cold", "cache"),
            secs("cold", "upstream"),
            secs("warm", "cache"),
            v["direct_s"].as_f64().unwrap_or(0.0),
            v["cold_s"].as_f64().unwrap_or(0.0),
            v["warm_s"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
