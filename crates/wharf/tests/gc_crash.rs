//! Garbage collection survives crashes (issue 15): the server is killed
//! with SIGKILL at varied points of a collection run — while it waits after
//! announcing itself, while it marks and deletes blob links, while it marks
//! content and while it deletes content (the sweep) — and started again.
//! After every kill nothing a tagged image needs is missing (`wharf fsck` is
//! clean, every image pulls with the right digests) and the store takes
//! pushes. At the end one uninterrupted `wharf gc` reclaims exactly what no
//! tagged image references and leaves under `_gc/` only what docs/gc.md
//! allows: on S3 the markers of the killed runs, until they are older than
//! `MARKER_TTL`; on the filesystem nothing (a data directory opened again
//! forgets a dead process's run), and what they held back is pushed again.
//!
//! Where each kill landed is read from the store after the server is dead
//! (which markers of the killed run exist, which garbage is already gone),
//! never assumed from timing; the test fails unless kills landed in every
//! step of the run, the sweeps included.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEEP_A: &str = "crash/keep-a";
const KEEP_B: &str = "crash/keep-b";
/// Garbage per round: deleted images of unique layers, and blobs pushed
/// and never referenced. Smaller on S3, where every object costs the
/// collector round trips: its steps last long enough to be hit anyway.
#[derive(Clone, Copy)]
struct Sizes {
    junk_images: usize,
    junk_layers: usize,
    loose_blobs: usize,
}

const FS_SIZES: Sizes = Sizes {
    junk_images: 3,
    junk_layers: 12,
    loose_blobs: 40,
};
const S3_SIZES: Sizes = Sizes {
    junk_images: 2,
    junk_layers: 6,
    loose_blobs: 16,
};
/// Uploads in flight at once.
const PARALLEL: usize = 8;

// ------------------------------------------------------------ the store

/// Read-only view of the server's store: the data directory (read as
/// files, since the server holds its lock) or the test bucket's prefix.
enum View {
    Fs(PathBuf),
    S3(Box<store::s3::S3Backend>),
}

impl View {
    async fn of(reg: &Registry) -> View {
        if !reg.on_s3() {
            return View::Fs(reg.data_dir().expect("a local data directory"));
        }
        let s3 = s3_settings().expect("an S3 run");
        let spec = reg.s3_store();
        let (bucket, prefix) = spec
            .trim_start_matches("s3:")
            .split_once('/')
            .expect("s3:BUCKET/PREFIX");
        let config = store::s3::S3Config {
            endpoint: s3.get("WHARF_S3_ENDPOINT").to_owned(),
            region: s3.get("WHARF_S3_REGION").to_owned(),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            access_key_id: Some(s3.get("AWS_ACCESS_KEY_ID").to_owned()),
            secret_access_key: Some(s3.get("AWS_SECRET_ACCESS_KEY").to_owned()),
            virtual_hosted: false,
            redirect: false,
            redirect_expiry: Duration::from_secs(1200),
            timeout: Duration::from_secs(30),
        };
        let b = store::s3::S3Backend::connect(config)
            .await
            .expect("the test bucket");
        View::S3(Box::new(b))
    }

    /// Every key below `prefix` (which ends with `/`), whole.
    async fn keys(&self, prefix: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        match self {
            View::Fs(root) => walk(&root.join(prefix), prefix, &mut out),
            View::S3(b) => {
                let mut pages = store::backend::KeyPages::new(b.as_ref(), prefix, 1000);
                while let Some(page) = pages.next().await.expect("list the test bucket") {
                    out.extend(page.into_iter().map(|k| format!("{prefix}{k}")));
                }
            }
        }
        out
    }
}

