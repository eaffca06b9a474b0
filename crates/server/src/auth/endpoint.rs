//! The built-in token service.
//!
//! - `GET /token?service=&scope=...&offline_token=` with Basic credentials
//!   or none (anonymous), per the Docker token spec (podman, skopeo).
//! - `POST /token` with an OAuth2 form, `grant_type=password` or
//!   `refresh_token` (docker).
//! - `GET /token/jwks.json`: the public key, for registries that trust this
//!   one as an external issuer.
//!
//! The access granted is the requested scopes cut down to what policy
//! allows the caller; a partial or empty grant is not an error.

use super::decide::Refusal;
use super::policy::{Perms, Principal};
use super::scope::Scope;
use super::token::{OwnIssuer, REFRESH_TTL_SECS, new_claims};
use super::{Auth, AuthUser, TokenService};
use crate::conn::ConnInfo;
use crate::response::{self as r, Resp};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use oci::{ErrorCode, RegistryError};
use std::time::{Duration, SystemTime};

pub const TOKEN_PATH: &str = "/token";
pub const JWKS_PATH: &str = "/token/jwks.json";
/// Largest token request form accepted.
const MAX_FORM: usize = 64 * 1024;

/// Is `path` served by the token service?
pub fn is_token_path(path: &str) -> bool {
    path == TOKEN_PATH || path == JWKS_PATH
}

fn bad_request(msg: &str) -> Resp {
    r::error(
        &RegistryError::new(ErrorCode::Unsupported, msg).with_status(400),
        false,
    )
}

fn json(v: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    r::build(
        200,
        &[
            (header::CONTENT_TYPE, "application/json".into()),
            (header::CONTENT_LENGTH, body.len().to_string()),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
        Body::from(body),
    )
}

fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Serve a token-service request.
pub async fn serve(auth: &Auth, req: Request) -> Resp {
    let Some(svc) = &auth.token_service else {
        return r::error(
            &RegistryError::new(ErrorCode::Unsupported, "no token service here").with_status(404),
            false,
        );
    };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == JWKS_PATH {
        if method != "GET" && method != "HEAD" {
            return method_not_allowed();
        }
        let Some(OwnIssuer { key, .. }) = &auth.verifier.own else {
            return bad_request("no signing key");
        };
        return json(&serde_json::to_value(key.jwks()).unwrap_or_default());
    }
    let conn = ConnInfo::of(&req).cloned();
    let (parts, body) = req.into_parts();
    let form = match method.as_str() {
        "GET" => pairs(parts.uri.query().unwrap_or("").as_bytes()),
        "POST" => match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => pairs(&b),
            Err(_) => return bad_request("token request form too large or unreadable"),
        },
        _ => return method_not_allowed(),
    };
    if let Some(s) = get(&form, "service")
        && s != auth.service
    {
        return bad_request("unknown service");
    }
    let scope_values: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    let requested = match Scope::parse_all(scope_values) {
        Ok(s) => s,
        Err(e) => return bad_request(&e),
    };
    let oauth = method == "POST";
    let who = if oauth {
        oauth_principal(auth, &form, conn.as_ref()).await
    } else {
        basic_principal(auth, &parts.headers, conn.as_ref()).await
    };
    let who = match who {
        Ok(p) => p,
        Err(Refusal::Throttled { retry_after }) => {
            return auth.refusal(
                &Refusal::Throttled { retry_after },
                &[],
                &parts.headers,
                None,
                false,
            );
        }
        Err(why) => {
            auth.refusals.count(&why);
            return unauthorized(auth);
        }
    };
    let offline = if oauth {
        get(&form, "access_type") == Some("offline")
    } else {
        get(&form, "offline_token") == Some("true")
    };
    let mut resp = issue(auth, svc, &who, &requested, offline, oauth);
    if let Some(name) = who.name() {
        resp.extensions_mut().insert(AuthUser(name.to_owned()));
    }
    resp
}

fn method_not_allowed() -> Resp {
    r::error(
        &RegistryError::new(
            ErrorCode::Unsupported,
            "method not allowed on this endpoint",
        )
        .with_status(405),
        false,
    )
}

