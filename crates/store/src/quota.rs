//! Quotas: a byte limit per repository pattern, and the usage records that
//! keep checking it cheap with any number of replicas (docs/quotas.md).
//!
//! Usage of a repository: the sizes of the distinct blobs linked in it plus
//! the sizes of its manifests. It is kept, per repository, as
//!
//! - **snapshots** `_usage/<repo>/_/s-<walk ms>-<bytes>-<blobs>-<manifests>`,
//!   written by a recount (a walk of the repository's links) and named
//!   after the moment its walk began, and
//! - **deltas** `_usage/<repo>/_/d-<ms>-<size>-<b|m>-<alg>-<hex>`, one per
//!   link a writer *created*, written right after the link.
//!
//! Both are empty objects written once: everything is in the name, so the
//! usage of a whole namespace is one prefix listing (a page per 1000
//! records). A repository's usage is its newest snapshot plus its distinct
//! deltas not older than that snapshot's walk by more than
//! [`CLOCK_MARGIN`]. A recount deletes the deltas and snapshots its own
//! snapshot makes redundant. Why this needs no compare-and-swap: see
//! docs/quotas.md.
//!
//! Within a process, what a binding check admitted counts until a listing
//! shows its delta, so one replica never admits past a limit; across
//! replicas, pushes checked before one another's deltas exist may pass it
//! together (docs/quotas.md, "How exact it is").

use crate::backend::{Backend, KeyPages};
use crate::keys;
use crate::registry::Error;
use bytes::Bytes;
use dashmap::DashSet;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use oci::pattern::Pattern;
use oci::{Digest, ErrorCode, RegistryError, RepoName};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Where usage records live; `_` keeps them apart from every repository.
pub const USAGE_PREFIX: &str = "_usage/";

/// Deltas written up to this long before a recount's walk began still
/// count on top of its snapshot (which leaves out the links they record);
/// older ones are taken as counted by the walk and deleted. That needs the
/// clocks of the hosts that push and recount to agree within it.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(60);

/// A repository that is pushed to while it has more deltas than this
/// counting on top of its snapshot is recounted in the background, so that
/// reading a namespace's usage stays one page of listing or a few.
pub const FOLD_AFTER: usize = 500;

/// Keys listed per request.
const PAGE: usize = 1000;
/// Content sizes asked for at once during a recount.
const SIZES_IN_FLIGHT: usize = 16;

/// One `[[quotas]]` rule: the repositories matching `repos` may hold
/// `max_bytes` together.
#[derive(Clone, Debug)]
pub struct Quota {
    /// How messages name the rule: `quotas #1`.
    pub name: String,
    /// The patterns as written, for messages.
    pub patterns: Vec<String>,
    pub repos: Vec<Pattern>,
    pub max_bytes: u64,
}

impl Quota {
    pub fn covers(&self, repo: &str) -> bool {
        self.repos.iter().any(|p| p.matches(repo))
    }

    /// The records of every repository this rule can cover lie below this
    /// key prefix: the directories its patterns share before any `*`.
    fn records_prefix(&self) -> String {
        let literal = |p: &String| p.find('*').map_or(p.as_str(), |i| &p[..i]).to_owned();
        let mut common: Option<String> = None;
        for p in &self.patterns {
            let lit = literal(p);
            common = Some(match common {
                None => lit,
                Some(c) => c
                    .chars()
                    .zip(lit.chars())
                    .take_while(|(a, b)| a == b)
                    .map(|(a, _)| a)
                    .collect(),
            });
        }
        let common = common.unwrap_or_default();
        // Whole directories only: `team-` of `team-*/**` lists `_usage/`.
        let dir = common.rfind('/').map_or("", |i| &common[..=i]);
        format!("{USAGE_PREFIX}{dir}")
    }
}

