//! The comparison table: Wharf vs the reference, ratios, the goals of
//! issue 3 (filesystem) or issue 14 (`--s3`: both on the same S3 cluster,
//! with a plain S3 client's figures as the ceiling) and whether each is met.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// Wharf's JSON lines.
    #[arg(long)]
    wharf: PathBuf,
    /// The reference registry's JSON lines.
    #[arg(long)]
    reference: PathBuf,
    /// Single-core SHA-256 throughput of this machine in MB/s (openssl speed).
    #[arg(long)]
    sha256_mbs: Option<f64>,
    /// Allowed RSS growth while the 4 GiB blob streams, MB ("flat").
    #[arg(long, default_value_t = 5.0)]
    flat_mb: f64,
    /// Both registries ran on S3: the goals of issue 14 (every figure
    /// ≥ 1.5× the reference, big blobs ≥ 80% of the plain S3 client,
    /// peak RSS ≤ 64 MB) instead of issue 3's.
    #[arg(long)]
    s3: bool,
    /// The plain S3 client's results (`wharf-bench s3-ceiling`), with --s3.
    #[arg(long)]
    ceiling: Option<PathBuf>,
}

/// The goals of one mode.
struct Goals {
    push: f64,
    pull: f64,
    get_head: f64,
    small: f64,
    manifest: f64,
    /// p99 of GET and HEAD, ms.
    p99_ms: Option<f64>,
    idle_mb: Option<f64>,
    hwm_mb: f64,
    /// Big-blob push and pull as a share of the plain S3 client's.
    of_ceiling: Option<f64>,
}

const FS_GOALS: Goals = Goals {
    push: 4.0,
    pull: 1.0,
    get_head: 10.0,
    small: 6.0,
    manifest: 2.5,
    p99_ms: Some(5.0),
    idle_mb: Some(10.0),
    hwm_mb: 30.0,
    of_ceiling: None,
};

const S3_GOALS: Goals = Goals {
    push: 1.5,
    pull: 1.5,
    get_head: 1.5,
    small: 1.5,
    manifest: 1.5,
    p99_ms: None,
    idle_mb: None,
    hwm_mb: 64.0,
    of_ceiling: Some(0.8),
};

type Results = BTreeMap<String, Value>;

fn load(p: &PathBuf) -> Result<Results> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(s) = v.get("scenario").and_then(|s| s.as_str()) {
            m.insert(s.to_string(), v.clone());
        }
    }
    if m.is_empty() {
        eprintln!("report: no results in {}", p.display());
    }
    Ok(m)
}

fn get(r: &Results, scenario: &str, path: &str) -> Option<f64> {
    let mut v = r.get(scenario)?;
    for k in path.split('.') {
        v = v.get(k)?;
    }
    v.as_f64()
}

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

struct Row {
    figure: String,
    unit: &'static str,
    w: Option<f64>,
    r: Option<f64>,
    better: Better,
    goal: String,
    pass: Option<bool>,
}

fn fmt(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e9 => format!("{x:.0}"),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) if x.abs() >= 1.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.3}"),
    }
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let (w, r) = (self.w?, self.r?);
        match self.better {
            Better::Higher if r > 0.0 => Some(w / r),
            Better::Lower if w > 0.0 => Some(r / w),
            _ => None,
        }
    }
}

fn row(
    figure: impl Into<String>,
    unit: &'static str,
    w: Option<f64>,
    r: Option<f64>,
    better: Better,
) -> Row {
    Row {
        figure: figure.into(),
        unit,
        w,
        r,
        better,
        goal: String::new(),
        pass: None,
    }
}

fn goal_ratio(mut row: Row, min: f64) -> Row {
    row.goal = format!("≥ {min}× ref");
    row.pass = row.ratio().map(|x| x >= min);
    row
}

fn goal_max(mut row: Row, max: f64, unit: &str) -> Row {
    row.goal = format!("≤ {max} {unit}");
    row.pass = row.w.map(|w| w <= max);
    row
}

