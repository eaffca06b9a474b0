//! Size caps per upstream (`max_size`): when each cached manifest was last
//! pulled, and least-recently-pulled eviction.
//!
//! ```text
//! _mirror/pulls/<repository>/_/<alg>/<hex>    {"pulledMs": ...}
//! ```
//!
//! A pull of a cached manifest (by tag or digest, GET or HEAD) overwrites
//! its record whole, at most once per [`RECORD_EVERY`] per process (a
//! process remembers which it wrote lately): one small PUT per manifest per
//! hour, never one per blob GET. Records are written only for upstreams
//! with a cap. A manifest without a record counts as pulled when it was
//! cached (its link's time).
//!
//! An eviction run of an upstream walks its cached repositories (the
//! catalog below its prefix): their manifest links marked cached, what each
//! names (read from the manifest bodies: blob sizes come from the
//! descriptors) and the blob links present. The upstream's usage is the
//! size of its cached manifests plus the distinct blobs they name that are
//! linked (fetched). Past the cap, whole images go, least recently pulled
//! first (an index with the children only it lists; the group's time is
//! its most recent member's), until the usage is under the cap: their tags
//! and manifest links are deleted ([`store::Registry::manifest_evict_cached`]),
//! never a blob. The blobs nothing references any more are then collected
//! by garbage collection with its usual fences (docs/gc.md), and content a
//! pushed image shares stays, since its links name it.

use crate::config::UpstreamSpec;
use oci::{Digest, RepoName};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use store::Registry;
use store::backend::{Backend, KeyPages};

/// A process records a manifest's pull at most this often.
pub const RECORD_EVERY: Duration = Duration::from_secs(3600);
/// Pulls a process remembers having recorded; past this it forgets the
/// oldest (which costs a record written again, nothing else).
const REMEMBERED: usize = 65_536;
const PAGE: usize = 1000;

pub fn pull_key(name: &RepoName, d: &Digest) -> String {
    format!("_mirror/pulls/{name}/_/{}/{}", d.algorithm(), d.hex())
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullRecord {
    pulled_ms: u64,
}

/// The pulls this process recorded lately.
#[derive(Default)]
pub struct PullLog {
    recent: Mutex<HashMap<String, Instant>>,
}

impl PullLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is a record of this pull due (and, if so, taken as written)?
    pub fn due(&self, name: &RepoName, d: &Digest) -> bool {
        let key = format!("{name}@{d}");
        let now = Instant::now();
        let mut m = self.lock();
        if m.get(&key)
            .is_some_and(|t| now.duration_since(*t) < RECORD_EVERY)
        {
            return false;
        }
        if m.len() >= REMEMBERED {
            m.retain(|_, t| now.duration_since(*t) < RECORD_EVERY);
            if m.len() >= REMEMBERED {
                m.clear();
            }
        }
        m.insert(key, now);
        true
    }

    /// A record that could not be written is due again.
    pub fn forget(&self, name: &RepoName, d: &Digest) {
        self.lock().remove(&format!("{name}@{d}"));
    }
}

/// Record that `d` of `name` was pulled now.
pub async fn record(b: &dyn Backend, name: &RepoName, d: &Digest) -> io::Result<()> {
    let body = serde_json::to_vec(&PullRecord {
        pulled_ms: crate::fresh::now_ms(),
    })
    .map_err(io::Error::other)?;
    b.put(&pull_key(name, d), body.into()).await
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A cached manifest as an eviction run saw it.
struct Entry {
    repo: RepoName,
    digest: Digest,
    size: u64,
    /// Blobs it names that are linked in its repository, with their sizes.
    blobs: Vec<(Digest, u64)>,
    /// Entries (indexes into the run's list) of the cached manifests it
    /// lists (an index).
    children: Vec<usize>,
    /// How many kept cached indexes list it.
    parents: usize,
    last_ms: u64,
    gone: bool,
}

/// What an eviction run found and did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub upstream: String,
    pub max_size: u64,
    /// Cached manifests and the distinct blobs they name, in bytes.
    pub usage_before: u64,
    pub usage_after: u64,
    pub manifests: usize,
    /// `repository@digest` of the manifests evicted.
    pub evicted: Vec<String>,
}

