//! `[events]` and `[[events.endpoints]]`: where the webhooks go, and their
//! checks at startup (docs/events.md).

use oci::pattern::Pattern;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use store::events::EventGroup;

/// `[events]`: webhooks told of pushes, deletes and (optionally) pulls.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// The CloudEvents `source` of every event. Default: `http.public_url`
    /// when set, else `wharf`.
    pub source: Option<String>,
    /// Seconds between looks into the outbox for events that another
    /// replica (or a previous run) wrote; this process's own events are
    /// sent at once.
    pub poll_secs: u64,
    /// S3 backend: seconds the replica that delivers an endpoint's events
    /// holds the endpoint before another may take over (renewed while it
    /// lives).
    pub lease_secs: u64,
    pub endpoints: Vec<EndpointConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            source: None,
            poll_secs: 2,
            lease_secs: 30,
            endpoints: Vec::new(),
        }
    }
}

/// One `[[events.endpoints]]` entry: a receiver of webhooks.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// Names the endpoint in logs and in the outbox's keys: letters,
    /// digits, `.`, `_` and `-`, not starting with `.` or `_`.
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Repository patterns (`*` within a component, `**` across); default:
    /// every repository.
    pub repos: Vec<String>,
    /// `push` (manifest pushed, tag set), `delete` (manifest or tag
    /// deleted), `pull` (manifest read). Default: push and delete.
    pub events: Vec<String>,
    /// Shared secret: each request is signed with HMAC-SHA256
    /// (`X-Wharf-Signature`, docs/events.md).
    pub secret: Option<String>,
    /// A file holding the secret (its content, without a final newline).
    pub secret_file: Option<PathBuf>,
    /// Seconds to wait for the receiver to connect and answer.
    pub timeout_secs: u64,
    /// Seconds before the first retry of a failed delivery; each retry
    /// waits twice as long as the one before...
    pub retry_min_secs: u64,
    /// ...but never longer than this.
    pub retry_max_secs: u64,
    /// An event not delivered within this many seconds of its creation is
    /// dropped (with an error in the log).
    pub max_age_secs: u64,
    /// Most events waiting in the endpoint's outbox; past it the oldest are
    /// dropped (with an error in the log).
    pub max_pending: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            name: String::new(),
            url: String::new(),
            repos: Vec::new(),
            events: Vec::new(),
            secret: None,
            secret_file: None,
            timeout_secs: 10,
            retry_min_secs: 1,
            retry_max_secs: 300,
            max_age_secs: 86_400,
            max_pending: 100_000,
        }
    }
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("repos", &self.repos)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("secret_file", &self.secret_file)
            .field("timeout_secs", &self.timeout_secs)
            .field("retry_min_secs", &self.retry_min_secs)
            .field("retry_max_secs", &self.retry_max_secs)
            .field("max_age_secs", &self.max_age_secs)
            .field("max_pending", &self.max_pending)
            .finish()
    }
}

/// An endpoint, checked (its secret not read yet: see [`Endpoint::load_secret`]).
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    pub repos: Vec<Pattern>,
    pub groups: Vec<EventGroup>,
    pub secret: Option<Vec<u8>>,
    pub secret_file: Option<PathBuf>,
    pub timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub max_age: Duration,
    pub max_pending: u64,
}

impl Endpoint {
    /// Read `secret_file`, if that is where the secret is.
    pub fn load_secret(&mut self) -> anyhow::Result<()> {
        if let Some(path) = &self.secret_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "events endpoint {:?}: cannot read secret_file {}: {e}",
                    self.name,
                    path.display()
                )
            })?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            if secret.is_empty() {
                anyhow::bail!(
                    "events endpoint {:?}: secret_file {} is empty",
                    self.name,
                    path.display()
                );
            }
            self.secret = Some(secret.as_bytes().to_vec());
        }
        Ok(())
    }
}