/// The objects below `dir` (files `<key>~`), as keys starting with `key`.
/// Entries that vanish during the walk (the server deletes) are skipped.
fn walk(dir: &Path, key: &str, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else {
            continue;
        };
        if ft.is_dir() {
            walk(&e.path(), &format!("{key}{name}/"), out);
        } else if let Some(object) = name.strip_suffix('~') {
            out.insert(format!("{key}{object}"));
        }
    }
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn content_key(digest: &str) -> String {
    let hex = hex_of(digest);
    format!("blobs/sha256/{}/{hex}", &hex[..2])
}

fn link_key(repo: &str, digest: &str) -> String {
    format!("repositories/{repo}/_blobs/sha256/{}", hex_of(digest))
}

fn manifest_link_key(repo: &str, digest: &str) -> String {
    format!("repositories/{repo}/_manifests/sha256/{}", hex_of(digest))
}

/// The run id a `_gc/` key belongs to (its last component).
fn run_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or_default()
}

// ------------------------------------------------------------ images

/// Something a client was told is stored and that must stay: a manifest
/// under `reference` in `repo`, and the blobs it names.
#[derive(Clone, Debug)]
struct Kept {
    repo: String,
    reference: String,
    manifest: Vec<u8>,
    blobs: Vec<String>,
}

/// An image built in memory: its blobs (config first) and manifest.
struct Built {
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

fn build(label: &str, unique_layers: usize, shared: &[Vec<u8>]) -> Built {
    let config = format!("{{\"label\":\"{label}\",\"n\":\"{}\"}}", nonce()).into_bytes();
    let mut layers: Vec<Vec<u8>> = (0..unique_layers)
        .map(|i| unique_bytes(&format!("{label} layer {i}")))
        .collect();
    layers.extend(shared.iter().cloned());
    let descs: Vec<Desc> = layers.iter().map(|l| Desc::new(OCI_LAYER, l)).collect();
    let manifest = oci_manifest(&Desc::new(OCI_CONFIG, &config), &descs);
    let mut blobs = vec![config];
    blobs.extend(layers);
    Built { blobs, manifest }
}

/// Single-POST uploads, `PARALLEL` at a time: each blob's status, and the
/// error code when refused. Anything but 201 or a clean 404 BLOB_UNKNOWN
/// (a collector holds the blob) fails the test.
async fn post_blobs(reg: &Registry, repo: &str, blobs: &[Vec<u8>]) -> Vec<bool> {
    let mut accepted = Vec::new();
    for chunk in blobs.chunks(PARALLEL) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|data| {
                let client = reg.client.clone();
                let url = reg.url(&format!(
                    "/v2/{repo}/blobs/uploads/?digest={}",
                    sha256(data)
                ));
                let data = data.clone();
                tokio::spawn(async move {
                    let r = client.post(url).body(data).send().await.expect("POST");
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap_or_default())
                })
            })
            .collect();
        for t in tasks {
            let (status, body) = t.await.expect("upload task");
            match status {
                201 => accepted.push(true),
                404 if body.contains("BLOB_UNKNOWN") => accepted.push(false),
                s => panic!("blob upload to {repo} answered {s}: {body}"),
            }
        }
    }
    accepted
}

/// Push `img` to `repo:tag`. `Ok` with what must now stay, or `Err` when a
/// collector's marker refused it cleanly (BLOB_UNKNOWN on a blob,
/// MANIFEST_BLOB_UNKNOWN on the manifest); any other answer fails.
async fn push(reg: &Registry, repo: &str, tag: &str, img: &Built) -> Result<Kept, String> {
    let accepted = post_blobs(reg, repo, &img.blobs).await;
    let refused = accepted.iter().filter(|a| !**a).count();
    if refused > 0 {
        return Err(format!("{refused} blobs refused with BLOB_UNKNOWN"));
    }
    let r = reg
        .put_manifest(repo, tag, OCI_MANIFEST, &img.manifest)
        .await;
    match r.status().as_u16() {
        201 => Ok(Kept {
            repo: repo.to_owned(),
            reference: tag.to_owned(),
            manifest: img.manifest.clone(),
            blobs: img.blobs.iter().map(|b| sha256(b)).collect(),
        }),
        400 => {
            let body: Value = r.json().await.expect("an error body");
            assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{body}");
            Err("manifest refused with MANIFEST_BLOB_UNKNOWN".into())
        }
        s => panic!(
            "manifest PUT {repo}:{tag} answered {s}: {}",
            r.text().await.unwrap_or_default()
        ),
    }
}

