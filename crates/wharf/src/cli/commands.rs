//! The client commands themselves.

use super::progress::Bars;
use super::{CacheCommand, ClientCommand, Common, Out};
use client::auth::{AuthFiles, Credentials};
use client::cache::Cache;
use client::package::{self, PushOptions};
use client::{Client, ClientOptions, Error, Host, ImageRef, Kind, Result};
use oci::Reference;
use oci::manifest::Kind as ManifestKind;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read as _;

pub async fn run(cmd: ClientCommand, out: Out) -> Result<()> {
    match cmd {
        ClientCommand::Push(a) => {
            let target = ImageRef::parse(&a.reference, a.common.insecure)?;
            let c = connect(&target.host, &a.common)?;
            let cache = Cache::from_env().ok();
            let opts = PushOptions {
                artifact_type: Some(a.artifact_type),
                annotations: annotations(&a.annotations)?,
            };
            let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
            let bars = Bars::new(out.progress);
            let f = |label: &str, size: u64| bars.bar(label, size);
            let r = package::push(&c, cache.as_ref(), &target, &cwd, &a.paths, &opts, &f).await?;
            if out.json {
                print_json(&json!(r));
            } else if out.human {
                outln!(
                    "Pushed {} ({} entries, layer {} bytes{})",
                    r.reference,
                    r.entries,
                    r.layer_size,
                    if r.uploaded { "" } else { ", already there" }
                );
                outln!("Digest: {}", r.digest);
            } else {
                outln!("{}", r.digest);
            }
            Ok(())
        }
        ClientCommand::Pull(a) => {
            let source = ImageRef::parse(&a.reference, a.common.insecure)?;
            let c = connect(&source.host, &a.common)?;
            let cache = Cache::from_env()?;
            let bars = Bars::new(out.progress);
            let f = |label: &str, size: u64| bars.bar(label, size);
            let r = package::pull(&c, &cache, &source, &a.output, a.force, &f).await?;
            if out.json {
                print_json(&json!(r));
            } else if out.human {
                let names: Vec<String> =
                    r.written.iter().map(|p| p.display().to_string()).collect();
                outln!(
                    "Pulled {} ({}) into {}: {}",
                    r.reference,
                    r.digest,
                    a.output.display(),
                    names.join(", ")
                );
                outln!(
                    "{} of {} blob(s) downloaded ({} bytes), the rest from the cache",
                    r.downloaded,
                    r.blobs,
                    r.bytes_downloaded
                );
            }
            Ok(())
        }
        ClientCommand::Tags(a) => {
            let r = ImageRef::parse(&a.repository, a.common.insecure)?;
            let c = connect(&r.host, &a.common)?;
            let tags = c.tags(&r.repo, None).await?;
            if out.json {
                print_json(&json!({"repository": format!("{}/{}", r.host, r.repo), "tags": tags}));
            } else {
                for t in tags {
                    outln!("{t}");
                }
            }
            Ok(())
        }
        ClientCommand::Catalog(a) => {
            let host = Host::parse(&a.host, a.common.insecure)?;
            let c = connect(&host, &a.common)?;
            let repos = c.catalog(None).await?;
            if out.json {
                print_json(&json!({"registry": host.name, "repositories": repos}));
            } else {
                for r in repos {
                    outln!("{r}");
                }
            }
            Ok(())
        }
        ClientCommand::Inspect(a) => inspect(a, out).await,
        ClientCommand::Rm(a) => {
            let r = ImageRef::parse(&a.reference, a.common.insecure)?;
            let c = connect(&r.host, &a.common)?;
            let (deleted, note) = remove(&c, &r).await?;
            if out.json {
                print_json(&json!({"deleted": r.to_string(), "reference": deleted, "note": note}));
            } else if out.human {
                outln!("Deleted {r}");
                if let Some(n) = note {
                    outln!("{n}");
                }
            }
            Ok(())
        }
        ClientCommand::Referrers(a) => {
            let r = ImageRef::parse(&a.reference, a.common.insecure)?;
            let c = connect(&r.host, &a.common)?;
            let subject = resolve_digest(&c, &r).await?;
            let refs = c
                .referrers(&r.repo, &subject, a.artifact_type.as_deref())
                .await?;
            if out.json {
                print_json(&json!({
                    "subject": subject.to_string(),
                    "referrersApi": refs.api,
                    "manifests": refs.manifests,
                }));
            } else {
                for d in &refs.manifests {
                    outln!(
                        "{}\t{}\t{}",
                        d.digest,
                        d.artifact_type.as_deref().unwrap_or("-"),
                        d.size
                    );
                }
            }
            Ok(())
        }
        ClientCommand::Attach(a) => {
            let r = ImageRef::parse(&a.reference, a.common.insecure)?;
            let c = connect(&r.host, &a.common)?;
            let ann = annotations(&a.annotations)?;
            let bars = Bars::new(out.progress);
            let f = |label: &str, size: u64| bars.bar(label, size);
            let rep = package::attach(&c, &r, &a.files, &a.artifact_type, &ann, &f).await?;
            if out.json {
                print_json(&json!(rep));
            } else if out.human {
                outln!(
                    "Attached {} to {} ({})",
                    rep.digest,
                    rep.subject,
                    rep.subject_digest
                );
                if let Some(t) = &rep.referrers_tag {
                    outln!("The registry has no referrers API: updated the referrers tag {t}");
                }
            } else {
                outln!("{}", rep.digest);
            }
            Ok(())
        }
        ClientCommand::Login(a) => {
            let host = Host::parse(&a.host, a.common.insecure)?;
            let (username, password) = login_input(&host, a.username, a.password_stdin)?;
            if username.is_empty() || password.is_empty() {
                return Err(Error::Usage(
                    "login needs a user name and a non-empty password".into(),
                ));
            }
            let creds = Credentials { username, password };
            let c = Client::new(
                host.clone(),
                ClientOptions {
                    credentials: Some(creds.clone()),
                    ca_cert: a.common.ca_cert.clone(),
                    ..ClientOptions::default()
                },
            )?;
            c.ping().await.map_err(|e| match e.kind() {
                Kind::Auth => Error::LoginRefused(format!("login to {host} failed: {e}")),
                _ => e,
            })?;
            let files = AuthFiles::from_env().store(&host.name, &creds)?;
            if out.json {
                print_json(&json!({"registry": host.name, "files": files}));
            } else if out.human {
                let f: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                outln!("Login succeeded; credentials stored in {}", f.join(", "));
            }
            Ok(())
        }
        ClientCommand::Logout(a) => {
            let host = Host::parse(&a.host, a.common.insecure)?;
            let files = AuthFiles::from_env().remove(&host.name)?;
            if files.is_empty() {
                return Err(Error::NotFound(format!("not logged in to {host}")));
            }
            if out.json {
                print_json(&json!({"registry": host.name, "files": files}));
            } else if out.human {
                outln!("Removed the credentials for {host}");
            }
            Ok(())
        }
        ClientCommand::Cp(a) => cp(a, out).await,
        ClientCommand::Cache(CacheCommand::Prune(_)) => {
            let cache = Cache::from_env()?;
            let p = cache.prune()?;
            if out.json {
                print_json(&json!({"blobs": p.blobs, "bytes": p.bytes}));
            } else if out.human {
                outln!("Removed {} blob(s), {} bytes", p.blobs, p.bytes);
            }
            Ok(())
        }
        ClientCommand::Cache(CacheCommand::Path(_)) => {
            let cache = Cache::from_env()?;
            if out.json {
                print_json(&json!({"path": cache.root()}));
            } else {
                outln!("{}", cache.root().display());
            }
            Ok(())
        }
    }
}

