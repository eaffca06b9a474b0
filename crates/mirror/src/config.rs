//! `[[upstreams]]`: the registries the cache mirrors, as written in the
//! server's TOML config, and their checks at startup.

use client::Host;
use oci::RepoName;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long a cached tag is trusted before it is revalidated (HEAD).
pub const DEFAULT_TAG_TTL_SECS: u64 = 300;
/// How long past its last validation a cached tag may still be served when
/// the upstream fails (stale-if-error).
pub const DEFAULT_MAX_STALE_SECS: u64 = 86_400;
/// Connect / read timeout of upstream requests.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// How often an upstream with `max_size` is checked against it.
pub const DEFAULT_EVICT_INTERVAL_SECS: u64 = 600;

/// One `[[upstreams]]` entry.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Names the upstream in logs, errors and response details.
    pub name: String,
    /// `https://host[:port]` (or `http://` for a plain-HTTP registry) of
    /// the upstream's API, e.g. `https://registry-1.docker.io`.
    pub url: String,
    /// Local repositories `<prefix>/<name>` are cached from `<name>` upstream.
    pub prefix: String,
    /// Credentials for the upstream (Basic, or the token flow it asks
    /// for); none: anonymous.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A Docker `config.json` to read the credentials from instead (its
    /// `auths` entry for the upstream's host, or the credential helper it
    /// names), at startup.
    #[serde(default)]
    pub docker_config: Option<PathBuf>,
    /// Seconds a cached tag is served without asking the upstream.
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl_secs: u64,
    /// Seconds past its last validation a cached tag is still served when
    /// the upstream is unreachable, answers 429 or 5xx, or times out.
    #[serde(default = "default_max_stale")]
    pub max_stale_secs: u64,
    /// Seconds to wait for the upstream to connect, or for its next bytes.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Accept pushes into the prefix (default: refused with 403 DENIED).
    #[serde(default)]
    pub push: bool,
    /// Docker Hub's rule: a one-component name `x` is `library/x`
    /// upstream. Default: on when `url` is Docker Hub.
    #[serde(default)]
    pub docker_hub_library: Option<bool>,
    /// PEM CA certificates to trust for the upstream besides the system's.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// The registry host clients name when they use this Wharf as a
    /// mirror (containerd's `?ns=<host>`). Default: the host of `url`;
    /// `docker.io` and `registry-1.docker.io` are one.
    #[serde(default)]
    pub registry_host: Option<String>,
    /// Other registries serving the same repositories, tried in order when
    /// this one is unreachable, times out, or answers 429 or 5xx.
    #[serde(default)]
    pub fallbacks: Vec<FallbackConfig>,
    /// A cap on what the upstream's cached repositories hold (`10GiB`,
    /// `500 MB`): past it the least recently pulled images are evicted.
    #[serde(default)]
    pub max_size: Option<String>,
    /// Seconds between two checks of `max_size` (each replica runs them).
    #[serde(default = "default_evict_interval")]
    pub evict_interval_secs: u64,
    /// Where blob fetches keep their spool file (the bytes clients read
    /// while the blob is stored). Default: the system's temporary directory.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// An address of its own where this upstream is served at the root:
    /// `/v2/<name>/...` there is `<prefix>/<name>` (the Docker daemon's
    /// `registry-mirrors`, which sends bare Docker Hub names).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// One `[[upstreams.fallbacks]]` entry: another registry with the same
/// repositories (a mirror of the upstream), with its own credentials and CA.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// `https://host[:port]` (or `http://`) of its registry API.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A Docker `config.json` to read its credentials from instead.
    #[serde(default)]
    pub docker_config: Option<PathBuf>,
    /// PEM CA certificates to trust for it besides the system's.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for FallbackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("docker_config", &self.docker_config)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("docker_config", &self.docker_config)
            .field("tag_ttl_secs", &self.tag_ttl_secs)
            .field("max_stale_secs", &self.max_stale_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("push", &self.push)
            .field("docker_hub_library", &self.docker_hub_library)
            .field("ca_cert", &self.ca_cert)
            .field("registry_host", &self.registry_host)
            .field("fallbacks", &self.fallbacks)
            .field("max_size", &self.max_size)
            .field("evict_interval_secs", &self.evict_interval_secs)
            .field("spool_dir", &self.spool_dir)
            .field("listen", &self.listen)
            .finish()
    }
}