/// Delete the manifest `digest` (and its tags) from `repo`.
async fn delete_manifest(reg: &Registry, repo: &str, digest: &str) {
    let r = reg.delete(&format!("/v2/{repo}/manifests/{digest}")).await;
    assert_eq!(r.status(), 202, "DELETE {repo}@{digest}");
}

/// Every kept manifest and blob is served, byte for byte.
async fn assert_all_pull(reg: &Registry, kept: &[Kept], when: &str) {
    for k in kept {
        let r = reg
            .get_m(&format!("/v2/{}/manifests/{}", k.repo, k.reference))
            .await;
        assert_eq!(
            r.status(),
            200,
            "{when}: {}:{} is gone",
            k.repo,
            k.reference
        );
        let digest = header(&r, "docker-content-digest");
        assert_eq!(digest.as_deref(), Some(sha256(&k.manifest).as_str()));
        assert_eq!(
            r.bytes().await.expect("manifest body").as_ref(),
            k.manifest.as_slice(),
            "{when}: {}:{} changed",
            k.repo,
            k.reference
        );
        for d in &k.blobs {
            let r = reg.get_blob(&k.repo, d).await;
            assert_eq!(
                r.status(),
                200,
                "{when}: {}:{} lost {d}",
                k.repo,
                k.reference
            );
            let body = r.bytes().await.expect("blob body");
            assert_eq!(
                &sha256(&body),
                d,
                "{when}: {}:{} has bad bytes",
                k.repo,
                k.reference
            );
        }
    }
}

/// `wharf fsck` on the stopped server's store: clean (exit 0).
fn assert_fsck_clean(store: &str, when: &str) -> Value {
    let out = wharf_command(&["fsck", "--store", store, "--json"])
        .output()
        .expect("run wharf fsck");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{when}: wharf fsck printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        out.status.code(),
        Some(0),
        "{when}: fsck found problems: {report}"
    );
    report
}

/// One uninterrupted `wharf gc --grace 0` on the stopped server's store.
fn wharf_gc(store: &str) -> Value {
    let out = wharf_command(&["gc", "--store", store, "--grace", "0", "--json"])
        .output()
        .expect("run wharf gc");
    assert!(
        out.status.success(),
        "wharf gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("wharf gc --json prints JSON")
}

// ------------------------------------------------------------ where a run is

/// The steps of one collection run (docs/gc.md, store::gc), in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// No run of this process at work yet.
    NotStarted,
    /// `_gc/active/<run>` written; the run waits before its first look.
    Announced,
    /// Blob-link markers written, no link deleted yet.
    LinkMarks,
    /// Links being deleted, their markers with them.
    LinkSweep,
    /// Between the link and content steps (no marker of the run exists).
    Between,
    /// Content markers being written, no content deleted yet.
    ContentMarks,
    /// Content being deleted, its markers with it: the sweep.
    ContentSweep,
    /// The run is over, or all but (its garbage is gone).
    Finished,
}

/// What one round made garbage, as store keys.
#[derive(Default)]
struct Garbage {
    links: BTreeSet<String>,
    content: BTreeSet<String>,
    /// Repositories whose `_blobs/` hold those links.
    repos: BTreeSet<String>,
}

/// The store at one moment, seen from one round.
struct Snap {
    /// Keys under `_gc/` of runs that started in this round.
    active: usize,
    link_marks: usize,
    content_marks: usize,
    links_left: usize,
    content_left: usize,
}

