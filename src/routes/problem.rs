//! The one place where a [`BrokerError`] becomes an HTTP answer: an RFC 9457
//! problem with a stable code. Causes are logged here, never sent.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use super::RequestId;
use crate::broker::RateLimitFields;
use crate::error::{BrokerError, ProblemCode, QuotaLimit};

/// A broker error bound to the request it answers.
#[derive(Debug)]
pub struct ApiError {
    pub error: BrokerError,
    pub request_id: RequestId,
}

impl ApiError {
    pub fn new(error: BrokerError, req: &HttpRequest) -> Self {
        tracing::Span::current().record("outcome", error.code());
        Self {
            error,
            request_id: RequestId::of(req),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// An RFC 9457 problem. Bodies never carry causes or personal data.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Problem {
    /// `urn:caf-broker:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:caf-broker:problem:[a-z-]+$")]
    kind: String,
    /// A short, fixed title of the problem type.
    title: &'static str,
    /// The HTTP status code.
    status: u16,
    /// A sentence a client developer can act on.
    detail: String,
    code: ProblemCode,
    /// The request id (also in `X-Request-Id`), to quote to the operators.
    #[schema(format = "uuid")]
    request_id: String,
    /// On `429 quota-exceeded` only: the spent limit, named as in the `RateLimit`
    /// fields, or `agent-error-budget` when the agent caused too many refusals lately.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<QuotaLimit>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            // The cause chain goes to the operators' log; the client gets the code only.
            tracing::error!(request_id = %self.request_id, code = self.error.code(), error = ?anyhow_chain(&self.error), "request failed");
        }
        let code = self.error.problem();
        let problem = Problem {
            kind: format!("urn:caf-broker:problem:{}", code.as_str()),
            title: code.title(),
            status: status.as_u16(),
            detail: self.error.detail(),
            code,
            request_id: self.request_id.to_string(),
            limit: self.error.limit(),
        };
        let mut res = HttpResponse::build(status);
        res.content_type("application/problem+json");
        match &self.error {
            BrokerError::Unauthenticated(_) => {
                res.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                ));
            }
            BrokerError::QuotaExceeded {
                state,
                retry_after_secs,
                ..
            } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
                for field in RateLimitFields::of(state).pairs() {
                    res.insert_header(field);
                }
            }
            BrokerError::ErrorBudgetSpent { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            BrokerError::MethodNotAllowed { allow } => {
                res.insert_header((header::ALLOW, *allow));
            }
            BrokerError::RequestTimeout { .. } => {
                // The rest of a late body would be read as the next request: close.
                res.force_close();
            }
            BrokerError::UpstreamUnavailable {
                retry_after_secs: Some(secs),
            } => {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            _ => {}
        }
        res.body(serde_json::to_vec(&problem).unwrap_or_default())
    }
}

/// The error and its sources, one per line, for the log.
fn anyhow_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

pub async fn route_not_found(req: HttpRequest) -> ApiError {
    ApiError::new(BrokerError::RouteNotFound, &req)
}

/// The answer of a route to a method it does not accept, naming those it does.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    actix_web::web::to(move |req: HttpRequest| async move {
        ApiError::new(BrokerError::MethodNotAllowed { allow }, &req)
    })
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        self.error_response()
    }
}
