//! Server configuration: defaults, a TOML file, and overrides from the
//! command line / `WHARF_*` environment (applied by the binary).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory holding all registry data.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub limits: Limits,
    pub uploads: Uploads,
    pub storage: Storage,
    pub tls: Tls,
    pub http: Http,
    /// Allow deleting manifests, tags and blobs.
    pub delete_enabled: bool,
    /// Images served read-only, in place, from OCI layouts, oci-archives
    /// and docker-save tarballs (`[[sources]]`, `--from`).
    pub sources: Vec<SourceConfig>,
    /// Authentication and authorization (off unless configured).
    pub auth: AuthConfig,
    /// Tags that, once set, are never moved or deleted (`[[immutable_tags]]`).
    pub immutable_tags: Vec<ImmutableTagsRule>,
    /// Byte limits per repository pattern (`[[quotas]]`, docs/quotas.md).
    pub quotas: Vec<QuotaRule>,
    /// Background garbage collection (`[gc]`).
    pub gc: Gc,
    /// Tags and untagged manifests garbage collection removes (`[[retention]]`).
    pub retention: Vec<RetentionRuleConfig>,
    /// Registries cached pull-through under local prefixes (`[[upstreams]]`,
    /// docs/mirror.md).
    pub upstreams: Vec<mirror::UpstreamConfig>,
    /// Webhooks told of pushes and deletes (`[events]`, docs/events.md).
    pub events: crate::events::EventsConfig,
    /// Prometheus metrics at `/metrics` (`[metrics]`, docs/observability.md).
    pub metrics: MetricsConfig,
    /// The web UI at `/ui/` (`[ui]`, docs/ui.md).
    pub ui: Ui,
}

/// `[metrics]`: where `/metrics` is served (docs/observability.md).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all (and count storage operations and requests).
    pub enabled: bool,
    /// A separate plain-HTTP listener for `/metrics`, `/healthz` and
    /// `/readyz` only (an admin or cluster-internal address). When set,
    /// the main listener does not serve `/metrics`.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: None,
        }
    }
}

/// `[ui]`: the web UI, served at `/ui/` on the registry's own listener
/// (docs/ui.md). On by default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Ui {
    /// Serve the UI (false: `/ui/` and `/` answer 404 like any unknown path).
    pub enabled: bool,
}

impl Default for Ui {
    fn default() -> Self {
        Ui { enabled: true }
    }
}

/// `[gc]`: garbage collection in the background of `wharf serve`
/// (docs/gc.md). Off by default: its cost on request latency is not yet
/// measured, and `wharf gc` does the same on demand.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Gc {
    /// Seconds between runs; 0: no background collection.
    pub interval_secs: u64,
    /// Unreferenced links and content younger than this are kept.
    pub grace_secs: u64,
    /// Storage requests a run keeps in flight (marks, looks, deletes).
    pub concurrency: usize,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            interval_secs: 0,
            grace_secs: 3600,
            concurrency: store::gc::DEFAULT_CONCURRENCY,
        }
    }
}

/// One `[[immutable_tags]]` rule: tags matching `tags` (default: every tag)
/// in repositories matching `repos` keep their first digest for good.
/// Patterns as in `[[auth.policy]]`: `*` within a component, `**` across.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ImmutableTagsRule {
    pub repos: Vec<String>,
    pub tags: Vec<String>,
}