/// 401 for the token endpoint: a Basic challenge (log in here).
fn unauthorized(auth: &Auth) -> Resp {
    let mut resp = r::error(
        &RegistryError::new(ErrorCode::Unauthorized, "invalid user name or password"),
        false,
    );
    if let Ok(v) = format!("Basic realm=\"{}\"", auth.basic_realm).parse() {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// GET: Basic credentials, a client certificate, or anonymous.
async fn basic_principal(
    auth: &Auth,
    headers: &HeaderMap,
    conn: Option<&ConnInfo>,
) -> Result<Principal, Refusal> {
    if let Some(raw) = headers.get(header::AUTHORIZATION) {
        let raw = raw.to_str().map_err(|_| Refusal::BadCredentials)?.trim();
        let (scheme, value) = raw.split_once(' ').unwrap_or((raw, ""));
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Refusal::BadCredentials);
        }
        return auth.basic(value.trim(), conn).await;
    }
    Ok(auth.mtls_principal(conn).unwrap_or(Principal::Anonymous))
}

/// POST: the OAuth2 password or refresh-token grant.
async fn oauth_principal(
    auth: &Auth,
    form: &[(String, String)],
    conn: Option<&ConnInfo>,
) -> Result<Principal, Refusal> {
    match get(form, "grant_type") {
        Some("password") => {
            let user = get(form, "username").unwrap_or("");
            let password = get(form, "password").unwrap_or("");
            auth.password(user, password, conn).await
        }
        Some("refresh_token") => {
            let token = get(form, "refresh_token").unwrap_or("");
            match auth.verifier.verify(token, &refresh_audience(auth)) {
                // The subject must still be a user.
                Some(super::token::Verified::Own(c)) => auth
                    .users()
                    .principal(&c.sub)
                    .ok_or(Refusal::BadCredentials),
                _ => Err(Refusal::BadCredentials),
            }
        }
        _ => Err(Refusal::BadCredentials),
    }
}

/// Refresh tokens have their own audience, so they are never accepted as
/// access tokens.
fn refresh_audience(auth: &Auth) -> String {
    format!("{}/refresh", auth.service)
}

/// The requested scopes cut down to what `who` may do.
pub fn grant(auth: &Auth, who: &Principal, requested: &[Scope]) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    for s in requested {
        let granted = if s.is_catalog() {
            if super::decide::may_list_catalog(&auth.policy, who)
                && s.actions.iter().any(|a| a == "*")
            {
                vec!["*".to_owned()]
            } else {
                vec![]
            }
        } else if s.kind == "repository"
            && oci::RepoName::parse(&s.name, auth.max_name_length).is_ok()
        {
            let asked = Perms::from_actions(s.actions.iter().map(String::as_str));
            auth.policy.perms(who, &s.name).intersect(asked).actions()
        } else {
            vec![]
        };
        if granted.is_empty() {
            continue;
        }
        match out
            .iter_mut()
            .find(|o| o.kind == s.kind && o.name == s.name)
        {
            Some(o) => {
                for a in granted {
                    if !o.actions.contains(&a) {
                        o.actions.push(a);
                    }
                }
            }
            None => out.push(Scope {
                kind: s.kind.clone(),
                name: s.name.clone(),
                actions: granted,
            }),
        }
    }
    out
}

fn issue(
    auth: &Auth,
    svc: &TokenService,
    who: &Principal,
    requested: &[Scope],
    offline: bool,
    oauth: bool,
) -> Resp {
    let Some(OwnIssuer { key, .. }) = &auth.verifier.own else {
        return bad_request("no signing key");
    };
    let access = grant(auth, who, requested);
    let scope_str = access
        .iter()
        .map(Scope::to_scope_string)
        .collect::<Vec<_>>()
        .join(" ");
    let sub = who.name().unwrap_or("");
    let claims = new_claims(&svc.issuer, &auth.service, sub, access, svc.expiry_secs);
    let issued_at =
        humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(claims.iat))
            .to_string();
    let token = match key.sign(&claims) {
        Ok(t) => t,
        Err(e) => return r::internal(&e, false),
    };
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": svc.expiry_secs,
        "issued_at": issued_at,
    });
    if oauth {
        body["scope"] = serde_json::Value::String(scope_str);
    }
    if offline && !sub.is_empty() {
        let refresh = new_claims(
            &svc.issuer,
            &refresh_audience(auth),
            sub,
            Vec::new(),
            REFRESH_TTL_SECS,
        );
        match key.sign(&refresh) {
            Ok(t) => body["refresh_token"] = serde_json::Value::String(t),
            Err(e) => return r::internal(&e, false),
        }
    }
    json(&body)
}
