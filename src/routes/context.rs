//! The request context: a fresh request id per request, and the headers every
//! answer carries (`X-Request-Id`, `Cache-Control: no-store`).

use std::fmt;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id, a random UUID chosen by the broker (never the client's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(uuid::Uuid);

impl RequestId {
    /// The id of the request, or a fresh one if the context middleware did not run.
    pub fn of(req: &HttpRequest) -> RequestId {
        req.extensions()
            .get::<RequestId>()
            .copied()
            .unwrap_or_else(RequestId::new)
    }

    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }

    fn new() -> RequestId {
        RequestId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = RequestId::new();
    req.extensions_mut().insert(id);
    let started = std::time::Instant::now();
    let mut res = next.call(req).await?;
    let method = res.request().method().clone();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let headers = res.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // One line per request: the route template, never the raw path (it may hold a numéro).
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}