/// Bring `spec`'s cached content under `max_size`.
pub async fn run(reg: &Registry, spec: &UpstreamSpec, max_size: u64) -> io::Result<Report> {
    let b = reg.backend().as_ref();
    let mut entries: Vec<Entry> = Vec::new();
    let mut index_children: Vec<(usize, Vec<Digest>)> = Vec::new();
    let catalog = format!("{}{}/", store::keys::CATALOG_PREFIX, spec.prefix);
    let mut repos = KeyPages::new(b, &catalog, PAGE);
    while let Some(page) = repos.next().await? {
        for rel in page {
            let full = format!("{}/{rel}", spec.prefix);
            let Ok(repo) = RepoName::parse(&full, full.len()) else {
                continue;
            };
            walk_repo(b, &repo, &mut entries, &mut index_children).await?;
        }
    }
    // Children: the cached manifests an index lists, in its repository.
    let at: HashMap<(String, Digest), usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.repo.as_str().to_owned(), e.digest.clone()), i))
        .collect();
    for (i, children) in index_children {
        let repo = entries[i].repo.as_str().to_owned();
        let mut seen = HashSet::new();
        for c in children {
            if let Some(&j) = at.get(&(repo.clone(), c))
                && j != i
                && seen.insert(j)
            {
                entries[i].children.push(j);
                entries[j].parents += 1;
            }
        }
    }
    let mut refs: HashMap<Digest, (u64, usize)> = HashMap::new();
    let mut usage: u64 = 0;
    for e in &entries {
        usage = usage.saturating_add(e.size);
        for (d, size) in &e.blobs {
            let r = refs.entry(d.clone()).or_insert((*size, 0));
            if r.1 == 0 {
                usage = usage.saturating_add(*size);
            }
            r.1 += 1;
        }
    }
    let mut report = Report {
        upstream: spec.name.clone(),
        max_size,
        usage_before: usage,
        usage_after: usage,
        manifests: entries.len(),
        evicted: Vec::new(),
    };
    if usage <= max_size {
        return Ok(report);
    }
    // Images (and indexes with their children), least recently pulled first.
    let group_last = |i: usize| {
        let e = &entries[i];
        e.children
            .iter()
            .map(|&c| entries[c].last_ms)
            .fold(e.last_ms, u64::max)
    };
    let mut tops: Vec<(u64, usize)> = (0..entries.len())
        .filter(|&i| entries[i].parents == 0)
        .map(|i| (group_last(i), i))
        .collect();
    tops.sort();
    let mut order = Vec::new();
    for (_, top) in tops {
        if usage <= max_size {
            break;
        }
        let mut stack = vec![top];
        while let Some(i) = stack.pop() {
            if entries[i].gone {
                continue;
            }
            entries[i].gone = true;
            order.push(i);
            usage = usage.saturating_sub(entries[i].size);
            for (d, _) in &entries[i].blobs {
                if let Some(r) = refs.get_mut(d) {
                    r.1 = r.1.saturating_sub(1);
                    if r.1 == 0 {
                        usage = usage.saturating_sub(r.0);
                    }
                }
            }
            let children = entries[i].children.clone();
            for c in children {
                entries[c].parents = entries[c].parents.saturating_sub(1);
                if entries[c].parents == 0 {
                    stack.push(c);
                }
            }
        }
    }
    report.usage_after = usage;
    // Parents before their children: no kept index loses a child first.
    for i in order {
        let e = &entries[i];
        match reg.manifest_evict_cached(&e.repo, &e.digest).await {
            Ok(true) => {
                if let Err(err) = b.delete(&pull_key(&e.repo, &e.digest)).await {
                    tracing::debug!(target: "wharf::mirror", repo = %e.repo, digest = %e.digest, error = %err, "could not remove a pull record");
                }
                tracing::info!(target: "wharf::mirror", upstream = %spec.name, repo = %e.repo, digest = %e.digest, last_pulled_ms = e.last_ms, "evicted a cached manifest (least recently pulled; the upstream is over its max_size)");
                report.evicted.push(format!("{}@{}", e.repo, e.digest));
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(target: "wharf::mirror", upstream = %spec.name, repo = %e.repo, digest = %e.digest, error = %err, "could not evict a cached manifest");
            }
        }
    }
    Ok(report)
}

/// The cached manifests of `repo`.
async fn walk_repo(
    b: &dyn Backend,
    repo: &RepoName,
    entries: &mut Vec<Entry>,
    index_children: &mut Vec<(usize, Vec<Digest>)>,
) -> io::Result<()> {
    let parse = |rel: &str| {
        rel.split_once('/')
            .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok())
    };
    let mut linked = HashSet::new();
    let mut pages = KeyPages::new(b, &format!("repositories/{repo}/_blobs/"), PAGE);
    while let Some(page) = pages.next().await? {
        linked.extend(page.iter().filter_map(|r| parse(r)));
    }
    let mut pages = KeyPages::new(b, &format!("repositories/{repo}/_manifests/"), PAGE);
    while let Some(page) = pages.next().await? {
        for d in page.iter().filter_map(|r| parse(r)) {
            let link_key = store::keys::repo_manifest(repo, &d);
            let Some(raw) = b.read(&link_key).await? else {
                continue;
            };
            let link: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            if link.get("cached").and_then(|v| v.as_bool()) != Some(true) {
                continue; // pushed: never evicted, not counted
            }
            let media = link.get("mediaType").and_then(|v| v.as_str());
            let Some(body) = b.read(&store::keys::blob(&d)).await? else {
                continue;
            };
            let size = u64::try_from(body.len()).unwrap_or(u64::MAX);
            let (blobs, children) = match oci::manifest::parse(media, &body) {
                Ok(m) => (
                    m.required_blobs()
                        .filter(|x| linked.contains(&x.digest))
                        .map(|x| (x.digest.clone(), x.size))
                        .collect(),
                    m.manifests.iter().map(|x| x.digest.clone()).collect(),
                ),
                Err(_) => (Vec::new(), Vec::new()),
            };
            let last_ms = match b.read(&pull_key(repo, &d)).await? {
                Some(r) => serde_json::from_slice::<PullRecord>(&r)
                    .map(|r| r.pulled_ms)
                    .ok(),
                None => None,
            };
            let last_ms = match last_ms {
                Some(t) => t,
                None => b
                    .head(&link_key)
                    .await?
                    .and_then(|m| m.modified)
                    .map_or(0, ms),
            };
            let i = entries.len();
            entries.push(Entry {
                repo: repo.clone(),
                digest: d,
                size,
                blobs,
                children: Vec::new(),
                parents: 0,
                last_ms,
                gone: false,
            });
            if !children.is_empty() {
                index_children.push((i, children));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_are_recorded_once_per_interval() {
        let log = PullLog::default();
        let n = RepoName::parse("cache/a", 255).unwrap();
        let d = Digest::sha256_of(b"x");
        assert!(log.due(&n, &d));
        assert!(!log.due(&n, &d));
        assert!(log.due(&n, &Digest::sha256_of(b"y")));
        log.forget(&n, &d);
        assert!(log.due(&n, &d));
        assert!(store::backend::valid_key(&pull_key(&n, &d)));
    }
}