/// What a link is: counted separately (a digest may be both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Blob,
    Manifest,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Blob => 'b',
            Kind::Manifest => 'm',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Delta {
    at_ms: u64,
    size: u64,
    kind: Kind,
    /// `<alg>-<hex>`.
    digest: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snapshot {
    walk_ms: u64,
    bytes: u64,
    blobs: u64,
    manifests: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    Delta(Delta),
    Snapshot(Snapshot),
}

impl Record {
    fn name(&self) -> String {
        match self {
            Record::Delta(d) => format!(
                "d-{:016}-{}-{}-{}",
                d.at_ms,
                d.size,
                d.kind.letter(),
                d.digest
            ),
            Record::Snapshot(s) => format!(
                "s-{:016}-{}-{}-{}",
                s.walk_ms, s.bytes, s.blobs, s.manifests
            ),
        }
    }

    /// `None` for anything that is not a record of this format.
    fn parse(name: &str) -> Option<Record> {
        let mut parts = name.split('-');
        let what = parts.next()?;
        let n = |p: Option<&str>| p.and_then(|s| s.parse::<u64>().ok());
        let record = match what {
            "d" => {
                let at_ms = n(parts.next())?;
                let size = n(parts.next())?;
                let kind = match parts.next()? {
                    "b" => Kind::Blob,
                    "m" => Kind::Manifest,
                    _ => return None,
                };
                let (alg, hex) = (parts.next()?, parts.next()?);
                format!("{alg}:{hex}").parse::<Digest>().ok()?;
                Record::Delta(Delta {
                    at_ms,
                    size,
                    kind,
                    digest: format!("{alg}-{hex}"),
                })
            }
            "s" => Record::Snapshot(Snapshot {
                walk_ms: n(parts.next())?,
                bytes: n(parts.next())?,
                blobs: n(parts.next())?,
                manifests: n(parts.next())?,
            }),
            _ => return None,
        };
        parts.next().is_none().then_some(record)
    }
}

/// `_usage/<repo>/_/`: the `_` component ends the name (no component of a
/// repository name starts with `_`), so one repository's records never
/// list under another's.
fn records_of(name: &RepoName) -> String {
    format!("{USAGE_PREFIX}{name}/_/")
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn margin_ms() -> u64 {
    u64::try_from(CLOCK_MARGIN.as_millis()).unwrap_or(u64::MAX)
}

/// The records of one repository, as a listing found them.
#[derive(Clone, Debug, Default)]
struct Records {
    snapshot: Option<Snapshot>,
    deltas: Vec<Delta>,
    /// The names of the deltas listed.
    names: HashSet<String>,
}

impl Records {
    fn add(&mut self, name: &str, r: Record) {
        match r {
            Record::Delta(d) => {
                self.names.insert(name.to_owned());
                self.deltas.push(d);
            }
            // The newest walk wins (the larger count on a tie).
            Record::Snapshot(s) => {
                if self
                    .snapshot
                    .is_none_or(|c| (s.walk_ms, s.bytes) > (c.walk_ms, c.bytes))
                {
                    self.snapshot = Some(s);
                }
            }
        }
    }

    /// The deltas that count on top of the snapshot, one per link.
    fn fresh(&self) -> Vec<&Delta> {
        let cutoff = self
            .snapshot
            .map_or(0, |s| s.walk_ms.saturating_sub(margin_ms()));
        let mut seen = HashSet::new();
        self.deltas
            .iter()
            .filter(|d| d.at_ms >= cutoff && seen.insert((d.kind, d.digest.as_str())))
            .collect()
    }

    fn usage(&self) -> Usage {
        let mut u = Usage {
            counted: self.snapshot.is_some(),
            recounted_at_ms: self.snapshot.map(|s| s.walk_ms),
            ..Usage::default()
        };
        if let Some(s) = self.snapshot {
            (u.bytes, u.blobs, u.manifests) = (s.bytes, s.blobs, s.manifests);
        }
        for d in self.fresh() {
            u.bytes = u.bytes.saturating_add(d.size);
            u.pending += 1;
            match d.kind {
                Kind::Blob => u.blobs += 1,
                Kind::Manifest => u.manifests += 1,
            }
        }
        u
    }
}

/// A repository's usage as its records give it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    /// Links counted since the last recount (deltas).
    pub pending: u64,
    /// Whether a recount ever counted the repository (else only the links
    /// created since quotas covered it are in `bytes`).
    pub counted: bool,
    /// When the walk of the last recount began (ms since the epoch).
    pub recounted_at_ms: Option<u64>,
}

/// Every repository's records below `prefix` (a `_usage/...` directory).
async fn read_records(b: &dyn Backend, prefix: &str) -> io::Result<BTreeMap<String, Records>> {
    let mut out: BTreeMap<String, Records> = BTreeMap::new();
    let mut pages = KeyPages::new(b, prefix, PAGE);
    while let Some(page) = pages.next().await? {
        for rel in page {
            let full = format!("{prefix}{rel}");
            let Some(key) = full.strip_prefix(USAGE_PREFIX) else {
                continue;
            };
            let Some((repo, record)) = key.rsplit_once("/_/") else {
                continue;
            };
            if let Some(r) = Record::parse(record) {
                out.entry(repo.to_owned()).or_default().add(record, r);
            }
        }
    }
    Ok(out)
}

/// The usage records say every repository has (those with records).
pub async fn read_all(b: &dyn Backend) -> io::Result<BTreeMap<String, Usage>> {
    Ok(read_records(b, USAGE_PREFIX)
        .await?
        .into_iter()
        .map(|(name, r)| (name, r.usage()))
        .collect())
}

/// What a walk of a repository's links found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepoCount {
    pub bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    /// Blob links whose content is gone (counted as nothing).
    pub missing: u64,
}