/// The user name and password for `wharf login`: the password from stdin
/// with `--password-stdin`, else asked for on the terminal (no echo), as is
/// a missing user name.
fn login_input(
    host: &Host,
    username: Option<String>,
    password_stdin: bool,
) -> Result<(String, String)> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let terminal = std::io::stdin().is_terminal();
    let username = match username {
        Some(u) => u,
        None if terminal && !password_stdin => {
            eprint!("Username for {host}: ");
            std::io::stderr().flush().ok();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Error::Usage(format!("cannot read the user name: {e}")))?;
            line.trim().to_owned()
        }
        None => {
            return Err(Error::Usage(
                "give the user name with --username (-u)".into(),
            ));
        }
    };
    let password = if password_stdin {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .map_err(|e| Error::Usage(format!("cannot read the password from stdin: {e}")))?;
        password.trim_end_matches(['\n', '\r']).to_owned()
    } else if terminal {
        rpassword::prompt_password(format!("Password for {username}@{host}: "))
            .map_err(|e| Error::Usage(format!("cannot read the password: {e}")))?
    } else {
        return Err(Error::Usage(
            "no terminal to ask for the password on: pipe it in with --password-stdin".into(),
        ));
    };
    Ok((username, password))
}

fn print_json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A client for `host`, with stored credentials if there are any.
fn connect(host: &Host, common: &Common) -> Result<Client> {
    let credentials = AuthFiles::from_env().lookup(&host.name)?;
    let mut opts = ClientOptions {
        credentials,
        ca_cert: common.ca_cert.clone(),
        ..ClientOptions::default()
    };
    if let Some(n) = env_u64("WHARF_CHUNKED_THRESHOLD") {
        opts.chunked_threshold = n;
    }
    if let Some(n) = env_u64("WHARF_CHUNK_SIZE") {
        opts.chunk_size = n;
    }
    Client::new(host.clone(), opts)
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.trim().parse().ok())
}

