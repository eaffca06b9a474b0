//! Online garbage collection over any [`Backend`]: blob links no manifest
//! of their repository references, content no link names, and expired
//! upload sessions — while pushes and pulls go on, on any number of
//! replicas. The protocol and why it is safe: docs/gc.md.
//!
//! A run: (1) per repository, find its blob links that none of its
//! manifests reference and that are older than the grace period, mark
//! them, look again, delete those still unreferenced; spill every digest
//! still linked to disk; (2) walk the content and mark what no link names
//! and is older than the grace period; (3) walk the links again and delete
//! the marked content still unnamed. Memory does not grow with the store:
//! the live digests, a repository's references and its candidate links
//! are spilled to local disk and read back a shard (a 256th or a 16th) or
//! a line at a time; what grows is only retention's view of one
//! repository with a `[[retention]]` rule (its tags and manifest graph).

pub(crate) mod fence;
pub mod fsck;
pub mod keys;
pub mod retention;

use crate::backend::{Backend, KeyPages};
use crate::keys as rk;
use crate::registry::{Error, ImmutableTags, Registry};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use oci::manifest;
use oci::{Digest, RepoName};
use retention::RetentionRule;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

pub use fence::MARKER_TTL;

/// Keys listed per request.
const PAGE: usize = 1000;
/// Deleted items named in the report, at most.
const REPORT_ITEMS: usize = 1000;
/// [`GcOptions::concurrency`] by default.
pub const DEFAULT_CONCURRENCY: usize = 8;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Unreferenced links and content younger than this are kept: an
    /// upload's manifest may still be on its way.
    pub grace: Duration,
    /// Upload sessions idle for longer than this are removed.
    pub upload_expiry: Duration,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Where the live digests are spilled (default: the system's temp dir).
    pub spill_dir: Option<PathBuf>,
    /// Tags and untagged manifests to remove (`[[retention]]`); none by default.
    pub retention: Vec<RetentionRule>,
    /// How old a run's oldest content marker may grow before the run writes
    /// its markers again (an eighth of [`MARKER_TTL`]; tests shorten it).
    #[doc(hidden)]
    pub marker_refresh: Duration,
    /// Backend requests kept in flight by the steps that touch one object
    /// each (marks, second looks, deletes): on S3 a run's time is round
    /// trips. 1: one at a time.
    pub concurrency: usize,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            upload_expiry: Duration::from_secs(86_400),
            dry_run: false,
            spill_dir: None,
            retention: Vec::new(),
            marker_refresh: fence::MARKER_TTL / 8,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: u64,
    pub manifests: u64,
    /// Tags and manifests a retention rule removed (or would).
    pub tags_deleted: u64,
    pub manifests_deleted: u64,
    /// Referrer entries whose referrer is gone, deleted (or that would be).
    pub referrers_deleted: u64,
    /// Catalog entries of repositories holding nothing, deleted (or that would be).
    pub repositories_deleted: u64,
    /// The first of them, `repo:tag` and `repo@digest`.
    pub removed_by_retention: Vec<String>,
    /// Blob links deleted (or that would be).
    pub links_deleted: u64,
    /// Content objects deleted (or that would be), and their bytes.
    pub blobs_deleted: u64,
    pub bytes_reclaimed: u64,
    /// Candidates a writer referenced between the two looks: kept.
    pub kept_after_recheck: u64,
    pub uploads_expired: usize,
    /// Markers of dead collector runs removed.
    pub stale_markers_removed: u64,
    /// The first deleted items, `repo@digest` for links, digests for content.
    pub deleted: Vec<String>,
}

impl GcReport {
    fn note(&mut self, item: String) {
        if self.deleted.len() < REPORT_ITEMS {
            self.deleted.push(item);
        }
    }

    fn note_retention(&mut self, item: String) {
        if self.removed_by_retention.len() < REPORT_ITEMS {
            self.removed_by_retention.push(item);
        }
    }
}