fn default_tag_ttl() -> u64 {
    DEFAULT_TAG_TTL_SECS
}
fn default_max_stale() -> u64 {
    DEFAULT_MAX_STALE_SECS
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}
fn default_evict_interval() -> u64 {
    DEFAULT_EVICT_INTERVAL_SECS
}

/// An upstream entry, checked.
#[derive(Clone, Debug)]
pub struct UpstreamSpec {
    pub name: String,
    /// The upstream's base URL as configured, normalised (`scheme://host[:port]`).
    pub url: String,
    pub host: Host,
    pub prefix: RepoName,
    pub credentials: Option<client::auth::Credentials>,
    pub tag_ttl: Duration,
    pub max_stale: Duration,
    pub timeout: Duration,
    pub push: bool,
    pub library: bool,
    pub ca_cert: Option<PathBuf>,
    /// `host[:port]` clients name for this upstream in `?ns=`, normalised
    /// by [`registry_host`] (`docker.io` for Docker Hub).
    pub registry_host: String,
    /// Fallback registries, in the order they are tried.
    pub fallbacks: Vec<Endpoint>,
    /// The cap on the upstream's cached content, in bytes.
    pub max_size: Option<u64>,
    pub evict_interval: Duration,
    /// Where spool files go (`None`: the system's temporary directory).
    pub spool_dir: Option<PathBuf>,
    /// Where this upstream is served at the root, if anywhere
    /// ([`UpstreamSpec::root_repo`]).
    pub listen: Option<SocketAddr>,
}

/// A registry the cache can ask: the upstream's primary (its `url`) or a
/// fallback.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `scheme://host[:port]`, normalised.
    pub url: String,
    pub host: Host,
    pub credentials: Option<client::auth::Credentials>,
    pub ca_cert: Option<PathBuf>,
}

