//! Retention rules: which tags and untagged manifests of a repository a
//! collection run removes (docs/gc.md, "Retention"). This module only
//! decides; the collector fences and deletes.

use crate::backend::{Backend, KeyPages};
use crate::keys as rk;
use crate::registry::ImmutableTags;
use oci::manifest;
use oci::pattern::Pattern;
use oci::{Digest, RepoName, Tag};
use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, SystemTime};

/// One `[[retention]]` rule. The first rule whose `repos` match a
/// repository is the one applied to it.
#[derive(Clone, Debug)]
pub struct RetentionRule {
    /// How reports name the rule, e.g. `retention #1: repos ci/**`.
    pub name: String,
    pub repos: Vec<Pattern>,
    /// The tags the rule counts and may remove (others are left alone).
    pub tags: Vec<Pattern>,
    /// Tags never removed, whatever else the rule says.
    pub protect: Vec<Pattern>,
    /// Keep the newest N counted tags (by when they were last pushed).
    pub keep_newest: Option<usize>,
    /// Remove counted tags last pushed longer ago than this (the newest
    /// `keep_newest` excepted).
    pub tags_older_than: Option<Duration>,
    /// Remove manifests that no tag names, that no kept index lists and
    /// whose subject is not kept, once pushed longer ago than this.
    pub untagged_older_than: Option<Duration>,
}

impl RetentionRule {
    pub fn covers(&self, name: &RepoName) -> bool {
        self.repos.iter().any(|p| p.matches(name.as_str()))
    }
}

/// The first rule covering `name`.
pub fn rule_for<'a>(rules: &'a [RetentionRule], name: &RepoName) -> Option<&'a RetentionRule> {
    rules.iter().find(|r| r.covers(name))
}

/// A tag as one look saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenTag {
    pub tag: String,
    pub digest: Option<Digest>,
    pub modified: Option<SystemTime>,
}

/// A manifest link as one look saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub modified: Option<SystemTime>,
}

/// What a rule removes from one repository, as one look saw it.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub tags: Vec<SeenTag>,
    /// Indexes before the manifests they list, so a reader never finds an
    /// index whose children are already gone.
    pub manifests: Vec<SeenManifest>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.manifests.is_empty()
    }

    pub fn manifest_digests(&self) -> HashSet<Digest> {
        self.manifests.iter().map(|m| m.digest.clone()).collect()
    }
}

/// A manifest's edges: the manifests an index lists, and its subject.
struct Edges {
    children: Vec<Digest>,
    subject: Option<Digest>,
    is_index: bool,
    modified: Option<SystemTime>,
}

const PAGE: usize = 1000;