/// Hooks for tests that inject races between the two looks.
#[doc(hidden)]
#[derive(Default)]
pub struct GcHooks {
    /// After a repository's retention markers are written, before its second look.
    pub after_retention_marks: Option<Hook>,
    /// After a repository's retention second look, before its deletes.
    pub after_retention_recheck: Option<Hook>,
    /// After an empty repository's second look, before its catalog entry goes.
    pub after_empty_recheck: Option<Hook>,
    /// After a repository's first look, before its link markers are written.
    pub before_link_marks: Option<Hook>,
    /// After a repository's link markers are written, before the second look.
    pub after_link_marks: Option<Hook>,
    /// After a repository's second look, before its links are deleted.
    pub after_link_recheck: Option<Hook>,
    /// After the content markers are written, before the second walk.
    pub after_content_marks: Option<Hook>,
    /// After the second walk of the links, before content is deleted.
    pub after_content_recheck: Option<Hook>,
}

#[doc(hidden)]
pub type Hook = Box<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// One collection run.
pub async fn collect(reg: &Registry, opts: &GcOptions) -> Result<GcReport, Error> {
    collect_with(reg, opts, &GcHooks::default()).await
}

#[doc(hidden)]
pub async fn collect_with(
    reg: &Registry,
    opts: &GcOptions,
    hooks: &GcHooks,
) -> Result<GcReport, Error> {
    let b = reg.backend().as_ref();
    let run = run_id();
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    report.stale_markers_removed = remove_stale_markers(b, opts.dry_run).await?;
    let active = format!("{}{run}", keys::ACTIVE_PREFIX);
    let mut fresh = Freshness::new(&run, opts);
    if !opts.dry_run {
        b.put(&active, Bytes::from(run.clone())).await?;
        // Writers that saw no collector rely on it for a moment: let that
        // pass before looking at anything (docs/gc.md).
        tokio::time::sleep(fence::COLLECTOR_START_DELAY).await;
    }
    let immutable = reg.immutable_tags();
    let result = run_phases(b, opts, immutable, hooks, &mut fresh, &mut report).await;
    if !opts.dry_run {
        b.delete(&active).await?;
    }
    result?;
    report.uploads_expired = if opts.dry_run {
        0
    } else {
        reg.expire_uploads(opts.upload_expiry).await?
    };
    Ok(report)
}