/// Check every `[[upstreams]]` entry and the set of them: what is wrong is
/// named by entry (`upstreams #2 (ghcr): ...`).
pub fn check(
    configs: &[UpstreamConfig],
    max_name_length: usize,
) -> Result<Vec<UpstreamSpec>, String> {
    let mut specs: Vec<UpstreamSpec> = Vec::with_capacity(configs.len());
    for (i, c) in configs.iter().enumerate() {
        let at = if c.name.is_empty() {
            format!("upstreams #{}", i + 1)
        } else {
            format!("upstreams #{} ({})", i + 1, c.name)
        };
        let spec = check_one(c, max_name_length).map_err(|e| format!("{at}: {e}"))?;
        for other in &specs {
            if other.name == spec.name {
                return Err(format!(
                    "{at}: the name {:?} is used by another upstream",
                    spec.name
                ));
            }
            let (a, b) = (spec.prefix.as_str(), other.prefix.as_str());
            if a == b || nested(a, b) || nested(b, a) {
                return Err(format!(
                    "{at}: prefix {a:?} overlaps the prefix {b:?} of upstream {}: a repository must belong to one upstream",
                    other.name
                ));
            }
            if spec.listen.is_some() && spec.listen == other.listen {
                return Err(format!(
                    "{at}: listen {} is the address of upstream {} too: each address serves one upstream at the root",
                    c.listen.map(|a| a.to_string()).unwrap_or_default(),
                    other.name
                ));
            }
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Is `inner` below `outer` (`a/b` below `a`)?
fn nested(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn check_one(c: &UpstreamConfig, max_name_length: usize) -> Result<UpstreamSpec, String> {
    if c.name.is_empty()
        || c.name.len() > 64
        || !c
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "name {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
            c.name
        ));
    }
    let primary = check_endpoint(
        &c.url,
        Creds {
            username: &c.username,
            password: &c.password,
            docker_config: &c.docker_config,
        },
        &c.ca_cert,
    )?;
    let host = primary.host.clone();
    let prefix = RepoName::parse(&c.prefix, max_name_length).map_err(|e| {
        format!(
            "prefix {:?} is not a repository name ({e}): e.g. \"dockerhub\" or \"mirrors/ghcr\"",
            c.prefix
        )
    })?;
    if c.timeout_secs == 0 {
        return Err("timeout_secs must be at least 1".into());
    }
    if c.max_stale_secs < c.tag_ttl_secs {
        return Err(format!(
            "max_stale_secs ({}) is shorter than tag_ttl_secs ({}): a tag could never be served stale",
            c.max_stale_secs, c.tag_ttl_secs
        ));
    }
    let mut fallbacks = Vec::with_capacity(c.fallbacks.len());
    for (i, f) in c.fallbacks.iter().enumerate() {
        let creds = Creds {
            username: &f.username,
            password: &f.password,
            docker_config: &f.docker_config,
        };
        let e = check_endpoint(&f.url, creds, &f.ca_cert)
            .map_err(|e| format!("fallbacks #{}: {e}", i + 1))?;
        if e.url == primary.url || fallbacks.iter().any(|o: &Endpoint| o.url == e.url) {
            return Err(format!(
                "fallbacks #{}: url {:?} is already tried before it",
                i + 1,
                f.url
            ));
        }
        fallbacks.push(e);
    }
    let max_size = match &c.max_size {
        None => None,
        Some(m) => match store::quota::parse_size(m) {
            Ok(0) => return Err(format!("max_size {m:?} must be more than 0")),
            Ok(n) => Some(n),
            Err(e) => return Err(format!("max_size: {e}")),
        },
    };
    if c.evict_interval_secs == 0 {
        return Err("evict_interval_secs must be at least 1".into());
    }
    if let Some(d) = &c.spool_dir
        && !d.is_dir()
    {
        return Err(format!("spool_dir {} is not a directory", d.display()));
    }
    let registry_host = match &c.registry_host {
        None => host.name.clone(),
        Some(h) => registry_host(h).ok_or_else(|| {
            format!(
                "registry_host {h:?} is not a host[:port] (e.g. \"docker.io\" or \"registry.corp.example:5000\")"
            )
        })?,
    };
    let library = c
        .docker_hub_library
        .unwrap_or(host.name == client::reference::DOCKER_HUB);
    Ok(UpstreamSpec {
        name: c.name.clone(),
        url: primary.url,
        host,
        prefix,
        credentials: primary.credentials,
        tag_ttl: Duration::from_secs(c.tag_ttl_secs),
        max_stale: Duration::from_secs(c.max_stale_secs),
        timeout: Duration::from_secs(c.timeout_secs),
        push: c.push,
        library,
        ca_cert: primary.ca_cert,
        registry_host,
        fallbacks,
        max_size,
        evict_interval: Duration::from_secs(c.evict_interval_secs),
        spool_dir: c.spool_dir.clone(),
        listen: c.listen,
    })
}

/// Check a registry's `url` and its credentials and CA (an upstream's, or
/// one of its fallbacks').
/// Where a registry's credentials come from, as configured.
struct Creds<'a> {
    username: &'a Option<String>,
    password: &'a Option<String>,
    docker_config: &'a Option<PathBuf>,
}

fn check_endpoint(
    raw_url: &str,
    creds: Creds<'_>,
    ca_cert: &Option<PathBuf>,
) -> Result<Endpoint, String> {
    let Creds {
        username,
        password,
        docker_config,
    } = creds;
    let url = url::Url::parse(raw_url).map_err(|e| {
        format!(
            "url {:?} is not a URL ({e}): expected https://host[:port], e.g. https://registry-1.docker.io",
            raw_url
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url {:?}: the scheme must be https (or http for a plain-HTTP registry)",
            raw_url
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url {:?}: put credentials in username and password, not in the URL",
            raw_url
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "url {:?}: only scheme://host[:port] (the registry API is at /v2/ of it; no path, query or fragment)",
            raw_url
        ));
    }
    let host_port = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(format!("url {:?} has no host", raw_url)),
    };
    let normalised = format!("{}://{host_port}", url.scheme());
    let host = Host::parse(&normalised, false).map_err(|e| format!("url {:?}: {e}", raw_url))?;
    let credentials = match (username, password) {
        (None, None) => match docker_config {
            Some(path) => Some(from_docker_config(path, &host)?),
            None => None,
        },
        _ if docker_config.is_some() => {
            return Err(
                "docker_config and username/password are two sources of credentials: set one"
                    .into(),
            );
        }
        (Some(u), Some(p)) if !u.is_empty() => Some(client::auth::Credentials {
            username: u.clone(),
            password: p.clone(),
        }),
        (Some(_), Some(_)) => return Err("username is empty".into()),
        (Some(_), None) => return Err("username without password".into()),
        (None, Some(_)) => return Err("password without username".into()),
    };
    if let Some(ca) = ca_cert
        && !ca.is_file()
    {
        return Err(format!("ca_cert {} is not a readable file", ca.display()));
    }
    Ok(Endpoint {
        url: host.base_url(),
        host,
        credentials,
        ca_cert: ca_cert.clone(),
    })
}

