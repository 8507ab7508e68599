//! `GET /metrics`: the Prometheus text exposition, without authentication.

use actix_web::{HttpResponse, web};

use crate::telemetry::Metrics;

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(handle: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(PROMETHEUS_TEXT)
        .body(handle.render())
}