async fn run_phases(
    b: &dyn Backend,
    opts: &GcOptions,
    immutable: &[ImmutableTags],
    hooks: &GcHooks,
    fresh: &mut Freshness<'_>,
    report: &mut GcReport,
) -> Result<(), Error> {
    let run = fresh.run;
    // 1. Links, repository by repository.
    let mut live = Spill::new(opts.spill_dir.as_ref())?;
    let mut pages = KeyPages::new(b, rk::CATALOG_PREFIX, PAGE);
    while let Some(page) = pages.next().await? {
        for name in &page {
            let Ok(name) = RepoName::parse(name, usize::MAX) else {
                continue;
            };
            report.repositories += 1;
            fresh.keep(b).await?;
            let c = Collector {
                b,
                opts,
                hooks,
                run,
            };
            let excluded = match retention::rule_for(&opts.retention, &name) {
                Some(rule) => c.retain(&name, rule, immutable, report).await?,
                None => HashSet::new(),
            };
            collect_links(b, &name, &excluded, opts, hooks, run, &mut live, report).await?;
            crate::quota::after_gc(b, &name, opts.dry_run).await;
            c.prune_referrers(&name, report).await?;
            c.prune_if_empty(&name, report).await?;
        }
    }
    live.finish()?;

    // 2. Content that no link names: marked (or counted, in a dry run).
    // Per page of content keys: the live set is read in order here, the
    // looks and marks run `concurrency` at a time.
    let mut marked = 0u64;
    let mut shard = ShardCursor::new(&live);
    let mut pages = KeyPages::new(b, "blobs/", PAGE);
    while let Some(page) = pages.next().await? {
        let mut unnamed = Vec::new();
        for rel in &page {
            let Some(d) = content_digest(rel) else {
                continue;
            };
            if !shard.contains(&d)? {
                unnamed.push(d);
            }
        }
        if unnamed.is_empty() {
            continue;
        }
        fresh.keep(b).await?;
        let looks = unnamed.into_iter().map(|d| async move {
            let Some(meta) = b.head(&rk::blob(&d)).await? else {
                return Ok(None);
            };
            if !older_than(meta.modified, opts.grace) {
                return Ok(None);
            }
            if !opts.dry_run {
                b.put(&marker(&keys::content_markers(&d), run), Bytes::new())
                    .await?;
            }
            Ok::<_, io::Error>(Some((d, meta.size)))
        });
        let mut looks = stream::iter(looks).buffer_unordered(opts.concurrency.max(1));
        while let Some(look) = looks.next().await {
            let Some((d, size)) = look? else {
                continue;
            };
            if opts.dry_run {
                report.blobs_deleted += 1;
                report.bytes_reclaimed = report.bytes_reclaimed.saturating_add(size);
                report.note(d.to_string());
            } else {
                marked += 1;
            }
        }
    }
    if opts.dry_run || marked == 0 {
        return Ok(());
    }
    if let Some(hook) = &hooks.after_content_marks {
        hook().await;
    }

    // 3. The second look: every link again, then the marked content that
    // no link names now is deleted.
    let mut live = Spill::new(opts.spill_dir.as_ref())?;
    let mut pages = KeyPages::new(b, rk::CATALOG_PREFIX, PAGE);
    while let Some(page) = pages.next().await? {
        for name in &page {
            if let Ok(name) = RepoName::parse(name, usize::MAX) {
                fresh.keep(b).await?;
                spill_links(b, &name, &mut live).await?;
            }
        }
    }
    live.finish()?;
    // The second walk may have taken long.
    fresh.keep(b).await?;
    if let Some(hook) = &hooks.after_content_recheck {
        hook().await;
    }
    let mut shard = ShardCursor::new(&live);
    let mut pages = KeyPages::new(b, keys::CONTENT_MARKERS, PAGE);
    while let Some(page) = pages.next().await? {
        let mut mine = Vec::new();
        for rel in &page {
            // <alg>/<hex>/<run>
            let mut parts = rel.split('/');
            let (Some(alg), Some(hex), Some(r)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if r != run {
                continue;
            }
            let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() else {
                continue;
            };
            let named = shard.contains(&d)?;
            mine.push((d, format!("{}{rel}", keys::CONTENT_MARKERS), named));
        }
        fresh.keep(b).await?;
        // Taken after the markers were last written: each delete below
        // checks it again just before it is made.
        let since = fresh.since;
        let deletes = mine.into_iter().map(|(d, marker_key, named)| async move {
            let mut done = Swept::Kept;
            if !named && Collector::in_time(since) {
                let key = rk::blob(&d);
                done = Swept::Gone;
                if let Some(meta) = b.head(&key).await? {
                    // The head took a round trip: still in time?
                    done = Swept::Kept;
                    if Collector::in_time(since) {
                        b.delete(&key).await?;
                        done = Swept::Deleted(meta.size);
                    }
                }
            }
            b.delete(&marker_key).await?;
            Ok::<_, io::Error>((d, done))
        });
        let mut deletes = stream::iter(deletes).buffer_unordered(opts.concurrency.max(1));
        while let Some(done) = deletes.next().await {
            match done? {
                (d, Swept::Deleted(size)) => {
                    report.blobs_deleted += 1;
                    report.bytes_reclaimed = report.bytes_reclaimed.saturating_add(size);
                    report.note(d.to_string());
                }
                (_, Swept::Kept) => report.kept_after_recheck += 1,
                (_, Swept::Gone) => {}
            }
        }
    }
    Ok(())
}

/// What became of one marked object or link.
enum Swept {
    Deleted(u64),
    /// Named again, rewritten, or the run's markers too old to trust.
    Kept,
    /// Already gone.
    Gone,
}

/// How recently a run's active flag and content markers were written: a
/// writer honours them for [`MARKER_TTL`] from their write, so a run that
/// takes long writes them again before they age (docs/gc.md, "Crashes").
struct Freshness<'a> {
    run: &'a str,
    every: Duration,
    dry_run: bool,
    /// When the oldest write of any of them still standing began.
    since: Instant,
}

impl<'a> Freshness<'a> {
    /// Taken before the run writes anything.
    fn new(run: &'a str, opts: &GcOptions) -> Self {
        Freshness {
            run,
            every: opts.marker_refresh,
            dry_run: opts.dry_run,
            since: Instant::now(),
        }
    }

