//! `wharf du`: usage per repository, and per quota (docs/quotas.md).

use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use store::backend::KeyPages;
use store::quota::{self, Quota, human};

#[derive(Args)]
pub struct DuArgs {
    /// The store: dir:PATH (a data directory no server is using) or
    /// s3:BUCKET[/PREFIX] (fine while replicas serve it).
    #[arg(long, value_name = "STORE", default_value = "dir:./wharf-data")]
    store: String,
    #[command(flatten)]
    s3: crate::stores::S3Args,
    /// Walk every repository's links and write what they add up to as its
    /// usage record (else: the records, and a walk only of repositories
    /// that have none).
    #[arg(long)]
    recount: bool,
    /// A server config whose [[quotas]] to report on (limit, percentage).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
pub struct DuReport {
    /// Largest first.
    pub repositories: Vec<RepoUsage>,
    pub quotas: Vec<QuotaUsage>,
    /// All repositories together (shared content counted in each).
    pub total_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct RepoUsage {
    pub name: String,
    pub bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    /// `records`: the last recount plus the links created since;
    /// `walked`: counted now (`--recount`, or no record yet).
    pub source: &'static str,
    /// The quota rule that applies (with --config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct QuotaUsage {
    pub rule: String,
    pub repos: Vec<String>,
    pub limit: u64,
    pub used: u64,
    pub percent: f64,
    pub repositories: u64,
}

pub fn run(args: DuArgs) -> ExitCode {
    let Some(rt) = crate::runtime(None) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(du(&args)) {
        Ok(report) => crate::finish_report("du", args.json, &report, print_report, true),
        Err(e) => {
            eprintln!("wharf du: {e}");
            ExitCode::from(2)
        }
    }
}

async fn du(args: &DuArgs) -> anyhow::Result<DuReport> {
    let rules: Vec<Quota> = match &args.config {
        Some(path) => server::Config::from_file(path)?.quota_rules()?,
        None => Vec::new(),
    };
    let backend = crate::stores::open(&args.store, &args.s3).await?;
    let b = backend.as_ref();
    let records = if args.recount {
        Default::default()
    } else {
        quota::read_all(b).await?
    };
    let mut repositories = Vec::new();
    let mut pages = KeyPages::new(b, store::keys::CATALOG_PREFIX, 1000);
    while let Some(page) = pages.next().await? {
        for name in page {
            let Ok(repo) = oci::RepoName::parse(&name, usize::MAX) else {
                continue;
            };
            let (bytes, blobs, manifests, source) = match records.get(&name) {
                Some(u) if u.counted => (u.bytes, u.blobs, u.manifests, "records"),
                _ => {
                    let c = if args.recount {
                        quota::recount(b, &repo).await?
                    } else {
                        quota::count(b, &repo).await?
                    };
                    (c.bytes, c.blobs, c.manifests, "walked")
                }
            };
            let rule = quota::rule_for(&rules, &name).and_then(|i| rules.get(i));
            repositories.push(RepoUsage {
                name,
                bytes,
                blobs,
                manifests,
                source,
                quota: rule.map(|r| r.name.clone()),
            });
        }
    }
    repositories.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let quotas = rules
        .iter()
        .map(|rule| {
            let mine = repositories
                .iter()
                .filter(|r| r.quota.as_deref() == Some(rule.name.as_str()));
            let (used, n) = mine.fold((0u64, 0u64), |(u, n), r| (u.saturating_add(r.bytes), n + 1));
            QuotaUsage {
                rule: rule.name.clone(),
                repos: rule.patterns.clone(),
                limit: rule.max_bytes,
                used,
                percent: percent(used, rule.max_bytes),
                repositories: n,
            }
        })
        .collect();
    let total_bytes = repositories
        .iter()
        .fold(0u64, |t, r| t.saturating_add(r.bytes));
    Ok(DuReport {
        repositories,
        quotas,
        total_bytes,
    })
}

/// `used` as a percentage of `limit`, one decimal (a zero limit that holds
/// anything is over 100%).
fn percent(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        return if used == 0 { 0.0 } else { f64::INFINITY };
    }
    let tenths = u128::from(used) * 1000 / u128::from(limit);
    // At most 2^64 * 1000 / 1: exact enough in an f64 for a report.
    tenths as f64 / 10.0
}

fn print_report(r: &DuReport) {
    let width = r
        .repositories
        .iter()
        .map(|u| human(u.bytes).len())
        .max()
        .unwrap_or(0);
    for u in &r.repositories {
        let note = if u.source == "walked" {
            "  (walked)"
        } else {
            ""
        };
        outln!(
            "{:>width$}  {}  ({}, {}){note}",
            human(u.bytes),
            u.name,
            count(u.blobs, "blob"),
            count(u.manifests, "manifest")
        );
    }
    for q in &r.quotas {
        let pct = if q.percent.is_finite() {
            format!("{:.1}%", q.percent)
        } else {
            "over".to_owned()
        };
        outln!(
            "{} ({}): {} of {} ({pct}) in {}",
            q.rule,
            q.repos.join(" "),
            human(q.used),
            human(q.limit),
            count(q.repositories, "repository")
        );
    }
    outln!(
        "total: {} ({} bytes) in {}",
        human(r.total_bytes),
        r.total_bytes,
        count(r.repositories.len() as u64, "repository")
    );
}

/// `1 blob`, `2 blobs`, `3 repositories`.
fn count(n: u64, word: &str) -> String {
    match (n, word.strip_suffix('y')) {
        (1, _) => format!("1 {word}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {word}s"),
    }
}
