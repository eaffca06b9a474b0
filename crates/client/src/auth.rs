//! Authentication: `WWW-Authenticate` challenges, credentials from docker's
//! and podman's files, and `wharf login`'s writes.
//!
//! Credential files read, first match wins: `$REGISTRY_AUTH_FILE`,
//! `${XDG_RUNTIME_DIR}/containers/auth.json` (podman), then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (docker).
//! A file's `credHelpers` (per registry) or `credsStore` (all registries)
//! names a docker credential helper, `docker-credential-NAME` on the
//! `PATH`, which is asked first (`get`) and written to by `wharf login`
//! (`store`) and `logout` (`erase`), as docker does.

use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse the first Basic or Bearer challenge in a `WWW-Authenticate` value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    let params = parse_params(rest);
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let realm = params.get("realm")?.clone();
        Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    } else {
        None
    }
}

/// `k=v, k="quoted, \"v\""` into a map with lower-case keys.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            out.insert(key, value);
        }
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

/// Normalise a key of an `auths` map (`https://index.docker.io/v1/`,
/// `http://host:5000`, `host:5000/path`) to the registry host it names.
pub fn normalize_auth_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        other => other.to_owned(),
    }
}

/// Where `wharf login` writes and every command reads credentials.
#[derive(Clone, Debug, Default)]
pub struct AuthFiles {
    /// Files to read, first match wins.
    pub read: Vec<PathBuf>,
    /// docker's `config.json`, always written by `login`.
    pub docker: Option<PathBuf>,
    /// podman's `auth.json`, written by `login` when it already exists.
    pub podman: Option<PathBuf>,
}