fn annotations(kv: &[String]) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for a in kv {
        let (k, v) = a
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::Usage(format!("annotation {a:?} must be KEY=VALUE")))?;
        m.insert(k.to_owned(), v.to_owned());
    }
    Ok(m)
}

/// The digest a reference names (HEAD for tags).
async fn resolve_digest(c: &Client, r: &ImageRef) -> Result<oci::Digest> {
    if let Some(d) = &r.digest {
        return Ok(d.clone());
    }
    Ok(c.head_manifest(&r.repo, &r.reference())
        .await?
        .ok_or_else(|| Error::NotFound(format!("{r}: no such manifest")))?
        .digest)
}

/// Delete by digest, or a tag; a registry that cannot delete tags gets the
/// manifest deleted by digest instead (as skopeo does), with a note.
async fn remove(c: &Client, r: &ImageRef) -> Result<(String, Option<String>)> {
    let reference = r.reference();
    match c.delete_manifest(&r.repo, &reference).await {
        Ok(()) => Ok((reference.to_string(), None)),
        Err(e)
            if matches!(reference, Reference::Tag(_)) && matches!(e.status(), Some(400 | 405)) =>
        {
            let d = resolve_digest(c, r).await?;
            c.delete_manifest(&r.repo, &Reference::Digest(d.clone()))
                .await?;
            Ok((
                d.to_string(),
                Some(format!(
                    "the registry cannot delete a tag alone: deleted the manifest {d} (and so every tag pointing at it)"
                )),
            ))
        }
        Err(e) => Err(e),
    }
}

fn platform_string(p: &Value) -> String {
    let get = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    let mut s = format!("{}/{}", get("os"), get("architecture"));
    if !get("variant").is_empty() {
        s.push('/');
        s.push_str(get("variant"));
    }
    s
}