    /// Write this run's active flag and content markers again once the
    /// oldest is `every` old (an eighth of [`MARKER_TTL`]).
    async fn keep(&mut self, b: &dyn Backend) -> io::Result<()> {
        if self.dry_run || self.since.elapsed() < self.every {
            return Ok(());
        }
        let started = Instant::now();
        b.put(
            &format!("{}{}", keys::ACTIVE_PREFIX, self.run),
            Bytes::from(self.run.to_owned()),
        )
        .await?;
        let suffix = format!("/{}", self.run);
        let mut pages = KeyPages::new(b, keys::CONTENT_MARKERS, PAGE);
        while let Some(page) = pages.next().await? {
            for rel in page.iter().filter(|rel| rel.ends_with(&suffix)) {
                b.put(&format!("{}{rel}", keys::CONTENT_MARKERS), Bytes::new())
                    .await?;
            }
        }
        self.since = started;
        Ok(())
    }
}

/// What one run's steps share.
struct Collector<'a> {
    b: &'a dyn Backend,
    opts: &'a GcOptions,
    hooks: &'a GcHooks,
    run: &'a str,
}

impl Collector<'_> {
    /// May the run still delete on the strength of its markers? Well
    /// within their life, with room for clocks that differ. `marked_at`:
    /// taken before the first of the markers was written.
    fn in_time(marked_at: Instant) -> bool {
        marked_at.elapsed() < fence::MARKER_TTL / 4
    }

    /// Delete the referrer entries of `name` whose referrer manifest is no
    /// longer in it (deleted by a client or a crash between the two
    /// deletes), fenced like a manifest link: a push of the referrer
    /// meanwhile writes the entry again.
    async fn prune_referrers(&self, name: &RepoName, report: &mut GcReport) -> Result<(), Error> {
        let b = self.b;
        let prefix = format!("repositories/{name}/_referrers/");
        let mut candidates = Vec::new();
        let mut pages = KeyPages::new(b, &prefix, PAGE);
        while let Some(page) = pages.next().await? {
            for rel in page {
                // <alg>/<subject hex>/<alg>-<referrer hex>
                let referrer = rel
                    .rsplit('/')
                    .next()
                    .and_then(|f| f.split_once('-'))
                    .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok());
                let Some(d) = referrer else {
                    continue;
                };
                if b.head(&rk::repo_manifest(name, &d)).await?.is_none() {
                    candidates.push((format!("{prefix}{rel}"), d));
                }
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        if self.opts.dry_run {
            report.referrers_deleted += candidates.len() as u64;
            return Ok(());
        }
        let markers: Vec<String> = candidates
            .iter()
            .map(|(_, d)| marker(&keys::link_markers(name, d), self.run))
            .collect();
        let marked_at = Instant::now();
        for key in &markers {
            b.put(key, Bytes::new()).await?;
        }
        for (entry, d) in &candidates {
            if b.head(&rk::repo_manifest(name, d)).await?.is_none() && Self::in_time(marked_at) {
                if b.delete(entry).await? {
                    report.referrers_deleted += 1;
                }
            } else {
                report.kept_after_recheck += 1;
            }
        }
        for key in &markers {
            b.delete(key).await?;
        }
        Ok(())
    }

    /// Delete the catalog entry of `name` if the repository holds nothing:
    /// no tag, manifest, blob link or referrer entry. Fenced: a writer
    /// writes the entry before anything into the repository and, if a
    /// collector is at work, waits out its marker and writes the entry
    /// again if it was taken.
    async fn prune_if_empty(&self, name: &RepoName, report: &mut GcReport) -> Result<(), Error> {
        let b = self.b;
        let empty = || async move {
            for dir in ["_tags", "_manifests", "_blobs", "_referrers"] {
                let prefix = format!("repositories/{name}/{dir}/");
                if !b.list(&prefix, None, 1).await?.is_empty() {
                    return Ok::<_, io::Error>(false);
                }
            }
            Ok(true)
        };
        if !empty().await? {
            return Ok(());
        }
        if self.opts.dry_run {
            report.repositories_deleted += 1;
            return Ok(());
        }
        let key = marker(&keys::repo_markers(name), self.run);
        let marked_at = Instant::now();
        b.put(&key, Bytes::new()).await?;
        let still_empty = empty().await?;
        if let Some(hook) = &self.hooks.after_empty_recheck {
            hook().await;
        }
        // Quickly or not at all: writers wait this long at most (fence).
        if still_empty && marked_at.elapsed() < fence::EMPTY_REPO_BUDGET {
            b.delete(&rk::catalog(name)).await?;
            report.repositories_deleted += 1;
        } else {
            report.kept_after_recheck += 1;
        }
        b.delete(&key).await?;
        Ok(())
    }

    /// Apply `rule` to `name`: mark what it removes, look again, delete
    /// what the second look still removes (tags first, then manifests,
    /// indexes before their children). Returns, in a dry run, the
    /// manifests that would go (so that what only they reference counts as
    /// garbage in the report).
    async fn retain(
        &self,
        name: &RepoName,
        rule: &RetentionRule,
        immutable: &[ImmutableTags],
        report: &mut GcReport,
    ) -> Result<HashSet<Digest>, Error> {
        let b = self.b;
        let first = retention::plan(b, name, rule, immutable, self.opts.grace).await?;
        if first.is_empty() {
            return Ok(HashSet::new());
        }
        if self.opts.dry_run {
            for t in &first.tags {
                report.tags_deleted += 1;
                report.note_retention(format!("{name}:{}", t.tag));
            }
            for m in &first.manifests {
                report.manifests_deleted += 1;
                report.note_retention(format!("{name}@{}", m.digest));
            }
            return Ok(first.manifest_digests());
        }
        let mut markers = Vec::new();
        for t in &first.tags {
            markers.push(marker(&keys::tag_markers(name, &t.tag), self.run));
        }
        for m in &first.manifests {
            markers.push(marker(&keys::link_markers(name, &m.digest), self.run));
        }
        let marked_at = Instant::now();
        for key in &markers {
            b.put(key, Bytes::new()).await?;
        }
        if let Some(hook) = &self.hooks.after_retention_marks {
            hook().await;
        }
        // The second look: a tag pushed again, a manifest pushed again or
        // newly named by a tag, an index or as a subject, is kept.
        let second = retention::plan(b, name, rule, immutable, self.opts.grace).await?;
        if let Some(hook) = &self.hooks.after_retention_recheck {
            hook().await;
        }
        let in_time = || Self::in_time(marked_at);
        let tags = rk::tags_prefix(name);
        for t in &first.tags {
            if second.tags.contains(t) && in_time() {
                b.delete(&format!("{tags}{}", t.tag)).await?;
                report.tags_deleted += 1;
                report.note_retention(format!("{name}:{}", t.tag));
            } else {
                report.kept_after_recheck += 1;
            }
        }
        for m in &first.manifests {
            if second.manifests.contains(m) && in_time() {
                if let Some(s) = &m.subject {
                    b.delete(&rk::referrer(name, s, &m.digest)).await?;
                }
                b.delete(&rk::repo_manifest(name, &m.digest)).await?;
                report.manifests_deleted += 1;
                report.note_retention(format!("{name}@{}", m.digest));
            } else {
                report.kept_after_recheck += 1;
            }
        }
        for key in &markers {
            b.delete(key).await?;
        }
        Ok(HashSet::new())
    }
}

