//! `BrokerError`: every way a request can fail, classified by who caused it.
//!
//! This module knows nothing of HTTP frameworks; `routes::problem` is the one
//! place that turns these into RFC 9457 answers. Messages returned by
//! [`BrokerError::detail`] are safe to send to a client: they never carry
//! personal data nor internal causes.

use crate::auth::AuthError;
use crate::policy::Refusal;
use crate::quota::{QuotaState, Window};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The client sent something malformed: the detail says what to fix.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request body is larger than the configured limit.
    #[error("request body over {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    /// The request body is not declared as JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The request was not received in full within `server.request_timeout_secs`.
    #[error("request not received within {limit_secs} s")]
    RequestTimeout { limit_secs: u64 },
    /// The request's header list is larger than `server.max_header_list_bytes`.
    #[error("header list over {limit_bytes} bytes")]
    HeadersTooLarge { limit_bytes: u32 },
    /// The bearer token is missing or was rejected.
    #[error("unauthenticated: {0}")]
    Unauthenticated(Unauthenticated),
    /// The caller's role may not use the declared purpose.
    #[error("purpose not permitted")]
    PurposeNotPermitted,
    /// The agent is suspended after a bulk-lookup alert (`alerts.block`).
    #[error("agent suspended")]
    AgentSuspended,
    /// The caller's post has no `[quotas.posts.<code>]` entry and
    /// `quotas.known_posts_only` is set.
    #[error("post not registered")]
    PostNotRegistered,
    /// The post's or the agent's burst or daily quota is spent; `limit` says which.
    #[error("quota exceeded")]
    QuotaExceeded {
        state: QuotaState,
        retry_after_secs: u64,
        limit: Window,
    },
    /// The agent caused too many refusals lately: refused at once, without an
    /// audit line of its own (its refusals are counted per minute).
    #[error("agent error budget spent")]
    ErrorBudgetSpent { retry_after_secs: u64 },
    /// The shared quota store cannot be reached and the broker is set to refuse then.
    #[error("quota store unavailable")]
    QuotaUnavailable,
    /// The CAF has no such dossier.
    #[error("dossier not found")]
    NotFound,
    /// No route matches the path.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// The CAF answered with an error, unreadable data, or another dossier
    /// than the one asked for.
    #[error("upstream error")]
    Upstream(#[source] anyhow::Error),
    /// The CAF did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// The CAF cannot be called right now.
    #[error("upstream unavailable")]
    UpstreamUnavailable { retry_after_secs: Option<u64> },
    /// The audit record could not be written: fail closed, release nothing.
    #[error("audit log unavailable")]
    AuditUnavailable(#[source] anyhow::Error),
    /// A fault of the broker itself; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Why authentication failed, from the token check or from the broker's own rules.
#[derive(Debug, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no bearer token")]
    MissingToken,
    #[error(transparent)]
    Token(#[from] AuthError),
    #[error("role unknown to the policy")]
    UnknownRole,
}

impl BrokerError {
    /// The stable problem code (`urn:caf-broker:problem:<code>`).
    pub fn code(&self) -> &'static str {
        match self {
            BrokerError::InvalidRequest(_) => "invalid-request",
            BrokerError::PayloadTooLarge { .. } => "payload-too-large",
            BrokerError::UnsupportedMediaType => "unsupported-media-type",
            BrokerError::RequestTimeout { .. } => "request-timeout",
            BrokerError::HeadersTooLarge { .. } => "headers-too-large",
            BrokerError::Unauthenticated(_) => "unauthenticated",
            BrokerError::PurposeNotPermitted => "purpose-not-permitted",
            BrokerError::AgentSuspended => "agent-suspended",
            BrokerError::PostNotRegistered => "post-not-registered",
            BrokerError::QuotaExceeded { .. } => "quota-exceeded",
            BrokerError::ErrorBudgetSpent { .. } => "quota-exceeded",
            BrokerError::QuotaUnavailable => "quota-unavailable",
            BrokerError::NotFound => "allocataire-not-found",
            BrokerError::RouteNotFound => "route-not-found",
            BrokerError::MethodNotAllowed { .. } => "method-not-allowed",
            BrokerError::Upstream(_) => "upstream-error",
            BrokerError::UpstreamTimeout => "upstream-timeout",
            BrokerError::UpstreamUnavailable { .. } => "upstream-unavailable",
            BrokerError::AuditUnavailable(_) => "audit-unavailable",
            BrokerError::Internal(_) => "internal-error",
        }
    }

    /// The HTTP status code, as a number so that this module stays framework-free.
    pub fn status(&self) -> u16 {
        match self {
            BrokerError::InvalidRequest(_) => 400,
            BrokerError::Unauthenticated(_) => 401,
            BrokerError::PurposeNotPermitted
            | BrokerError::AgentSuspended
            | BrokerError::PostNotRegistered => 403,
            BrokerError::NotFound | BrokerError::RouteNotFound => 404,
            BrokerError::MethodNotAllowed { .. } => 405,
            BrokerError::RequestTimeout { .. } => 408,
            BrokerError::HeadersTooLarge { .. } => 431,
            BrokerError::PayloadTooLarge { .. } => 413,
            BrokerError::QuotaExceeded { .. } => 429,
            BrokerError::ErrorBudgetSpent { .. } => 429,
            BrokerError::QuotaUnavailable => 503,
            BrokerError::UnsupportedMediaType => 415,
            BrokerError::Upstream(_) => 502,
            BrokerError::UpstreamUnavailable { .. } => 503,
            BrokerError::UpstreamTimeout => 504,
            BrokerError::AuditUnavailable(_) => 503,
            BrokerError::Internal(_) => 500,
        }
    }

    /// A short, fixed human title for the problem type.
    pub fn title(&self) -> &'static str {
        match self {
            BrokerError::InvalidRequest(_) => "Invalid request",
            BrokerError::PayloadTooLarge { .. } => "Payload too large",
            BrokerError::UnsupportedMediaType => "Unsupported media type",
            BrokerError::RequestTimeout { .. } => "Request timeout",
            BrokerError::HeadersTooLarge { .. } => "Request header fields too large",
            BrokerError::Unauthenticated(_) => "Unauthenticated",
            BrokerError::PurposeNotPermitted => "Purpose not permitted",
            BrokerError::AgentSuspended => "Agent suspended",
            BrokerError::PostNotRegistered => "Post not registered",
            BrokerError::QuotaExceeded { .. } => "Quota exceeded",
            BrokerError::ErrorBudgetSpent { .. } => "Quota exceeded",
            BrokerError::QuotaUnavailable => "Quota unavailable",
            BrokerError::NotFound => "Allocataire not found",
            BrokerError::RouteNotFound => "Route not found",
            BrokerError::MethodNotAllowed { .. } => "Method not allowed",
            BrokerError::Upstream(_) => "Upstream error",
            BrokerError::UpstreamTimeout => "Upstream timeout",
            BrokerError::UpstreamUnavailable { .. } => "Upstream unavailable",
            BrokerError::AuditUnavailable(_) => "Audit unavailable",
            BrokerError::Internal(_) => "Internal error",
        }
    }

    /// A sentence a client developer can act on. Never personal data, never a cause chain.
    pub fn detail(&self) -> String {
        match self {
            BrokerError::InvalidRequest(why) => why.clone(),
            BrokerError::PayloadTooLarge { limit_bytes } => {
                format!("The request body must not exceed {limit_bytes} bytes.")
            }
            BrokerError::UnsupportedMediaType => {
                "The request body must be JSON, sent with Content-Type: application/json.".into()
            }
            BrokerError::RequestTimeout { limit_secs } => format!(
                "The request must be sent in full within {limit_secs} seconds; the connection is closed."
            ),
            BrokerError::HeadersTooLarge { limit_bytes } => format!(
                "The request's header fields must not exceed {limit_bytes} bytes (names, values and 32 bytes per field)."
            ),
            BrokerError::Unauthenticated(Unauthenticated::MissingToken) => {
                "Send a token from the identity provider as `Authorization: Bearer <JWT>`.".into()
            }
            BrokerError::Unauthenticated(Unauthenticated::Token(e)) => e.to_string(),
            BrokerError::Unauthenticated(Unauthenticated::UnknownRole) => {
                "The token's role is not defined by this broker's policy.".into()
            }
            BrokerError::PurposeNotPermitted => {
                "Your role may not declare this purpose; see the policy for the purposes of your role."
                    .into()
            }
            BrokerError::AgentSuspended => {
                "Your data requests are suspended for a while after an unusual series of lookups; your security officer has been alerted."
                    .into()
            }
            BrokerError::PostNotRegistered => {
                "Your post is not registered with this broker; its operators must add it before any request is served."
                    .into()
            }
            BrokerError::QuotaExceeded {
                retry_after_secs,
                limit,
                ..
            } => {
                let spent = match limit {
                    Window::Burst => "Your post's burst quota (shared by its agents) is spent",
                    Window::Daily => "Your post's daily quota (shared by its agents) is spent",
                    Window::AgentBurst => "Your own burst quota is spent",
                    Window::AgentDaily => "Your own daily quota is spent",
                };
                format!(
                    "{spent}; retry in {retry_after_secs} seconds (see `limit` and the RateLimit header)."
                )
            }
            BrokerError::ErrorBudgetSpent { retry_after_secs } => format!(
                "Too many of your recent requests were refused (malformed, not permitted, not found or over quota); retry in {retry_after_secs} seconds."
            ),
            BrokerError::QuotaUnavailable => {
                "The quota service cannot be reached, so no request is served; retry later.".into()
            }
            BrokerError::NotFound => "The CAF has no dossier for this identifier.".into(),
            BrokerError::RouteNotFound => "No such route; see /openapi.json.".into(),
            BrokerError::MethodNotAllowed { .. } => "This route does not accept this method.".into(),
            BrokerError::Upstream(_) => {
                "The CAF answered with an error or unusable data; retry later.".into()
            }
            BrokerError::UpstreamTimeout => "The CAF did not answer in time; retry later.".into(),
            BrokerError::UpstreamUnavailable { .. } => {
                "The CAF cannot be reached right now; retry later.".into()
            }
            BrokerError::AuditUnavailable(_) => {
                "The access could not be recorded, so no data is released; retry later.".into()
            }
            BrokerError::Internal(_) => {
                "The broker failed to process the request; quote the request id to the operators."
                    .into()
            }
        }
    }

    /// The limit a `429` names in its problem body (`limit`), if any.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            BrokerError::QuotaExceeded { limit, .. } => Some(limit.as_str()),
            BrokerError::ErrorBudgetSpent { .. } => Some("agent-error-budget"),
            _ => None,
        }
    }
}

impl From<Refusal> for BrokerError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownRole => BrokerError::Unauthenticated(Unauthenticated::UnknownRole),
            Refusal::UnknownPurpose => BrokerError::InvalidRequest(
                "The X-Purpose header names no purpose of this broker's policy.".into(),
            ),
            Refusal::PurposeNotPermitted => BrokerError::PurposeNotPermitted,
        }
    }
}
