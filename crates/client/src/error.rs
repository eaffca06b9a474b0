//! Typed client errors, each of a [`Kind`] that the CLI maps to an exit code.

use std::fmt;
use std::path::PathBuf;

/// What sort of failure an error is; the CLI turns it into an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The command line or an argument is wrong (exit 2).
    Usage,
    /// A repository, tag, manifest or blob does not exist (exit 3).
    NotFound,
    /// Credentials are missing or refused (exit 4).
    Auth,
    /// The registry cannot be reached, or the connection broke (exit 5).
    Network,
    /// Anything else (exit 1).
    Other,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Auth => 4,
            Kind::Network => 5,
        }
    }
}

/// An OCI error entry from a registry's `{"errors":[...]}` body.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ErrorEntry {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Auth(String),
    /// 403 with the registry's reason (a quota, an immutable tag, a
    /// policy): its message says what to do, logging in may not help.
    #[error("{what}: access denied{}", fmt_entries(.errors))]
    Denied {
        what: String,
        errors: Vec<ErrorEntry>,
    },
    #[error("{what}: {source}")]
    Network {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Connection(String),
    /// The registry could not be reached; `hint` says what to check.
    #[error("{message}")]
    Unreachable { message: String, hint: String },
    /// `wharf login`: the registry refused these credentials.
    #[error("{0}")]
    LoginRefused(String),
    /// The registry answered with an unexpected status.
    #[error("{what}: registry answered {status}{}", fmt_entries(.errors))]
    Registry {
        what: String,
        status: u16,
        errors: Vec<ErrorEntry>,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn fmt_entries(errors: &[ErrorEntry]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            if e.message.is_empty() {
                e.code.clone()
            } else {
                format!("{} ({})", e.code, e.message)
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Usage(_) => Kind::Usage,
            Error::NotFound(_) => Kind::NotFound,
            Error::Auth(_) | Error::LoginRefused(_) | Error::Denied { .. } => Kind::Auth,
            Error::Network { .. } | Error::Connection(_) | Error::Unreachable { .. } => {
                Kind::Network
            }
            Error::Registry { status, errors, .. } => match status {
                404 => Kind::NotFound,
                401 | 403 => Kind::Auth,
                _ if errors.iter().any(|e| {
                    matches!(
                        e.code.as_str(),
                        "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "NAME_UNKNOWN"
                    )
                }) =>
                {
                    Kind::NotFound
                }
                _ if errors
                    .iter()
                    .any(|e| matches!(e.code.as_str(), "UNAUTHORIZED" | "DENIED")) =>
                {
                    Kind::Auth
                }
                _ => Kind::Other,
            },
            Error::DigestMismatch { .. } | Error::Io { .. } | Error::Other(_) => Kind::Other,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn network(what: impl Into<String>, source: reqwest::Error) -> Error {
        Error::Network {
            what: what.into(),
            source,
        }
    }

    /// A hint telling the user what to do about this error, if there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Unreachable { hint, .. } => return Some(hint.clone()),
            Error::Denied { .. } => return None,
            Error::LoginRefused(_) => {
                return Some(
                    "check the user name and the password (or token); `wharf login HOST -u USER` asks for the password"
                        .into(),
                );
            }
            _ => {}
        }
        match self.kind() {
            Kind::Auth => Some("log in with `wharf login HOST -u USER`".into()),
            Kind::Network => Some(
                "check the registry address and that it is running; for a plain-HTTP registry use --insecure"
                    .into(),
            ),
            _ => None,
        }
    }

    /// The registry error codes in this error, if it came from a registry answer.
    pub fn codes(&self) -> Vec<&str> {
        match self {
            Error::Registry { errors, .. } | Error::Denied { errors, .. } => {
                errors.iter().map(|e| e.code.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The HTTP status, if the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Registry { status, .. } => Some(*status),
            Error::Denied { .. } => Some(403),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parse an OCI error body; anything else gives no entries.
pub fn parse_error_body(body: &[u8]) -> Vec<ErrorEntry> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<ErrorEntry>,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors)
        .unwrap_or_default()
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Usage => "usage",
            Kind::NotFound => "not-found",
            Kind::Auth => "auth",
            Kind::Network => "network",
            Kind::Other => "error",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_codes() {
        let e = Error::Registry {
            what: "GET x".into(),
            status: 404,
            errors: parse_error_body(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#),
        };
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.kind().exit_code(), 3);
        assert_eq!(e.codes(), vec!["MANIFEST_UNKNOWN"]);
        assert!(e.to_string().contains("MANIFEST_UNKNOWN (no)"));
        let e = Error::Registry {
            what: "x".into(),
            status: 401,
            errors: vec![],
        };
        assert_eq!(e.kind().exit_code(), 4);
        assert_eq!(Error::Usage("u".into()).kind().exit_code(), 2);
        assert_eq!(Error::Connection("c".into()).kind().exit_code(), 5);
        assert_eq!(Error::Other("o".into()).kind().exit_code(), 1);
        assert!(parse_error_body(b"<html>").is_empty());
    }

    /// A 403 with a reason shows the reason, and no advice to log in.
    #[test]
    fn a_denial_with_a_reason_shows_it() {
        let e = Error::Denied {
            what: "upload blob r/a@sha256:x".into(),
            errors: parse_error_body(
                br#"{"errors":[{"code":"DENIED","message":"quota exceeded: r/** may hold 1 KiB"}]}"#,
            ),
        };
        assert_eq!(
            e.to_string(),
            "upload blob r/a@sha256:x: access denied: DENIED (quota exceeded: r/** may hold 1 KiB)"
        );
        assert_eq!(e.kind().exit_code(), 4);
        assert_eq!(e.status(), Some(403));
        assert_eq!(e.hint(), None);
    }
}
