//! Building HTTP responses: OCI error JSON and the common headers.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode, header};
use oci::{ErrorCode, RegistryError};

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
        store::Error::Io(e) => internal(&e, head),
    }
}

/// The `Range` value of an upload holding `offset` bytes (`0-<last byte>`).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}
