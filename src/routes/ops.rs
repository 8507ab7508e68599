//! Operations endpoints, without authentication: liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::broker::Broker;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the policy is loaded (it always is once the broker is built).
pub async fn readyz(broker: web::Data<Broker>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ready",
        "checks": {"policy": {"status": "ok", "version": broker.policy().version()}},
    }))
}
