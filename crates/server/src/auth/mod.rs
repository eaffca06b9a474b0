//! Authentication and authorization.
//!
//! Pipeline (handlers::handle): route → [`Auth::check`] (authenticate from
//! the headers and the connection, then [`decide::decide`] over the typed
//! Action) → dispatch. Off unless `[auth]` configures users, tokens or
//! external issuers; then whatever no policy rule grants is denied.
//!
//! - [`users`]: htpasswd and config users, bcrypt verification.
//! - [`policy`]: rules over repository patterns.
//! - [`decide`]: the decision, a pure function.
//! - [`token`], [`scope`], [`endpoint`]: the token service (`/token`) and
//!   token validation, ours and external issuers'.
//! - [`throttle`]: failed logins per client address.
//!
//! Secrets (passwords, Authorization headers, tokens) are never logged.

pub mod decide;
pub mod endpoint;
pub mod policy;
pub mod scope;
pub mod throttle;
pub mod token;
pub mod users;

use crate::action::Action;
use crate::config::Config;
use crate::config::UserConfig;
use crate::conn::ConnInfo;
use crate::response::{self as r, Resp};
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use decide::{Grants, Identity, Refusal};
use oci::{ErrorCode, RegistryError};
use policy::{Policy, Principal};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use throttle::Throttle;
use token::{ExternalKeys, OwnIssuer, SigningKey, Verified, Verifier};
use users::Users;

/// The groups `policy` names that none of the `users` declared in the
/// config belongs to (only those users have groups).
pub fn empty_groups<'a>(policy: &'a Policy, users: &[UserConfig]) -> Vec<&'a str> {
    policy
        .groups()
        .into_iter()
        .filter(|g| !users.iter().any(|u| u.groups.iter().any(|x| x == g)))
        .collect()
}

/// The user a request was authenticated as, for the request log.
#[derive(Clone, Debug)]
pub struct AuthUser(pub String);

/// Settings of the built-in token service.
pub struct TokenService {
    pub issuer: String,
    pub expiry_secs: u64,
}

pub struct Auth {
    /// Replaced when the htpasswd file changes (see [`Auth::watch_htpasswd`]).
    users: RwLock<Arc<Users>>,
    htpasswd: Option<PathBuf>,
    declared_users: Vec<UserConfig>,
    pub policy: Policy,
    pub throttle: Throttle,
    pub verifier: Verifier,
    /// The built-in token service, when `[auth.token] enabled`.
    pub token_service: Option<TokenService>,
    /// Challenge with Bearer (token flow) rather than Basic.
    bearer: bool,
    basic_realm: String,
    /// The token `service` / audience.
    pub service: String,
    realm: Option<String>,
    mtls_users: bool,
    /// "https" when the listener serves TLS: the scheme of the default
    /// token realm when a request names no host (the realm is otherwise
    /// built from the request's origin, see [`crate::origin`]).
    scheme: &'static str,
    pub max_name_length: usize,
    /// Every refusal answered, by reason (the metrics registry's counter).
    pub refusals: crate::metrics::Refusals,
}

