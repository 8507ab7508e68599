//! The request context: a fresh request id per request, and the headers every
//! answer carries (`X-Request-Id`, `Cache-Control: no-store`).

use std::fmt;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest};
use tracing::Instrument;

use crate::domain::{PostCode, Purpose};
use crate::telemetry;

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
    let method = req.method().clone();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    // The server span, named by the route template: the raw path may hold a numéro.
    let name = if route == "unmatched" {
        method.to_string()
    } else {
        format!("{method} {route}")
    };
    let span = tracing::info_span!(
        "http.server.request",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id = %id,
        post = tracing::field::Empty,
        role = tracing::field::Empty,
        purpose = tracing::field::Empty,
        cache = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let parent = telemetry::extract_parent_context(
        req.headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
    );
    telemetry::set_parent(&span, parent);
    let started = std::time::Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let observed = res
        .request()
        .extensions()
        .get::<Observed>()
        .cloned()
        .unwrap_or_default();
    telemetry::record_http_request(&telemetry::HttpObservation {
        route: &route,
        method: method.as_str(),
        status,
        purpose: observed.purpose.as_ref().map(Purpose::as_str),
        post: observed.post.as_ref().map(PostCode::as_str),
        elapsed: started.elapsed(),
    });
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
        status,
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}

/// What the handler learned of the request, for its metric labels: the
/// caller's post once authenticated, the purpose once the policy knows it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub post: Option<PostCode>,
    pub purpose: Option<Purpose>,
}