/// `<alg>/<hex>` below `_blobs/` or `_manifests/`.
fn link_digest(rel: &str) -> Option<Digest> {
    let (alg, hex) = rel.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// A link, as records and walks name it: its kind and `<alg>-<hex>`.
type LinkId = (Kind, String);

fn link_id(kind: Kind, d: &Digest) -> LinkId {
    (kind, format!("{}-{}", d.algorithm(), d.hex()))
}

/// Walk `name`'s links and add up their sizes; writes nothing.
pub async fn count(b: &dyn Backend, name: &RepoName) -> io::Result<RepoCount> {
    Ok(walk(b, name, &HashSet::new()).await?.0)
}

/// Walk `name`'s links and add up their sizes, noting which of `watch`
/// the walk saw.
async fn walk(
    b: &dyn Backend,
    name: &RepoName,
    watch: &HashSet<LinkId>,
) -> io::Result<(RepoCount, HashSet<LinkId>)> {
    let mut c = RepoCount::default();
    let mut seen = HashSet::new();
    let mut note = |id: LinkId| {
        if watch.contains(&id) {
            seen.insert(id);
        }
    };
    let prefix = format!("repositories/{name}/_blobs/");
    let mut pages = KeyPages::new(b, &prefix, PAGE);
    while let Some(page) = pages.next().await? {
        let digests: Vec<Digest> = page.iter().filter_map(|rel| link_digest(rel)).collect();
        // Boxed with an explicit `Send` (as in `Registry::check_references`).
        let heads: Vec<BoxFuture<'_, io::Result<Option<u64>>>> = digests
            .iter()
            .map(|d| {
                Box::pin(async move { Ok(b.head(&keys::blob(d)).await?.map(|m| m.size)) })
                    as BoxFuture<'_, _>
            })
            .collect();
        let sizes: Vec<_> = futures_util::stream::iter(heads)
            .buffered(SIZES_IN_FLIGHT)
            .collect()
            .await;
        for (d, size) in digests.iter().zip(sizes) {
            match size? {
                Some(n) => {
                    c.blobs += 1;
                    c.bytes = c.bytes.saturating_add(n);
                    note(link_id(Kind::Blob, d));
                }
                None => c.missing += 1,
            }
        }
    }
    let prefix = format!("repositories/{name}/_manifests/");
    let mut pages = KeyPages::new(b, &prefix, PAGE);
    while let Some(page) = pages.next().await? {
        let digests: Vec<Digest> = page.iter().filter_map(|rel| link_digest(rel)).collect();
        let reads: Vec<BoxFuture<'_, io::Result<Option<u64>>>> = digests
            .iter()
            .map(|d| Box::pin(manifest_size(b, name, d.clone())) as BoxFuture<'_, _>)
            .collect();
        let sizes: Vec<_> = futures_util::stream::iter(reads)
            .buffered(SIZES_IN_FLIGHT)
            .collect()
            .await;
        for (d, size) in digests.iter().zip(sizes) {
            if let Some(n) = size? {
                c.manifests += 1;
                c.bytes = c.bytes.saturating_add(n);
                note(link_id(Kind::Manifest, d));
            }
        }
    }
    Ok((c, seen))
}

/// A manifest link's size (it holds `{"mediaType", "size"}`), else its
/// content's; `None` when the link went away meanwhile.
async fn manifest_size(b: &dyn Backend, name: &RepoName, d: Digest) -> io::Result<Option<u64>> {
    let Some(raw) = b.read(&keys::repo_manifest(name, &d)).await? else {
        return Ok(None);
    };
    let from_link = serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v.get("size").and_then(|s| s.as_u64()));
    match from_link {
        Some(n) => Ok(Some(n)),
        None => Ok(Some(b.head(&keys::blob(&d)).await?.map_or(0, |m| m.size))),
    }
}

/// Count `name` and write the count as its snapshot, then remove the
/// records it makes redundant (docs/quotas.md):
///
/// 1. note the time; deltas from [`CLOCK_MARGIN`] before it on ("fresh")
///    count on top of the snapshot, older ones do not;
/// 2. list the records: the fresh deltas, one per link;
/// 3. walk the links; a fresh delta whose link the walk saw is left out
///    of the snapshot (it counts through the delta), one whose link the
///    walk did not see is of a link deleted since: it goes;
/// 4. write the snapshot, then delete older snapshots, deltas older than
///    the margin and the fresh deltas of deleted links.
pub async fn recount(b: &dyn Backend, name: &RepoName) -> io::Result<RepoCount> {
    let walk_ms = ms(SystemTime::now());
    let cutoff = walk_ms.saturating_sub(margin_ms());
    let prefix = records_of(name);
    let mut fresh: BTreeMap<LinkId, (u64, Vec<String>)> = BTreeMap::new();
    let mut stale = Vec::new();
    let mut pages = KeyPages::new(b, &prefix, PAGE);
    while let Some(page) = pages.next().await? {
        for rel in page {
            match Record::parse(&rel) {
                Some(Record::Delta(d)) if d.at_ms >= cutoff => {
                    let entry = fresh
                        .entry((d.kind, d.digest))
                        .or_insert((d.size, Vec::new()));
                    entry.1.push(rel);
                }
                Some(Record::Delta(_)) => stale.push(rel),
                Some(Record::Snapshot(s)) if s.walk_ms < walk_ms => stale.push(rel),
                _ => {}
            }
        }
    }
    let watch: HashSet<LinkId> = fresh.keys().cloned().collect();
    let (c, seen) = walk(b, name, &watch).await?;
    let mut snapshot = Snapshot {
        walk_ms,
        bytes: c.bytes,
        blobs: c.blobs,
        manifests: c.manifests,
    };
    for (id, (size, names)) in fresh {
        if seen.contains(&id) {
            snapshot.bytes = snapshot.bytes.saturating_sub(size);
            match id.0 {
                Kind::Blob => snapshot.blobs = snapshot.blobs.saturating_sub(1),
                Kind::Manifest => snapshot.manifests = snapshot.manifests.saturating_sub(1),
            }
        } else {
            stale.extend(names);
        }
    }
    let own = Record::Snapshot(snapshot).name();
    b.put(&format!("{prefix}{own}"), Bytes::new()).await?;
    for rel in stale {
        b.delete(&format!("{prefix}{rel}")).await?;
    }
    Ok(c)
}

/// Has `name` any usage record (is its usage kept)?
pub async fn tracked(b: &dyn Backend, name: &RepoName) -> io::Result<bool> {
    Ok(!b.list(&records_of(name), None, 1).await?.is_empty())
}

/// After garbage collection walked `name`: recount it if its usage is kept
/// (so what the collector freed stops counting). A failure is logged, never
/// fails the collection.
pub async fn after_gc(b: &dyn Backend, name: &RepoName, dry_run: bool) {
    if dry_run {
        return;
    }
    let done = async {
        if tracked(b, name).await? {
            recount(b, name).await?;
        }
        io::Result::Ok(())
    }
    .await;
    if let Err(e) = done {
        tracing::warn!(repo = %name, error = %e, "recounting a repository's usage failed");
    }
}

/// How much a rule allows, how much its repositories hold.
#[derive(Clone, Debug)]
pub struct Room {
    pub rule: String,
    pub patterns: String,
    pub limit: u64,
    pub used: u64,
}

impl Room {
    /// Bytes that may still be added.
    pub fn left(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Refuse a push that adds `needed` bytes if they do not fit.
    pub fn check(&self, repo: &RepoName, needed: u64) -> Result<(), Error> {
        if needed <= self.left() {
            Ok(())
        } else {
            Err(self.refusal(repo, needed, false))
        }
    }

    /// The 403 `DENIED` of a push of `needed` bytes (`at_least`: the push
    /// was stopped part-way, it needs more).
    pub fn refusal(&self, repo: &RepoName, needed: u64, at_least: bool) -> Error {
        let more = if at_least { "at least " } else { "" };
        Error::Registry(
            RegistryError::new(
                ErrorCode::Denied,
                format!(
                    "{REFUSAL}: {} may hold {}, it holds {} and this push needs {more}{} more ({})",
                    self.patterns,
                    human(self.limit),
                    human(self.used),
                    human(needed),
                    self.rule
                ),
            )
            .with_detail(serde_json::json!({
                "rule": self.rule,
                "repos": self.patterns,
                "repository": repo.as_str(),
                "limit": self.limit,
                "used": self.used,
                "needed": needed,
            })),
        )
    }
}

const REFUSAL: &str = "quota exceeded";

/// Is `e` a quota's refusal?
pub fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::Registry(r) if r.code == ErrorCode::Denied && r.message.starts_with(REFUSAL))
}

