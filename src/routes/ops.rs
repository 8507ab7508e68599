//! Operations endpoints, without authentication: liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::broker::Broker;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the policy is loaded, the audit log writable and the CAF circuit
/// not open. A load balancer takes a replica out of rotation on 503.
pub async fn readyz(broker: web::Data<Broker>) -> HttpResponse {
    let readiness = broker.readiness();
    let body = json!({
        "status": if readiness.is_ready() { "ready" } else { "not_ready" },
        "checks": {
            "policy": {
                "status": "ok",
                "version": &*readiness.policy_version,
                "reloads": readiness.policy_reloads,
            },
            "upstream": {
                "status": if readiness.upstream.is_ready() { "ok" } else { "failing" },
                "detail": readiness.upstream,
            },
            "audit": {
                "status": if readiness.audit_writable { "ok" } else { "failing" },
            },
        },
    });
    if readiness.is_ready() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