/// Look at `name` and decide what `rule` removes. Tags matching an
/// immutable-tags rule are never removed; no manifest pushed within
/// `grace` is (an index's children arrive before the index, a tag after its
/// manifest).
pub(crate) async fn plan(
    b: &dyn Backend,
    name: &RepoName,
    rule: &RetentionRule,
    immutable: &[ImmutableTags],
    grace: Duration,
) -> io::Result<Plan> {
    let now = SystemTime::now();
    let mut plan = Plan::default();

    // Tags: every one, with what it names and when it was last pushed.
    let prefix = rk::tags_prefix(name);
    let mut tags = Vec::new();
    let mut pages = KeyPages::new(b, &prefix, PAGE);
    while let Some(page) = pages.next().await? {
        for tag in page {
            let key = format!("{prefix}{tag}");
            let (value, meta) = tokio::join!(b.read(&key), b.head(&key));
            let Some(value) = value? else {
                continue; // deleted meanwhile
            };
            let digest = std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.trim().parse::<Digest>().ok());
            tags.push(SeenTag {
                tag,
                digest,
                modified: meta?.and_then(|m| m.modified),
            });
        }
    }
    let counted = |t: &SeenTag| {
        let parsed = Tag::parse(&t.tag).ok();
        rule.tags.iter().any(|p| p.matches(&t.tag))
            && !rule.protect.iter().any(|p| p.matches(&t.tag))
            && !parsed.is_some_and(|tag| immutable.iter().any(|r| r.covers(name, &tag)))
    };
    let mut candidates: Vec<&SeenTag> = tags.iter().filter(|t| counted(t)).collect();
    // Newest first; a tag without a time counts as new (never removed on a
    // guess). Times are as precise as the store keeps them (a second on
    // S3): of tags pushed within one, the greater name counts as newer.
    candidates.sort_by(|a, b| {
        let key = |t: &SeenTag| t.modified.unwrap_or(now);
        key(b).cmp(&key(a)).then_with(|| b.tag.cmp(&a.tag))
    });
    if rule.keep_newest.is_some() || rule.tags_older_than.is_some() {
        let keep = rule.keep_newest.unwrap_or(0);
        for t in candidates.iter().skip(keep) {
            let old_enough = match rule.tags_older_than {
                Some(age) => older_than(t.modified, age, now),
                None => true,
            };
            if old_enough {
                plan.tags.push((*t).clone());
            }
        }
    }
    let removed: HashSet<&str> = plan.tags.iter().map(|t| t.tag.as_str()).collect();

    let Some(untagged_age) = rule.untagged_older_than else {
        return Ok(plan);
    };
    let untagged_age = untagged_age.max(grace);

    // Manifests: what each lists and refers to.
    let mut edges: HashMap<Digest, Edges> = HashMap::new();
    let prefix = format!("repositories/{name}/_manifests/");
    let mut pages = KeyPages::new(b, &prefix, PAGE);
    while let Some(page) = pages.next().await? {
        for rel in page {
            let Some((alg, hex)) = rel.split_once('/') else {
                continue;
            };
            let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() else {
                continue;
            };
            let (body_key, link_key) = (rk::blob(&d), rk::repo_manifest(name, &d));
            let (body, meta) = tokio::join!(b.read(&body_key), b.head(&link_key));
            let Some(meta) = meta? else {
                continue; // deleted meanwhile
            };
            let parsed = body?.and_then(|body| manifest::parse(None, &body).ok());
            let e = match parsed {
                Some(m) => Edges {
                    children: m.manifests.iter().map(|c| c.digest.clone()).collect(),
                    subject: m.subject.as_ref().map(|s| s.digest.clone()),
                    is_index: !m.manifests.is_empty(),
                    modified: meta.modified,
                },
                // Unreadable: kept (it has no known edges; never deleted on a guess).
                None => Edges {
                    children: Vec::new(),
                    subject: None,
                    is_index: false,
                    modified: None,
                },
            };
            edges.insert(d, e);
        }
    }

    // Kept: what a remaining tag names, what is younger than the rule's
    // age (or has no time), then everything a kept index lists and every
    // referrer of a kept manifest, until nothing changes.
    let mut kept: HashSet<Digest> = HashSet::new();
    let mut todo: Vec<Digest> = Vec::new();
    for t in &tags {
        if !removed.contains(t.tag.as_str())
            && let Some(d) = &t.digest
            && kept.insert(d.clone())
        {
            todo.push(d.clone());
        }
    }
    for (d, e) in &edges {
        if !older_than(e.modified, untagged_age, now) && kept.insert(d.clone()) {
            todo.push(d.clone());
        }
    }
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for (d, e) in &edges {
        if let Some(s) = &e.subject {
            referrers.entry(s).or_default().push(d);
        }
    }
    while let Some(d) = todo.pop() {
        let children = edges.get(&d).map(|e| e.children.as_slice()).unwrap_or(&[]);
        let refs = referrers.get(&d).map(Vec::as_slice).unwrap_or(&[]);
        for next in children.iter().chain(refs.iter().copied()) {
            if kept.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    let mut doomed: Vec<(&Digest, &Edges)> =
        edges.iter().filter(|(d, _)| !kept.contains(*d)).collect();
    // Indexes first, then by digest (a stable order for reports).
    doomed.sort_by(|a, b| b.1.is_index.cmp(&a.1.is_index).then_with(|| a.0.cmp(b.0)));
    plan.manifests = doomed
        .into_iter()
        .map(|(d, e)| SeenManifest {
            digest: d.clone(),
            subject: e.subject.clone(),
            modified: e.modified,
        })
        .collect();
    Ok(plan)
}

fn older_than(modified: Option<SystemTime>, age: Duration, now: SystemTime) -> bool {
    modified.is_some_and(|m| now.duration_since(m).is_ok_and(|a| a >= age))
}