/// Phase 1 for one repository. What it holds does not grow with the
/// repository: its references and its candidate links are spilled to disk
/// (`opts.spill_dir`) and read back a shard or a line at a time.
#[allow(clippy::too_many_arguments)]
async fn collect_links(
    b: &dyn Backend,
    name: &RepoName,
    excluded: &HashSet<Digest>,
    opts: &GcOptions,
    hooks: &GcHooks,
    run: &str,
    live: &mut Spill,
    report: &mut GcReport,
) -> Result<(), Error> {
    // What the manifests name counts as live even without a link (it
    // should have one): never delete on an inconsistency.
    let mut refs = Spill::narrow(opts.spill_dir.as_ref())?;
    report.manifests += referenced(b, name, excluded, &mut refs, live).await?;
    refs.finish()?;
    let mut in_refs = ShardCursor::new(&refs);
    let mut candidates = Candidates::new(opts.spill_dir.as_ref())?;
    let prefix = format!("repositories/{name}/_blobs/");
    let mut pages = KeyPages::new(b, &prefix, PAGE);
    while let Some(page) = pages.next().await? {
        for rel in &page {
            let Some(d) = link_digest(rel) else {
                continue;
            };
            if in_refs.contains(&d)? {
                live.add(&d)?;
                continue;
            }
            let modified = b
                .head(&rk::repo_blob(name, &d))
                .await?
                .and_then(|m| m.modified);
            if older_than(modified, opts.grace) {
                candidates.add(&d, modified)?;
            } else {
                live.add(&d)?;
            }
        }
    }
    drop(in_refs);
    candidates.finish()?;
    if candidates.count == 0 {
        return Ok(());
    }
    if opts.dry_run {
        for c in candidates.read()? {
            let (d, _) = c?;
            report.links_deleted += 1;
            report.note(format!("{name}@{d}"));
        }
        return Ok(());
    }
    if let Some(hook) = &hooks.before_link_marks {
        hook().await;
    }
    let marked_at = Instant::now();
    let marks = candidates.read()?.map(|c| async move {
        let (d, _) = c?;
        b.put(&marker(&keys::link_markers(name, &d), run), Bytes::new())
            .await
    });
    let mut marks = stream::iter(marks).buffer_unordered(opts.concurrency.max(1));
    while let Some(mark) = marks.next().await {
        mark?;
    }
    drop(marks);
    if let Some(hook) = &hooks.after_link_marks {
        hook().await;
    }
    // The second look: a manifest pushed meanwhile keeps its links.
    let mut refs = Spill::narrow(opts.spill_dir.as_ref())?;
    referenced(b, name, excluded, &mut refs, live).await?;
    refs.finish()?;
    if let Some(hook) = &hooks.after_link_recheck {
        hook().await;
    }
    let mut in_refs = ShardCursor::new(&refs);
    // The references are read in listing order here; the looks and
    // deletes run `concurrency` at a time.
    let mut looked = Vec::new();
    for c in candidates.read()? {
        let (d, first_seen) = c?;
        let named = in_refs.contains(&d)?;
        looked.push((d, first_seen, named));
        if looked.len() == PAGE {
            sweep_links(b, name, run, opts, marked_at, &mut looked, live, report).await?;
        }
    }
    sweep_links(b, name, run, opts, marked_at, &mut looked, live, report).await?;
    Ok(())
}