/// A valid endpoint name: one component of a storage key.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '_'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl EventsConfig {
    /// The endpoints, checked (secrets in files not read).
    pub fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        if self.poll_secs == 0 {
            anyhow::bail!("events.poll_secs must be at least 1");
        }
        if self.lease_secs < 2 {
            anyhow::bail!("events.lease_secs must be at least 2");
        }
        let mut out: Vec<Endpoint> = Vec::with_capacity(self.endpoints.len());
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = format!("events.endpoints #{} ({:?})", i + 1, e.name);
            if !valid_name(&e.name) {
                anyhow::bail!(
                    "{at}: name must be 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '_'"
                );
            }
            if out.iter().any(|o| o.name == e.name) {
                anyhow::bail!("{at}: another endpoint has the same name");
            }
            let url = url::Url::parse(&e.url)
                .map_err(|err| anyhow::anyhow!("{at}: url {:?}: {err}", e.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                anyhow::bail!("{at}: url {:?} must be an http:// or https:// URL", e.url);
            }
            let repos = if e.repos.is_empty() {
                vec!["**".to_owned()]
            } else {
                e.repos.clone()
            };
            let repos = repos
                .iter()
                .map(|p| Pattern::parse(p).map_err(|err| anyhow::anyhow!("{at}: {err}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let names = if e.events.is_empty() {
                vec!["push".to_owned(), "delete".to_owned()]
            } else {
                e.events.clone()
            };
            let mut groups = Vec::new();
            for n in &names {
                let g = match n.as_str() {
                    "push" => EventGroup::Push,
                    "delete" => EventGroup::Delete,
                    "pull" => EventGroup::Pull,
                    other => {
                        anyhow::bail!("{at}: unknown event group {other:?} (push, delete, pull)")
                    }
                };
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
            let secret = match (&e.secret, &e.secret_file) {
                (Some(_), Some(_)) => anyhow::bail!("{at}: set secret or secret_file, not both"),
                (Some(s), None) if s.is_empty() => anyhow::bail!("{at}: secret is empty"),
                (s, _) => s.as_ref().map(|s| s.as_bytes().to_vec()),
            };
            if e.timeout_secs == 0 {
                anyhow::bail!("{at}: timeout_secs must be at least 1");
            }
            if e.retry_min_secs == 0 || e.retry_max_secs < e.retry_min_secs {
                anyhow::bail!(
                    "{at}: retry_min_secs must be at least 1 and retry_max_secs at least retry_min_secs"
                );
            }
            if e.max_age_secs == 0 || e.max_pending == 0 {
                anyhow::bail!("{at}: max_age_secs and max_pending must be at least 1");
            }
            out.push(Endpoint {
                name: e.name.clone(),
                url,
                repos,
                groups,
                secret,
                secret_file: e.secret_file.clone(),
                timeout: Duration::from_secs(e.timeout_secs),
                retry_min: Duration::from_secs(e.retry_min_secs),
                retry_max: Duration::from_secs(e.retry_max_secs),
                max_age: Duration::from_secs(e.max_age_secs),
                max_pending: e.max_pending,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> anyhow::Result<Vec<Endpoint>> {
        #[derive(Deserialize)]
        struct W {
            events: EventsConfig,
        }
        let w: W = toml::from_str(toml_text)?;
        w.events.endpoints()
    }

    #[test]
    fn endpoints_are_checked() {
        let eps = parse(
            r#"
[events]
[[events.endpoints]]
name = "ci"
url = "https://hooks.example.com/wharf"
repos = ["team/**"]
events = ["push", "pull"]
secret = "s3cret"
"#,
        )
        .unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].groups, vec![EventGroup::Push, EventGroup::Pull]);
        assert!(eps[0].repos[0].matches("team/a/b"));
        assert_eq!(eps[0].secret.as_deref(), Some(&b"s3cret"[..]));
        let d =
            parse("[events]\n[[events.endpoints]]\nname = \"x\"\nurl = \"http://h/\"\n").unwrap();
        assert_eq!(d[0].groups, vec![EventGroup::Push, EventGroup::Delete]);
        assert!(d[0].repos[0].matches("any/thing"));
        for bad in [
            "name = \"\"\nurl = \"http://h/\"",
            "name = \"_x\"\nurl = \"http://h/\"",
            "name = \"a/b\"\nurl = \"http://h/\"",
            "name = \"x\"\nurl = \"ftp://h/\"",
            "name = \"x\"\nurl = \"not a url\"",
            "name = \"x\"\nurl = \"http://h/\"\nevents = [\"push\", \"tag\"]",
            "name = \"x\"\nurl = \"http://h/\"\nrepos = [\"a/***\"]",
            "name = \"x\"\nurl = \"http://h/\"\nsecret = \"\"",
            "name = \"x\"\nurl = \"http://h/\"\nsecret = \"a\"\nsecret_file = \"f\"",
            "name = \"x\"\nurl = \"http://h/\"\ntimeout_secs = 0",
            "name = \"x\"\nurl = \"http://h/\"\nretry_min_secs = 10\nretry_max_secs = 5",
            "name = \"x\"\nurl = \"http://h/\"\nmax_pending = 0",
        ] {
            let text = format!("[events]\n[[events.endpoints]]\n{bad}\n");
            assert!(parse(&text).is_err(), "{bad}");
        }
        let twice = "[events]\n[[events.endpoints]]\nname = \"x\"\nurl = \"http://h/\"\n[[events.endpoints]]\nname = \"x\"\nurl = \"http://g/\"\n";
        assert!(parse(twice).is_err());
        assert!(parse("[events]\npoll_secs = 0\n").is_err());
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let e = EndpointConfig {
            secret: Some("hunter2".into()),
            ..EndpointConfig::default()
        };
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