impl Snap {
    async fn take(view: &View, g: &Garbage, old_runs: &BTreeSet<String>) -> Snap {
        let gc = view.keys("_gc/").await;
        let new = |prefix: &str| {
            gc.iter()
                .filter(|k| k.starts_with(prefix) && !old_runs.contains(run_of(k)))
                .count()
        };
        let mut links = BTreeSet::new();
        for repo in &g.repos {
            links.extend(view.keys(&format!("repositories/{repo}/_blobs/")).await);
        }
        let content = view.keys("blobs/").await;
        Snap {
            active: new("_gc/active/"),
            link_marks: new("_gc/doomed-links/"),
            content_marks: new("_gc/doomed/"),
            links_left: g.links.intersection(&links).count(),
            content_left: g.content.intersection(&content).count(),
        }
    }

    fn step(&self, g: &Garbage, seen_run: bool) -> Step {
        if self.content_marks > 0 {
            if self.content_left < g.content.len() {
                Step::ContentSweep
            } else {
                Step::ContentMarks
            }
        } else if self.link_marks > 0 {
            if self.links_left < g.links.len() {
                Step::LinkSweep
            } else {
                Step::LinkMarks
            }
        } else if self.active > 0 {
            if self.links_left == g.links.len() {
                Step::Announced
            } else if self.content_left == g.content.len() {
                Step::Between
            } else {
                // Swept; expiring uploads, about to drop its flag.
                Step::Finished
            }
        } else if seen_run || self.content_left < g.content.len() {
            Step::Finished
        } else {
            Step::NotStarted
        }
    }

    /// How far into `step` the run is, 0 to 1.
    fn progress(&self, step: Step, g: &Garbage) -> f64 {
        let frac = |n: usize, of: usize| n as f64 / of.max(1) as f64;
        match step {
            Step::LinkSweep => frac(g.links.len() - self.links_left, g.links.len()),
            Step::ContentMarks => frac(self.content_marks, g.content.len()),
            Step::ContentSweep => frac(g.content.len() - self.content_left, g.content.len()),
            _ => 0.0,
        }
    }
}

/// Where to kill: at `step`, once `progress` of it is done (`Announced`:
/// `delay` after the run was first seen).
#[derive(Clone, Copy, Debug)]
struct Target {
    step: Step,
    progress: f64,
    delay: Duration,
}

const fn at(step: Step, progress: f64) -> Target {
    Target {
        step,
        progress,
        delay: Duration::ZERO,
    }
}

/// The kill points, in order: every step of a run, the sweeps several
/// times at different depths.
const PLAN: &[Target] = &[
    at(Step::ContentSweep, 0.0),
    at(Step::Announced, 0.0),
    at(Step::LinkMarks, 0.0),
    at(Step::ContentMarks, 0.5),
    at(Step::ContentSweep, 0.5),
    at(Step::LinkSweep, 0.3),
    Target {
        step: Step::Announced,
        progress: 0.0,
        delay: Duration::from_millis(1500),
    },
    at(Step::ContentSweep, 0.8),
    at(Step::Between, 0.0),
    at(Step::LinkSweep, 0.7),
    at(Step::ContentMarks, 0.1),
    at(Step::ContentSweep, 0.3),
];

/// Tries per target when a kill lands elsewhere (the run was quicker than
/// the polling): the round counts where it landed, and the target is tried
/// again at the end.
const TRIES: usize = 3;

/// An index of two platform images in `KEEP_B`, tagged `multi`; the
/// platform manifests are pushed by digest (untagged, kept because the
/// index names them).
async fn push_index(reg: &Registry, shared: &[Vec<u8>]) -> Vec<Kept> {
    let mut out = Vec::new();
    let mut descs = Vec::new();
    for i in 0..2 {
        let img = build(&format!("platform {i}"), 1, &shared[2..]);
        let digest = sha256(&img.manifest);
        let k = push(reg, KEEP_B, &digest, &img)
            .await
            .expect("push a platform image");
        descs.push(Desc::new(OCI_MANIFEST, &img.manifest));
        out.push(k);
    }
    let index = oci_index(&descs);
    reg.push_manifest(KEEP_B, "multi", OCI_INDEX, &index).await;
    out.push(Kept {
        repo: KEEP_B.into(),
        reference: "multi".into(),
        manifest: index,
        blobs: Vec::new(),
    });
    out
}