impl Auth {
    /// The auth layer the config asks for; `None` when auth is off.
    /// `tls`: whether the listener serves HTTPS (for the default realm);
    /// `refusals` counts the refusals it answers.
    pub async fn from_config(
        config: &Config,
        tls: bool,
        refusals: crate::metrics::Refusals,
    ) -> anyhow::Result<Option<Arc<Auth>>> {
        let a = &config.auth;
        if !a.enabled() {
            if !a.policy.is_empty() {
                tracing::warn!(
                    "auth.policy is set but no users, tokens or issuers are: auth is off"
                );
            }
            return Ok(None);
        }
        let policy = Policy::new(&a.policy).map_err(|e| anyhow::anyhow!(e))?;
        let users = Users::load(a.htpasswd.as_deref(), &a.users)?;
        let own = if a.token.enabled {
            Some(OwnIssuer {
                key: SigningKey::load_or_generate(&a.token, &config.data_dir)?,
                issuer: a.token.issuer.clone(),
            })
        } else {
            None
        };
        let mut external = Vec::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        for x in &a.external_issuers {
            let keys = Arc::new(ExternalKeys::new(x.clone(), &a.token.service)?);
            match keys.refresh(&http).await {
                Ok(n) => {
                    tracing::info!(issuer = %x.issuer, source = %keys.source(), keys = n, "loaded external issuer keys")
                }
                // A file must be readable at start; a URL may come up later.
                Err(e) if x.jwks_file.is_some() => {
                    anyhow::bail!("external issuer {:?}: {e}", x.issuer)
                }
                Err(e) => {
                    tracing::warn!(issuer = %x.issuer, error = %e, "cannot fetch the JWKS yet; will retry")
                }
            }
            external.push(keys);
        }
        // Groups come only from `[[auth.users]]`: a rule for a group nobody
        // is in grants nothing (htpasswd users have no groups).
        for g in empty_groups(&policy, &a.users) {
            tracing::warn!(
                group = g,
                "auth.policy grants to group:{g}, but no [[auth.users]] entry is in it: the rule grants nothing"
            );
        }
        if users.is_empty() && !a.mtls_users && external.is_empty() {
            tracing::warn!(
                "auth is on but no users are configured: only anonymous access is possible"
            );
        }
        Ok(Some(Arc::new(Auth {
            users: RwLock::new(Arc::new(users)),
            htpasswd: a.htpasswd.clone(),
            declared_users: a.users.clone(),
            policy,
            throttle: Throttle::new(
                a.throttle.max_failures,
                Duration::from_secs(a.throttle.window_secs),
            ),
            verifier: Verifier { own, external },
            token_service: a.token.enabled.then(|| TokenService {
                issuer: a.token.issuer.clone(),
                expiry_secs: a.token.expiry_secs.max(60),
            }),
            bearer: a.token.enabled || a.token.realm.is_some(),
            basic_realm: if a.basic_realm.is_empty() {
                "wharf".into()
            } else {
                a.basic_realm.clone()
            },
            service: a.token.service.clone(),
            realm: a.token.realm.clone(),
            mtls_users: a.mtls_users,
            scheme: if tls { "https" } else { "http" },
            max_name_length: config.limits.max_name_length,
            refusals,
        })))
    }