/// A link a push creates in a repository under a quota: recorded as a
/// delta once the link is written. Its bytes are reserved in this process
/// from its admission until a binding check sees them recorded (dropped
/// unrecorded, the reservation goes).
#[derive(Debug)]
pub struct Charge {
    kind: Kind,
    digest: Digest,
    size: u64,
    hold: Reservation,
}

/// What this process admitted: per admission, its rule, its bytes, and
/// once written its delta (`<repo>`, `<name>`) and when it was written.
#[derive(Debug, Default)]
struct Admitted {
    next: u64,
    entries: Vec<Admission>,
}

#[derive(Debug)]
struct Admission {
    id: u64,
    rule: usize,
    size: u64,
    delta: Option<(String, String)>,
    written: Option<Instant>,
}

impl Admitted {
    /// The bytes of `rule`'s admissions that `records` (listed from
    /// `listed` on) may not show: not written yet, or written after the
    /// listing began and not in it. One written before the listing began
    /// is in it, or in a snapshot that counts it (or its link is gone).
    /// With `settle` (a binding check, in its turn), those are forgotten:
    /// every later binding check's listing begins later still.
    fn unseen(
        &mut self,
        rule: usize,
        records: &BTreeMap<String, Records>,
        listed: Instant,
        settle: bool,
    ) -> u64 {
        if settle {
            self.entries
                .retain(|a| a.rule != rule || a.written.is_none_or(|w| w >= listed));
        }
        self.entries
            .iter()
            .filter(|a| a.rule == rule)
            .filter(|a| match (&a.delta, a.written) {
                (Some((repo, name)), Some(w)) => {
                    w >= listed && records.get(repo).is_none_or(|r| !r.names.contains(name))
                }
                _ => true,
            })
            .fold(0u64, |sum, a| sum.saturating_add(a.size))
    }
}

