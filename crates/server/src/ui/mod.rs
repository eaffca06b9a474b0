//! The web UI: server-rendered pages at `/ui/` (docs/ui.md).
//!
//! The UI is another client of the registry core with the same
//! authorization: every page names the typed [`Action`] the API request for
//! the same data would be (the catalog, a tag list, a manifest GET, a blob
//! GET, a manifest DELETE) and asks [`crate::auth::decide`] about it before
//! reading anything, so a page can never show what the API would refuse.
//! Browsers log in with HTTP Basic (the UI challenges with `Basic` even
//! when the API challenges with `Bearer`, since a browser cannot follow the
//! token flow), with the same users.
//!
//! - [`routes`]: the UI's paths and their parsing;
//! - [`pages`]: the HTML (maud: templates checked by the compiler,
//!   everything interpolated is escaped);
//! - [`data`]: what a page shows, read from the registry (paged listings);
//! - [`files`]: the files in a tar layer, listed and served by streaming
//!   through it.

mod data;
mod files;
mod pages;
mod routes;

use crate::auth::decide::{self, Identity, Refusal};
use crate::auth::{Auth, AuthUser};
use crate::conn::ConnInfo;
use crate::handlers::AppState;
use crate::origin;
use crate::response::{self as r, Resp};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, Method, header};
use futures_util::StreamExt;
use oci::{Reference, RepoName};
use routes::{Page, Route};
use std::sync::Arc;

pub(crate) use routes::is_ui_path;

/// The Content-Security-Policy of every UI answer: only this origin's
/// style sheet and script, no inline code, no frames, forms post here.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("static/style.css");
const SCRIPT: &str = include_str!("static/ui.js");

/// Who is looking, as the registry's auth sees them.
pub(crate) struct Viewer {
    /// `None` when auth is off (everything is allowed).
    id: Option<Identity>,
    auth: Option<Arc<Auth>>,
}

impl Viewer {
    /// The user's name, when logged in.
    fn name(&self) -> Option<&str> {
        self.id.as_ref().and_then(|i| i.principal.name())
    }