/// One round's garbage, pushed while no collector runs: in a new
/// repository, images (sharing a kept layer) pushed then deleted, and
/// blobs no manifest names; in `KEEP_A`, one image pushed then deleted
/// (its layer shared with kept images stays referenced there). Returns the
/// garbage and one deleted image, to push again after the kill.
async fn make_garbage(
    reg: &Registry,
    round: usize,
    shared: &[Vec<u8>],
    sizes: Sizes,
) -> (Garbage, (String, Built)) {
    let junk = format!("crash/junk-{round:02}");
    let mut g = Garbage::default();
    let mut first = None;
    for i in 0..sizes.junk_images {
        let img = build(
            &format!("junk {round}.{i}"),
            sizes.junk_layers,
            &shared[..1],
        );
        push(reg, &junk, &format!("t{i}"), &img)
            .await
            .expect("push a junk image");
        delete_manifest(reg, &junk, &sha256(&img.manifest)).await;
        for b in &img.blobs {
            g.links.insert(link_key(&junk, &sha256(b)));
            if !shared.contains(b) {
                g.content.insert(content_key(&sha256(b)));
            }
        }
        g.content.insert(content_key(&sha256(&img.manifest)));
        first.get_or_insert(img);
    }
    let loose: Vec<Vec<u8>> = (0..sizes.loose_blobs)
        .map(|i| unique_bytes(&format!("loose {round}.{i}")))
        .collect();
    assert!(
        post_blobs(reg, &junk, &loose).await.iter().all(|a| *a),
        "loose blobs refused"
    );
    for b in &loose {
        g.links.insert(link_key(&junk, &sha256(b)));
        g.content.insert(content_key(&sha256(b)));
    }
    let img = build(&format!("deleted in keep-a {round}"), 1, &shared[..1]);
    push(reg, KEEP_A, &format!("gone{round}"), &img)
        .await
        .expect("push an image to delete");
    delete_manifest(reg, KEEP_A, &sha256(&img.manifest)).await;
    for b in img.blobs.iter().filter(|b| !shared.contains(b)) {
        g.links.insert(link_key(KEEP_A, &sha256(b)));
        g.content.insert(content_key(&sha256(b)));
    }
    g.content.insert(content_key(&sha256(&img.manifest)));
    g.repos.insert(junk.clone());
    g.repos.insert(KEEP_A.to_owned());
    (g, (junk, first.expect("junk images")))
}

