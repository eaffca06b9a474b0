//! Where clients reach this registry: the `scheme://host[:port]` that the
//! absolute URLs Wharf sends start with (`Location` of uploads and manifest
//! pushes, the default token realm).
//!
//! Some clients cannot follow a relative `Location` (the spec allows one,
//! but Distribution always sends absolute URLs, and clients were written
//! against it). The origin is `[http] public_url` when configured (needed
//! behind a reverse proxy that terminates TLS or serves another host name),
//! else the listener's scheme and the host the request was sent to.
//! `X-Forwarded-*` headers are not honoured: any client can send them.

use http::{HeaderMap, header};

/// Check and normalise `[http] public_url`: an absolute `http` or `https`
/// URL of the registry's root, without user info, query or fragment. A
/// trailing slash is dropped. A path prefix is refused: Wharf serves `/v2/`
/// and `/token` at the root of its origin. Returns `scheme://host[:port]`
/// (default ports left out, the host lower-cased).
pub fn parse_public_url(raw: &str) -> Result<String, String> {
    let shown: String = raw.chars().take(200).collect();
    let u = url::Url::parse(raw.trim())
        .map_err(|e| format!("public URL {shown:?} is not an absolute URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "public URL {shown:?} must start with http:// or https://"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("public URL {shown:?} names no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "public URL {shown:?} must not contain a user name or password"
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "public URL {shown:?} must not have a query or fragment"
        ));
    }
    if u.path() != "/" {
        return Err(format!(
            "public URL {shown:?} has a path ({}); a path prefix is not supported: Wharf serves \
             /v2/ and /token at the root, so give the URL of the root (e.g. \
             https://registry.example.com) and proxy the whole host to Wharf",
            u.path()
        ));
    }
    Ok(u.origin().ascii_serialization())
}

/// Is `h` something a `host[:port]` can be? Only those characters are let
/// into the URLs built from a request's host, so it cannot break out of a
/// header value or a quoted challenge parameter.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-:[]_".contains(&c))
}

/// The host a request was sent to: the URI's authority (HTTP/2 carries it
/// there, as does an absolute-form HTTP/1.1 request line), else the `Host`
/// header. `None` when neither names a plausible host (HTTP/1.0 without
/// `Host`).
pub fn request_host<'a>(authority: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    authority.filter(|a| is_host(a)).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| is_host(h))
    })
}

/// The origin absolute URLs in the answer to a request start with: the
/// configured public origin, else `http://` or `https://` (as the listener
/// serves) and the request's host. `None` when there is neither; then a
/// relative URL is the best answer.
pub fn of_request(
    public: Option<&str>,
    tls: bool,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Option<String> {
    if let Some(p) = public {
        return Some(p.to_owned());
    }
    let host = request_host(authority, headers)?;
    Some(format!("{}://{host}", if tls { "https" } else { "http" }))
}

/// `path` (absolute, starting with `/`) as a URL under `origin`, or as it
/// is without one.
pub fn url(origin: Option<&str>, path: &str) -> String {
    match origin {
        Some(o) => format!("{o}{path}"),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn public_urls() {
        let ok = |s: &str| parse_public_url(s).unwrap();
        assert_eq!(
            ok("https://registry.example.com"),
            "https://registry.example.com"
        );
        assert_eq!(
            ok("https://Registry.Example.com/"),
            "https://registry.example.com"
        );
        assert_eq!(ok("http://10.0.0.1:8080/"), "http://10.0.0.1:8080");
        assert_eq!(ok("https://r.example:443"), "https://r.example");
        assert_eq!(ok("http://[::1]:5000"), "http://[::1]:5000");
        for bad in [
            "",
            "registry.example.com",
            "/v2/",
            "ftp://registry.example.com",
            "https://registry.example.com/registry",
            "https://registry.example.com/registry/",
            "https://registry.example.com//",
            "https://registry.example.com/?a=b",
            "https://registry.example.com?",
            "https://registry.example.com/#x",
            "https://me:pw@registry.example.com",
            "https://",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_public_url("https://example.com/registry").unwrap_err();
        assert!(e.contains("path prefix"), "{e}");
    }

    #[test]
    fn request_origins() {
        let mut h = HeaderMap::new();
        assert_eq!(of_request(None, false, None, &h), None);
        assert_eq!(
            of_request(Some("https://pub.example"), false, None, &h).as_deref(),
            Some("https://pub.example")
        );
        h.insert(header::HOST, HeaderValue::from_static("reg.example:5000"));
        assert_eq!(
            of_request(None, false, None, &h).as_deref(),
            Some("http://reg.example:5000")
        );
        assert_eq!(
            of_request(None, true, Some("h2.example:8443"), &h).as_deref(),
            Some("https://h2.example:8443")
        );
        // the configured URL wins over what the client says
        assert_eq!(
            of_request(Some("https://pub.example"), false, Some("x"), &h).as_deref(),
            Some("https://pub.example")
        );
        // hosts that could break out of a header or a quoted parameter
        h.insert(header::HOST, HeaderValue::from_static("evil\"\","));
        assert_eq!(of_request(None, false, None, &h), None);
        assert_eq!(of_request(None, false, Some("u@h"), &h), None);
        assert_eq!(url(None, "/v2/a"), "/v2/a");
        assert_eq!(url(Some("http://h:1"), "/v2/a"), "http://h:1/v2/a");
    }
}
