//! The UI's paths. Repository names have any number of components, so the
//! part after the name is introduced by a `-` component, which no name can
//! have (components start with a letter or digit):
//!
//! ```text
//! /ui/                                    catalog (?q=&match=prefix|substring&last=&n=)
//! /ui/login                               asks the browser for credentials
//! /ui/static/style.css, /ui/static/ui.js
//! /ui/r/<repo>                            tags (?sort=name|pushed&last=&page=&n=)
//! /ui/r/<repo>/-/manifest/<tag|digest>    a manifest, its tree and referrers
//! /ui/r/<repo>/-/files/<layer digest>     the files in a tar layer (?from=<manifest digest>)
//! /ui/r/<repo>/-/file/<layer digest>      one of them (?path=)
//! /ui/r/<repo>/-/blob/<digest>            a blob as a download (?name=)
//! /ui/r/<repo>/-/delete/<tag|digest>      GET: confirmation; POST: delete
//! ```
//! `/` and `/ui` redirect to `/ui/`.

use crate::handlers::AppState;
use oci::{Digest, Reference, RepoName};

/// Rows per page by default, and the most a page may ask for.
pub(crate) const DEFAULT_PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 500;

pub(crate) enum Route {
    Redirect(String),
    Static(&'static str),
    Page(Page),
}

/// What the catalog page asks for.
#[derive(Clone, Debug, Default)]
pub(crate) struct CatalogQuery {
    pub q: String,
    /// Names starting with `q` (else: containing it).
    pub prefix: bool,
    pub last: Option<String>,
    pub n: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagSort {
    Name,
    Pushed,
}

/// What the repository page asks for.
#[derive(Clone, Debug)]
pub(crate) struct TagQuery {
    pub sort: TagSort,
    /// Name order: the page after this tag.
    pub last: Option<String>,
    /// Push-time order: the page number (from 0).
    pub page: usize,
    pub n: usize,
    /// A tag or digest just deleted (shown as a notice).
    pub deleted: Option<String>,
}

pub(crate) enum Page {
    Login,
    Catalog(CatalogQuery),
    Repo {
        repo: RepoName,
        list: TagQuery,
    },
    Manifest {
        repo: RepoName,
        reference: Reference,
    },
    Files {
        repo: RepoName,
        digest: Digest,
        from: Option<Digest>,
    },
    File {
        repo: RepoName,
        digest: Digest,
        path: String,
    },
    Blob {
        repo: RepoName,
        digest: Digest,
        name: Option<String>,
    },
    DeleteConfirm {
        repo: RepoName,
        reference: Reference,
    },
}

/// Is this a path the UI answers (when it is on)?
pub(crate) fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

pub(crate) fn repo_url(repo: &RepoName) -> String {
    format!("/ui/r/{repo}")
}

pub(crate) fn manifest_url(repo: &RepoName, reference: &str) -> String {
    format!("/ui/r/{repo}/-/manifest/{reference}")
}

pub(crate) fn files_url(repo: &RepoName, layer: &Digest, from: &Digest) -> String {
    format!("/ui/r/{repo}/-/files/{layer}?from={from}")
}

pub(crate) fn file_url(repo: &RepoName, layer: &Digest, path: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("path", path)
        .finish();
    format!("/ui/r/{repo}/-/file/{layer}?{q}")
}

pub(crate) fn blob_url(repo: &RepoName, digest: &Digest, name: Option<&str>) -> String {
    match name {
        Some(n) => {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("name", n)
                .finish();
            format!("/ui/r/{repo}/-/blob/{digest}?{q}")
        }
        None => format!("/ui/r/{repo}/-/blob/{digest}"),
    }
}

pub(crate) fn delete_url(repo: &RepoName, reference: &str) -> String {
    format!("/ui/r/{repo}/-/delete/{reference}")
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `n=`: a page size from 1 to [`MAX_PAGE`]; anything else is the default.
fn page_size(pairs: &[(String, String)]) -> usize {
    get(pairs, "n")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .unwrap_or(DEFAULT_PAGE)
}

/// The route of a UI path; `Err` (a message for a 404 page) when it names
/// nothing the UI has.
pub(crate) fn parse(path: &str, query: Option<&str>, state: &AppState) -> Result<Route, String> {
    let max_name = state.limits.max_name_length;
    if path == "/" || path == "/ui" {
        return Ok(Route::Redirect("/ui/".into()));
    }
    let Some(rest) = path.strip_prefix("/ui/") else {
        return Err("no such page".into());
    };
    let pairs = query_pairs(query);
    match rest {
        "" => {
            return Ok(Route::Page(Page::Catalog(CatalogQuery {
                q: get(&pairs, "q")
                    .unwrap_or("")
                    .trim()
                    .chars()
                    .take(256)
                    .collect(),
                prefix: get(&pairs, "match") == Some("prefix"),
                last: get(&pairs, "last").map(str::to_owned),
                n: page_size(&pairs),
            })));
        }
        "login" => return Ok(Route::Page(Page::Login)),
        "static/style.css" => return Ok(Route::Static("style.css")),
        "static/ui.js" => return Ok(Route::Static("ui.js")),
        _ => {}
    }
    let Some(rest) = rest.strip_prefix("r/") else {
        return Err("no such page".into());
    };
    let (name, tail) = match rest.split_once("/-/") {
        Some((n, t)) => (n, Some(t)),
        None => (rest.trim_end_matches('/'), None),
    };
    let repo =
        RepoName::parse(name, max_name).map_err(|_| "not a valid repository name".to_owned())?;
    let Some(tail) = tail else {
        let sort = match get(&pairs, "sort") {
            Some("pushed") => TagSort::Pushed,
            _ => TagSort::Name,
        };
        return Ok(Route::Page(Page::Repo {
            repo,
            list: TagQuery {
                sort,
                last: get(&pairs, "last").map(str::to_owned),
                page: get(&pairs, "page")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                n: page_size(&pairs),
                deleted: get(&pairs, "deleted").map(|d| d.chars().take(200).collect()),
            },
        }));
    };
    let (what, arg) = tail
        .split_once('/')
        .ok_or_else(|| "no such page".to_owned())?;
    let reference = || Reference::parse(arg).map_err(|_| "not a valid tag or digest".to_owned());
    let digest = || {
        arg.parse::<Digest>()
            .map_err(|_| "not a valid digest".to_owned())
    };
    let page = match what {
        "manifest" => Page::Manifest {
            repo,
            reference: reference()?,
        },
        "delete" => Page::DeleteConfirm {
            repo,
            reference: reference()?,
        },
        "files" => Page::Files {
            repo,
            digest: digest()?,
            from: get(&pairs, "from").and_then(|d| d.parse().ok()),
        },
        "file" => Page::File {
            repo,
            digest: digest()?,
            path: get(&pairs, "path")
                .ok_or_else(|| "which file? (path=)".to_owned())?
                .to_owned(),
        },
        "blob" => Page::Blob {
            repo,
            digest: digest()?,
            name: get(&pairs, "name").map(str::to_owned),
        },
        _ => return Err("no such page".into()),
    };
    Ok(Route::Page(page))
}