fn sizes(r: &Results, prefix: &str) -> Vec<u64> {
    let mut v: Vec<u64> = r
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn human(n: u64) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn gib(bytes: Option<f64>) -> String {
    match bytes {
        Some(b) if b >= (1u64 << 30) as f64 => format!("{} GiB", b / (1u64 << 30) as f64),
        Some(b) => format!("{} MiB", b / (1u64 << 20) as f64),
        None => "?".into(),
    }
}

pub fn run(a: ReportArgs) -> Result<()> {
    let w = load(&a.wharf).context("wharf results")?;
    let r = load(&a.reference).context("reference results")?;
    let ceiling = match &a.ceiling {
        Some(p) => load(p).context("S3 client results")?,
        None => Results::new(),
    };
    let goals = if a.s3 { &S3_GOALS } else { &FS_GOALS };
    let both = |s: &str, p: &str| (get(&w, s, p), get(&r, s, p));
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let big = gib(get(&w, "push_mono", "bytes").or(get(&r, "push_mono", "bytes")));
    for (s, label) in [
        ("push_mono", "monolithic (POST+PUT)"),
        ("push_chunked", "chunked (16 MiB PATCHes)"),
    ] {
        let label = if s == "push_chunked" {
            let c = get(&w, s, "chunk").or(get(&r, s, "chunk"));
            format!("chunked ({} PATCHes)", gib(c))
        } else {
            label.to_string()
        };
        let (x, y) = both(s, "mb_s");
        let mut rw = goal_ratio(
            row(
                format!("{big} blob push, {label}"),
                "MB/s",
                x,
                y,
                Better::Higher,
            ),
            goals.push,
        );
        if let (Some(sha), false) = (a.sha256_mbs, a.s3) {
            rw.goal = format!("≥ 4× ref and ≥ {:.0} MB/s (60% SHA-256)", 0.6 * sha);
            rw.pass = rw.pass.map(|p| p && x.is_some_and(|x| x >= 0.6 * sha));
        }
        rows.push(rw);
        if let Some(min) = goals.of_ceiling {
            rows.push(of_ceiling(
                format!("{big} blob push, {label}, share of the S3 client's PUT"),
                (x, y),
                get(&ceiling, "s3_put", "mb_s"),
                min,
            ));
        }
    }
    let (x, y) = both("pull", "mb_s");
    rows.push(goal_ratio(
        row(format!("{big} blob pull"), "MB/s", x, y, Better::Higher),
        goals.pull,
    ));
    if let Some(min) = goals.of_ceiling {
        rows.push(of_ceiling(
            format!("{big} blob pull, share of the S3 client's GET"),
            (x, y),
            get(&ceiling, "s3_get", "mb_s"),
            min,
        ));
    }

    for (s, label) in [
        ("manifest_get", "manifest GET by tag"),
        ("blob_head", "blob HEAD"),
    ] {
        let c = get(&w, s, "conns").unwrap_or(64.0);
        let (x, y) = both(s, "ops_s");
        rows.push(goal_ratio(
            row(format!("{label}, {c} conns"), "req/s", x, y, Better::Higher),
            goals.get_head,
        ));
        let (x, y) = both(s, "p50_ms");
        rows.push(row(format!("{label} p50"), "ms", x, y, Better::Lower));
        let (x, y) = both(s, "p99_ms");
        let p99 = row(format!("{label} p99"), "ms", x, y, Better::Lower);
        rows.push(match goals.p99_ms {
            Some(max) => goal_max(p99, max, "ms"),
            None => p99,
        });
    }

    let mode = |res: &Results| {
        res.get("small_push")
            .and_then(|v| v.get("mode"))
            .and_then(|m| m.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let c = get(&w, "small_push", "conns").unwrap_or(32.0);
    let (x, y) = both("small_push", "ops_s");
    rows.push(goal_ratio(
        row(
            format!(
                "4 KiB blob push, {c} conns (W: {}, R: {})",
                mode(&w),
                mode(&r)
            ),
            "ops/s",
            x,
            y,
            Better::Higher,
        ),
        goals.small,
    ));
    let (x, y) = both("small_push", "p99_ms");
    rows.push(row("4 KiB blob push p99", "ms", x, y, Better::Lower));
    if w.contains_key("small_push_postput") {
        let x = get(&w, "small_push_postput", "ops_s");
        let y = if mode(&r) == "post-put" {
            get(&r, "small_push", "ops_s")
        } else {
            get(&r, "small_push_postput", "ops_s")
        };
        rows.push(row(
            "4 KiB blob push, both POST+PUT (info)",
            "ops/s",
            x,
            y,
            Better::Higher,
        ));
    }
    let c = get(&w, "manifest_push", "conns").unwrap_or(16.0);
    let (x, y) = both("manifest_push", "ops_s");
    rows.push(goal_ratio(
        row(
            format!("manifest+tag push, {c} conns"),
            "ops/s",
            x,
            y,
            Better::Higher,
        ),
        goals.manifest,
    ));
    let (x, y) = both("manifest_push", "p99_ms");
    rows.push(row("manifest+tag push p99", "ms", x, y, Better::Lower));

    // Listings.
    for (what, seed_label, unit_label, pages) in [
        (
            "tags",
            "tag seeding (PUT manifest by tag)",
            "tags",
            [
                ("tags_list_start_", "tags/list n=100"),
                ("tags_list_middle_", "tags/list n=100&last=middle"),
            ],
        ),
        (
            "catalog",
            "repository seeding (mount + PUT manifest)",
            "repos",
            [
                ("catalog_start_", "_catalog n=100"),
                ("catalog_middle_", "_catalog n=100&last=middle"),
            ],
        ),
    ] {
        let ran = |res: &Results| res.keys().any(|k| k.starts_with(&format!("{what}_seed_")));
        if !ran(&w) && !ran(&r) {
            continue;
        }
        // Seeding rate over all steps.
        let rate = |res: &Results| {
            let (mut n, mut t) = (0.0, 0.0);
            for (_, v) in res
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{what}_seed_")))
            {
                n += v.get("reached").and_then(Value::as_f64).unwrap_or(0.0)
                    - v.get("from").and_then(Value::as_f64).unwrap_or(0.0);
                t += v.get("secs").and_then(Value::as_f64).unwrap_or(0.0);
            }
            (t > 0.0).then(|| n / t)
        };
        rows.push(row(seed_label, "ops/s", rate(&w), rate(&r), Better::Higher));
        for (prefix, label) in pages {
            let ws = sizes(&w, prefix);
            let rs = sizes(&r, prefix);
            let mut all: Vec<u64> = ws.iter().chain(rs.iter()).copied().collect();
            all.sort_unstable();
            all.dedup();
            for &n in &all {
                let s = format!("{prefix}{n}");
                let (x, y) = both(&s, "page.median_ms");
                rows.push(row(
                    format!("{label} @ {} {unit_label}", human(n)),
                    "ms",
                    x,
                    y,
                    Better::Lower,
                ));
                let (ew, er) = both(&s, "page.entries");
                if let (Some(ew), Some(er)) = (ew, er)
                    && ew != er
                {
                    notes.push(format!(
                            "{label} @ {} {unit_label}: Wharf returned {ew} entries, the reference {er}.",
                            human(n)
                        ));
                }
            }
            let growth = |res: &Results, sz: &[u64]| -> Option<f64> {
                let lo = get(res, &format!("{prefix}{}", sz.first()?), "page.median_ms")?;
                let hi = get(res, &format!("{prefix}{}", sz.last()?), "page.median_ms")?;
                (sz.len() > 1 && lo > 0.0).then(|| hi / lo)
            };
            if let (Some(lo), Some(hi)) = (ws.first(), ws.last()) {
                let mut g = row(
                    format!("{label}: cost at {} ÷ cost at {}", human(*hi), human(*lo)),
                    "×",
                    growth(&w, &ws),
                    growth(&r, &rs),
                    Better::Neither,
                );
                g.goal = "≤ 2×".into();
                g.pass = g.w.map(|x| x <= 2.0);
                rows.push(g);
            }
        }
        for res in [(&w, "Wharf"), (&r, "reference")] {
            for (k, v) in res
                .0
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{what}_seed_")))
            {
                let reached = v.get("reached").and_then(Value::as_u64).unwrap_or(0);
                let to = v.get("to").and_then(Value::as_u64).unwrap_or(0);
                if reached < to {
                    notes.push(format!(
                        "{}: {k} stopped at {reached} of {to} (seeding budget).",
                        res.1
                    ));
                }
            }
        }
    }

    // Memory.
    let (x, y) = both("idle_rss", "rss_mb");
    let idle = row("idle RSS after start", "MB", x, y, Better::Lower);
    rows.push(match goals.idle_mb {
        Some(max) => goal_max(idle, max, "MB"),
        None => idle,
    });
    let (x, y) = both("peak_rss", "hwm_mb");
    rows.push(goal_max(
        row("peak RSS, whole run (VmHWM)", "MB", x, y, Better::Lower),
        goals.hwm_mb,
        "MB",
    ));
    if w.contains_key("huge") || r.contains_key("huge") {
        huge_rows(&a, &w, &r, &mut rows);
    }
    if a.s3 {
        // The ceiling: not a registry, so not a column; a line under the table.
        for (s, label) in [("s3_put", "multipart PUT"), ("s3_get", "GET")] {
            let Some(v) = ceiling.get(s) else {
                notes.push(format!(
                    "S3 client {label}: no result (ceiling not measured)."
                ));
                continue;
            };
            let mut how = String::new();
            if let (Some(p), Some(c)) = (
                get(&ceiling, s, "part_size"),
                get(&ceiling, s, "concurrency"),
            ) {
                how = format!(", {} parts, {c} in flight", gib(Some(p)));
            }
            let runs: Vec<String> = v
                .get("runs_mb_s")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| fmt(x.as_f64())).collect())
                .unwrap_or_default();
            if runs.len() > 1 {
                how += &format!(", best of {}", runs.join(" / "));
            }
            notes.push(format!(
                "Ceiling, a plain S3 client straight to the bucket: {label} of {}{how}: {} MB/s.",
                gib(get(&ceiling, s, "bytes")),
                fmt(get(&ceiling, s, "mb_s")),
            ));
        }
    }

    // Errors.
    errors_and_print(&w, &r, rows, notes);
    Ok(())
}

/// Big-blob throughput as a share of the plain S3 client's (in %), for
/// both registries; the goal is Wharf's.
fn of_ceiling(figure: String, (x, y): (Option<f64>, Option<f64>), c: Option<f64>, min: f64) -> Row {
    let pct = |v: Option<f64>| Some(100.0 * v? / c.filter(|c| *c > 0.0)?);
    let mut rw = row(figure, "%", pct(x), pct(y), Better::Neither);
    rw.goal = format!("≥ {:.0}%", 100.0 * min);
    rw.pass = rw.w.map(|p| p >= 100.0 * min);
    rw
}

fn huge_rows(a: &ReportArgs, w: &Results, r: &Results, rows: &mut Vec<Row>) {
    let both = |s: &str, p: &str| (get(w, s, p), get(r, s, p));
    let huge = gib(get(w, "huge", "bytes").or(get(r, "huge", "bytes")));
    let (x, y) = both("huge", "push_mb_s");
    rows.push(row(
        format!("{huge} blob push (info)"),
        "MB/s",
        x,
        y,
        Better::Higher,
    ));
    let (x, y) = both("huge", "pull_mb_s");
    rows.push(row(
        format!("{huge} blob pull (info)"),
        "MB/s",
        x,
        y,
        Better::Higher,
    ));
    let maxrss = |res: &Results| {
        Some(get(res, "huge", "rss_max_push_mb")?.max(get(res, "huge", "rss_max_pull_mb")?))
    };
    rows.push(row(
        format!("max RSS while {huge} streams"),
        "MB",
        maxrss(w),
        maxrss(r),
        Better::Lower,
    ));
    let (x, y) = both("huge", "rss_growth_mb");
    let mut g = row(
        format!("RSS growth while {huge} streams"),
        "MB",
        x,
        y,
        Better::Neither,
    );
    g.goal = format!("flat (≤ {} MB)", a.flat_mb);
    g.pass = x.map(|x| x <= a.flat_mb);
    rows.push(g);
}

fn errors_and_print(w: &Results, r: &Results, rows: Vec<Row>, mut notes: Vec<String>) {
    let errs = |res: &Results| -> Option<f64> {
        Some(
            res.values()
                .filter_map(|v| v.get("errors").and_then(Value::as_f64))
                // An empty float sum is -0.0; adding 0.0 prints it as 0.
                .sum::<f64>()
                + 0.0,
        )
    };
    let mut rows = rows;
    rows.push(row(
        "request errors, all scenarios",
        "",
        errs(w),
        errs(r),
        Better::Neither,
    ));
    for (res, who) in [(w, "Wharf"), (r, "reference")] {
        for (k, v) in res.iter() {
            if let Some(f) = v.get("failed").and_then(Value::as_str) {
                notes.push(format!("{who}: scenario {k} FAILED: {f}"));
            }
            if let Some(e) = v.get("first_error").and_then(Value::as_str) {
                notes.push(format!("{who}: {k}: first error: {e}"));
            }
        }
    }

    println!("| figure | unit | Wharf | reference | ratio | goal | pass |");
    println!("|---|---|---:|---:|---:|---|---|");
    for rw in &rows {
        let ratio = match (rw.ratio(), rw.better) {
            (Some(x), Better::Higher) => format!("{}× (W/R)", fmt(Some(x))),
            (Some(x), Better::Lower) => format!("{}× (R/W)", fmt(Some(x))),
            _ => "".into(),
        };
        let pass = match rw.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None if rw.goal.is_empty() => "",
            None => "n/a",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            rw.figure,
            rw.unit,
            fmt(rw.w),
            fmt(rw.r),
            ratio,
            rw.goal,
            pass
        );
    }
    println!();
    println!(
        "Ratios are \"times better for Wharf\": W/R where higher is better, R/W where lower is better."
    );
    let with_goal = rows.iter().filter(|r| r.pass.is_some()).count();
    let passed = rows.iter().filter(|r| r.pass == Some(true)).count();
    println!("Goals met: {passed} of {with_goal}.");
    for n in notes {
        println!("- {n}");
    }
}