impl ImmutableTagsRule {
    /// The rule for the registry; `index` (from 0) names it in errors.
    pub fn compile(&self, index: usize) -> anyhow::Result<store::ImmutableTags> {
        let at = format!("immutable_tags #{}", index + 1);
        if self.repos.is_empty() {
            anyhow::bail!("{at}: repos is empty (use [\"**\"] for every repository)");
        }
        let tags = if self.tags.is_empty() {
            vec!["*".to_owned()]
        } else {
            self.tags.clone()
        };
        let parse = |ps: &[String]| {
            ps.iter()
                .map(|p| oci::pattern::Pattern::parse(p).map_err(|e| anyhow::anyhow!("{at}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        Ok(store::ImmutableTags {
            name: format!(
                "{at}: repos {}, tags {}",
                self.repos.join(" "),
                tags.join(" ")
            ),
            repos: parse(&self.repos)?,
            tags: parse(&tags)?,
        })
    }
}

/// One `[[retention]]` rule, applied by garbage collection to the
/// repositories matching `repos` (the first rule matching a repository is
/// its rule). See docs/gc.md, "Retention".
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionRuleConfig {
    pub repos: Vec<String>,
    /// The tags the rule counts and may remove (default: every tag).
    pub tags: Vec<String>,
    /// Tags never removed.
    pub protect: Vec<String>,
    /// Keep the newest N counted tags (by last push).
    pub keep_newest: Option<usize>,
    /// Remove counted tags last pushed longer ago than this ("30d", "12h"),
    /// the newest `keep_newest` excepted.
    pub tags_older_than: Option<String>,
    /// Remove manifests no tag, kept index or kept subject holds, pushed
    /// longer ago than this (never less than `[gc] grace_secs`).
    pub untagged_older_than: Option<String>,
}

impl RetentionRuleConfig {
    /// The rule for the collector; `index` (from 0) names it.
    pub fn compile(&self, index: usize) -> anyhow::Result<store::gc::retention::RetentionRule> {
        let at = format!("retention #{}", index + 1);
        if self.repos.is_empty() {
            anyhow::bail!("{at}: repos is empty (use [\"**\"] for every repository)");
        }
        if self.keep_newest.is_none()
            && self.tags_older_than.is_none()
            && self.untagged_older_than.is_none()
        {
            anyhow::bail!(
                "{at}: says nothing to remove (set keep_newest, tags_older_than or untagged_older_than)"
            );
        }
        let tags = if self.tags.is_empty() {
            vec!["*".to_owned()]
        } else {
            self.tags.clone()
        };
        let patterns = |ps: &[String]| {
            ps.iter()
                .map(|p| oci::pattern::Pattern::parse(p).map_err(|e| anyhow::anyhow!("{at}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        let duration = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(|v| {
                    humantime::parse_duration(v).map_err(|e| {
                        anyhow::anyhow!(
                            "{at}: {field} = {v:?} is not a duration like \"30d\" or \"12h\": {e}"
                        )
                    })
                })
                .transpose()
        };
        Ok(store::gc::retention::RetentionRule {
            name: format!("{at}: repos {}", self.repos.join(" ")),
            repos: patterns(&self.repos)?,
            tags: patterns(&tags)?,
            protect: patterns(&self.protect)?,
            keep_newest: self.keep_newest,
            tags_older_than: duration("tags_older_than", &self.tags_older_than)?,
            untagged_older_than: duration("untagged_older_than", &self.untagged_older_than)?,
        })
    }
}

/// One `[[quotas]]` rule: the repositories matching `repos` may hold
/// `max_bytes` together (the first rule matching a repository applies).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaRule {
    pub repos: Vec<String>,
    /// Bytes, or a size such as `"10GiB"` or `"500 MB"`.
    pub max_bytes: Size,
}

/// A size in the config: an integer of bytes or a string with a unit.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Default for Size {
    fn default() -> Self {
        Size::Text(String::new())
    }
}

impl Size {
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => store::quota::parse_size(t),
        }
    }
}

impl QuotaRule {
    /// The rule for the registry; `index` (from 0) names it in errors.
    pub fn compile(&self, index: usize) -> anyhow::Result<store::quota::Quota> {
        let at = format!("quotas #{}", index + 1);
        if self.repos.is_empty() {
            anyhow::bail!("{at}: repos is empty (use [\"**\"] for every repository)");
        }
        if self.max_bytes == Size::default() {
            anyhow::bail!("{at}: max_bytes is missing (bytes, or a size such as \"10GiB\")");
        }
        let max_bytes = self
            .max_bytes
            .bytes()
            .map_err(|e| anyhow::anyhow!("{at}: max_bytes: {e}"))?;
        let repos = self
            .repos
            .iter()
            .map(|p| oci::pattern::Pattern::parse(p).map_err(|e| anyhow::anyhow!("{at}: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(store::quota::Quota {
            name: at,
            patterns: self.repos.clone(),
            repos,
            max_bytes,
        })
    }
}

/// `[auth]`: who may do what. Auth is on when any user source is given
/// (an htpasswd file, `[[auth.users]]`, mTLS users), tokens are enabled, or
/// external issuers are configured; then everything not granted by a policy
/// rule is denied. See docs/auth.md.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// An Apache htpasswd file with bcrypt hashes (`htpasswd -B`).
    pub htpasswd: Option<PathBuf>,
    /// Users declared in the config.
    pub users: Vec<UserConfig>,
    /// Realm named in Basic challenges (default "wharf").
    pub basic_realm: String,
    /// Treat the subject name of a verified TLS client certificate as a user.
    pub mtls_users: bool,
    pub token: TokenConfig,
    pub external_issuers: Vec<ExternalIssuer>,
    pub policy: Vec<PolicyRule>,
    pub throttle: ThrottleConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// A bcrypt hash (`wharf passwd` or `htpasswd -nB` prints one).
    pub password_hash: String,
    pub groups: Vec<String>,
}