impl AuthFiles {
    /// The standard locations, from the environment.
    pub fn from_env() -> AuthFiles {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let docker = env("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
        let podman = env("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("containers/auth.json"));
        let mut read = Vec::new();
        if let Some(f) = env("REGISTRY_AUTH_FILE") {
            read.push(PathBuf::from(f));
        }
        read.extend(podman.clone());
        read.extend(docker.clone());
        AuthFiles {
            read,
            docker,
            podman,
        }
    }

    /// Credentials for `host` (`host[:port]`, `docker.io` for Docker Hub).
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>> {
        for f in &self.read {
            if let Some(c) = lookup_in(f, host)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Store credentials for `host`; returns where they went (files, or a
    /// credential helper as `docker-credential-NAME`).
    pub fn store(&self, host: &str, creds: &Credentials) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        let docker = self.docker.as_ref().ok_or_else(|| {
            Error::Usage("cannot find docker's config: set HOME or DOCKER_CONFIG".into())
        })?;
        // Docker's config names a credential helper: the secret goes there,
        // and the file keeps an empty entry for the host, as docker does.
        if let Some(name) = read_json(docker)?.and_then(|v| helper_for(&v, host)) {
            let input = serde_json::json!({
                "ServerURL": helper_server(host),
                "Username": creds.username,
                "Secret": creds.password,
            });
            let out = run_helper(&name, "store", input.to_string().as_bytes())?
                .ok_or_else(|| helper_missing(&name, docker))?;
            if !out.status.success() {
                return Err(helper_failed(&name, "store", &out));
            }
            update_file(docker, |auths| {
                auths.retain(|k, _| normalize_auth_key(k) != host);
                auths.insert(host.to_owned(), Value::Object(Map::new()));
            })?;
            return Ok(vec![
                PathBuf::from(format!("docker-credential-{name}")),
                docker.clone(),
            ]);
        }
        let auth = B64.encode(format!("{}:{}", creds.username, creds.password));
        for f in std::iter::once(docker).chain(self.podman.iter().filter(|p| p.exists())) {
            update_file(f, |auths| {
                auths.retain(|k, _| normalize_auth_key(k) != host);
                let mut entry = Map::new();
                entry.insert("auth".into(), Value::String(auth.clone()));
                auths.insert(host.to_owned(), Value::Object(entry));
            })?;
            written.push(f.clone());
        }
        Ok(written)
    }

    /// Remove credentials for `host` from every file that has them; returns those files.
    pub fn remove(&self, host: &str) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        if let Some(docker) = &self.docker
            && let Some(doc) = read_json(docker)?
            && let Some(name) = helper_for(&doc, host)
        {
            let out = run_helper(&name, "erase", helper_server(host).as_bytes())?
                .ok_or_else(|| helper_missing(&name, docker))?;
            if out.status.success() {
                written.push(PathBuf::from(format!("docker-credential-{name}")));
            }
            // The empty entry docker (and wharf login) left for the host.
            let listed = doc
                .get("auths")
                .and_then(Value::as_object)
                .is_some_and(|m| m.keys().any(|k| normalize_auth_key(k) == host));
            if listed {
                update_file(docker, |auths| {
                    auths.retain(|k, _| normalize_auth_key(k) != host)
                })?;
                written.push(docker.clone());
            }
        }
        for f in self.docker.iter().chain(self.podman.iter()) {
            if written.contains(f) {
                continue;
            }
            if lookup_in(f, host)?.is_none() {
                continue;
            }
            update_file(f, |auths| {
                auths.retain(|k, _| normalize_auth_key(k) != host)
            })?;
            written.push(f.clone());
        }
        Ok(written)
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Other(format!("{}: not valid JSON: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The credential helper a credentials file names for `host`:
/// `credHelpers[host]`, else `credsStore`.
fn helper_for(doc: &Value, host: &str) -> Option<String> {
    let named = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(m) = doc.get("credHelpers").and_then(Value::as_object)
        && let Some((_, v)) = m.iter().find(|(k, _)| normalize_auth_key(k) == host)
    {
        return named(v);
    }
    doc.get("credsStore").and_then(named)
}

/// The server URL credential helpers know `host` by (docker's form).
fn helper_server(host: &str) -> &str {
    if host == DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        host
    }
}

/// Run `docker-credential-NAME VERB` with `input` on stdin. `Ok(None)`:
/// the helper is not installed.
fn run_helper(name: &str, verb: &str, input: &[u8]) -> Result<Option<std::process::Output>> {
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{name}");
    let mut child = match Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Other(format!("cannot run {program}: {e}"))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| Error::Other(format!("cannot talk to {program}: {e}")))?;
    }
    child
        .wait_with_output()
        .map(Some)
        .map_err(|e| Error::Other(format!("cannot run {program}: {e}")))
}

fn helper_failed(name: &str, verb: &str, out: &std::process::Output) -> Error {
    let said = String::from_utf8_lossy(if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    })
    .trim()
    .to_owned();
    Error::Other(format!(
        "the credential helper docker-credential-{name} failed to {verb}: {said}"
    ))
}

fn helper_missing(name: &str, path: &Path) -> Error {
    Error::Other(format!(
        "{} names the credential helper {name:?}, but docker-credential-{name} is not on the PATH",
        path.display()
    ))
}

/// Ask the helper `name` for `host`'s credentials.
fn helper_get(name: &str, path: &Path, host: &str) -> Result<Option<Credentials>> {
    let Some(out) = run_helper(name, "get", helper_server(host).as_bytes())? else {
        return Err(helper_missing(name, path));
    };
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
            + &String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(helper_failed(name, "get", &out));
    }
    #[derive(serde::Deserialize)]
    struct Got {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let got: Got = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Other(format!(
            "docker-credential-{name} get answered something that is not its JSON: {e}"
        ))
    })?;
    Ok((!got.secret.is_empty()).then_some(Credentials {
        username: got.username,
        password: got.secret,
    }))
}

fn lookup_in(path: &Path, host: &str) -> Result<Option<Credentials>> {
    let Some(v) = read_json(path)? else {
        return Ok(None);
    };
    if let Some(name) = helper_for(&v, host) {
        match helper_get(&name, path, host) {
            Ok(Some(c)) => return Ok(Some(c)),
            Ok(None) => {}
            // A helper that is not installed: inline credentials still work.
            Err(e) if lookup_auths(path, &v, host)?.is_none() => return Err(e),
            Err(_) => {}
        }
    }
    lookup_auths(path, &v, host)
}

/// Credentials written in the file's `auths` map.
fn lookup_auths(path: &Path, v: &Value, host: &str) -> Result<Option<Credentials>> {
    let Some(auths) = v.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    // An exact key first, then any key that normalises to the host.
    let entry = auths
        .get(host)
        .or_else(|| {
            auths
                .iter()
                .find(|(k, _)| normalize_auth_key(k) == host)
                .map(|(_, v)| v)
        })
        .and_then(Value::as_object);
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let decoded = B64.decode(auth.trim()).map_err(|_| {
            Error::Other(format!("{}: auth for {host} is not base64", path.display()))
        })?;
        let decoded = String::from_utf8(decoded).map_err(|_| {
            Error::Other(format!("{}: auth for {host} is not UTF-8", path.display()))
        })?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            Error::Other(format!(
                "{}: auth for {host} is not user:password",
                path.display()
            ))
        })?;
        return Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    let u = entry.get("username").and_then(Value::as_str);
    let p = entry.get("password").and_then(Value::as_str);
    Ok(match (u, p) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }),
        _ => None,
    })
}