/// The end of phase 1 for a batch of a repository's marked links (each
/// with its time at the first look and whether the second look found it
/// referenced): delete those neither referenced nor written again, while
/// the run is in time; count and spill the rest; delete the markers.
#[allow(clippy::too_many_arguments)]
async fn sweep_links(
    b: &dyn Backend,
    name: &RepoName,
    run: &str,
    opts: &GcOptions,
    marked_at: Instant,
    batch: &mut Vec<(Digest, Option<SystemTime>, bool)>,
    live: &mut Spill,
    report: &mut GcReport,
) -> Result<(), Error> {
    let deletes = batch.drain(..).map(|(d, first_seen, named)| async move {
        let mut done = Swept::Kept;
        if !named {
            // Written again since the first look (an upload or mount of
            // the blob): it starts a new grace period.
            let rewritten = b
                .head(&rk::repo_blob(name, &d))
                .await?
                .is_some_and(|m| m.modified != first_seen);
            if !rewritten && Collector::in_time(marked_at) {
                b.delete(&rk::repo_blob(name, &d)).await?;
                done = Swept::Deleted(0);
            }
        }
        b.delete(&marker(&keys::link_markers(name, &d), run))
            .await?;
        Ok::<_, io::Error>((d, done))
    });
    let mut deletes = stream::iter(deletes).buffer_unordered(opts.concurrency.max(1));
    while let Some(done) = deletes.next().await {
        match done? {
            (d, Swept::Deleted(_)) => {
                report.links_deleted += 1;
                report.note(format!("{name}@{d}"));
            }
            (d, _) => {
                report.kept_after_recheck += 1;
                live.add(&d)?;
            }
        }
    }
    Ok(())
}