/// `[auth.token]`: the built-in token service (`/token`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    pub enabled: bool,
    /// Token endpoint URL sent in challenges; default `<[http] public_url>/token`,
    /// else `<scheme>://<Host>/token`.
    pub realm: Option<String>,
    /// The `service` named in challenges: the audience of issued tokens.
    pub service: String,
    /// The `iss` of issued tokens.
    pub issuer: String,
    /// PKCS#8 PEM private key (P-256 for ES256, or RSA for RS256); default:
    /// generated once into `<data_dir>/_auth/token-key.pem`.
    pub key_file: Option<PathBuf>,
    /// Lifetime of issued tokens, in seconds (at least 60).
    pub expiry_secs: u64,
}

/// `[[auth.external_issuers]]`: another token service whose tokens are accepted.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalIssuer {
    pub issuer: String,
    /// Required `aud`; default: this registry's token `service`.
    pub audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// How often the JWKS is read again, in seconds.
    pub refresh_secs: u64,
}

/// `[[auth.policy]]`: one rule granting access to repositories.
/// Subjects: `user:NAME`, `group:NAME`, `authenticated`, `anonymous` (everyone).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyRule {
    /// Patterns: `*` matches within one path component, `**` across components.
    pub repos: Vec<String>,
    pub pull: Vec<String>,
    pub push: Vec<String>,
    pub delete: Vec<String>,
}

/// `[auth.throttle]`: failed logins per client address.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failures allowed within `window_secs` before 429 (0: no throttling).
    pub max_failures: u32,
    pub window_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            enabled: false,
            realm: None,
            service: "wharf".into(),
            issuer: "wharf-token-service".into(),
            key_file: None,
            expiry_secs: 300,
        }
    }
}

impl Default for ExternalIssuer {
    fn default() -> Self {
        ExternalIssuer {
            issuer: String::new(),
            audience: None,
            jwks_file: None,
            jwks_url: None,
            refresh_secs: 300,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 10,
            window_secs: 60,
        }
    }
}

impl AuthConfig {
    /// Whether authentication is on (else every request is allowed).
    pub fn enabled(&self) -> bool {
        self.htpasswd.is_some()
            || !self.users.is_empty()
            || self.token.enabled
            || !self.external_issuers.is_empty()
            || self.mtls_users
    }
}

/// One `[[sources]]` entry: `path`, and `as = "REPO[:TAG]"` to rename.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub path: PathBuf,
    #[serde(default, rename = "as")]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `wharf=debug,info`.
    pub level: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest manifest accepted, in bytes (larger pushes get 413).
    pub max_manifest_size: usize,
    /// Longest repository name accepted.
    pub max_name_length: usize,
    /// Most `tag` query parameters accepted on one manifest push (more get 414).
    pub max_tags_per_push: usize,
    /// Largest request header (request line and header fields), in bytes;
    /// larger ones get 431.
    pub max_header_bytes: usize,
    /// Longest request target (path and query), in bytes; longer ones get 414.
    pub max_url_length: usize,
    /// Seconds a client has to send a complete request header once the
    /// server waits for one (also bounds an idle HTTP/1.1 keep-alive
    /// connection). 0: no limit.
    pub header_timeout_secs: u64,
    /// Seconds a client has to complete the TLS handshake. 0: no limit.
    pub tls_handshake_timeout_secs: u64,
    /// A connection with no request in progress and no bytes moving for
    /// this many seconds is closed. 0: no limit.
    pub idle_timeout_secs: u64,
    /// A request body that delivers nothing for this many seconds is
    /// aborted (the partial chunk is discarded). 0: no limit.
    pub body_timeout_secs: u64,
    /// Most upload sessions one client may have open at once: an
    /// authenticated user, else a client address (IPv6: its /64); more get
    /// 429 TOOMANYREQUESTS. 0: no limit.
    pub max_uploads_per_client: usize,
    /// Most upload sessions open at once in all (each holds two files in
    /// the data directory until it ends or expires); more get 429
    /// TOOMANYREQUESTS. 0: no limit.
    pub max_uploads: usize,
}