/// The credentials a Docker `config.json` holds for `host` (`host[:port]`,
/// `docker.io` for Docker Hub): its credential helper's (`credHelpers`,
/// `credsStore`, run as `docker-credential-NAME get`), else the `auths`
/// entry's `auth` (base64 `user:password`) or `username` and `password`;
/// read by the client crate, as `wharf login` writes them.
fn from_docker_config(
    path: &std::path::Path,
    host: &Host,
) -> Result<client::auth::Credentials, String> {
    let at = format!("docker_config {}", path.display());
    if !path.is_file() {
        return Err(format!("{at} is not a readable file"));
    }
    let files = client::auth::AuthFiles {
        read: vec![path.to_path_buf()],
        docker: Some(path.to_path_buf()),
        podman: None,
    };
    match files.lookup(&host.name) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => {
            // Say why when the entry is there but of a kind not read.
            let token = std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| {
                    v.get("auths")?.as_object()?.iter().find_map(|(k, e)| {
                        (client::auth::normalize_auth_key(k) == host.name)
                            .then(|| e.get("identitytoken").is_some())
                    })
                })
                .unwrap_or(false);
            if token {
                Err(format!(
                    "{at}: the entry for {} has an identitytoken (an OAuth refresh token), which the cache does not use: give it a username and password (or access token) instead",
                    host.name
                ))
            } else {
                Err(format!(
                    "{at} has no credentials for {} (an auths entry with auth, or username and password, or a credential helper that knows it)",
                    host.name
                ))
            }
        }
        Err(e) => Err(format!("{at}: {e}")),
    }
}

/// A registry host as clients name it (`host[:port]`), normalised for
/// comparison: lower case, and Docker Hub's API hosts (`registry-1.docker.io`,
/// `index.docker.io`) as `docker.io`. `None` when it is not a host.
pub fn registry_host(raw: &str) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    let url = url::Url::parse(&format!("https://{lower}/")).ok()?;
    let host = url.host_str()?;
    if url.path() != "/"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || lower.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    let name = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    Some(Host::parse(&name, false).map(|h| h.name).unwrap_or(name))
}