/// An admission's place in [`Admitted`]: dropped before its delta is
/// written, it goes.
#[derive(Debug)]
struct Reservation {
    admitted: Arc<std::sync::Mutex<Admitted>>,
    id: u64,
    live: bool,
}

impl Reservation {
    /// The delta is written: the admission stays until a check sees it.
    fn written(&mut self, repo: &RepoName, name: String) {
        let mut a = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = a.entries.iter_mut().find(|e| e.id == self.id) {
            e.delta = Some((repo.as_str().to_owned(), name));
            e.written = Some(Instant::now());
        }
        self.live = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.live {
            let mut a = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
            a.entries.retain(|e| e.id != self.id);
        }
    }
}

/// The rules, and what checking them needs.
pub struct Quotas {
    rules: Vec<Quota>,
    backend: Arc<dyn Backend>,
    /// Repositories this process is recounting in the background.
    recounting: Arc<DashSet<String>>,
    /// What this process admitted and a check may not see in the records
    /// yet: checks count it, so one process never admits past a limit.
    admitted: Arc<std::sync::Mutex<Admitted>>,
    /// Per rule: binding checks (list the records, check, reserve) take
    /// turns, so each sees every admission before it, recorded or not.
    turns: Vec<tokio::sync::Mutex<()>>,
}