/// The manifests linked in `name` (but those in `excluded`: a dry run's
/// retention): each of them and every digest they reference go to `live`,
/// the references also to `refs`. Returns how many manifests there are.
async fn referenced(
    b: &dyn Backend,
    name: &RepoName,
    excluded: &HashSet<Digest>,
    refs: &mut Spill,
    live: &mut Spill,
) -> io::Result<u64> {
    let prefix = format!("repositories/{name}/_manifests/");
    let mut manifests = 0u64;
    let mut pages = KeyPages::new(b, &prefix, PAGE);
    while let Some(page) = pages.next().await? {
        for rel in &page {
            let Some(d) = link_digest(rel) else {
                continue;
            };
            if excluded.contains(&d) {
                continue;
            }
            if let Some(body) = b.read(&rk::blob(&d)).await?
                && let Ok(m) = manifest::parse(None, &body)
            {
                for desc in m.config.iter().chain(&m.layers).chain(&m.manifests) {
                    refs.add(&desc.digest)?;
                    live.add(&desc.digest)?;
                }
            }
            live.add(&d)?;
            manifests += 1;
        }
    }
    Ok(manifests)
}

/// Every digest linked in `name` (blob links and manifest links) to `live`.
async fn spill_links(b: &dyn Backend, name: &RepoName, live: &mut Spill) -> io::Result<()> {
    for dir in ["_blobs", "_manifests"] {
        let prefix = format!("repositories/{name}/{dir}/");
        let mut pages = KeyPages::new(b, &prefix, PAGE);
        while let Some(page) = pages.next().await? {
            for rel in &page {
                if let Some(d) = link_digest(rel) {
                    live.add(&d)?;
                }
            }
        }
    }
    Ok(())
}