/// When to ask TLS clients for a certificate.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client may present a certificate; one that does must be valid.
    Optional,
    /// Every client must present a valid certificate.
    #[default]
    Required,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain; with `key`, serve HTTPS instead of HTTP.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    pub key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates: enables mTLS.
    pub client_ca: Option<PathBuf>,
    /// `required` (default) or `optional` client certificates, with `client_ca`.
    pub client_auth: ClientAuth,
    /// Seconds between checks of `cert` and `key` for changes (0: never
    /// reload; default 5).
    pub reload_secs: Option<u64>,
}

/// `[http]`: how clients reach the registry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// The URL clients use for this registry's root, e.g.
    /// `https://registry.example.com` behind a reverse proxy. Absolute URLs
    /// the registry sends (`Location`, the default token realm) start with
    /// it; without it they are built from the listener's scheme and the
    /// request's `Host`. No path prefix, query or user info.
    pub public_url: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Uploads {
    /// Upload sessions idle for longer than this many seconds are removed.
    pub expiry_secs: u64,
    /// Chunk size advertised in `OCI-Chunk-Min-Length` (0: not advertised).
    pub chunk_min_length: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// fsync files and directories so acknowledged writes survive a crash.
    /// Turn off only for throwaway data. (Filesystem backend.)
    pub fsync: bool,
    /// Where the registry's content lives: `fs` (the data directory, one
    /// process) or `s3` (a bucket that any number of replicas share).
    pub backend: BackendKind,
    pub s3: S3Storage,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Fs,
    S3,
}

/// `[storage.s3]`: the bucket of the S3 backend. Credentials not set here
/// come from `WHARF_S3_ACCESS_KEY_ID` / `WHARF_S3_SECRET_ACCESS_KEY`, else
/// the usual `AWS_*` environment.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Storage {
    /// `http(s)://host:port` of the S3 API; empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Keys go under `<prefix>/` in the bucket (empty: at its root).
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `https://bucket.host/key` instead of path-style `https://host/bucket/key`.
    pub virtual_hosted: bool,
    /// Answer blob GETs with 307 to a presigned URL, so bytes bypass Wharf.
    pub redirect: bool,
    /// Lifetime of a presigned URL, in seconds.
    pub redirect_expiry_secs: u64,
    /// Seconds to wait for a connection or for bytes from S3 before giving
    /// up (with retries, an operation fails within a few times this).
    pub timeout_secs: u64,
}

impl Default for S3Storage {
    fn default() -> Self {
        S3Storage {
            endpoint: String::new(),
            region: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            virtual_hosted: false,
            redirect: false,
            redirect_expiry_secs: 1200,
            timeout_secs: 10,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("./wharf-data"),
            log: LogConfig::default(),
            limits: Limits::default(),
            uploads: Uploads::default(),
            storage: Storage::default(),
            tls: Tls::default(),
            http: Http::default(),
            delete_enabled: true,
            sources: Vec::new(),
            auth: AuthConfig::default(),
            immutable_tags: Vec::new(),
            quotas: Vec::new(),
            gc: Gc::default(),
            retention: Vec::new(),
            upstreams: Vec::new(),
            metrics: MetricsConfig::default(),
            events: crate::events::EventsConfig::default(),
            ui: Ui::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_size: 4 * 1024 * 1024,
            max_name_length: oci::name::DEFAULT_MAX_NAME_LEN,
            max_tags_per_push: 100,
            max_header_bytes: 64 * 1024,
            max_url_length: 8 * 1024,
            header_timeout_secs: 30,
            tls_handshake_timeout_secs: 10,
            idle_timeout_secs: 120,
            body_timeout_secs: 60,
            // 20 concurrent `docker push`es of 5 layers each open 100
            // sessions; a CI farm behind one NAT must never meet this.
            max_uploads_per_client: 1000,
            // Two inodes and a few hundred bytes of memory per session: far
            // from exhausting a filesystem's inodes, far above what many
            // busy clients keep open at once.
            max_uploads: 10_000,
        }
    }
}

