//! `wharf migrate`: bring a CNCF Distribution (registry:2) filesystem store
//! into Wharf's data directory, offline.

use clap::{ArgGroup, Args};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use store::fs::{FsBackend, open_failure};
use store::migrate::{self, BlobMode, Options, Report, Target};
use store::{Registry, RegistryConfig};

#[derive(Args)]
#[command(group(ArgGroup::new("blob_mode").args(["copy", "link", "move_blobs"])))]
pub struct MigrateArgs {
    /// Distribution's storage root (its `rootdirectory`, holding
    /// docker/registry/v2), or the docker/registry/v2 directory itself.
    #[arg(long, value_name = "DIR")]
    from_distribution: PathBuf,
    /// Wharf data directory to migrate into [default: ./wharf-data].
    /// No `wharf serve` may be running on it during the migration.
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Read and verify everything, report what would be done, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Copy blobs (the source is left untouched and independent).
    #[arg(long)]
    copy: bool,
    /// Hard link blobs; fail if the source is on another filesystem. The
    /// default hard links where possible and copies elsewhere.
    #[arg(long)]
    link: bool,
    /// Move blobs out of the source (rename; copy and remove across filesystems).
    #[arg(long = "move", id = "move_blobs")]
    move_blobs: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Do not fsync writes (faster; a crash can lose migrated data).
    #[arg(long, env = "WHARF_NO_FSYNC")]
    no_fsync: bool,
}

pub fn run(args: MigrateArgs) -> ExitCode {
    let Some(rt) = crate::runtime(None) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(migrate_cmd(&args)) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => outln!("{s}"),
                    Err(e) => {
                        eprintln!("wharf migrate: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print_report(&report);
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("wharf migrate: {e}");
            ExitCode::from(2)
        }
    }
}

async fn migrate_cmd(args: &MigrateArgs) -> anyhow::Result<Report> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./wharf-data"));
    let mode = if args.copy {
        BlobMode::Copy
    } else if args.link {
        BlobMode::Link
    } else if args.move_blobs {
        BlobMode::Move
    } else {
        BlobMode::Auto
    };
    let source = migrate::v2_root(&args.from_distribution)?;
    let opts = Options {
        source: args.from_distribution.clone(),
        mode,
        progress: !args.quiet,
        dry_run_can_link: migrate::same_filesystem(&source, &data_dir)?,
    };
    if args.dry_run {
        if mode == BlobMode::Link && !opts.dry_run_can_link {
            anyhow::bail!(
                "--link: {} and {} are on different filesystems",
                source.display(),
                data_dir.display()
            );
        }
        return Ok(migrate::migrate(None, &opts).await?);
    }
    let fs = FsBackend::open(&data_dir, !args.no_fsync)
        .map_err(|e| anyhow::anyhow!("{}", open_failure(&data_dir, &e)))?;
    let registry = Registry::new(Arc::new(fs.clone()), RegistryConfig::default());
    let target = Target {
        registry: &registry,
        fs: &fs,
    };
    Ok(migrate::migrate(Some(target), &opts).await?)
}

fn print_report(r: &Report) {
    let verb = if r.dry_run {
        "would migrate"
    } else {
        "migrated"
    };
    let b = &r.blobs;
    outln!(
        "{verb} from {}: {} repositories, {} manifests, {} tags, {} blobs ({})",
        r.source,
        r.repositories.len(),
        r.manifests,
        r.tags,
        b.count,
        migrate::human_bytes(b.bytes)
    );
    outln!(
        "blobs: {} linked, {} copied, {} moved, {} already present",
        b.linked,
        b.copied,
        b.moved,
        b.already_present
    );
    if r.problems.is_empty() {
        outln!("no problems");
        return;
    }
    outln!("{} problems (skipped):", r.problems.len());
    for p in &r.problems {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut line = format!("  {kind}");
        if let Some(repo) = &p.repository {
            line.push_str(&format!(" {repo}"));
        }
        if let Some(item) = &p.item {
            line.push_str(&format!(" {item}"));
        }
        line.push_str(&format!(": {}", p.detail));
        if let Some(path) = &p.path {
            line.push_str(&format!(" ({path})"));
        }
        outln!("{line}");
    }
}