/// Remove markers (and active flags) of collector runs that died: older
/// than [`MARKER_TTL`], writers ignore them already.
async fn remove_stale_markers(b: &dyn Backend, dry_run: bool) -> io::Result<u64> {
    let mut removed = 0;
    for prefix in [
        keys::ACTIVE_PREFIX,
        keys::CONTENT_MARKERS,
        keys::LINK_MARKERS,
        keys::TAG_MARKERS,
        keys::REPO_MARKERS,
    ] {
        let mut pages = KeyPages::new(b, prefix, PAGE);
        while let Some(page) = pages.next().await? {
            for rel in &page {
                let key = format!("{prefix}{rel}");
                let stale = b
                    .head(&key)
                    .await?
                    .is_some_and(|m| older_than(m.modified, fence::MARKER_TTL));
                if stale {
                    if !dry_run {
                        b.delete(&key).await?;
                    }
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// Remove every collector flag and marker: for a store only this process
/// may use (a filesystem data directory, locked while open), whatever a
/// collector left there belongs to a process that is gone, and would only
/// make writers of its candidates fail until the markers age out.
pub async fn forget_dead_runs(b: &dyn Backend) -> io::Result<u64> {
    let mut removed = 0;
    let mut pages = KeyPages::new(b, "_gc/", PAGE);
    while let Some(page) = pages.next().await? {
        for rel in page {
            if b.delete(&format!("_gc/{rel}")).await? {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn marker(prefix: &str, run: &str) -> String {
    format!("{prefix}{run}")
}

fn run_id() -> String {
    let b: [u8; 8] = rand::random();
    hex::encode(b)
}

fn older_than(modified: Option<SystemTime>, age: Duration) -> bool {
    // Without a time, an object counts as new: never deleted on a guess.
    modified.is_some_and(|m| SystemTime::now().duration_since(m).is_ok_and(|a| a >= age))
}

/// `<alg>/<hex>` (a link key below `_blobs/` or `_manifests/`).
fn link_digest(rel: &str) -> Option<Digest> {
    let (alg, hex) = rel.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// `<alg>/<2 hex>/<hex>` (a content key below `blobs/`).
fn content_digest(rel: &str) -> Option<Digest> {
    let mut parts = rel.split('/');
    let (alg, dir, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !hex.starts_with(dir) {
        return None;
    }
    format!("{alg}:{hex}").parse().ok()
}

/// A set of digests on local disk, one file per algorithm and first hex
/// digits (two for the store's live set: a 256th of it in memory at a
/// time; one for a repository's references, to keep open files few).
struct Spill {
    dir: tempfile::TempDir,
    /// Hex digits that name a shard.
    width: usize,
    writers: BTreeMap<String, BufWriter<std::fs::File>>,
}

fn spill_dir(base: Option<&PathBuf>) -> io::Result<tempfile::TempDir> {
    match base {
        Some(b) => tempfile::Builder::new().prefix("wharf-gc-").tempdir_in(b),
        None => tempfile::Builder::new().prefix("wharf-gc-").tempdir(),
    }
}

impl Spill {
    fn new(base: Option<&PathBuf>) -> io::Result<Spill> {
        Ok(Spill {
            dir: spill_dir(base)?,
            width: 2,
            writers: BTreeMap::new(),
        })
    }

    /// Sixteen shards.
    fn narrow(base: Option<&PathBuf>) -> io::Result<Spill> {
        Ok(Spill {
            width: 1,
            ..Spill::new(base)?
        })
    }

    fn shard_of(&self, d: &Digest) -> String {
        let hex = d.hex();
        format!("{}-{}", d.algorithm(), &hex[..self.width.min(hex.len())])
    }

    fn add(&mut self, d: &Digest) -> io::Result<()> {
        let shard = self.shard_of(d);
        let w = match self.writers.get_mut(&shard) {
            Some(w) => w,
            None => {
                let f = std::fs::File::create(self.dir.path().join(&shard))?;
                self.writers.entry(shard).or_insert(BufWriter::new(f))
            }
        };
        writeln!(w, "{}", d.hex())
    }

    fn finish(&mut self) -> io::Result<()> {
        for w in self.writers.values_mut() {
            w.flush()?;
        }
        self.writers.clear();
        Ok(())
    }

    fn load(&self, shard: &str) -> io::Result<HashSet<String>> {
        match std::fs::File::open(self.dir.path().join(shard)) {
            Ok(f) => std::io::BufReader::new(f).lines().collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(e),
        }
    }
}

/// Membership tests in key order, loading each shard once.
struct ShardCursor<'a> {
    spill: &'a Spill,
    shard: String,
    set: HashSet<String>,
}

impl<'a> ShardCursor<'a> {
    fn new(spill: &'a Spill) -> Self {
        ShardCursor {
            spill,
            shard: String::new(),
            set: HashSet::new(),
        }
    }

    fn contains(&mut self, d: &Digest) -> io::Result<bool> {
        let shard = self.spill.shard_of(d);
        if shard != self.shard {
            self.set = self.spill.load(&shard)?;
            self.shard = shard;
        }
        Ok(self.set.contains(d.hex()))
    }
}

/// A repository's candidate links on local disk, in listing order: the
/// digest and the link's modification time at the first look
/// (`<digest> <nanoseconds since 1970>`, or `-` without a time).
struct Candidates {
    file: tempfile::NamedTempFile,
    writer: Option<BufWriter<std::fs::File>>,
    count: u64,
}

impl Candidates {
    fn new(base: Option<&PathBuf>) -> io::Result<Candidates> {
        let file = match base {
            Some(b) => tempfile::Builder::new()
                .prefix("wharf-gc-")
                .tempfile_in(b)?,
            None => tempfile::Builder::new().prefix("wharf-gc-").tempfile()?,
        };
        let writer = Some(BufWriter::new(file.reopen()?));
        Ok(Candidates {
            file,
            writer,
            count: 0,
        })
    }

    fn add(&mut self, d: &Digest, modified: Option<SystemTime>) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Err(io::Error::other("gc: candidates added after finish"));
        };
        let nanos = modified.and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok());
        match nanos {
            Some(n) => writeln!(w, "{d} {}", n.as_nanos())?,
            None => writeln!(w, "{d} -")?,
        }
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(())
    }

    fn read(&self) -> io::Result<impl Iterator<Item = io::Result<(Digest, Option<SystemTime>)>>> {
        let lines = std::io::BufReader::new(self.file.reopen()?).lines();
        Ok(lines.map(|line| {
            let line = line?;
            let bad = || io::Error::other(format!("gc: a corrupt candidate line: {line:?}"));
            let (d, t) = line.split_once(' ').ok_or_else(bad)?;
            let d: Digest = d.parse().map_err(|_| bad())?;
            let t = match t {
                "-" => None,
                n => {
                    let n: u128 = n.parse().map_err(|_| bad())?;
                    let secs = u64::try_from(n / 1_000_000_000).map_err(|_| bad())?;
                    let sub = u32::try_from(n % 1_000_000_000).map_err(|_| bad())?;
                    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, sub))
                }
            };
            Ok((d, t))
        }))
    }
}

#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
