//! `/healthz` and `/readyz`, for load balancers, container health checks
//! and Kubernetes probes (docs/observability.md). Never behind auth, GET and
//! HEAD only, cheap, and answered with a small JSON body (not OCI errors:
//! these are not registry API endpoints).
//!
//! - `/healthz`: the process is alive and serving HTTP. Always 200.
//! - `/readyz`: the configuration is loaded (the server would not be
//!   listening otherwise) and the storage answers ([`store::Backend::ready`],
//!   within [`READY_TIMEOUT`]): 200, else 503 with the reason.

use crate::handlers::AppState;
use crate::response::{self as r, Resp};
use axum::body::Body;
use axum::http::{HeaderName, header};
use std::time::Duration;

/// The longest `/readyz` waits for the storage before answering 503.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Is `path` one of the health endpoints?
pub fn is_health_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Answer a request for a health endpoint.
pub async fn serve(state: &AppState, method: &str, path: &str) -> Resp {
    let head = method == "HEAD";
    if !head && method != "GET" {
        return json(
            405,
            serde_json::json!({"status": "error", "reason": "use GET or HEAD"}),
            head,
            &[(header::ALLOW, "GET, HEAD".into())],
        );
    }
    if path == "/healthz" {
        return json(200, serde_json::json!({"status": "ok"}), head, &[]);
    }
    let ready = tokio::time::timeout(READY_TIMEOUT, state.registry.backend().ready()).await;
    match ready {
        Ok(Ok(())) => json(200, serde_json::json!({"status": "ready"}), head, &[]),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the storage does not answer");
            json(
                503,
                serde_json::json!({"status": "unavailable", "reason": format!("storage: {e}")}),
                head,
                &[],
            )
        }
        Err(_) => json(
            503,
            serde_json::json!({
                "status": "unavailable",
                "reason": format!("storage: no answer within {} s", READY_TIMEOUT.as_secs()),
            }),
            head,
            &[],
        ),
    }
}

fn json(status: u16, v: serde_json::Value, head: bool, extra: &[(HeaderName, String)]) -> Resp {
    let body = v.to_string();
    let mut headers = vec![
        (header::CONTENT_TYPE, "application/json".to_owned()),
        (header::CONTENT_LENGTH, body.len().to_string()),
        (header::CACHE_CONTROL, "no-store".to_owned()),
    ];
    headers.extend(extra.iter().cloned());
    r::build(
        status,
        &headers,
        if head {
            Body::empty()
        } else {
            Body::from(body)
        },
    )
}
