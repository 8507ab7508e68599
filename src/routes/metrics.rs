//! `GET /metrics`: the Prometheus text exposition, without authentication.

use actix_web::{HttpResponse, web};

use crate::broker::Broker;
use crate::telemetry::{Metrics, set_audit_writable, set_upstream_circuit_open};

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics (text exposition format 0.0.4); labels hold no personal data.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics.", body = String,
            content_type = "text/plain; version=0.0.4")
    )
)]
pub async fn metrics(handle: web::Data<Metrics>, broker: web::Data<Broker>) -> HttpResponse {
    // The circuit and audit states are read at scrape time, so the gauge is never stale
    // and the upstream module needs no metrics code of its own.
    let readiness = broker.readiness();
    set_upstream_circuit_open(!readiness.upstream.is_ready());
    set_audit_writable(readiness.audit_writable);
    HttpResponse::Ok()
        .content_type(PROMETHEUS_TEXT)
        .body(handle.render())
}