impl Quotas {
    pub fn new(rules: Vec<Quota>, backend: Arc<dyn Backend>) -> Quotas {
        let n = rules.len();
        Quotas {
            rules,
            backend,
            recounting: Arc::new(DashSet::new()),
            admitted: Arc::default(),
            turns: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Bytes of `rule` admitted here whose deltas are not written (tests).
    #[cfg(test)]
    pub(crate) fn reserved(&self, rule: usize) -> u64 {
        let a = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        a.entries
            .iter()
            .filter(|e| e.rule == rule && e.delta.is_none())
            .map(|e| e.size)
            .sum()
    }

    fn reserve(&self, rule: usize, size: u64) -> Reservation {
        let mut a = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        a.next += 1;
        let id = a.next;
        a.entries.push(Admission {
            id,
            rule,
            size,
            delta: None,
            written: None,
        });
        Reservation {
            admitted: self.admitted.clone(),
            id,
            live: true,
        }
    }

    pub fn rules(&self) -> &[Quota] {
        &self.rules
    }

    /// The first rule covering `repo` (the one that applies).
    pub fn rule_for(&self, repo: &str) -> Option<usize> {
        rule_for(&self.rules, repo)
    }

    /// The room `name`'s rule leaves (the records, and what this process
    /// admitted and has not recorded yet); `None` when no rule covers it.
    /// Counts `name` first if no recount ever did.
    pub async fn room(&self, name: &RepoName) -> Result<Option<Room>, Error> {
        self.room_with(name, false).await
    }

    /// [`Quotas::room`]; `settle`: for a binding check, in its turn.
    async fn room_with(&self, name: &RepoName, settle: bool) -> Result<Option<Room>, Error> {
        let Some(i) = self.rule_for(name.as_str()) else {
            return Ok(None);
        };
        let Some(rule) = self.rules.get(i) else {
            return Ok(None);
        };
        let b = self.backend.as_ref();
        let prefix = rule.records_prefix();
        let mut listed = Instant::now();
        let mut records = read_records(b, &prefix).await?;
        let own = records.get(name.as_str());
        if own.is_none_or(|r| r.snapshot.is_none()) {
            // Content pushed before the rule covered the repository, or
            // nothing: either way a walk says.
            recount(b, name).await?;
            listed = Instant::now();
            records = read_records(b, &prefix).await?;
        } else if own.is_some_and(|r| r.fresh().len() > FOLD_AFTER) {
            self.recount_soon(name);
        }
        let unseen = {
            let mut a = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
            a.unseen(i, &records, listed, settle)
        };
        let used = records
            .iter()
            .filter(|(repo, _)| rule_for(&self.rules, repo) == Some(i))
            .fold(unseen, |sum, (_, r)| sum.saturating_add(r.usage().bytes));
        Ok(Some(Room {
            rule: rule.name.clone(),
            patterns: rule.patterns.join(" "),
            limit: rule.max_bytes,
            used,
        }))
    }

    /// The room for a new link `link_key` in `name`: `None` when no rule
    /// covers the repository or it holds the link already (content it
    /// holds costs nothing).
    pub async fn room_for_new(
        &self,
        name: &RepoName,
        link_key: &str,
    ) -> Result<Option<Room>, Error> {
        if self.rule_for(name.as_str()).is_none() || self.backend.head(link_key).await?.is_some() {
            return Ok(None);
        }
        self.room(name).await
    }

    /// Admit a new link of `d` (`size` bytes) into `name`, or refuse it.
    /// What it returns is given to [`Quotas::record`] once the link exists.
    pub async fn admit(
        &self,
        name: &RepoName,
        kind: Kind,
        d: &Digest,
        size: u64,
    ) -> Result<Option<Charge>, Error> {
        let link = match kind {
            Kind::Blob => keys::repo_blob(name, d),
            Kind::Manifest => keys::repo_manifest(name, d),
        };
        let Some(rule) = self.rule_for(name.as_str()) else {
            return Ok(None);
        };
        if self.backend.head(&link).await?.is_some() {
            return Ok(None);
        }
        let Some(turn) = self.turns.get(rule) else {
            return Ok(None);
        };
        let _turn = turn.lock().await;
        let Some(room) = self.room_with(name, true).await? else {
            return Ok(None);
        };
        room.check(name, size)?;
        Ok(Some(Charge {
            kind,
            digest: d.clone(),
            size,
            hold: self.reserve(rule, size),
        }))
    }

    /// Record a new link (after it is written): one delta.
    pub async fn record(&self, name: &RepoName, charge: Option<Charge>) -> Result<(), Error> {
        let Some(mut c) = charge else {
            return Ok(());
        };
        let delta = Record::Delta(Delta {
            at_ms: ms(SystemTime::now()),
            size: c.size,
            kind: c.kind,
            digest: format!("{}-{}", c.digest.algorithm(), c.digest.hex()),
        });
        let delta = delta.name();
        let key = format!("{}{delta}", records_of(name));
        self.backend.put(&key, Bytes::new()).await?;
        c.hold.written(name, delta);
        Ok(())
    }

    /// Recount `name` in the background if a rule covers it (after a
    /// delete, or when its deltas pile up); one at a time per repository.
    pub fn recount_soon(&self, name: &RepoName) {
        if self.rule_for(name.as_str()).is_none()
            || !self.recounting.insert(name.as_str().to_owned())
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.recounting.remove(name.as_str());
            return;
        };
        let (b, set, name) = (self.backend.clone(), self.recounting.clone(), name.clone());
        rt.spawn(async move {
            if let Err(e) = recount(b.as_ref(), &name).await {
                tracing::warn!(repo = %name, error = %e, "recounting a repository's usage failed");
            }
            set.remove(name.as_str());
        });
    }

    /// Wait until this process's background recounts are done.
    #[cfg(test)]
    pub(crate) async fn settled(&self) {
        while !self.recounting.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Count every repository a rule covers that no recount has counted
    /// yet (run once when a server starts). Returns how many it counted.
    pub async fn count_uncounted(&self) -> io::Result<u64> {
        if self.rules.is_empty() {
            return Ok(0);
        }
        let b = self.backend.as_ref();
        let mut counted = 0;
        let mut pages = KeyPages::new(b, keys::CATALOG_PREFIX, PAGE);
        while let Some(page) = pages.next().await? {
            for repo in page {
                let Ok(name) = RepoName::parse(&repo, usize::MAX) else {
                    continue;
                };
                if self.rule_for(name.as_str()).is_none() {
                    continue;
                }
                let has_snapshot = b
                    .list(&records_of(&name), None, usize::MAX)
                    .await?
                    .iter()
                    .any(|r| matches!(Record::parse(r), Some(Record::Snapshot(_))));
                if !has_snapshot {
                    recount(b, &name).await?;
                    counted += 1;
                }
            }
        }
        Ok(counted)
    }
}

/// The first of `rules` covering `repo`.
pub fn rule_for(rules: &[Quota], repo: &str) -> Option<usize> {
    rules.iter().position(|r| r.covers(repo))
}

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `10 GiB`, `9.8 GiB`, `300 MiB`, `12 B`: binary units, one decimal at
/// most, rounded down.
pub fn human(bytes: u64) -> String {
    let mut unit = 0;
    let mut scale = 1u128;
    while unit + 1 < UNITS.len() && u128::from(bytes) >= scale * 1024 {
        scale *= 1024;
        unit += 1;
    }
    let tenths = u128::from(bytes) * 10 / scale;
    let (whole, tenth) = (tenths / 10, tenths % 10);
    let unit = UNITS.get(unit).copied().unwrap_or("B");
    if tenth == 0 {
        format!("{whole} {unit}")
    } else {
        format!("{whole}.{tenth} {unit}")
    }
}

/// A size as people write it: `1073741824`, `512 MiB`, `10GiB`, `1.5 TB`.
/// Binary units (KiB, MiB, GiB, TiB, PiB) are powers of 1024; KB, MB, GB,
/// TB, PB powers of 1000; B or nothing is bytes. Case does not matter.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let factor: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (B, KiB, MiB, GiB, TiB, PiB, or KB, MB, GB, TB, PB)"
            ));
        }
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let bad = || format!("{s:?} is not a size (e.g. 10GiB, 500 MB, 1073741824)");
    if whole.is_empty() || whole.len() > 20 || frac.len() > 9 || frac.contains('.') {
        return Err(bad());
    }
    let whole: u128 = whole.parse().map_err(|_| bad())?;
    let (frac_n, frac_d): (u128, u128) = if frac.is_empty() {
        (0, 1)
    } else {
        let n = frac.parse().map_err(|_| bad())?;
        (n, 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?))
    };
    let total = whole
        .checked_mul(factor)
        .and_then(|w| w.checked_add(frac_n * factor / frac_d))
        .ok_or_else(|| format!("{s:?} is more than 2^64 - 1 bytes"))?;
    u64::try_from(total).map_err(|_| format!("{s:?} is more than 2^64 - 1 bytes"))
}

#[cfg(test)]
mod tests;