    /// The users as they are now.
    pub fn users(&self) -> Arc<Users> {
        match self.users.read() {
            Ok(u) => u.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The realm of Basic challenges (the web UI always challenges with
    /// Basic: a browser cannot follow the token flow).
    pub fn basic_realm(&self) -> &str {
        &self.basic_realm
    }

    /// Whether there is an htpasswd file to watch.
    pub fn has_htpasswd(&self) -> bool {
        self.htpasswd.is_some()
    }

    /// Load the users again when the htpasswd file changes (checked every
    /// `every`), so users can be added or removed without a restart. A file
    /// that does not parse is reported and the old users are kept.
    pub async fn watch_htpasswd(self: Arc<Self>, every: Duration) {
        let Some(path) = self.htpasswd.clone() else {
            return;
        };
        let stamp = |p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        let mut seen = stamp(&path);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = stamp(&path);
            if now == seen || now.is_none() {
                continue;
            }
            seen = now;
            let (p, declared) = (path.clone(), self.declared_users.clone());
            match tokio::task::spawn_blocking(move || Users::load(Some(&p), &declared)).await {
                Ok(Ok(users)) => {
                    if let Ok(mut u) = self.users.write() {
                        *u = Arc::new(users);
                    }
                    tracing::info!(htpasswd = %path.display(), "reloaded the users");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "htpasswd changed but cannot be used; keeping the old users")
                }
                Err(e) => tracing::warn!(error = %e, "htpasswd reload failed"),
            }
        }
    }

    /// Re-read the JWKS of external issuers now and then (keys rotate).
    pub async fn refresh_external_keys(self: Arc<Self>) {
        let Ok(http) = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        else {
            return;
        };
        let tasks: Vec<_> = self
            .verifier
            .external
            .iter()
            .cloned()
            .map(|keys| {
                let http = http.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(keys.refresh_every());
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        if let Err(e) = keys.refresh(&http).await {
                            tracing::warn!(issuer = %keys.config.issuer, error = %e, "JWKS refresh failed; keeping the old keys");
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Authenticate a request, then decide on its action. On success, the
    /// action to carry out (see [`decide::decide`]) and who asked.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        conn: Option<&ConnInfo>,
        action: Action,
        head: bool,
        origin: Option<&str>,
    ) -> Result<(Action, Identity), Resp> {
        let scopes = decide::challenge_scopes(&action);
        let refused = |why: Refusal| self.refusal(&why, &scopes, headers, origin, head);
        let id = self.authenticate(headers, conn).await.map_err(refused)?;
        match decide::decide(&self.policy, &id, action) {
            Ok(a) => Ok((a, id)),
            Err(why) => {
                let mut resp = refused(why);
                if let Some(name) = id.principal.name() {
                    resp.extensions_mut().insert(AuthUser(name.to_owned()));
                }
                Err(resp)
            }
        }
    }

    /// Who sent the request: Basic credentials, a bearer token, a client
    /// certificate (with `mtls_users`) or nobody.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Identity, Refusal> {
        if let Some(raw) = headers.get(header::AUTHORIZATION) {
            let raw = raw.to_str().map_err(|_| Refusal::BadCredentials)?.trim();
            let (scheme, value) = raw.split_once(' ').unwrap_or((raw, ""));
            if scheme.eq_ignore_ascii_case("basic") {
                let principal = self.basic(value.trim(), conn).await?;
                return Ok(Identity {
                    principal,
                    grants: Grants::Policy,
                });
            }
            if scheme.eq_ignore_ascii_case("bearer") {
                return self.bearer_identity(value.trim());
            }
            return Err(Refusal::BadCredentials);
        }
        if let Some(p) = self.mtls_principal(conn) {
            return Ok(Identity {
                principal: p,
                grants: Grants::Policy,
            });
        }
        Ok(Identity::anonymous())
    }

    /// The user of a verified client certificate, when `mtls_users` is on.
    pub fn mtls_principal(&self, conn: Option<&ConnInfo>) -> Option<Principal> {
        if !self.mtls_users {
            return None;
        }
        let name = conn?.client_cert_name.as_deref()?;
        Some(Principal::user(name, &self.users().groups(name)))
    }

    /// Check `Basic` credentials (base64 of `user:password`).
    pub async fn basic(&self, b64: &str, conn: Option<&ConnInfo>) -> Result<Principal, Refusal> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        // Malformed credentials fail like a wrong password (and cost as much).
        let (user, password) = decoded.split_once(':').unwrap_or(("", ""));
        self.password(user, password, conn).await
    }

    /// Check a user name and password, throttled per client address.
    pub async fn password(
        &self,
        user: &str,
        password: &str,
        conn: Option<&ConnInfo>,
    ) -> Result<Principal, Refusal> {
        let ip = conn.map(|c| c.peer.ip());
        if let Some(ip) = ip {
            self.throttle
                .attempt(ip)
                .map_err(|retry_after| Refusal::Throttled { retry_after })?;
        }
        let verified = self.users().verify(user, password).await;
        if verified.is_some()
            && let Some(ip) = ip
        {
            self.throttle.succeeded(ip);
        }
        verified.ok_or(Refusal::BadCredentials)
    }

    fn bearer_identity(&self, token: &str) -> Result<Identity, Refusal> {
        match self.verifier.verify(token, &self.service) {
            Some(Verified::Own(c)) => Ok(Identity {
                principal: self.subject(&c.sub),
                grants: Grants::Token {
                    access: c.access,
                    own: true,
                },
            }),
            Some(Verified::External(c)) => Ok(Identity {
                principal: if c.sub.is_empty() {
                    Principal::Anonymous
                } else {
                    Principal::user(&c.sub, &[])
                },
                grants: Grants::Token {
                    access: c.access,
                    own: false,
                },
            }),
            None => Err(Refusal::BadCredentials),
        }
    }

    /// The principal named by the `sub` of one of our tokens.
    pub fn subject(&self, sub: &str) -> Principal {
        if sub.is_empty() {
            Principal::Anonymous
        } else {
            Principal::user(sub, &self.users().groups(sub))
        }
    }

    /// The token realm: `auth.token.realm`, else `<origin>/token` where
    /// the origin is the request's (`[http] public_url`, or the listener's
    /// scheme and the request's host; see [`crate::origin::of_request`]).
    fn realm(&self, origin: Option<&str>) -> String {
        if let Some(r) = &self.realm {
            return r.clone();
        }
        match origin {
            Some(o) => format!("{o}/token"),
            None => format!("{}://localhost/token", self.scheme),
        }
    }

    /// The `WWW-Authenticate` value for a refused request. Several scopes
    /// go into one space-separated `scope` parameter, as Distribution
    /// sends them.
    pub fn challenge(
        &self,
        origin: Option<&str>,
        scopes: &[scope::Scope],
        error: Option<&str>,
    ) -> String {
        if !self.bearer {
            return format!("Basic realm=\"{}\"", self.basic_realm);
        }
        let mut c = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(origin),
            self.service
        );
        if !scopes.is_empty() {
            let all: Vec<String> = scopes.iter().map(scope::Scope::to_scope_string).collect();
            c.push_str(&format!(",scope=\"{}\"", all.join(" ")));
        }
        if let Some(e) = error {
            c.push_str(&format!(",error=\"{e}\""));
        }
        c
    }

    /// The answer to a refused request: 401 with a challenge, 403 or 429.
    pub fn refusal(
        &self,
        why: &Refusal,
        scopes: &[scope::Scope],
        headers: &HeaderMap,
        origin: Option<&str>,
        head: bool,
    ) -> Resp {
        self.refusals.count(why);
        match why {
            Refusal::Unauthenticated { insufficient_scope } => {
                let e = RegistryError::new(ErrorCode::Unauthorized, "authentication required");
                let error = insufficient_scope.then_some("insufficient_scope");
                with_challenge(r::error(&e, head), &self.challenge(origin, scopes, error))
            }
            Refusal::BadCredentials => {
                let e = RegistryError::new(ErrorCode::Unauthorized, "invalid credentials or token");
                let error = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("bearer"))
                    .map(|_| "invalid_token");
                with_challenge(r::error(&e, head), &self.challenge(origin, scopes, error))
            }
            Refusal::Denied => r::error(
                &RegistryError::new(
                    ErrorCode::Denied,
                    "requested access to the resource is denied",
                ),
                head,
            ),
            Refusal::Throttled { retry_after } => {
                let e = RegistryError::new(
                    ErrorCode::TooManyRequests,
                    "too many failed logins from this address; try again later",
                );
                let mut resp = r::error(&e, head);
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
        }
    }
}

fn with_challenge(mut resp: Resp, challenge: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(cert: Option<&str>) -> ConnInfo {
        ConnInfo {
            peer: "127.0.0.1:40000".parse().unwrap(),
            client_cert_name: cert.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn client_certificates_name_users_when_enabled() {
        let mut config = Config {
            data_dir: std::env::temp_dir(),
            ..Default::default()
        };
        config.auth.mtls_users = true;
        config.auth.users = vec![UserConfig {
            name: "carol".into(),
            password_hash: bcrypt::hash("pw", 4).unwrap(),
            groups: vec!["readers".into()],
        }];
        let auth = Auth::from_config(&config, true, Default::default())
            .await
            .unwrap()
            .unwrap();
        let none = HeaderMap::new();
        let id = auth
            .authenticate(&none, Some(&conn(Some("carol"))))
            .await
            .unwrap();
        assert_eq!(id.principal, Principal::user("carol", &["readers".into()]));
        // a certificate name that is no configured user is still that user
        let id = auth
            .authenticate(&none, Some(&conn(Some("ci-bot"))))
            .await
            .unwrap();
        assert_eq!(id.principal.name(), Some("ci-bot"));
        // no certificate: anonymous
        let id = auth.authenticate(&none, Some(&conn(None))).await.unwrap();
        assert_eq!(id, Identity::anonymous());
        // explicit credentials win over the certificate, and must be right
        let mut bad = HeaderMap::new();
        bad.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Y2Fyb2w6bm8="),
        );
        assert_eq!(
            auth.authenticate(&bad, Some(&conn(Some("carol")))).await,
            Err(Refusal::BadCredentials)
        );
        // the realm of an https listener: from the request's origin
        assert_eq!(
            auth.realm(Some("https://reg.example:5000")),
            "https://reg.example:5000/token"
        );
        assert_eq!(auth.realm(None), "https://localhost/token");

        // off: certificate names mean nothing
        config.auth.mtls_users = false;
        let auth = Auth::from_config(&config, false, Default::default())
            .await
            .unwrap()
            .unwrap();
        let id = auth
            .authenticate(&none, Some(&conn(Some("carol"))))
            .await
            .unwrap();
        assert_eq!(id, Identity::anonymous());
    }
}
