//! Operations endpoints, without authentication: liveness and readiness.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::broker::Broker;

/// The liveness answer.
#[derive(Serialize, ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The readiness answer.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready`, or `not_ready` when a check fails.
    #[schema(example = "ready")]
    status: &'static str,
    checks: ReadinessChecks,
}

#[derive(Serialize, ToSchema)]
struct ReadinessChecks {
    policy: PolicyCheck,
    upstream: UpstreamCheck,
    audit: AuditCheck,
}

/// The live policy; always `ok` once the broker serves.
#[derive(Serialize, ToSchema)]
struct PolicyCheck {
    #[schema(example = "ok")]
    status: &'static str,
    /// The policy version (also in `X-Policy-Version`).
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    version: String,
    /// Policy reloads since start, by how they ended.
    #[schema(value_type = Object)]
    reloads: serde_json::Value,
}

/// The CAF connector: `failing` while its circuit is open.
#[derive(Serialize, ToSchema)]
struct UpstreamCheck {
    /// `ok`, or `failing`.
    #[schema(example = "ok")]
    status: &'static str,
    /// The state behind the status (the CAF circuit).
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

/// The audit log: `failing` when it cannot be written (no data is released then).
#[derive(Serialize, ToSchema)]
struct AuditCheck {
    /// `ok`, or `failing`.
    #[schema(example = "ok")]
    status: &'static str,
}

fn ok_or_failing(ok: bool) -> &'static str {
    if ok { "ok" } else { "failing" }
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: the policy is loaded, the audit log writable, the CAF circuit not open.
///
/// A load balancer takes a replica out of rotation on 503.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve.", body = Readiness),
        (status = 503, description = "Not ready: a check fails.", body = Readiness)
    )
)]
pub async fn readyz(broker: web::Data<Broker>) -> HttpResponse {
    let readiness = broker.readiness();
    let ready = readiness.is_ready();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: ReadinessChecks {
            policy: PolicyCheck {
                status: "ok",
                version: readiness.policy_version.to_string(),
                // Plain structs of numbers and names: their conversion cannot fail.
                reloads: serde_json::to_value(readiness.policy_reloads).unwrap_or_default(),
            },
            upstream: UpstreamCheck {
                status: ok_or_failing(readiness.upstream.is_ready()),
                detail: serde_json::to_value(readiness.upstream).unwrap_or_default(),
            },
            audit: AuditCheck {
                status: ok_or_failing(readiness.audit_writable),
            },
        },
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