impl UpstreamSpec {
    /// The upstream repository a local one is cached from, if `local` is
    /// below this upstream's prefix: `<prefix>/<rest>` → `<rest>`, or
    /// `library/<rest>` for a one-component `rest` under Docker Hub's rule.
    pub fn upstream_repo(&self, local: &RepoName) -> Option<RepoName> {
        let rest = local
            .as_str()
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        let remote = if self.library && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest.to_owned()
        };
        RepoName::parse(&remote, remote.len().max(1)).ok()
    }

    /// Does a client's `?ns=` name this upstream's registry?
    pub fn serves_ns(&self, ns: &str) -> bool {
        registry_host(ns).is_some_and(|h| h == self.registry_host)
    }

    /// The local repository that caches `remote` (a name at this upstream,
    /// as a client using Wharf as a mirror sends it): `<prefix>/<remote>`,
    /// the repository a prefix-routed pull of the same name uses.
    pub fn local_repo(&self, remote: &RepoName, max_name_length: usize) -> Option<RepoName> {
        RepoName::parse(&format!("{}/{remote}", self.prefix), max_name_length).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, url: &str, prefix: &str) -> UpstreamConfig {
        toml_one(&format!(
            "name = \"{name}\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n"
        ))
    }

    fn toml_one(text: &str) -> UpstreamConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_docker_hub_rule() {
        let specs = check(
            &[
                cfg("dockerhub", "https://registry-1.docker.io", "dockerhub"),
                cfg("ghcr", "https://ghcr.io", "mirrors/ghcr"),
                cfg("local", "http://127.0.0.1:5001/", "local"),
            ],
            255,
        )
        .unwrap();
        let hub = &specs[0];
        assert_eq!(hub.url, "https://registry-1.docker.io");
        assert!(hub.library);
        assert_eq!(hub.tag_ttl, Duration::from_secs(300));
        assert_eq!(hub.max_stale, Duration::from_secs(86_400));
        assert!(!hub.push);
        let n = |s: &str| RepoName::parse(s, 255).unwrap();
        assert_eq!(
            hub.upstream_repo(&n("dockerhub/alpine")).unwrap().as_str(),
            "library/alpine"
        );
        assert_eq!(
            hub.upstream_repo(&n("dockerhub/grafana/grafana"))
                .unwrap()
                .as_str(),
            "grafana/grafana"
        );
        assert!(hub.upstream_repo(&n("dockerhub")).is_none());
        assert!(hub.upstream_repo(&n("dockerhubx/alpine")).is_none());
        let ghcr = &specs[1];
        assert!(!ghcr.library);
        assert_eq!(
            ghcr.upstream_repo(&n("mirrors/ghcr/owner/app"))
                .unwrap()
                .as_str(),
            "owner/app"
        );
        assert_eq!(
            ghcr.upstream_repo(&n("mirrors/ghcr/app")).unwrap().as_str(),
            "app"
        );
        assert_eq!(specs[2].url, "http://127.0.0.1:5001");
        assert!(specs[2].host.insecure);
    }

    #[test]
    fn clear_errors() {
        let bad = |c: UpstreamConfig, want: &str| {
            let e = check(&[c], 255).unwrap_err();
            assert!(e.contains(want), "{e:?} does not say {want:?}");
        };
        bad(cfg("", "https://r.example", "p"), "upstreams #1: name");
        bad(cfg("a b", "https://r.example", "p"), "name \"a b\"");
        bad(cfg("x", "r.example", "p"), "not a URL");
        bad(cfg("x", "ftp://r.example", "p"), "scheme");
        bad(cfg("x", "https://r.example/v2", "p"), "no path");
        bad(cfg("x", "https://u:p@r.example", "p"), "credentials");
        bad(cfg("x", "https://r.example", "Bad_Prefix"), "prefix");
        bad(cfg("x", "https://r.example", "/p"), "prefix");
        let mut c = cfg("x", "https://r.example", "p");
        c.username = Some("u".into());
        bad(c.clone(), "username without password");
        c.password = Some("pw".into());
        assert!(check(&[c.clone()], 255).is_ok());
        c.username = None;
        bad(c, "password without username");
        let mut c = cfg("x", "https://r.example", "p");
        c.timeout_secs = 0;
        bad(c, "timeout_secs");
        let mut c = cfg("x", "https://r.example", "p");
        c.tag_ttl_secs = 10;
        c.max_stale_secs = 5;
        bad(c, "max_stale_secs");
        let e = check(
            &[
                cfg("a", "https://a.example", "m"),
                cfg("b", "https://b.example", "m/b"),
            ],
            255,
        )
        .unwrap_err();
        assert!(
            e.contains("upstreams #2 (b)") && e.contains("overlaps"),
            "{e}"
        );
        let e = check(
            &[
                cfg("a", "https://a.example", "m"),
                cfg("a", "https://b.example", "n"),
            ],
            255,
        )
        .unwrap_err();
        assert!(e.contains("used by another"), "{e}");
        // Prefixes that merely share a start are fine.
        assert!(
            check(
                &[
                    cfg("a", "https://a.example", "m"),
                    cfg("b", "https://b.example", "mb"),
                ],
                255
            )
            .is_ok()
        );
    }

    #[test]
    fn registry_hosts_for_ns() {
        let mut corp = cfg("corp", "https://10.0.0.9:5000", "corp");
        corp.registry_host = Some("Registry.Corp.Example:5000".into());
        let specs = check(
            &[
                cfg("hub", "https://registry-1.docker.io", "dockerhub"),
                cfg("ghcr", "https://ghcr.io", "mirrors/ghcr"),
                cfg("local", "http://127.0.0.1:5001", "local"),
                corp,
            ],
            255,
        )
        .unwrap();
        let host = |i: usize| specs[i].registry_host.as_str();
        assert_eq!(
            (host(0), host(1), host(2), host(3)),
            (
                "docker.io",
                "ghcr.io",
                "127.0.0.1:5001",
                "registry.corp.example:5000"
            )
        );
        // docker.io and Docker Hub's API hosts are one.
        for ns in [
            "docker.io",
            "registry-1.docker.io",
            "index.docker.io",
            "Docker.IO",
        ] {
            assert!(specs[0].serves_ns(ns), "{ns}");
        }
        assert!(!specs[0].serves_ns("ghcr.io"));
        assert!(specs[1].serves_ns("ghcr.io"));
        assert!(specs[2].serves_ns("127.0.0.1:5001"));
        assert!(!specs[2].serves_ns("127.0.0.1"));
        assert!(!specs[2].serves_ns("127.0.0.1:5002"));
        assert!(specs[3].serves_ns("registry.corp.example:5000"));
        assert!(
            !specs[3].serves_ns("10.0.0.9:5000"),
            "registry_host replaces the url's host"
        );
        for junk in ["", "a/b", "u@h", "h?x", "h#x", " "] {
            assert!(specs.iter().all(|s| !s.serves_ns(junk)), "{junk:?}");
        }
        let n = |s: &str| RepoName::parse(s, 255).unwrap();
        let local = specs[0].local_repo(&n("library/alpine"), 255).unwrap();
        assert_eq!(local.as_str(), "dockerhub/library/alpine");
        // The same repository a prefix-routed pull uses, and back.
        assert_eq!(
            specs[0].upstream_repo(&local).unwrap().as_str(),
            "library/alpine"
        );
        assert_eq!(
            specs[1].local_repo(&n("owner/app"), 255).unwrap().as_str(),
            "mirrors/ghcr/owner/app"
        );
        assert!(specs[1].local_repo(&n("owner/app"), 20).is_none());
    }

    #[test]
    fn registry_host_errors() {
        let mut c = cfg("x", "https://r.example", "p");
        c.registry_host = Some("r.example/v2".into());
        let e = check(&[c], 255).unwrap_err();
        assert!(e.contains("registry_host \"r.example/v2\""), "{e}");
        // Two upstreams of one registry host (say, Docker Hub with two
        // accounts) are allowed, as before; ?ns= takes the first.
        assert!(
            check(
                &[
                    cfg("a", "https://registry-1.docker.io", "a"),
                    cfg("b", "https://index.docker.io", "b"),
                ],
                255
            )
            .is_ok()
        );
    }

    #[test]
    fn fallbacks() {
        let c = toml_one(
            r#"
name = "hub"
url = "https://registry-1.docker.io"
prefix = "dockerhub"
[[fallbacks]]
url = "https://mirror.gcr.io"
[[fallbacks]]
url = "http://127.0.0.1:5001"
username = "u"
password = "secret-pw"
"#,
        );
        let spec = check(std::slice::from_ref(&c), 255).unwrap().remove(0);
        assert_eq!(spec.fallbacks.len(), 2);
        assert_eq!(spec.fallbacks[0].url, "https://mirror.gcr.io");
        assert!(spec.fallbacks[0].credentials.is_none());
        assert_eq!(spec.fallbacks[1].url, "http://127.0.0.1:5001");
        assert_eq!(
            spec.fallbacks[1].credentials.as_ref().unwrap().username,
            "u"
        );
        // The primary's registry host and library rule are unchanged.
        assert_eq!(spec.registry_host, "docker.io");
        assert!(spec.library);
        assert!(!format!("{c:?}").contains("secret-pw"));

        let bad = |extra: &str, want: &str| {
            let c = toml_one(&format!(
                "name = \"x\"\nurl = \"https://r.example\"\nprefix = \"p\"\n{extra}"
            ));
            let e = check(&[c], 255).unwrap_err();
            assert!(e.contains(want), "{e:?} does not say {want:?}");
        };
        bad(
            "[[fallbacks]]\nurl = \"r2.example\"\n",
            "upstreams #1 (x): fallbacks #1: url \"r2.example\" is not a URL",
        );
        bad(
            "[[fallbacks]]\nurl = \"https://r2.example\"\nusername = \"u\"\n",
            "fallbacks #1: username without password",
        );
        bad(
            "[[fallbacks]]\nurl = \"https://r.example/\"\n",
            "already tried",
        );
        bad(
            "[[fallbacks]]\nurl = \"https://r2.example\"\n[[fallbacks]]\nurl = \"https://r2.example\"\n",
            "fallbacks #2",
        );
        assert!(
            toml::from_str::<UpstreamConfig>(
                "name = \"x\"\nurl = \"https://r.example\"\nprefix = \"p\"\n[[fallbacks]]\nurl = \"https://b.example\"\nprefix = \"q\"\n"
            )
            .is_err(),
            "a fallback has no prefix of its own"
        );
    }

    #[test]
    fn credentials_from_a_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        // "hub:pat" in base64, under Docker Hub's legacy key.
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnBhdA=="},"r.example:5000":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let mut hub = cfg("hub", "https://registry-1.docker.io", "dockerhub");
        hub.docker_config = Some(path.clone());
        let mut corp = cfg("corp", "https://r.example:5000", "corp");
        corp.docker_config = Some(path.clone());
        let specs = check(&[hub, corp], 255).unwrap();
        let c = specs[0].credentials.as_ref().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hub", "pat"));
        let c = specs[1].credentials.as_ref().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        // A fallback reads it for its own host.
        let mut with_fallback = cfg("x", "https://a.example", "x");
        with_fallback.fallbacks = vec![FallbackConfig {
            url: "https://r.example:5000".into(),
            username: None,
            password: None,
            docker_config: Some(path.clone()),
            ca_cert: None,
        }];
        let s = check(&[with_fallback], 255).unwrap().remove(0);
        assert_eq!(s.fallbacks[0].credentials.as_ref().unwrap().username, "u");
        let mut other = cfg("o", "https://other.example", "o");
        other.docker_config = Some(path);
        let e = check(&[other], 255).unwrap_err();
        assert!(e.contains("no credentials for other.example"), "{e}");
    }

    #[test]
    fn max_size() {
        let mut c = cfg("x", "https://r.example", "p");
        assert_eq!(check(&[c.clone()], 255).unwrap()[0].max_size, None);
        c.max_size = Some("10GiB".into());
        let s = check(&[c.clone()], 255).unwrap().remove(0);
        assert_eq!(s.max_size, Some(10 << 30));
        assert_eq!(s.evict_interval, Duration::from_secs(600));
        c.max_size = Some("1.5 MB".into());
        assert_eq!(
            check(&[c.clone()], 255).unwrap()[0].max_size,
            Some(1_500_000)
        );
        for (bad, want) in [
            ("ten", "max_size"),
            ("0", "more than 0"),
            ("5 XB", "unknown unit"),
        ] {
            c.max_size = Some(bad.into());
            let e = check(&[c.clone()], 255).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        c.max_size = None;
        c.evict_interval_secs = 0;
        assert!(
            check(&[c], 255)
                .unwrap_err()
                .contains("evict_interval_secs")
        );
    }

    #[test]
    fn spool_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg("x", "https://r.example", "p");
        assert_eq!(
            check(std::slice::from_ref(&c), 255).unwrap()[0].spool_dir,
            None
        );
        c.spool_dir = Some(dir.path().to_path_buf());
        let s = check(std::slice::from_ref(&c), 255).unwrap().remove(0);
        assert_eq!(s.spool_dir.as_deref(), Some(dir.path()));
        c.spool_dir = Some(dir.path().join("missing"));
        let e = check(&[c], 255).unwrap_err();
        assert!(e.contains("spool_dir") && e.contains("missing"), "{e}");
    }

    #[test]
    fn listen_addresses() {
        let mut a = cfg("a", "https://registry-1.docker.io", "hub");
        a.listen = Some("127.0.0.1:5001".parse().unwrap());
        let mut b = cfg("b", "https://ghcr.io", "ghcr");
        let specs = check(&[a.clone(), b.clone()], 255).unwrap();
        assert_eq!(specs[0].listen, a.listen);
        assert_eq!(specs[1].listen, None);
        b.listen = a.listen;
        let e = check(&[a, b], 255).unwrap_err();
        assert!(
            e.contains("upstreams #2 (b): listen 127.0.0.1:5001") && e.contains("upstream a"),
            "{e}"
        );
        let parsed: UpstreamConfig = toml_one(
            "name = \"h\"\nurl = \"https://h.example\"\nprefix = \"h\"\nlisten = \"[::]:5001\"\n",
        );
        assert_eq!(parsed.listen, Some("[::]:5001".parse().unwrap()));
        assert!(
            toml::from_str::<UpstreamConfig>(
                "name = \"h\"\nurl = \"https://h.example\"\nprefix = \"h\"\nlisten = \"h.example\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let mut c = cfg("x", "https://r.example", "p");
        c.username = Some("u".into());
        c.password = Some("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
