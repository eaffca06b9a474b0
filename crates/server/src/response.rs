//! Building HTTP responses: OCI error JSON and the common headers.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode, header};
use oci::{ErrorCode, RegistryError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub type Resp = Response<Body>;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
pub const OCI_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// A response with a status, headers and body.
pub fn build(status: u16, headers: &[(HeaderName, String)], body: Body) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.append(name.clone(), v);
        }
    }
    resp
}

/// The OCI error JSON for `e`; HEAD answers carry no body.
pub fn error(e: &RegistryError, head: bool) -> Resp {
    let body = e.to_json();
    let len = body.len();
    build(
        e.status,
        &[
            (header::CONTENT_TYPE, "application/json".into()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        if head {
            Body::empty()
        } else {
            Body::from(body)
        },
    )
}

/// A storage failure: logged in full, answered with a short 500.
pub fn internal(e: &dyn std::fmt::Display, head: bool) -> Resp {
    tracing::error!(error = %e, "storage error");
    error(
        &RegistryError::new(
            ErrorCode::Unknown,
            "internal storage error; see the registry log",
        ),
        head,
    )
}

/// The storage did not answer or refused (S3 down, timed out, access
/// denied): 503, so that clients retry later, with the cause in the log.
pub fn unavailable(e: &std::io::Error, head: bool) -> Resp {
    tracing::error!(error = %e, "storage unavailable");
    error(
        &RegistryError::new(
            ErrorCode::Unknown,
            "the registry's storage is unavailable; try again later (cause in the registry log)",
        )
        .with_status(503)
        .with_detail(serde_json::json!({ "reason": "storage unavailable" })),
        head,
    )
}

/// How often "storage full" is logged at most; the failures in between are
/// counted and reported with the next line.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// When "storage full" was last logged, and the failures not logged since.
static FULL_LOG: Mutex<(Option<Instant>, u64)> = Mutex::new((None, 0));

/// Is `e` (or an error it wraps) "no space left on the device" or "disk
/// quota exceeded"?
pub fn storage_full(e: &std::io::Error) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        // std maps ENOSPC and EDQUOT to these kinds.
        if matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) {
            return true;
        }
        cur = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>());
    }
    false
}

/// Log a full storage once per [`FULL_LOG_INTERVAL`], not once per request.
fn log_storage_full(e: &std::io::Error) {
    let mut g = FULL_LOG.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match g.0 {
        Some(last) if now.duration_since(last) < FULL_LOG_INTERVAL => {
            g.1 = g.1.saturating_add(1);
        }
        _ => {
            let suppressed = std::mem::take(&mut g.1);
            g.0 = Some(now);
            drop(g);
            tracing::error!(
                error = %e,
                suppressed,
                "the registry's storage is full: writes get 507 until space is freed \
                 (logged at most once a minute; suppressed counts the failures since the last line)"
            );
        }
    }
}

/// A write that failed because the storage is full: 507 Insufficient
/// Storage. The distribution spec has no code for it, so the code is
/// `UNKNOWN`; the status and message say what happened. Nothing of the
/// request was stored (every write is atomic).
pub fn storage_full_response(e: &std::io::Error, head: bool) -> Resp {
    log_storage_full(e);
    error(
        &RegistryError::new(
            ErrorCode::Unknown,
            "the registry's storage is full; nothing from this request was stored",
        )
        .with_status(507)
        .with_detail(serde_json::json!({ "reason": "storage full" })),
        head,
    )
}

pub fn from_store(e: store::Error, head: bool) -> Resp {
    match e {
        store::Error::Registry(r) => error(&r, head),
        store::Error::RangeNotSatisfiable { offset } => {
            let r = RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("chunk out of order: the upload holds {offset} bytes, so the next chunk starts at {offset}"),
            )
            .with_status(416);
            let mut resp = error(&r, head);
            if let Ok(v) = HeaderValue::from_str(&upload_range(offset)) {
                resp.headers_mut().insert(header::RANGE, v);
            }
            resp
        }
        store::Error::Io(e) if storage_full(&e) => storage_full_response(&e, head),
        store::Error::Io(e) if store::backend::is_unavailable(&e) => unavailable(&e, head),
        store::Error::Io(e) => internal(&e, head),
    }
}

/// The `Range` value of an upload holding `offset` bytes (`0-<last byte>`).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}
