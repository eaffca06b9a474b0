//! `wharf`: the registry server and the registry client in one binary.

/// `println!` for command output. A reader that went away (`wharf tags R |
/// head`) ends the command quietly, as with other command-line tools,
/// instead of the panic `println!` gives (Rust ignores SIGPIPE, and the
/// signal is not restored: sockets are written with writev, which raises it).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

/// Standard output failed: end quietly if its reader went away, else say so.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("wharf: cannot write to standard output: {e}");
    std::process::exit(1);
}

mod cli;
mod du;
mod fsck;
mod gc;
mod import;
mod memory;
mod migrate;
mod passwd;
mod store_copy;
mod stores;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use server::Config;
use server::config::{ClientAuth, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "An OCI container registry and registry client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    ///
    /// With no options it stores data in ./wharf-data and listens on
    /// 127.0.0.1:5000. Settings come from, lowest precedence first: built-in
    /// defaults, the TOML file given with --config, WHARF_* environment
    /// variables, and command-line options.
    Serve(Box<ServeArgs>),
    /// Migrate a CNCF Distribution (registry:2) filesystem store into Wharf's data directory.
    ///
    /// Offline: reads Distribution's storage directly (no HTTP) and writes
    /// Wharf's store. Neither the old registry nor `wharf serve` may be
    /// running on these directories meanwhile. Blobs are verified and hard
    /// linked where possible (else copied); bad items are reported and
    /// skipped, and the exit status is 1 if anything was skipped. Running it
    /// again is harmless.
    Migrate(migrate::MigrateArgs),
    /// Copy a whole store between a data directory and an S3 bucket (either
    /// way), verifying every blob's digest.
    ///
    /// `--from dir:./wharf-data --to s3:bucket/prefix` moves a registry onto
    /// object storage; the reverse brings it back. No `wharf serve` may
    /// write to either store meanwhile. Content the destination already
    /// holds is skipped, so running it again finishes an interrupted copy.
    /// Damaged blobs are reported and not copied; the exit status is then 1.
    StoreCopy(store_copy::StoreCopyArgs),
    /// Garbage collection: delete blob links no manifest references and
    /// content no link names (older than --grace), and expired uploads.
    ///
    /// Online and safe with pushes going on (docs/gc.md). On S3 it may run
    /// anywhere while replicas serve the bucket; a data directory is
    /// locked by its server, which collects its own with [gc] interval_secs.
    Gc(gc::GcArgs),
    /// Check a store: tags, manifests and links lead to content that is
    /// there, and every blob's bytes match its digest (exit 1 if not).
    ///
    /// --repair removes links to missing content and corrupt content (both
    /// lost already) and reports the rest.
    Fsck(fsck::FsckArgs),
    /// Usage per repository (blobs linked and manifests), largest first,
    /// and per quota with --config.
    ///
    /// Reads the usage records servers keep for repositories under a quota
    /// (docs/quotas.md) and walks the repositories that have none;
    /// --recount walks every repository and writes its record.
    Du(du::DuArgs),
    /// Import an OCI image layout, oci-archive or docker-archive into Wharf's data directory, offline.
    Import(import::ImportArgs),
    /// Print an htpasswd line `USER:<bcrypt hash>` for a password read from
    /// the terminal (without echo) or one line of standard input.
    Passwd(passwd::PasswdArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// e.g. `wharf completions bash > /etc/bash_completion.d/wharf`, or
    /// `wharf completions zsh > "${fpath[1]}/_wharf"`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages: wharf.1 and one wharf-COMMAND.1 per command.
    ///
    /// e.g. `wharf man --dir /usr/local/share/man/man1`. Without --dir,
    /// print wharf.1 to standard output.
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Exit 0 if a registry answers on ADDR (default: $WHARF_LISTEN or
    /// 127.0.0.1:5000; an unspecified address is tried on loopback), else 1.
    ///
    /// For container health checks: a plain-HTTP registry must answer
    /// `GET /readyz` with 200 (the storage answers); under TLS
    /// (WHARF_TLS_CERT set) accepting the connection is enough.
    Healthcheck {
        #[arg(value_name = "ADDR")]
        addr: Option<String>,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// `wharf healthcheck`: is a registry answering at `addr`?
fn healthcheck(addr: Option<String>) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    use std::time::Duration;
    let addr = addr
        .or_else(|| std::env::var("WHARF_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:5000".into());
    let mut sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address (IP:PORT): {e}"))?;
    if sock.ip().is_unspecified() {
        sock.set_ip(match sock {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = Duration::from_secs(5);
    let mut conn = std::net::TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("nothing answers at {sock}: {e}"))?;
    if std::env::var_os("WHARF_TLS_CERT").is_some_and(|v| !v.is_empty()) {
        return Ok(());
    }
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET /readyz HTTP/1.0\r\nHost: {sock}\r\n\r\n").as_bytes())
        .map_err(|e| format!("{sock}: {e}"))?;
    let mut answer = Vec::new();
    conn.take(4096)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{sock} sent no HTTP answer: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    match answer.get(9..12) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "{sock} is not ready: {}",
            answer.rsplit("\r\n\r\n").next().unwrap_or(&answer)
        )),
    }
}

/// `wharf man`: wharf.1 and a page per subcommand, from the same
/// definitions as `--help`.
fn write_man_pages(dir: Option<&std::path::Path>) -> std::io::Result<()> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        if let Err(e) = std::io::Write::write_all(&mut std::io::stdout(), &page) {
            stdout_failed(e);
        }
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    let page = |name: String, c: clap::Command| -> std::io::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .title(name.clone())
            .render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.1")), out)
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let full = format!("wharf {}", sub.get_name());
        let sub = sub.clone().bin_name(full.clone()).display_name(full);
        page(format!("wharf-{}", sub.get_name()), sub)?;
    }
    page("wharf".into(), cmd)
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (keys: listen, data_dir, delete_enabled,
    /// [log] format/level, [limits] max_manifest_size/max_name_length/max_tags_per_push/
    /// max_header_bytes/max_url_length/header_timeout_secs/tls_handshake_timeout_secs/
    /// idle_timeout_secs/body_timeout_secs/max_uploads_per_client/max_uploads,
    /// [uploads] expiry_secs/chunk_min_length, [storage] fsync/backend, [storage.s3]
    /// endpoint/region/bucket/prefix/access_key_id/secret_access_key/virtual_hosted/
    /// redirect/redirect_expiry_secs/timeout_secs, [[sources]] path/as,
    /// [tls] cert/key/client_ca/client_auth/reload_secs, [http] public_url,
    /// [metrics] enabled/listen, [auth] ...: see docs/auth.md).
    #[arg(long, short = 'c', env = "WHARF_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, env = "WHARF_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for all registry data [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "WHARF_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log filter, e.g. info, debug, wharf::access=warn [default: info].
    #[arg(long, env = "WHARF_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Largest manifest accepted, in bytes; larger pushes get 413 [default: 4194304].
    #[arg(long, env = "WHARF_MAX_MANIFEST_SIZE", value_name = "BYTES")]
    max_manifest_size: Option<usize>,
    /// Longest repository name accepted [default: 255].
    #[arg(long, env = "WHARF_MAX_NAME_LENGTH", value_name = "CHARS")]
    max_name_length: Option<usize>,
    /// Most `tag` parameters on one manifest push; more get 414 [default: 100].
    #[arg(long, env = "WHARF_MAX_TAGS_PER_PUSH", value_name = "N")]
    max_tags_per_push: Option<usize>,
    /// Remove upload sessions idle for this many seconds [default: 86400].
    #[arg(long, env = "WHARF_UPLOAD_EXPIRY", value_name = "SECS")]
    upload_expiry: Option<u64>,
    /// Chunk size to advertise in OCI-Chunk-Min-Length; 0 advertises none [default: 0].
    #[arg(long, env = "WHARF_CHUNK_MIN_LENGTH", value_name = "BYTES")]
    chunk_min_length: Option<u64>,
    /// Refuse deletes of manifests, tags and blobs (405).
    #[arg(long, env = "WHARF_NO_DELETE")]
    no_delete: bool,
    /// Do not fsync writes: faster, but a crash can lose acknowledged data.
    #[arg(long, env = "WHARF_NO_FSYNC")]
    no_fsync: bool,
    /// Storage backend: fs (the data directory) or s3 (a bucket shared by
    /// any number of replicas; see docs/storage.md) [default: fs].
    #[arg(long, env = "WHARF_STORAGE", value_parser = ["fs", "s3"])]
    storage: Option<String>,
    /// S3 API endpoint, http(s)://host:port (empty: AWS).
    #[arg(long, env = "WHARF_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "WHARF_S3_REGION", value_name = "REGION")]
    s3_region: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "WHARF_S3_BUCKET", value_name = "BUCKET")]
    s3_bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, env = "WHARF_S3_PREFIX", value_name = "PREFIX")]
    s3_prefix: Option<String>,
    /// Answer blob GETs with 307 to a presigned S3 URL.
    #[arg(long, env = "WHARF_S3_REDIRECT")]
    s3_redirect: bool,
    /// PEM key the token service signs with (auth.token.key_file); replicas
    /// over one bucket must all be given the same one.
    #[arg(long, env = "WHARF_TOKEN_KEY_FILE", value_name = "FILE")]
    token_key_file: Option<PathBuf>,
    /// Serve the images of a docker-save tarball, an oci-archive or an OCI
    /// layout directory read-only, in place (repeatable). Names come from
    /// the source (RepoTags / org.opencontainers.image.ref.name).
    #[arg(long = "from", value_name = "PATH")]
    from: Vec<PathBuf>,
    /// Serve the images of the --from just before as REPO (keeping their
    /// tags) or, for a source of one image, as REPO:TAG.
    #[arg(long = "as", value_name = "REPO[:TAG]")]
    as_: Vec<String>,
    /// Which --from each --as belongs to (filled from the command line).
    #[arg(skip)]
    as_for: Vec<usize>,
    /// Require Basic authentication against this htpasswd file (bcrypt).
    /// Turns auth on: grant access with [[auth.policy]] rules in the config.
    #[arg(long, env = "WHARF_HTPASSWD", value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// Run the built-in token service (/token) and answer with Bearer
    /// challenges (the Docker token flow).
    #[arg(long, env = "WHARF_AUTH_TOKEN")]
    auth_token: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key); reloaded when it changes.
    #[arg(long, env = "WHARF_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "WHARF_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates for client certificates (mTLS).
    #[arg(long, env = "WHARF_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: must every client present a certificate? [default: required].
    #[arg(long, env = "WHARF_TLS_CLIENT_AUTH", value_parser = ["required", "optional"])]
    tls_client_auth: Option<String>,
    /// The URL clients reach this registry at, e.g. https://registry.example.com
    /// behind a reverse proxy: Location headers and the default token realm
    /// start with it [default: the listener's scheme and the request's Host].
    #[arg(long, env = "WHARF_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Largest request header in bytes; larger get 431 [default: 65536].
    #[arg(long, env = "WHARF_MAX_HEADER_BYTES", value_name = "BYTES")]
    max_header_bytes: Option<usize>,
    /// Longest request path and query in bytes; longer get 414 [default: 8192].
    #[arg(long, env = "WHARF_MAX_URL_LENGTH", value_name = "BYTES")]
    max_url_length: Option<usize>,
    /// Seconds to receive a whole request header; 0: no limit [default: 30].
    #[arg(long, env = "WHARF_HEADER_TIMEOUT", value_name = "SECS")]
    header_timeout: Option<u64>,
    /// Seconds to complete a TLS handshake; 0: no limit [default: 10].
    #[arg(long, env = "WHARF_TLS_HANDSHAKE_TIMEOUT", value_name = "SECS")]
    tls_handshake_timeout: Option<u64>,
    /// Close connections idle this many seconds; 0: never [default: 120].
    #[arg(long, env = "WHARF_IDLE_TIMEOUT", value_name = "SECS")]
    idle_timeout: Option<u64>,
    /// Abort a request body that sends nothing for this many seconds; 0: never [default: 60].
    #[arg(long, env = "WHARF_BODY_TIMEOUT", value_name = "SECS")]
    body_timeout: Option<u64>,
    /// Most upload sessions open per user (or, for anonymous clients, per
    /// address; IPv6 per /64); more get 429; 0: no limit [default: 1000].
    #[arg(long, env = "WHARF_MAX_UPLOADS_PER_CLIENT", value_name = "N")]
    max_uploads_per_client: Option<usize>,
    /// Most upload sessions open in all; more get 429; 0: no limit [default: 10000].
    #[arg(long, env = "WHARF_MAX_UPLOADS", value_name = "N")]
    max_uploads: Option<usize>,
    /// Serve /metrics (with /healthz and /readyz) on this separate
    /// plain-HTTP address instead of the main listener ([metrics] listen).
    #[arg(long, env = "WHARF_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve no /metrics ([metrics] enabled = false).
    #[arg(long, env = "WHARF_NO_METRICS")]
    no_metrics: bool,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics.listen = Some(v);
        }
        if self.no_metrics {
            c.metrics.enabled = false;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.log_format {
            c.log.format = if v == "json" {
                LogFormat::Json
            } else {
                LogFormat::Text
            };
        }
        if let Some(v) = self.log_level {
            c.log.level = v;
        }
        if let Some(v) = self.max_manifest_size {
            c.limits.max_manifest_size = v;
        }
        if let Some(v) = self.max_name_length {
            c.limits.max_name_length = v;
        }
        if let Some(v) = self.max_tags_per_push {
            c.limits.max_tags_per_push = v;
        }
        if let Some(v) = self.upload_expiry {
            c.uploads.expiry_secs = v;
        }
        if let Some(v) = self.chunk_min_length {
            c.uploads.chunk_min_length = v;
        }
        if self.no_delete {
            c.delete_enabled = false;
        }
        if self.no_fsync {
            c.storage.fsync = false;
        }
        match self.storage.as_deref() {
            Some("s3") => c.storage.backend = server::config::BackendKind::S3,
            Some(_) => c.storage.backend = server::config::BackendKind::Fs,
            None => {}
        }
        let s3 = &mut c.storage.s3;
        for (flag, key) in [
            (self.s3_endpoint, &mut s3.endpoint),
            (self.s3_region, &mut s3.region),
            (self.s3_bucket, &mut s3.bucket),
            (self.s3_prefix, &mut s3.prefix),
        ] {
            if let Some(v) = flag {
                *key = v;
            }
        }
        if self.s3_redirect {
            s3.redirect = true;
        }
        let mut sources: Vec<server::config::SourceConfig> = self
            .from
            .into_iter()
            .map(|path| server::config::SourceConfig { path, name: None })
            .collect();
        for (name, i) in self.as_.into_iter().zip(self.as_for) {
            match sources.get_mut(i) {
                Some(s) if s.name.is_none() => s.name = Some(name),
                Some(s) => anyhow::bail!("--from {} has more than one --as", s.path.display()),
                None => anyhow::bail!("--as {name} must follow the --from it names"),
            }
        }
        c.sources.extend(sources);
        if let Some(v) = self.htpasswd {
            c.auth.htpasswd = Some(v);
        }
        if self.auth_token {
            c.auth.token.enabled = true;
        }
        if let Some(v) = self.token_key_file {
            c.auth.token.key_file = Some(v);
        }
        if let Some(v) = self.tls_cert {
            c.tls.cert = Some(v);
        }
        if let Some(v) = self.tls_key {
            c.tls.key = Some(v);
        }
        if let Some(v) = self.tls_client_ca {
            c.tls.client_ca = Some(v);
        }
        if let Some(v) = self.tls_client_auth {
            c.tls.client_auth = if v == "optional" {
                ClientAuth::Optional
            } else {
                ClientAuth::Required
            };
        }
        if let Some(v) = self.public_url {
            c.http.public_url = Some(v);
        }
        let l = &mut c.limits;
        let pairs = [
            (self.header_timeout, &mut l.header_timeout_secs),
            (
                self.tls_handshake_timeout,
                &mut l.tls_handshake_timeout_secs,
            ),
            (self.idle_timeout, &mut l.idle_timeout_secs),
            (self.body_timeout, &mut l.body_timeout_secs),
        ];
        for (flag, key) in pairs {
            if let Some(v) = flag {
                *key = v;
            }
        }
        if let Some(v) = self.max_header_bytes {
            l.max_header_bytes = v;
        }
        if let Some(v) = self.max_url_length {
            l.max_url_length = v;
        }
        if let Some(v) = self.max_uploads_per_client {
            l.max_uploads_per_client = v;
        }
        if let Some(v) = self.max_uploads {
            l.max_uploads = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// The async runtime for a command (`worker_threads`: None for one per
/// core); reports why it could not start.
/// Print a command's report as JSON (`--json`) or as `print` words it, and
/// exit 0 if `ok`, else 1 (2 when the JSON cannot be written).
pub(crate) fn finish_report<T: serde::Serialize>(
    cmd: &str,
    json: bool,
    report: &T,
    print: impl FnOnce(&T),
    ok: bool,
) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(s) => outln!("{s}"),
            Err(e) => {
                eprintln!("wharf {cmd}: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print(report);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(crate) fn runtime(worker_threads: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        b.worker_threads(n);
    }
    match b.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            None
        }
    }
}