impl Default for Uploads {
    fn default() -> Self {
        Uploads {
            expiry_secs: 24 * 3600,
            chunk_min_length: 0,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            fsync: true,
            backend: BackendKind::Fs,
            s3: S3Storage::default(),
        }
    }
}

impl Config {
    /// Read a TOML config file; missing keys keep their defaults.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    /// Check settings that only make sense together; called before serving.
    pub fn validate(&self) -> anyhow::Result<()> {
        let t = &self.tls;
        match (&t.cert, &t.key) {
            (Some(_), None) => {
                anyhow::bail!("a TLS certificate needs its key (--tls-key, tls.key)")
            }
            (None, Some(_)) => {
                anyhow::bail!("a TLS key needs its certificate (--tls-cert, tls.cert)")
            }
            (None, None) if t.client_ca.is_some() => {
                anyhow::bail!(
                    "client certificates (tls.client_ca) need TLS (--tls-cert and --tls-key)"
                )
            }
            _ => {}
        }
        if self.limits.max_header_bytes < 1024 {
            anyhow::bail!("limits.max_header_bytes must be at least 1024");
        }
        if self.limits.max_url_length < 256 {
            anyhow::bail!("limits.max_url_length must be at least 256");
        }
        self.public_origin()?;
        self.immutable_tag_rules()?;
        self.retention_rules()?;
        mirror::config::check(&self.upstreams, self.limits.max_name_length)
            .map_err(anyhow::Error::msg)?;
        self.quota_rules()?;
        self.events.endpoints()?;
        if self.storage.backend == BackendKind::S3 {
            let s = &self.storage.s3;
            if s.bucket.is_empty() {
                anyhow::bail!("the S3 backend needs a bucket (storage.s3.bucket, --s3-bucket)");
            }
            if s.timeout_secs == 0 {
                anyhow::bail!("storage.s3.timeout_secs must be at least 1");
            }
            if s.redirect && !(1..=604_800).contains(&s.redirect_expiry_secs) {
                anyhow::bail!(
                    "storage.s3.redirect_expiry_secs must be between 1 and 604800 (7 days)"
                );
            }
            if self.auth.token.enabled && self.auth.token.key_file.is_none() {
                anyhow::bail!(
                    "with the S3 backend, token auth needs auth.token.key_file: every replica must sign with the same key, and a key generated into one replica's data directory would not be"
                );
            }
        }
        Ok(())
    }

    /// The `[[immutable_tags]]` rules, compiled.
    pub fn immutable_tag_rules(&self) -> anyhow::Result<Vec<store::ImmutableTags>> {
        self.immutable_tags
            .iter()
            .enumerate()
            .map(|(i, r)| r.compile(i))
            .collect()
    }

    /// The `[[retention]]` rules, compiled.
    pub fn retention_rules(&self) -> anyhow::Result<Vec<store::gc::retention::RetentionRule>> {
        self.retention
            .iter()
            .enumerate()
            .map(|(i, r)| r.compile(i))
            .collect()
    }

    /// `http.public_url` checked and normalised to `scheme://host[:port]`
    /// (see [`crate::origin::parse_public_url`]); `None` when not set.
    pub fn public_origin(&self) -> anyhow::Result<Option<String>> {
        self.http
            .public_url
            .as_deref()
            .map(|u| {
                crate::origin::parse_public_url(u)
                    .map_err(|e| anyhow::anyhow!("http.public_url (--public-url): {e}"))
            })
            .transpose()
    }

    /// The `[[quotas]]` rules, compiled, in order.
    pub fn quota_rules(&self) -> anyhow::Result<Vec<store::quota::Quota>> {
        self.quotas
            .iter()
            .enumerate()
            .map(|(i, r)| r.compile(i))
            .collect()
    }