async fn inspect(a: super::InspectArgs, out: Out) -> Result<()> {
    let r = ImageRef::parse(&a.reference, a.common.insecure)?;
    let c = connect(&r.host, &a.common)?;
    let m = c.get_manifest(&r.repo, &r.reference()).await?;
    if a.raw {
        use std::io::Write as _;
        let mut so = std::io::stdout().lock();
        so.write_all(&m.bytes)
            .and_then(|_| so.flush())
            .map_err(|e| Error::Other(format!("writing to stdout: {e}")))?;
        return Ok(());
    }
    let doc: Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| Error::Other(format!("{r}: manifest is not JSON: {e}")))?;
    let parsed = oci::manifest::parse(Some(&m.media_type), &m.bytes)
        .map_err(|e| Error::Other(format!("{r}: bad manifest: {e}")))?;
    let mut config: Option<Value> = None;
    if let Some(cd) = &parsed.config
        && cd.size <= (1 << 20)
        && (cd.media_type == "application/vnd.oci.image.config.v1+json"
            || cd.media_type == "application/vnd.docker.container.image.v1+json")
    {
        let bytes = c.get_blob_bytes(&r.repo, &cd.digest, 1 << 20).await?;
        config = serde_json::from_slice(&bytes).ok();
    }
    let layers_size: u64 = parsed.layers.iter().map(|l| l.size).sum();
    let config_size = parsed.config.as_ref().map_or(0, |c| c.size);
    let total = m.bytes.len() as u64 + config_size + layers_size;
    if out.json {
        let platforms: Vec<Value> = parsed
            .manifests
            .iter()
            .map(|d| {
                json!({
                    "digest": d.digest.to_string(),
                    "mediaType": d.media_type,
                    "size": d.size,
                    "platform": d.platform,
                })
            })
            .collect();
        print_json(&json!({
            "reference": r.to_string(),
            "digest": m.digest.to_string(),
            "mediaType": m.media_type,
            "size": m.bytes.len(),
            "totalSize": if parsed.kind == ManifestKind::Image { Some(total) } else { None },
            "manifest": doc,
            "config": config,
            "platforms": platforms,
        }));
        return Ok(());
    }
    outln!("Reference:  {r}");
    outln!("Digest:     {}", m.digest);
    outln!("Media type: {}", m.media_type);
    outln!("Size:       {} bytes", m.bytes.len());
    if let Some(t) = &parsed.artifact_type {
        outln!("Artifact:   {t}");
    }
    if let Some(s) = &parsed.subject {
        outln!("Subject:    {} ({})", s.digest, s.media_type);
    }
    match parsed.kind {
        ManifestKind::Index => {
            outln!("Manifests:  {}", parsed.manifests.len());
            for d in &parsed.manifests {
                let p = d
                    .platform
                    .as_ref()
                    .map(platform_string)
                    .unwrap_or_else(|| d.artifact_type.clone().unwrap_or_else(|| "-".into()));
                outln!(
                    "  {p:<20} {} {:>10} bytes  {}",
                    d.digest,
                    d.size,
                    d.media_type
                );
            }
        }
        ManifestKind::Image => {
            if let Some(cd) = &parsed.config {
                let empty = if cd.digest == package::empty_json_digest() {
                    " (empty {})"
                } else {
                    ""
                };
                outln!(
                    "Config:     {} {} bytes {}{empty}",
                    cd.digest,
                    cd.size,
                    cd.media_type
                );
            }
            if let Some(cfg) = &config {
                let os = cfg.get("os").and_then(Value::as_str).unwrap_or("?");
                let arch = cfg
                    .get("architecture")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                outln!(
                    "Platform:   {}",
                    platform_string(
                        &json!({"os": os, "architecture": arch, "variant": cfg.get("variant")})
                    )
                );
                if let Some(created) = cfg.get("created").and_then(Value::as_str) {
                    outln!("Created:    {created}");
                }
            }
            outln!(
                "Layers:     {} ({} bytes)",
                parsed.layers.len(),
                layers_size
            );
            for l in &parsed.layers {
                let title = l
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(package::TITLE))
                    .map(|t| format!("  {t}"))
                    .unwrap_or_default();
                outln!(
                    "  {} {:>12} bytes  {}{title}",
                    l.digest,
                    l.size,
                    l.media_type
                );
            }
            outln!("Total size: {total} bytes");
        }
    }
    if let Some(ann) = &parsed.annotations {
        outln!("Annotations:");
        for (k, v) in ann {
            outln!("  {k}={v}");
        }
    }
    Ok(())
}

async fn cp(a: super::CpArgs, out: Out) -> Result<()> {
    use client::copy::{self, CopyOptions, Endpoint, Platform};
    let src = Endpoint::parse(&a.source, a.common.insecure)?;
    let dst = Endpoint::parse(&a.destination, a.common.insecure)?;
    let opts = CopyOptions {
        all: a.all,
        platform: match &a.platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        },
        jobs: usize::from(a.jobs),
    };
    let cache = Cache::from_env()?;
    let common = a.common.clone();
    let conn = move |h: &Host| connect(h, &common);
    let bars = Bars::new(out.progress);
    let f = |label: &str, size: u64| bars.bar(label, size);
    let r = copy::copy(&src, &dst, &conn, &cache, &opts, &f).await?;
    if out.json {
        print_json(&json!(r));
    } else if out.human {
        outln!("Copied {} to {}", r.source, r.destination);
        outln!(
            "{} manifest(s), {} blob(s): {} copied ({} bytes), {} already there, {} mounted",
            r.manifests,
            r.blobs,
            r.copied,
            r.bytes_copied,
            r.skipped,
            r.mounted
        );
        outln!("Digest: {}", r.digest);
    } else {
        outln!("{}", r.digest);
    }
    Ok(())
}