/// For each `--as` of `wharf serve`, the index of the `--from` just before
/// it (`usize::MAX` if none is).
fn as_positions(m: &clap::ArgMatches) -> Vec<usize> {
    let Some(("serve", m)) = m.subcommand() else {
        return Vec::new();
    };
    let froms: Vec<usize> = m
        .indices_of("from")
        .map(Iterator::collect)
        .unwrap_or_default();
    m.indices_of("as_")
        .map(|it| {
            it.map(|a| froms.iter().rposition(|f| *f < a).unwrap_or(usize::MAX))
                .collect()
        })
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Serve(mut args) => {
            args.as_for = as_positions(&matches);
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return ExitCode::from(2);
                }
            };
            memory::tune_allocator();
            server::init_logging(&config);
            let Some(rt) = runtime(None) else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(server::run(config, memory::release_startup_memory)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate(args) => migrate::run(args),
        Command::StoreCopy(args) => store_copy::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Fsck(args) => fsck::run(args),
        Command::Du(args) => du::run(args),
        Command::Import(args) => import::run(args),
        Command::Passwd(args) => passwd::run(args),
        Command::Healthcheck { addr } => match healthcheck(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wharf healthcheck: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "wharf", &mut script);
            if let Err(e) = std::io::Write::write_all(&mut std::io::stdout(), &script) {
                stdout_failed(e);
            }
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match write_man_pages(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wharf man: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Client(cmd) => cli::run(cmd),
    }
}
