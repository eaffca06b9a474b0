//! The client subcommands of `wharf`: push, pull, tags, catalog, inspect,
//! rm, referrers, attach, login, logout, cp, cache.
//!
//! Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 auth,
//! 5 network. Output: human text on a terminal, minimal output otherwise,
//! JSON with `--json`; progress bars on stderr when both stdout and stderr
//! are terminals.

mod commands;
mod progress;

use clap::{Args, Subcommand};
use client::{Error, Kind};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options every client command takes.
#[derive(Args, Clone, Debug, Default)]
pub struct Common {
    /// Print machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Use plain HTTP for this registry (loopback hosts always do).
    #[arg(long)]
    pub insecure: bool,
    /// No progress bars or messages, whatever stdout is.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Trust the CA certificates in this PEM file (a registry with a private CA).
    #[arg(long, env = "WHARF_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Push files and directories as a package (one deterministic tar layer).
    ///
    /// Paths are stored as given (relative), with modes and symbolic links,
    /// sorted, with zeroed times and owners: the same files give the same
    /// digest. Prints the manifest digest.
    Push(PushArgs),
    /// Pull a package (or an oras artifact, or a single-layer image whose
    /// config is {}) into a directory.
    Pull(PullArgs),
    /// List the tags of a repository (HOST/REPO).
    Tags(TagsArgs),
    /// List the repositories of a registry (HOST).
    Catalog(CatalogArgs),
    /// Show a manifest: media type, digest, platforms, config, layers, sizes.
    Inspect(InspectArgs),
    /// Delete a manifest (by digest) or a tag.
    Rm(RmArgs),
    /// List the artifacts that refer to a manifest (signatures, SBOMs...).
    Referrers(ReferrersArgs),
    /// Push files as an artifact whose subject is REF (a signature, an SBOM...).
    Attach(AttachArgs),
    /// Store credentials for a registry where docker and podman keep them.
    Login(LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(LogoutArgs),
    /// Copy an image between registries, OCI layouts and tarballs.
    ///
    /// SRC and DST are HOST/REPO[:TAG|@DIGEST], oci:DIR[:TAG],
    /// oci-archive:FILE[:TAG] or docker-archive:FILE[:REPO:TAG].
    Cp(CpArgs),
    /// Manage the local blob cache ($XDG_CACHE_HOME/wharf).
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Args)]
pub struct PushArgs {
    /// Where to push: HOST[:PORT]/REPO[:TAG] (tag defaults to latest).
    pub reference: String,
    /// Files and directories to pack.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The manifest's artifactType.
    #[arg(long, value_name = "TYPE", default_value = client::package::PACKAGE_ARTIFACT_TYPE)]
    pub artifact_type: String,
    /// A manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct PullArgs {
    /// What to pull: HOST[:PORT]/REPO[:TAG|@DIGEST].
    pub reference: String,
    /// Directory to write the files into (created if missing).
    #[arg(long, short = 'o', value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// Replace files and directories that exist in DIR already.
    #[arg(long, short = 'f')]
    pub force: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct TagsArgs {
    /// HOST[:PORT]/REPO
    pub repository: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct CatalogArgs {
    /// HOST[:PORT]
    pub host: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct InspectArgs {
    /// HOST[:PORT]/REPO[:TAG|@DIGEST]
    pub reference: String,
    /// Print the manifest exactly as the registry serves it.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct RmArgs {
    /// HOST[:PORT]/REPO:TAG or HOST[:PORT]/REPO@DIGEST
    pub reference: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct ReferrersArgs {
    /// HOST[:PORT]/REPO[:TAG|@DIGEST]
    pub reference: String,
    /// Only artifacts of this type.
    #[arg(long, value_name = "TYPE")]
    pub artifact_type: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct AttachArgs {
    /// The subject: HOST[:PORT]/REPO[:TAG|@DIGEST]
    pub reference: String,
    /// The artifact's type, e.g. application/spdx+json.
    #[arg(long, value_name = "TYPE", required = true)]
    pub artifact_type: String,
    /// Files, one layer each, named by their file name.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct LoginArgs {
    /// HOST[:PORT]
    pub host: String,
    /// The user name (asked for on a terminal when not given).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password (or token) from standard input; without it the
    /// password is asked for on the terminal, not echoed.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// HOST[:PORT]
    pub host: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct CpArgs {
    /// HOST/REPO[:TAG|@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REPO:TAG]
    pub source: String,
    /// Same forms as SOURCE.
    pub destination: String,
    /// Copy a whole image index (every platform).
    #[arg(long)]
    pub all: bool,
    /// The platform to pick from an index: OS/ARCH[/VARIANT] (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Blobs transferred at once.
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Remove every cached blob.
    Prune(CacheArgs),
    /// Print the cache directory.
    Path(CacheArgs),
}

#[derive(Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub common: Common,
}

/// How a command talks to the user.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
    /// stdout is a terminal and not --quiet: full sentences.
    pub human: bool,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Out {
    fn new(c: &Common) -> Out {
        let tty = std::io::stdout().is_terminal();
        Out {
            json: c.json,
            human: tty && !c.quiet && !c.json,
            progress: tty && std::io::stderr().is_terminal() && !c.quiet && !c.json,
        }
    }
}

impl ClientCommand {
    fn common(&self) -> &Common {
        match self {
            ClientCommand::Push(a) => &a.common,
            ClientCommand::Pull(a) => &a.common,
            ClientCommand::Tags(a) => &a.common,
            ClientCommand::Catalog(a) => &a.common,
            ClientCommand::Inspect(a) => &a.common,
            ClientCommand::Rm(a) => &a.common,
            ClientCommand::Referrers(a) => &a.common,
            ClientCommand::Attach(a) => &a.common,
            ClientCommand::Login(a) => &a.common,
            ClientCommand::Logout(a) => &a.common,
            ClientCommand::Cp(a) => &a.common,
            ClientCommand::Cache(CacheCommand::Prune(a) | CacheCommand::Path(a)) => &a.common,
        }
    }
}

/// Run a client command; the exit code says how it went.
pub fn run(cmd: ClientCommand) -> ExitCode {
    let common = cmd.common().clone();
    let out = Out::new(&common);
    let Some(rt) = crate::runtime(Some(2)) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(commands::run(cmd, out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, out);
            ExitCode::from(e.kind().exit_code())
        }
    }
}

fn report(e: &Error, out: Out) {
    if out.json {
        let v = serde_json::json!({
            "error": e.to_string(),
            "kind": e.kind().to_string(),
            "exit_code": e.kind().exit_code(),
        });
        eprintln!("{v}");
        return;
    }
    eprintln!("wharf: {e}");
    if let Some(h) = e.hint()
        && e.kind() != Kind::Usage
    {
        eprintln!("hint: {h}");
    }
}