/// Watch the store while the (collecting) server runs; SIGKILL it as soon
/// as the run reaches `target` (or has gone past it). Returns the step
/// seen at the last look before the kill.
async fn kill_at(
    reg: &mut Registry,
    view: &View,
    g: &Garbage,
    old_runs: &BTreeSet<String>,
    target: Target,
) -> Step {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut first_seen: Option<Instant> = None;
    loop {
        let s = Snap::take(view, g, old_runs).await;
        let step = s.step(g, first_seen.is_some());
        if step > Step::NotStarted {
            first_seen.get_or_insert_with(Instant::now);
        }
        let go = match step.cmp(&target.step) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal if step == Step::Announced => {
                first_seen.is_some_and(|t| t.elapsed() >= target.delay)
            }
            std::cmp::Ordering::Equal => s.progress(step, g) >= target.progress,
            std::cmp::Ordering::Less => false,
        };
        if go {
            reg.kill_hard();
            return step;
        }
        assert!(
            Instant::now() < deadline,
            "no collection run reached {target:?} within 3 minutes (last seen: {step:?})\n{}",
            reg.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_collection_lose_nothing_and_the_next_run_finishes() {
    let mut reg = local_only!(Registry::start_with(&[]).await);
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("collecting.toml");
    // One request in flight: the kills land at random times, and with
    // eight the marking steps pass too quickly for them to land in each.
    // (Concurrency changes no order between steps: a step's requests all
    // end before the next step begins.)
    std::fs::write(
        &config,
        "[gc]\ninterval_secs = 1\ngrace_secs = 0\nconcurrency = 1\n",
    )
    .expect("write config");
    let config = config.to_str().expect("a UTF-8 path").to_owned();
    let store = store_of(&reg);
    let view = View::of(&reg).await;
    let sizes = if reg.on_s3() { S3_SIZES } else { FS_SIZES };

    // Kept from the start: two repositories sharing layers, and an index.
    let shared: Vec<Vec<u8>> = (0..3)
        .map(|i| unique_bytes(&format!("shared {i}")))
        .collect();
    let mut kept: Vec<Kept> = Vec::new();
    for (i, repo) in [KEEP_A, KEEP_A, KEEP_B, KEEP_B].into_iter().enumerate() {
        let img = build(&format!("kept {i}"), 2, &shared[i % 2..i % 2 + 2]);
        kept.push(
            push(&reg, repo, &format!("v{i}"), &img)
                .await
                .expect("push"),
        );
    }
    kept.extend(push_index(&reg, &shared).await);

    let mut landed: BTreeMap<Step, usize> = BTreeMap::new();
    let mut refused_after_crash = 0usize;
    let mut repushed_after_crash = 0usize;
    let mut last_refused: Option<(String, Built)> = None;
    let mut queue: Vec<(Target, usize)> = PLAN.iter().map(|t| (*t, 1)).collect();
    queue.reverse();
    let mut round = 0usize;
    while let Some((target, attempt)) = queue.pop() {
        round += 1;
        // 1. Fresh garbage, pushed with no collector running.
        let (garbage, deleted) = make_garbage(&reg, round, &shared, sizes).await;
        // Something kept in every round too.
        let img = build(&format!("kept round {round}"), 1, &shared[..1]);
        kept.push(
            push(&reg, KEEP_B, &format!("r{round}"), &img)
                .await
                .expect("push a kept image"),
        );

        // 2. Collect, and kill the server at the target.
        let old_runs: BTreeSet<String> = view
            .keys("_gc/")
            .await
            .iter()
            .map(|k| run_of(k).to_owned())
            .collect();
        reg.restart_with(&["--config", &config]).await;
        let aimed = kill_at(&mut reg, &view, &garbage, &old_runs, target).await;
        // Where it really landed: the store, now at rest.
        let after = Snap::take(&view, &garbage, &old_runs).await;
        let step = after.step(&garbage, true);
        *landed.entry(step).or_default() += 1;
        eprintln!(
            "round {round}: aimed at {target:?} (try {attempt}), killed at {aimed:?}, landed in {step:?}: \
             {} link and {} content markers of the killed run, {}/{} garbage links and {}/{} garbage blobs left",
            after.link_marks,
            after.content_marks,
            after.links_left,
            garbage.links.len(),
            after.content_left,
            garbage.content.len()
        );
        // (The step between links and content is a short listing: tried
        // once, not required.)
        if step != target.step && attempt < TRIES && target.step != Step::Between {
            queue.insert(0, (target, attempt + 1));
        }

        // 3. Nothing referenced is missing.
        assert_fsck_clean(&store, &format!("round {round}, after the kill"));
        reg.restart_with(&[]).await;
        assert_all_pull(&reg, &kept, &format!("round {round}, after the kill")).await;

        // 4. The store takes pushes: a new image sharing kept layers must
        // go in; an image the killed run may have doomed goes in or is
        // refused cleanly (its markers are honoured for MARKER_TTL).
        let img = build(&format!("after kill {round}"), 1, &shared[1..2]);
        kept.push(
            push(&reg, KEEP_A, &format!("k{round}"), &img)
                .await
                .expect("a push of new content after a crash"),
        );
        match push(&reg, &deleted.0, "again", &deleted.1).await {
            Ok(k) => {
                repushed_after_crash += 1;
                kept.push(k);
            }
            Err(why) => {
                refused_after_crash += 1;
                last_refused = Some(deleted);
                eprintln!("round {round}: re-push of a deleted image refused: {why}");
            }
        }
        assert_all_pull(&reg, &kept, &format!("round {round}, after pushes")).await;
    }
    eprintln!(
        "kills landed: {landed:?}; deleted images pushed again after a kill: {repushed_after_crash} accepted, {refused_after_crash} refused"
    );
    for step in [
        Step::Announced,
        Step::LinkMarks,
        Step::LinkSweep,
        Step::ContentMarks,
        Step::ContentSweep,
    ] {
        assert!(
            landed.get(&step).copied().unwrap_or(0) > 0,
            "no kill landed in {step:?} (landed: {landed:?}): the test did not test that step"
        );
    }
    assert!(
        landed.get(&Step::ContentSweep).copied().unwrap_or(0) >= 2,
        "fewer than two kills landed in the content sweep: {landed:?}"
    );

    // 5. One run to the end reclaims exactly what nothing references.
    reg.kill_hard();
    let before = view.keys("_gc/").await;
    let report = wharf_gc(&store);
    assert_eq!(
        report["stale_markers_removed"], 0,
        "markers younger than MARKER_TTL are kept: {report}"
    );
    let want_content: BTreeSet<String> = kept
        .iter()
        .flat_map(|k| {
            k.blobs
                .iter()
                .map(|d| content_key(d))
                .chain([content_key(&sha256(&k.manifest))])
        })
        .collect();
    let content = view.keys("blobs/").await;
    assert_eq!(
        content.difference(&want_content).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "unreferenced content left after an uninterrupted run ({report})"
    );
    assert_eq!(
        want_content.difference(&content).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "referenced content missing"
    );
    let repos = view.keys("repositories/").await;
    let links: BTreeSet<&String> = repos.iter().filter(|k| k.contains("/_blobs/")).collect();
    let want_links: BTreeSet<String> = kept
        .iter()
        .flat_map(|k| k.blobs.iter().map(|d| link_key(&k.repo, d)))
        .collect();
    assert_eq!(
        links,
        want_links.iter().collect(),
        "blob links after an uninterrupted run"
    );
    for k in &kept {
        let m = manifest_link_key(&k.repo, &sha256(&k.manifest));
        assert!(repos.contains(&m), "manifest link {m} missing");
    }
    // docs/gc.md: on S3, markers of dead runs are honoured for MARKER_TTL
    // and removed by the first run after that; the run leaves nothing of
    // its own, so exactly the killed runs' keys are left. A data directory
    // is one process's: opened again (by `wharf gc` here), it forgets what
    // a dead process's run left.
    let after = view.keys("_gc/").await;
    if reg.on_s3() {
        assert_eq!(after, before, "what a finished run leaves under _gc/");
    } else {
        assert!(
            after.is_empty(),
            "a dead process's markers are forgotten: {after:?} (before: {before:?})"
        );
    }
    assert_fsck_clean(&store, "after the final run");
    reg.restart_with(&[]).await;
    assert_all_pull(&reg, &kept, "after the final run").await;

    // 6. On the filesystem nothing of the killed runs is left to hold a
    // push back. (On S3 their markers hold it back until MARKER_TTL; they
    // cannot be aged by hand there.)
    if reg.on_s3() {
        eprintln!(
            "on S3 the markers cannot be aged; {} keys of killed runs left under _gc/ (removed after MARKER_TTL)",
            after.len()
        );
        return;
    }
    if let Some((repo, img)) = &last_refused {
        let k = push(&reg, repo, "after-restart", img).await.expect(
            "a push the killed runs' markers refused goes in once the directory is opened again",
        );
        assert_all_pull(&reg, &[k], "pushed again after the restart").await;
    }
}