    /// May the viewer do `action`? The same decision as the API's.
    fn may(&self, action: crate::action::Action) -> Result<(), Refusal> {
        match (&self.auth, &self.id) {
            (Some(auth), Some(id)) => decide::decide(&auth.policy, id, action).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Does the viewer see `repo` in the catalog (may pull it)?
    fn sees(&self, repo: &str) -> bool {
        match (&self.auth, &self.id) {
            (Some(auth), Some(id)) => decide::sees_in_catalog(&auth.policy, id, repo),
            _ => true,
        }
    }
}

/// What a page handler needs besides the registry.
pub(crate) struct Ctx<'a> {
    state: &'a AppState,
    viewer: Viewer,
    /// `host[:port]` clients pull from (pull commands).
    host: String,
    /// `scheme://host[:port]` of this request (the CSRF check).
    origin: Option<String>,
    headers: &'a HeaderMap,
}

/// Answer a request for a UI path.
pub(crate) async fn serve(state: &Arc<AppState>, req: Request) -> Resp {
    let conn = ConnInfo::of(&req).cloned();
    let (parts, body) = req.into_parts();
    let head = parts.method == Method::HEAD;
    let route = match routes::parse(parts.uri.path(), parts.uri.query(), state) {
        Ok(r) => r,
        Err(msg) => return html(404, &pages::error_page(None, 404, &msg), head),
    };
    let page = match route {
        Route::Redirect(to) => return redirect(&to),
        Route::Static(name) => return static_file(name, head),
        Route::Page(p) => p,
    };
    let post = parts.method == Method::POST;
    let allowed = match &page {
        Page::DeleteConfirm { .. } => parts.method == Method::GET || head || post,
        _ => parts.method == Method::GET || head,
    };
    if !allowed {
        let mut resp = html(
            405,
            &pages::error_page(None, 405, "this method is not allowed here"),
            head,
        );
        if let Ok(v) = "GET, HEAD".parse() {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    }
    let origin = origin::of_request(
        state.public_origin.as_deref(),
        state.config.tls_enabled(),
        parts.uri.authority().map(|a| a.as_str()),
        &parts.headers,
    );
    let host = origin
        .as_deref()
        .map(|o| {
            o.trim_start_matches("https://")
                .trim_start_matches("http://")
                .to_owned()
        })
        .unwrap_or_else(|| state.config.listen.to_string());
    // Who is asking. Bad credentials get the login prompt again.
    let id = match &state.auth {
        None => None,
        Some(auth) => match auth.authenticate(&parts.headers, conn.as_ref()).await {
            Ok(id) => Some(id),
            Err(why) => return refused(auth, &why, None, head),
        },
    };
    let viewer = Viewer {
        id,
        auth: state.auth.clone(),
    };
    let user = viewer.name().map(str::to_owned);
    let ctx = Ctx {
        state,
        viewer,
        host,
        origin,
        headers: &parts.headers,
    };
    let mut resp = if post {
        delete_post(&ctx, page, body).await
    } else {
        render(&ctx, page, head).await
    };
    if let Some(u) = user {
        resp.extensions_mut().insert(AuthUser(u));
    }
    resp
}

/// The answer to a refused page: the login prompt (401 with a Basic
/// challenge) for anonymous viewers and wrong credentials, 403 for users
/// who may not, 429 when throttled.
fn refused(auth: &Auth, why: &Refusal, user: Option<&str>, head: bool) -> Resp {
    match why {
        Refusal::Unauthenticated { .. } | Refusal::BadCredentials => {
            let mut resp = html(
                401,
                &pages::error_page(user, 401, "log in to see this page"),
                head,
            );
            let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", auth.basic_realm());
            if let Ok(v) = challenge.parse() {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
        Refusal::Denied => html(
            403,
            &pages::error_page(user, 403, "you may not see this page"),
            head,
        ),
        Refusal::Throttled { retry_after } => {
            let mut resp = html(
                429,
                &pages::error_page(
                    user,
                    429,
                    "too many failed logins from this address; try again later",
                ),
                head,
            );
            if let Ok(v) = retry_after.to_string().parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

/// Refuse unless the viewer may do `action` (the API's decision).
fn check(ctx: &Ctx<'_>, action: crate::action::Action, head: bool) -> Result<(), Box<Resp>> {
    match (ctx.viewer.may(action), &ctx.viewer.auth) {
        (Ok(()), _) => Ok(()),
        (Err(why), Some(auth)) => Err(Box::new(refused(auth, &why, ctx.viewer.name(), head))),
        (Err(_), None) => Err(Box::new(html(
            403,
            &pages::error_page(None, 403, "you may not see this page"),
            head,
        ))),
    }
}

/// A registry error as a page: its status and message; storage failures
/// are logged and shown without detail.
fn store_error(ctx: &Ctx<'_>, e: store::Error, head: bool) -> Resp {
    let (status, msg) = match e {
        store::Error::Registry(e) => (e.status, e.message),
        other => {
            // Logs the failure and picks its status (500, 503, 507).
            let api = r::from_store(other, true);
            (
                api.status().as_u16(),
                "the registry's storage failed; see the registry log".to_owned(),
            )
        }
    };
    html(
        status,
        &pages::error_page(ctx.viewer.name(), status, &msg),
        head,
    )
}

async fn render(ctx: &Ctx<'_>, page: Page, head: bool) -> Resp {
    use crate::action::Action;
    let reg = &ctx.state.registry;
    let user = ctx.viewer.name();
    match page {
        Page::Login => {
            // Asks the browser for credentials until it sends good ones.
            match (&ctx.viewer.auth, user) {
                (Some(auth), None) => refused(
                    auth,
                    &Refusal::Unauthenticated {
                        insufficient_scope: false,
                    },
                    None,
                    head,
                ),
                _ => redirect("/ui/"),
            }
        }
        Page::Catalog(q) => {
            if let Err(resp) = check(
                ctx,
                Action::Catalog {
                    n: None,
                    last: None,
                },
                head,
            ) {
                return *resp;
            }
            let sees = |name: &str| ctx.viewer.sees(name);
            match data::catalog(reg, &q, &sees).await {
                Ok(found) => html(200, &pages::catalog(user, &q, &found), head),
                Err(e) => store_error(ctx, e, head),
            }
        }
        Page::Repo { repo, list } => {
            let action = Action::ListTags {
                repo: repo.clone(),
                n: None,
                last: None,
            };
            if let Err(resp) = check(ctx, action, head) {
                return *resp;
            }
            let tags = match data::tags(reg, &repo, &list).await {
                Ok(t) => t,
                Err(e) => return store_error(ctx, e, head),
            };
            let may_delete = ctx.state.config.delete_enabled
                && ctx
                    .viewer
                    .may(Action::DeleteManifest {
                        repo: repo.clone(),
                        reference: Reference::Digest(oci::Digest::sha256_of(b"")),
                    })
                    .is_ok();
            html(
                200,
                &pages::repository(user, &ctx.host, &repo, &list, &tags, may_delete),
                head,
            )
        }
        Page::Manifest { repo, reference } => {
            let action = Action::GetManifest {
                repo: repo.clone(),
                reference: reference.clone(),
                head: false,
            };
            if let Err(resp) = check(ctx, action, head) {
                return *resp;
            }
            let view = match data::manifest(reg, &repo, &reference).await {
                Ok(v) => v,
                Err(e) => return store_error(ctx, e, head),
            };
            let may_delete = ctx.state.config.delete_enabled
                && ctx
                    .viewer
                    .may(Action::DeleteManifest {
                        repo: repo.clone(),
                        reference: reference.clone(),
                    })
                    .is_ok();
            html(
                200,
                &pages::manifest(user, &ctx.host, &repo, &reference, &view, may_delete),
                head,
            )
        }
        Page::Files { repo, digest, from } => {
            if let Err(resp) = check(ctx, blob_action(&repo, &digest), head) {
                return *resp;
            }
            match files::list(reg, &repo, &digest).await {
                Ok(listing) => html(
                    200,
                    &pages::files(user, &repo, &digest, from.as_ref(), &listing),
                    head,
                ),
                Err(e) => store_error(ctx, e, head),
            }
        }
        Page::File { repo, digest, path } => {
            if let Err(resp) = check(ctx, blob_action(&repo, &digest), head) {
                return *resp;
            }
            match files::extract(reg, &repo, &digest, &path).await {
                Ok(Some(file)) => download(file.size, &path, file.body, head),
                Ok(None) => html(
                    404,
                    &pages::error_page(user, 404, "no such file in this layer"),
                    head,
                ),
                Err(e) => store_error(ctx, e, head),
            }
        }
        Page::Blob { repo, digest, name } => {
            if let Err(resp) = check(ctx, blob_action(&repo, &digest), head) {
                return *resp;
            }
            let size = match reg.blob_size(&repo, &digest).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return html(
                        404,
                        &pages::error_page(user, 404, "blob unknown to this repository"),
                        head,
                    );
                }
                Err(e) => return store_error(ctx, e, head),
            };
            let name = name.unwrap_or_else(|| digest.hex().to_owned());
            if head {
                let empty = futures_util::stream::empty::<std::io::Result<bytes::Bytes>>();
                return download(size, &name, Box::pin(empty), true);
            }
            match reg.blob_get(&repo, &digest, None).await {
                Ok(obj) => download(size, &name, obj.body, false),
                Err(e) => store_error(ctx, e, head),
            }
        }
        Page::DeleteConfirm { repo, reference } => {
            if !ctx.state.config.delete_enabled {
                return html(
                    405,
                    &pages::error_page(user, 405, "deletes are disabled on this registry"),
                    head,
                );
            }
            let action = Action::DeleteManifest {
                repo: repo.clone(),
                reference: reference.clone(),
            };
            if let Err(resp) = check(ctx, action, head) {
                return *resp;
            }
            // The manifest the reference names must be there to delete it.
            match reg.manifest_head(&repo, &reference).await {
                Ok((digest, media_type, _)) => html(
                    200,
                    &pages::delete_confirm(user, &repo, &reference, &digest, &media_type),
                    head,
                ),
                Err(e) => store_error(ctx, e, head),
            }
        }
    }
}

fn blob_action(repo: &RepoName, digest: &oci::Digest) -> crate::action::Action {
    crate::action::Action::GetBlob {
        repo: repo.clone(),
        digest: digest.clone(),
        head: false,
    }
}

/// The most a confirmation form's body may hold.
const FORM_MAX: usize = 4096;

/// `POST /ui/r/<repo>/-/delete/<reference>`: the confirmed delete. Only
/// from a page of this origin (the CSRF check), only with the
/// confirmation's field, only when the policy allows the delete.
async fn delete_post(ctx: &Ctx<'_>, page: Page, body: Body) -> Resp {
    let user = ctx.viewer.name();
    let Page::DeleteConfirm { repo, reference } = page else {
        return html(405, &pages::error_page(user, 405, "not allowed"), false);
    };
    if !same_origin(ctx.headers, ctx.origin.as_deref()) {
        return html(
            403,
            &pages::error_page(
                user,
                403,
                "this form must be sent from the registry's own page (Origin or Referer of another site)",
            ),
            false,
        );
    }
    if !ctx.state.config.delete_enabled {
        return html(
            405,
            &pages::error_page(user, 405, "deletes are disabled on this registry"),
            false,
        );
    }
    let action = crate::action::Action::DeleteManifest {
        repo: repo.clone(),
        reference: reference.clone(),
    };
    if let Err(resp) = check(ctx, action, false) {
        return *resp;
    }
    let form = match read_form(body).await {
        Some(f) => f,
        None => {
            return html(
                400,
                &pages::error_page(user, 400, "the form could not be read"),
                false,
            );
        }
    };
    let confirmed = url::form_urlencoded::parse(&form)
        .any(|(k, v)| k == "confirm" && v == reference.to_string().as_str());
    if !confirmed {
        return html(
            400,
            &pages::error_page(
                user,
                400,
                "the delete was not confirmed: use the confirmation page",
            ),
            false,
        );
    }
    match ctx.state.registry.manifest_delete(&repo, &reference).await {
        Ok(()) => {
            tracing::info!(repo = %repo, reference = %reference, user = user.unwrap_or("-"), "deleted from the web UI");
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("deleted", &reference.to_string())
                .finish();
            redirect(&format!("{}?{q}", routes::repo_url(&repo)))
        }
        Err(e) => store_error(ctx, e, false),
    }
}

async fn read_form(body: Body) -> Option<Vec<u8>> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if out.len().saturating_add(chunk.len()) > FORM_MAX {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

/// Was a form sent from a page of this registry? Browsers send `Origin`
/// with every POST; `Referer` is the fallback (the UI's
/// `Referrer-Policy: same-origin` keeps it for our own pages). Hosts are
/// compared, so a TLS-terminating proxy that changes the scheme does not
/// break it. `Sec-Fetch-Site`, when sent, must say same-origin.
fn same_origin(headers: &HeaderMap, origin: Option<&str>) -> bool {
    let Some(ours) = origin.and_then(host_of) else {
        return false;
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
    {
        return false;
    }
    let from = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v != "null")
        .or_else(|| headers.get(header::REFERER).and_then(|v| v.to_str().ok()));
    from.and_then(host_of)
        .is_some_and(|h| h.eq_ignore_ascii_case(&ours))
}

/// `host[:port]` of an absolute URL (port left out when it is the
/// scheme's default).
fn host_of(u: &str) -> Option<String> {
    let u = url::Url::parse(u).ok()?;
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// The headers of every UI page.
fn page_headers(len: usize) -> Vec<(HeaderName, String)> {
    vec![
        (header::CONTENT_TYPE, "text/html; charset=utf-8".into()),
        (header::CONTENT_LENGTH, len.to_string()),
        (header::CONTENT_SECURITY_POLICY, CSP.into()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (header::X_FRAME_OPTIONS, "DENY".into()),
        (header::REFERRER_POLICY, "same-origin".into()),
        // Pages depend on who is asking and on tags that move.
        (header::CACHE_CONTROL, "no-store".into()),
        (header::VARY, "Authorization".into()),
    ]
}

fn html(status: u16, markup: &maud::Markup, head: bool) -> Resp {
    let body = markup.0.clone();
    let hdrs = page_headers(body.len());
    r::build(
        status,
        &hdrs,
        if head {
            Body::empty()
        } else {
            Body::from(body)
        },
    )
}

fn redirect(to: &str) -> Resp {
    r::build(
        303,
        &[
            (header::LOCATION, to.to_owned()),
            (header::CONTENT_LENGTH, "0".into()),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
        Body::empty(),
    )
}

fn static_file(name: &str, head: bool) -> Resp {
    let (ctype, text) = match name {
        "style.css" => ("text/css; charset=utf-8", STYLE),
        _ => ("text/javascript; charset=utf-8", SCRIPT),
    };
    r::build(
        200,
        &[
            (header::CONTENT_TYPE, ctype.into()),
            (header::CONTENT_LENGTH, text.len().to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            (header::CACHE_CONTROL, "max-age=300".into()),
        ],
        if head {
            Body::empty()
        } else {
            Body::from(text)
        },
    )
}

/// A file download: the bytes as an attachment named after the file's
/// last path component.
fn download(size: u64, path: &str, body: store::ByteStream, head: bool) -> Resp {
    let base = path
        .rsplit('/')
        .find(|c| !c.is_empty())
        .unwrap_or("download");
    // A plain ASCII fallback and the exact name (RFC 6266 / 5987).
    let ascii: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact: String =
        percent_encoding::utf8_percent_encode(base, percent_encoding::NON_ALPHANUMERIC).to_string();
    r::build(
        200,
        &[
            (header::CONTENT_TYPE, "application/octet-stream".into()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}"),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'".into()),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
        if head {
            Body::empty()
        } else {
            Body::from_stream(body)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hdrs(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn forms_must_come_from_this_origin() {
        let o = Some("http://127.0.0.1:5000");
        assert!(same_origin(
            &hdrs(&[("origin", "http://127.0.0.1:5000")]),
            o
        ));
        assert!(same_origin(
            &hdrs(&[("referer", "http://127.0.0.1:5000/ui/r/a/-/delete/t")]),
            o
        ));
        // a TLS-terminating proxy: the browser's scheme differs
        assert!(same_origin(
            &hdrs(&[("origin", "https://reg.example")]),
            Some("http://reg.example")
        ));
        for bad in [
            hdrs(&[]),
            hdrs(&[("origin", "http://evil.example")]),
            hdrs(&[("origin", "http://127.0.0.1:5001")]),
            hdrs(&[("origin", "null")]),
            hdrs(&[("referer", "http://evil.example/ui/")]),
            hdrs(&[
                ("origin", "http://127.0.0.1:5000"),
                ("sec-fetch-site", "cross-site"),
            ]),
        ] {
            assert!(!same_origin(&bad, o), "{bad:?}");
        }
        assert!(!same_origin(
            &hdrs(&[("origin", "http://127.0.0.1:5000")]),
            None
        ));
    }
}
