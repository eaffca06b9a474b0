//! The HTML of the UI's pages (maud escapes everything interpolated).

use super::data::{self, ChildView, ConfigInfo, Found, ImageView, ManifestView, Tags};
use super::files::{EntryKind, Listing, MAX_ENTRIES};
use super::routes::{self, CatalogQuery, TagQuery, TagSort};
use maud::{DOCTYPE, Markup, html};
use oci::manifest::Descriptor;
use oci::{Digest, Reference, RepoName};
use std::cell::Cell;
use std::time::SystemTime;

/// `1.5 MiB` (bytes below 1 KiB as they are).
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn time(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "—".into())
}

/// `sha256:0123456789ab` (the first 12 hex digits).
fn short(d: &Digest) -> String {
    let hex = d.hex();
    format!("{}:{}", d.algorithm(), &hex[..hex.len().min(12)])
}

/// The frame of every page.
fn layout(title: &str, user: Option<&str>, crumbs: &[(String, String)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Wharf" }
                link rel="stylesheet" href="/ui/static/style.css";
                script src="/ui/static/ui.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    nav aria-label="Site" {
                        a class="brand" href="/ui/" { "Wharf" }
                        span class="who" {
                            @if let Some(u) = user {
                                "Logged in as " strong { (u) }
                            } @else {
                                a href="/ui/login" { "Log in" }
                            }
                        }
                    }
                }
                @if !crumbs.is_empty() {
                    nav class="crumbs" aria-label="Breadcrumb" {
                        ol {
                            @for (i, (label, href)) in crumbs.iter().enumerate() {
                                li {
                                    @if i + 1 == crumbs.len() {
                                        span aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// Breadcrumbs down to a repository.
fn repo_crumbs(repo: &RepoName) -> Vec<(String, String)> {
    vec![
        ("Repositories".into(), "/ui/".into()),
        (repo.to_string(), routes::repo_url(repo)),
    ]
}

pub(crate) fn error_page(user: Option<&str>, status: u16, message: &str) -> Markup {
    let title = match status {
        400 => "Bad request",
        401 => "Log in required",
        403 => "Not allowed",
        404 => "Not found",
        405 => "Not allowed",
        429 => "Too many attempts",
        503 => "Storage unavailable",
        _ => "Error",
    };
    layout(
        title,
        user,
        &[],
        html! {
            h1 { (title) }
            p class="error" role="alert" { (message) }
            p { a href="/ui/" { "Back to the repositories" } }
        },
    )
}

/// Commands to copy, each with a button (the script copies; without it,
/// the text can be selected).
fn commands(list: &[(&str, String)], ids: &Cell<usize>) -> Markup {
    let items: Vec<(&str, &str, String)> = list
        .iter()
        .map(|(label, cmd)| {
            let n = ids.get();
            ids.set(n + 1);
            (*label, cmd.as_str(), format!("cmd-{n}"))
        })
        .collect();
    html! {
        ul class="cmds" {
            @for (label, cmd, id) in &items {
                li {
                    span class="cmd-label" { (label) }
                    code id=(id) class="cmd" { (cmd) }
                    button type="button" class="copy" data-copy=(id) aria-label={ "Copy the " (label) " command" } { "Copy" }
                }
            }
        }
    }
}

pub(crate) fn catalog(user: Option<&str>, q: &CatalogQuery, found: &Found) -> Markup {
    let next = found.next.as_ref().map(|last| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if !q.q.is_empty() {
            s.append_pair("q", &q.q);
        }
        if q.prefix {
            s.append_pair("match", "prefix");
        }
        if q.n != routes::DEFAULT_PAGE {
            s.append_pair("n", &q.n.to_string());
        }
        s.append_pair("last", last);
        format!("/ui/?{}", s.finish())
    });
    let first = format!(
        "/ui/?q={}{}",
        urlenc(&q.q),
        if q.prefix { "&match=prefix" } else { "" }
    );
    layout(
        "Repositories",
        user,
        &[],
        html! {
            h1 { "Repositories" }
            form class="search" method="get" action="/ui/" role="search" {
                label for="q" { "Search repositories" }
                input type="search" id="q" name="q" value=(q.q) placeholder="name or part of it" autocomplete="off";
                fieldset {
                    legend { "Match" }
                    label { input type="radio" name="match" value="substring" checked[!q.prefix]; " contains" }
                    label { input type="radio" name="match" value="prefix" checked[q.prefix]; " starts with" }
                }
                button type="submit" { "Search" }
            }
            @if found.names.is_empty() {
                p id="empty" { @if q.q.is_empty() { "No repositories yet." } @else { "No repository matches." } }
            } @else {
                ul class="repos" id="repositories" {
                    @for name in &found.names {
                        li { a href={ "/ui/r/" (name) } { (name) } }
                    }
                }
            }
            @if found.partial {
                p class="note" { "The search looked at " (data::SCAN_MAX) " repositories without filling this page; the next page continues from there." }
            }
            nav class="pager" aria-label="Pages" {
                @if q.last.is_some() {
                    a href=(first) { "First page" }
                }
                @if let Some(n) = next {
                    a id="next" rel="next" href=(n) { "Next page" }
                }
            }
        },
    )
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn tag_list_url(
    repo: &RepoName,
    q: &TagQuery,
    sort: TagSort,
    page: Option<usize>,
    last: Option<&str>,
) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    if sort == TagSort::Pushed {
        s.append_pair("sort", "pushed");
    }
    if q.n != routes::DEFAULT_PAGE {
        s.append_pair("n", &q.n.to_string());
    }
    if let Some(p) = page {
        s.append_pair("page", &p.to_string());
    }
    if let Some(l) = last {
        s.append_pair("last", l);
    }
    let q = s.finish();
    if q.is_empty() {
        routes::repo_url(repo)
    } else {
        format!("{}?{q}", routes::repo_url(repo))
    }
}

pub(crate) fn repository(
    user: Option<&str>,
    host: &str,
    repo: &RepoName,
    q: &TagQuery,
    tags: &Tags,
    may_delete: bool,
) -> Markup {
    let ids = Cell::new(0);
    let by_name = q.sort == TagSort::Name || tags.too_many_to_sort;
    let next = if by_name {
        tags.next
            .as_deref()
            .map(|l| tag_list_url(repo, q, q.sort, None, Some(l)))
    } else if tags.more {
        Some(tag_list_url(
            repo,
            q,
            TagSort::Pushed,
            Some(q.page.saturating_add(1)),
            None,
        ))
    } else {
        None
    };
    let first = tags
        .rows
        .first()
        .map(|r| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    layout(
        repo.as_str(),
        user,
        &repo_crumbs(repo),
        html! {
            h1 { (repo.as_str()) }
            @if let Some(d) = &q.deleted {
                p class="notice" role="status" id="deleted" { "Deleted " code { (d) } "." }
            }
            (commands(&[("docker", format!("docker pull {host}/{repo}:{first}")),
                        ("podman", format!("podman pull {host}/{repo}:{first}"))], &ids))
            h2 id="tags-heading" { "Tags" }
            p class="sort" {
                "Sort: "
                @if q.sort == TagSort::Name {
                    strong aria-current="true" { "by name" }
                } @else {
                    a href=(tag_list_url(repo, q, TagSort::Name, None, None)) { "by name" }
                }
                " · "
                @if q.sort == TagSort::Pushed && !tags.too_many_to_sort {
                    strong aria-current="true" { "by push time (newest first)" }
                } @else {
                    a href=(tag_list_url(repo, q, TagSort::Pushed, None, None)) { "by push time" }
                }
            }
            @if tags.too_many_to_sort {
                p class="note" role="status" {
                    "This repository has more than " (data::PUSH_SORT_MAX) " tags: sorting by push time would read every one of them, so they are listed by name."
                }
            }
            @if tags.rows.is_empty() {
                p { "No tags." }
            } @else {
                div class="scroll" {
                    table id="tags" aria-labelledby="tags-heading" {
                        thead {
                            tr {
                                th scope="col" { "Tag" }
                                th scope="col" { "Digest" }
                                th scope="col" { "Type" }
                                th scope="col" class="num" { "Size" }
                                th scope="col" { "Pushed" }
                                @if may_delete { th scope="col" { span class="sr" { "Actions" } } }
                            }
                        }
                        tbody {
                            @for row in &tags.rows {
                                tr {
                                    th scope="row" { a class="tag" href=(routes::manifest_url(repo, &row.tag)) { (row.tag) } }
                                    td {
                                        @if let Some(d) = &row.digest {
                                            a href=(routes::manifest_url(repo, &d.to_string())) title=(d.to_string()) { code { (short(d)) } }
                                        } @else { "—" }
                                    }
                                    td {
                                        @if let Some(s) = &row.summary {
                                            span title=(s.media_type) { (s.kind) }
                                            @if !s.platforms.is_empty() {
                                                " (" (s.platforms.join(", ")) ")"
                                            }
                                        } @else { "—" }
                                    }
                                    td class="num" {
                                        @if let Some(n) = row.summary.as_ref().and_then(|s| s.size) {
                                            span title={ (n) " bytes" } { (human_size(n)) }
                                        } @else { "—" }
                                    }
                                    td { (time(row.pushed)) }
                                    @if may_delete {
                                        td { a class="danger" href=(routes::delete_url(repo, &row.tag)) aria-label={ "Delete tag " (row.tag) } { "Delete" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if q.last.is_some() || q.page > 0 {
                    a href=(tag_list_url(repo, q, q.sort, None, None)) { "First page" }
                }
                @if let Some(n) = next {
                    a id="next" rel="next" href=(n) { "Next page" }
                }
            }
        },
    )
}

fn descriptor_row(repo: &RepoName, d: &Descriptor, role: &str, from: &Digest) -> Markup {
    let title = data::title(d);
    html! {
        li {
            span class="role" { (role) }
            " "
            @if let Some(t) = title { strong class="title" { (t) } " " }
            code title=(d.digest.to_string()) { (short(&d.digest)) }
            " · " span class="mt" { (d.media_type) }
            " · " span title={ (d.size) " bytes" } { (human_size(d.size)) }
            " · "
            a href=(routes::blob_url(repo, &d.digest, title)) { "Download" }
            @if data::is_tar_layer(&d.media_type) {
                " · " a href=(routes::files_url(repo, &d.digest, from)) { "Files" }
            }
        }
    }
}

fn image_tree(repo: &RepoName, img: &ImageView) -> Markup {
    html! {
        ul class="tree" {
            @if let Some(c) = &img.manifest.config {
                (descriptor_row(repo, c, "config", &img.digest))
            }
            @for (i, l) in img.manifest.layers.iter().enumerate() {
                (descriptor_row(repo, l, &format!("layer {}", i + 1), &img.digest))
            }
        }
        p class="total" { "Total: " span title={ (img.total) " bytes" } { (human_size(img.total)) } }
    }
}

fn child_tree(repo: &RepoName, c: &ChildView) -> Markup {
    html! {
        li {
            strong class="platform" { (c.platform) }
            " "
            a href=(routes::manifest_url(repo, &c.desc.digest.to_string())) title=(c.desc.digest.to_string()) { code { (short(&c.desc.digest)) } }
            " · " span class="mt" { (c.desc.media_type) }
            " · " (human_size(c.desc.size))
            @if let Some(img) = &c.image { (image_tree(repo, img)) }
        }
    }
}

fn config_section(c: &ConfigInfo) -> Markup {
    html! {
        h2 { "Configuration" }
        dl class="kv" {
            @if let Some(v) = &c.created { dt { "Created" } dd { (v) } }
            @if let Some(v) = &c.platform { dt { "Platform" } dd { (v) } }
            @if let Some(v) = &c.entrypoint { dt { "Entrypoint" } dd { code { (v) } } }
            @if let Some(v) = &c.cmd { dt { "Cmd" } dd { code { (v) } } }
            @if let Some(v) = &c.workdir { dt { "Working directory" } dd { code { (v) } } }
            @if let Some(v) = &c.user { dt { "User" } dd { code { (v) } } }
            @if !c.ports.is_empty() { dt { "Exposed ports" } dd { (c.ports.join(", ")) } }
            @if !c.env.is_empty() {
                dt { "Environment" }
                dd { ul class="plain" { @for e in &c.env { li { code { (e) } } } } }
            }
        }
        @if !c.labels.is_empty() {
            h3 { "Labels" }
            div class="scroll" {
                table class="kv" {
                    thead { tr { th scope="col" { "Label" } th scope="col" { "Value" } } }
                    tbody { @for (k, v) in &c.labels { tr { th scope="row" { code { (k) } } td { (v) } } } }
                }
            }
        }
    }
}

fn pull_commands(
    host: &str,
    repo: &RepoName,
    reference: &Reference,
    v: &ManifestView,
) -> Vec<(&'static str, String)> {
    let at = format!("{host}/{repo}@{}", v.digest);
    let mut out = Vec::new();
    let helm = v.image.as_ref().is_some_and(|i| {
        i.manifest
            .config
            .as_ref()
            .is_some_and(|c| c.media_type == data::HELM_CONFIG)
    });
    let files = v
        .image
        .as_ref()
        .is_some_and(|i| data::is_files_artifact(&i.manifest));
    if helm {
        match reference {
            Reference::Tag(t) => out.push((
                "helm",
                format!("helm pull oci://{host}/{repo} --version {t}"),
            )),
            Reference::Digest(_) => out.push(("helm", format!("helm pull oci://{at}"))),
        }
        out.push(("oras", format!("oras pull {at}")));
    } else if files {
        out.push((
            "wharf",
            format!(
                "wharf pull {at} -o ./{}",
                repo.as_str().rsplit('/').next().unwrap_or("files")
            ),
        ));
        out.push(("oras", format!("oras pull {at}")));
    } else {
        out.push(("docker", format!("docker pull {at}")));
        out.push(("podman", format!("podman pull {at}")));
        out.push((
            "wharf",
            format!(
                "wharf cp {at} oci:./{}",
                repo.as_str().rsplit('/').next().unwrap_or("image")
            ),
        ));
        out.push(("oras", format!("oras pull {at}")));
    }
    out
}

pub(crate) fn manifest(
    user: Option<&str>,
    host: &str,
    repo: &RepoName,
    reference: &Reference,
    v: &ManifestView,
    may_delete: bool,
) -> Markup {
    let ids = Cell::new(0);
    let name = match reference {
        Reference::Tag(t) => format!("{repo}:{t}"),
        Reference::Digest(d) => format!("{repo}@{}", short(d)),
    };
    let mut crumbs = repo_crumbs(repo);
    crumbs.push((reference.to_string(), String::new()));
    let parsed = v.parsed.as_ref();
    layout(
        &name,
        user,
        &crumbs,
        html! {
            h1 { (name) }
            dl class="kv" id="summary" {
                dt { "Digest" } dd { code id="digest" { (v.digest.to_string()) } }
                dt { "Media type" } dd { code id="media-type" { (v.media_type) } }
                dt { "Kind" } dd { (v.kind) }
                dt { "Manifest size" } dd { (v.size) " bytes" }
                @if let Some(a) = parsed.and_then(|p| p.artifact_type.as_ref()) {
                    dt { "Artifact type" } dd { code { (a) } }
                }
                @if let Some(s) = parsed.and_then(|p| p.subject.as_ref()) {
                    dt { "Subject" }
                    dd { a href=(routes::manifest_url(repo, &s.digest.to_string())) { code { (s.digest.to_string()) } } }
                }
            }
            h2 { "Pull" }
            (commands(&pull_commands(host, repo, reference, v), &ids))
            @if may_delete {
                p class="actions" {
                    @if let Reference::Tag(t) = reference {
                        a class="danger" href=(routes::delete_url(repo, t.as_str())) { "Delete tag " (t.as_str()) "…" }
                        " "
                    }
                    a class="danger" href=(routes::delete_url(repo, &v.digest.to_string())) { "Delete this manifest…" }
                }
            }
            h2 id="contents" { "Contents" }
            @if !v.children.is_empty() {
                ul class="tree" id="platforms" {
                    @for c in &v.children { (child_tree(repo, c)) }
                }
                @if v.children_hidden > 0 {
                    p class="note" { (v.children_hidden) " more manifests are not shown." }
                }
            }
            @if let Some(img) = &v.image {
                (image_tree(repo, img))
                @if data::is_files_artifact(&img.manifest) {
                    h2 id="files" { "Files" }
                    div class="scroll" {
                        table {
                            thead { tr { th scope="col" { "File" } th scope="col" class="num" { "Size" } th scope="col" { "Get" } } }
                            tbody {
                                @for l in &img.manifest.layers {
                                    tr {
                                        @if let Some(t) = data::title(l) {
                                            th scope="row" { (t) }
                                            td class="num" { (human_size(l.size)) }
                                            td { a href=(routes::blob_url(repo, &l.digest, Some(t))) { "Download" } }
                                        } @else if data::is_tar_layer(&l.media_type) {
                                            th scope="row" { "files packed in " code { (short(&l.digest)) } }
                                            td class="num" { (human_size(l.size)) }
                                            td { a class="list-files" href=(routes::files_url(repo, &l.digest, &img.digest)) { "List files" } }
                                        } @else {
                                            th scope="row" { code { (short(&l.digest)) } }
                                            td class="num" { (human_size(l.size)) }
                                            td { a href=(routes::blob_url(repo, &l.digest, None)) { "Download" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(c) = &img.config { (config_section(c)) }
            }
            @if let Some(a) = parsed.and_then(|p| p.annotations.as_ref()).filter(|a| !a.is_empty()) {
                h2 { "Annotations" }
                div class="scroll" {
                    table class="kv" id="annotations" {
                        thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                        tbody { @for (k, val) in a { tr { th scope="row" { code { (k) } } td { (val) } } } }
                    }
                }
            }
            h2 id="referrers-heading" { "Referrers" }
            @if v.referrers.is_empty() {
                p { "No signatures, SBOMs or other artifacts refer to this manifest." }
            } @else {
                div class="scroll" {
                    table id="referrers" aria-labelledby="referrers-heading" {
                        thead { tr { th scope="col" { "Artifact type" } th scope="col" { "Digest" } th scope="col" class="num" { "Size" } th scope="col" { "Annotations" } } }
                        tbody {
                            @for r in &v.referrers {
                                tr {
                                    td { code { (r.artifact_type.as_deref().unwrap_or("—")) } }
                                    td { a href=(routes::manifest_url(repo, &r.digest.to_string())) title=(r.digest.to_string()) { code { (short(&r.digest)) } } }
                                    td class="num" { (human_size(r.size)) }
                                    td {
                                        @if let Some(a) = &r.annotations {
                                            ul class="plain" { @for (k, val) in a { li { code { (k) } " = " (val) } } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            details {
                summary { "Manifest JSON" }
                pre class="raw" { (v.raw) }
            }
        },
    )
}

pub(crate) fn files(
    user: Option<&str>,
    repo: &RepoName,
    layer: &Digest,
    from: Option<&Digest>,
    listing: &Listing,
) -> Markup {
    let mut crumbs = repo_crumbs(repo);
    if let Some(m) = from {
        crumbs.push((short(m), routes::manifest_url(repo, &m.to_string())));
    }
    crumbs.push((format!("files of {}", short(layer)), String::new()));
    layout(
        "Files",
        user,
        &crumbs,
        html! {
            h1 { "Files in layer " code { (short(layer)) } }
            p { (listing.entries.len()) " entries" @if listing.gzip { " (gzip-compressed layer)" } "." }
            @if let Some(e) = &listing.error {
                p class="error" role="alert" { "This layer could not be read to the end as a tar archive: " (e) }
            }
            @if listing.truncated {
                p class="note" { "Only the first " (MAX_ENTRIES) " entries are listed." }
            }
            div class="scroll" {
                table id="file-list" {
                    thead { tr { th scope="col" { "Path" } th scope="col" { "Type" } th scope="col" class="num" { "Size" } th scope="col" { "Mode" } th scope="col" { "Get" } } }
                    tbody {
                        @for e in &listing.entries {
                            tr {
                                th scope="row" { code { (e.path) } }
                                td {
                                    @match &e.kind {
                                        EntryKind::File => "file",
                                        EntryKind::Dir => "directory",
                                        EntryKind::Symlink(t) => { "symlink → " code { (t) } },
                                        EntryKind::Hardlink(t) => { "hard link → " code { (t) } },
                                        EntryKind::Other => "other",
                                    }
                                }
                                td class="num" { @if e.kind == EntryKind::File { span title={ (e.size) " bytes" } { (human_size(e.size)) } } }
                                td { code { (format!("{:o}", e.mode & 0o7777)) } }
                                td {
                                    @if e.kind == EntryKind::File {
                                        a class="download" href=(routes::file_url(repo, layer, &e.path)) aria-label={ "Download " (e.path) } { "Download" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(crate) fn delete_confirm(
    user: Option<&str>,
    repo: &RepoName,
    reference: &Reference,
    digest: &Digest,
    media_type: &str,
) -> Markup {
    let mut crumbs = repo_crumbs(repo);
    crumbs.push((format!("delete {reference}"), String::new()));
    let what = match reference {
        Reference::Tag(t) => format!("tag {t}"),
        Reference::Digest(_) => "manifest".to_owned(),
    };
    layout(
        "Delete",
        user,
        &crumbs,
        html! {
            h1 { "Delete " (what) " from " (repo.as_str()) "?" }
            @match reference {
                Reference::Tag(t) => p {
                    "The tag " code { (t.as_str()) } " points at " code { (digest.to_string()) } " (" (media_type) "). "
                    "Only the tag goes; the manifest stays, reachable by its digest and any other tag."
                },
                Reference::Digest(_) => p {
                    "The manifest " code { (digest.to_string()) } " (" (media_type) ") and every tag pointing at it go. "
                    "Its content is removed by the next garbage collection."
                },
            }
            form method="post" action=(routes::delete_url(repo, &reference.to_string())) {
                input type="hidden" name="confirm" value=(reference.to_string());
                button type="submit" class="danger" id="confirm-delete" { "Delete " (what) }
                " "
                a href=(routes::manifest_url(repo, &reference.to_string())) { "Cancel" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 20), "5.0 MiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let page = error_page(Some("<script>x</script>"), 404, "a & \"b\" <i>");
        let s = page.into_string();
        assert!(!s.contains("<script>x"), "{s}");
        assert!(s.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(s.contains("a &amp; &quot;b&quot; &lt;i&gt;"));
    }
}
