//! The request context: a fresh request id and the arrival time per request,
//! the header list limit, and the headers every answer carries
//! (`X-Request-Id`, `Cache-Control: no-store`).

use std::fmt;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, ResponseError, web};
use tracing::Instrument;

use super::{ApiError, EdgeLimits, Surface};
use crate::domain::{PostCode, Purpose};
use crate::error::BrokerError;
use crate::telemetry;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id, a random UUID chosen by the broker (never the client's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(uuid::Uuid);

impl RequestId {
    /// The id of the request, or a fresh one if the context middleware did not run.
    pub fn of(req: &HttpRequest) -> RequestId {
        req.extensions()
            .get::<Received>()
            .map(|received| received.id)
            .unwrap_or_else(RequestId::new)
    }

    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// A random (version 4) id from the thread's CSPRNG: no system call per
    /// request, unlike `Uuid::new_v4`.
    fn new() -> RequestId {
        RequestId(uuid::Builder::from_random_bytes(rand::random()).into_uuid())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// When the request's head was received: the deadline of its body runs from here.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(tokio::time::Instant);

impl Arrival {
    /// The arrival of the request, or now if the context middleware did not run.
    pub fn of(req: &HttpRequest) -> Arrival {
        req.extensions()
            .get::<Received>()
            .map(|received| received.arrival)
            .unwrap_or_else(|| Arrival(tokio::time::Instant::now()))
    }

    pub fn instant(self) -> tokio::time::Instant {
        self.0
    }
}

/// What the context middleware puts in a request's extensions (one entry for both).
#[derive(Debug, Clone, Copy)]
struct Received {
    id: RequestId,
    arrival: Arrival,
}

pub async fn request_context(
    surface: Surface,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = RequestId::new();
    req.extensions_mut().insert(Received {
        id,
        arrival: Arrival(tokio::time::Instant::now()),
    });
    let method = req.method().clone();
    // Named by the route template: the raw path may hold a numéro.
    let route = surface.route_of(req.match_info().as_str());
    let route_label = route.unwrap_or("unmatched");
    let span = tracing::info_span!(
        "http.server.request",
        otel.name = %SpanName { method: &method, route },
        otel.kind = "server",
        http.request.method = %method,
        http.route = route_label,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id = %id,
        post = tracing::field::Empty,
        role = tracing::field::Empty,
        purpose = tracing::field::Empty,
        cache = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = telemetry::extract_parent_context(
            req.headers()
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
        );
        telemetry::set_parent(&span, parent);
    }
    let started = std::time::Instant::now();
    let mut res = match headers_over_limit(&req) {
        // HTTP/2 refuses such a header list before it gets here; HTTP/1.1 does not.
        Some(error) => {
            let _entered = span.enter();
            let (http_req, _) = req.into_parts();
            let answer = ApiError::new(error, &http_req).error_response();
            ServiceResponse::new(http_req, answer).map_into_right_body()
        }
        None => next
            .call(req)
            .instrument(span.clone())
            .await?
            .map_into_left_body(),
    };
    let status = res.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let observed = res
        .request()
        .extensions_mut()
        .remove::<Observed>()
        .unwrap_or_default();
    telemetry::record_http_request(&telemetry::HttpObservation {
        route: route_label,
        method: method.as_str(),
        status,
        purpose: observed.purpose.as_ref().map(Purpose::as_str),
        post: observed.post.as_ref().map(PostCode::as_str),
        elapsed: started.elapsed(),
    });
    let headers = res.headers_mut();
    let mut text = uuid::Uuid::encode_buffer();
    if let Ok(value) = HeaderValue::from_str(id.0.hyphenated().encode_lower(&mut text)) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // One line per request: the route template, never the raw path (it may hold a numéro).
    tracing::info!(
        request_id = %id,
        method = %method,
        route = route_label,
        status,
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}

/// The server span's name, `{METHOD} {route template}`, or the method alone
/// for a path no route serves; written only if a layer reads it.
struct SpanName<'a> {
    method: &'a Method,
    route: Option<&'static str>,
}

impl fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.route {
            Some(route) => write!(f, "{} {route}", self.method),
            None => f.write_str(self.method.as_str()),
        }
    }
}

/// A header list larger than `server.max_header_list_bytes`, counted as
/// HTTP/2 counts it (RFC 9113, 6.5.2): name, value and 32 bytes per field.
fn headers_over_limit(req: &ServiceRequest) -> Option<BrokerError> {
    let limit = req
        .app_data::<web::Data<EdgeLimits>>()?
        .max_header_list_bytes;
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    (size > limit as usize).then_some(BrokerError::HeadersTooLarge { limit_bytes: limit })
}

/// What the handler learned of the request, for its metric labels: the
/// caller's post once authenticated, the purpose once the policy knows it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub post: Option<PostCode>,
    pub purpose: Option<Purpose>,
}