    /// Is TLS configured?
    pub fn tls_enabled(&self) -> bool {
        self.tls.cert.is_some() && self.tls.key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partial_toml() {
        let c: Config = toml::from_str(
            r#"
listen = "0.0.0.0:8080"
delete_enabled = false
[limits]
max_manifest_size = 1024
[log]
format = "json"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert!(!c.delete_enabled);
        assert_eq!(c.limits.max_manifest_size, 1024);
        assert_eq!(c.limits.max_name_length, 255);
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(c.storage.fsync);
        assert!(toml::from_str::<Config>("nope = 1").is_err());
        let c: Config = toml::from_str(
            "[[sources]]\npath = \"a.tar\"\n[[sources]]\npath = \"l\"\nas = \"x/y:1\"\n",
        )
        .unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[1].name.as_deref(), Some("x/y:1"));
        assert!(toml::from_str::<Config>("[[sources]]\npath = \"a\"\nname = \"b\"\n").is_err());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn quota_rules() {
        let c: Config = toml::from_str(
            r#"
[[quotas]]
repos = ["team-a/**"]
max_bytes = "10GiB"
[[quotas]]
repos = ["team-b/*", "shared"]
max_bytes = 1000
"#,
        )
        .unwrap();
        let q = c.quota_rules().unwrap();
        assert_eq!(q[0].name, "quotas #1");
        assert_eq!(q[0].max_bytes, 10 << 30);
        assert_eq!(q[1].max_bytes, 1000);
        assert!(q[1].covers("shared") && q[1].covers("team-b/x") && !q[1].covers("team-b/x/y"));
        assert!(c.validate().is_ok());
        for bad in [
            "[[quotas]]\nrepos = []\nmax_bytes = 1",
            "[[quotas]]\nrepos = [\"a\"]",
            "[[quotas]]\nrepos = [\"a\"]\nmax_bytes = \"ten\"",
            "[[quotas]]\nrepos = [\"a\"]\nmax_bytes = \"10 XB\"",
            "[[quotas]]\nrepos = [\"a/***\"]\nmax_bytes = 1",
            "[[quotas]]\nrepos = [\"a\"]\nmax_bytes = \"99999999999 PiB\"",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[[quotas]]\nrepos = [\"a\"]\nmax_bytes = -1").is_err());
        assert!(toml::from_str::<Config>("[[quotas]]\nrepos = [\"a\"]\nlimit = 1").is_err());
    }

    #[test]
    fn tls_settings() {
        let c: Config = toml::from_str(
            r#"
[tls]
cert = "/etc/wharf/cert.pem"
key = "/etc/wharf/key.pem"
client_ca = "/etc/wharf/ca.pem"
client_auth = "optional"
[limits]
header_timeout_secs = 5
max_uploads_per_client = 3
max_uploads = 7
"#,
        )
        .unwrap();
        assert!(c.tls_enabled());
        assert_eq!(c.tls.client_auth, ClientAuth::Optional);
        assert_eq!(c.limits.header_timeout_secs, 5);
        assert_eq!(c.limits.max_uploads_per_client, 3);
        assert_eq!(c.limits.max_uploads, 7);
        assert_eq!(c.limits.max_header_bytes, 65536);
        assert!(c.validate().is_ok());
        let half: Config = toml::from_str("[tls]\ncert = \"c.pem\"").unwrap();
        assert!(half.validate().is_err());
        let ca_only: Config = toml::from_str("[tls]\nclient_ca = \"ca.pem\"").unwrap();
        assert!(ca_only.validate().is_err());
        assert!(toml::from_str::<Config>("[tls]\nclient_auth = \"maybe\"").is_err());
    }

    #[test]
    fn public_url() {
        let c: Config =
            toml::from_str("[http]\npublic_url = \"https://Registry.example.com/\"").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.public_origin().unwrap().as_deref(),
            Some("https://registry.example.com")
        );
        assert_eq!(Config::default().public_origin().unwrap(), None);
        for bad in [
            "registry.example.com",
            "https://r.example/prefix",
            "https://r.example/?x",
        ] {
            let c: Config = toml::from_str(&format!("[http]\npublic_url = \"{bad}\"")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[http]\npublic = \"x\"").is_err());
    }
}