/// Read-modify-write the `auths` map of a credentials file, keeping every
/// other key; written through a temporary file, mode 0600.
fn update_file(path: &Path, f: impl FnOnce(&mut Map<String, Value>)) -> Result<()> {
    let mut doc = match read_json(path)? {
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Error::Other(format!(
                "{}: not a JSON object",
                path.display()
            )));
        }
        None => Map::new(),
    };
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    if let Value::Object(m) = auths {
        f(m);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".wharf-auth-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let body = serde_json::to_vec_pretty(&Value::Object(doc))
        .map_err(|e| Error::Other(format!("cannot encode {}: {e}", path.display())))?;
    tmp.write_all(&body)
        .and_then(|_| tmp.write_all(b"\n"))
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("basic"), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(r#"bearer realm=http://x/token , scope="a:b:pull,push",service=s"#),
            Some(Challenge::Bearer {
                realm: "http://x/token".into(),
                service: Some("s".into()),
                scope: Some("a:b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="a\"b""#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "realm required");
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn auth_keys() {
        assert_eq!(
            normalize_auth_key("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_auth_key("http://h:5000"), "h:5000");
        assert_eq!(normalize_auth_key("h:5000/path"), "h:5000");
        assert_eq!(normalize_auth_key("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn store_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker/config.json");
        let podman = dir.path().join("containers/auth.json");
        std::fs::create_dir_all(docker.parent().unwrap()).unwrap();
        std::fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="}},"detachKeys":"x"}"#,
        )
        .unwrap();
        let files = AuthFiles {
            read: vec![podman.clone(), docker.clone()],
            docker: Some(docker.clone()),
            podman: Some(podman.clone()),
        };
        let hub = files.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret")
        );
        assert!(files.lookup("h:1").unwrap().is_none());
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        let written = files.store("h:1", &c).unwrap();
        assert_eq!(
            written,
            vec![docker.clone()],
            "podman's file only if it exists"
        );
        assert_eq!(files.lookup("h:1").unwrap(), Some(c.clone()));
        let v: Value = serde_json::from_slice(&std::fs::read(&docker).unwrap()).unwrap();
        assert_eq!(v["detachKeys"], "x", "other keys kept");
        assert_eq!(v["auths"]["h:1"]["auth"], B64.encode("u:p:w"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&docker).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // podman's file wins when it has the host.
        std::fs::create_dir_all(podman.parent().unwrap()).unwrap();
        std::fs::write(
            &podman,
            r#"{"auths":{"h:1":{"username":"pu","password":"pp"}}}"#,
        )
        .unwrap();
        assert_eq!(files.lookup("h:1").unwrap().unwrap().username, "pu");
        assert_eq!(files.remove("h:1").unwrap().len(), 2);
        assert!(files.lookup("h:1").unwrap().is_none());
        assert!(files.lookup("docker.io").unwrap().is_some());
    }
}
