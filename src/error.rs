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
    /// The token's `post` is not the one the connection's client certificate
    /// names (`server.client_post_from`).
    #[error("token post differs from the client certificate's")]
    PostMismatch,
}

impl Unauthenticated {
    /// The precise cause, for the log and the `cause` label of
    /// `caf_broker_auth_failures_total`: one of a fixed set of names. The
    /// client's answer never tells it.
    pub fn cause(&self) -> &'static str {
        match self {
            Unauthenticated::MissingToken => "missing_token",
            Unauthenticated::Token(error) => error.cause(),
            Unauthenticated::UnknownRole => "unknown_role",
            Unauthenticated::PostMismatch => "post_mismatch",
        }
    }
}

/// Declares [`ProblemCode`] from its table: one line per code, in order of status.
macro_rules! problem_codes {
    ($($code:ident => ($text:literal, $status:literal, $title:literal, $when:literal),)+) => {
        /// The stable problem codes, each with its HTTP status, title and the
        /// cases it answers: the one table from which answers, the OpenAPI
        /// document and the docs' checks derive.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "kebab-case")]
        pub enum ProblemCode {
            $($code,)+
        }

        impl ProblemCode {
            /// Every code, in order of status.
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$code,)+];

            /// The code as sent, its HTTP status, a short fixed title, and when it is answered.
            const fn row(self) -> (&'static str, u16, &'static str, &'static str) {
                match self {
                    $(ProblemCode::$code => ($text, $status, $title, $when),)+
                }
            }
        }
    };
}

problem_codes! {
    InvalidRequest => ("invalid-request", 400, "Invalid request", "A malformed identifier, a bad NIR key, a missing, repeated or invalid `X-Purpose` or `X-Case-Reference`, a purpose the policy does not define, or a body that is not `{\"nir\": \"…\"}`."),
    Unauthenticated => ("unauthenticated", 401, "Unauthenticated", "A missing, repeated, malformed, expired, not-yet-valid, too long-lived, revoked or wrongly signed token, a wrong issuer, audience or `typ`, a client not allowed, a disallowed algorithm, an unknown key, a role the policy does not define, a token bound to another client certificate than the connection's (or sent without one), an unbound token where only bound ones are accepted, or a `post` that is not the one the client certificate names; the answer is the same whatever the cause."),
    PurposeNotPermitted => ("purpose-not-permitted", 403, "Purpose not permitted", "The caller's role may not declare this purpose."),
    AgentSuspended => ("agent-suspended", 403, "Agent suspended", "The agent is suspended after a bulk-lookup alert (with `alerts.block = true`)."),
    PostNotRegistered => ("post-not-registered", 403, "Post not registered", "With `quotas.known_posts_only`, the caller's post has no quota entry."),
    AllocataireNotFound => ("allocataire-not-found", 404, "Allocataire not found", "The CAF has no such dossier."),
    RouteNotFound => ("route-not-found", 404, "Route not found", "No route has this path."),
    MethodNotAllowed => ("method-not-allowed", 405, "Method not allowed", "The route does not take this method; `Allow` names the one it takes."),
    RequestTimeout => ("request-timeout", 408, "Request timeout", "The body did not arrive in full within `server.request_timeout_secs` of the request's head; the connection is closed (`Connection: close` over HTTP/1.1)."),
    PayloadTooLarge => ("payload-too-large", 413, "Payload too large", "The body is larger than `server.max_body_bytes`."),
    UnsupportedMediaType => ("unsupported-media-type", 415, "Unsupported media type", "The body is not sent with one `Content-Type: application/json` (a `charset` other than UTF-8 included)."),
    QuotaExceeded => ("quota-exceeded", 429, "Quota exceeded", "A quota is spent: the post's burst or daily quota (shared by its agents), the agent's own, or the agent's error budget. The body's `limit` names it (`burst`, `daily`, `agent-burst`, `agent-daily`, `agent-error-budget`; no `RateLimit` fields with the last)."),
    HeadersTooLarge => ("headers-too-large", 431, "Request header fields too large", "The header fields (names, values and 32 bytes per field) exceed `server.max_header_list_bytes`. Over HTTP/2 the connection itself answers 431, without a problem body."),
    InternalError => ("internal-error", 500, "Internal error", "A fault of the broker itself; quote the request id to the operators."),
    UpstreamError => ("upstream-error", 502, "Upstream error", "The CAF answered with an error, unreadable data, or another dossier than the one asked for (nothing of it is released or cached)."),
    QuotaUnavailable => ("quota-unavailable", 503, "Quota unavailable", "The shared quota store is unreachable and set to refuse."),
    UpstreamUnavailable => ("upstream-unavailable", 503, "Upstream unavailable", "The CAF is not called for now: its circuit is open after repeated failures."),
    AuditUnavailable => ("audit-unavailable", 503, "Audit unavailable", "The access cannot be recorded in the audit log, so no data is released."),
    UpstreamTimeout => ("upstream-timeout", 504, "Upstream timeout", "The CAF did not answer in time."),
}

impl ProblemCode {
    /// The code as sent (`invalid-request`; the type is `urn:caf-broker:problem:<code>`).
    pub const fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status code, as a number so that this module stays framework-free.
    pub const fn status(self) -> u16 {
        self.row().1
    }

    /// A short, fixed human title for the problem type.
    pub const fn title(self) -> &'static str {
        self.row().2
    }

    /// When the code is answered, in a sentence or two for the API's documents.
    pub const fn when(self) -> &'static str {
        self.row().3
    }
}

impl BrokerError {
    /// The problem this error is answered with.
    pub fn problem(&self) -> ProblemCode {
        match self {
            BrokerError::InvalidRequest(_) => ProblemCode::InvalidRequest,
            BrokerError::PayloadTooLarge { .. } => ProblemCode::PayloadTooLarge,
            BrokerError::UnsupportedMediaType => ProblemCode::UnsupportedMediaType,
            BrokerError::RequestTimeout { .. } => ProblemCode::RequestTimeout,
            BrokerError::HeadersTooLarge { .. } => ProblemCode::HeadersTooLarge,
            BrokerError::Unauthenticated(_) => ProblemCode::Unauthenticated,
            BrokerError::PurposeNotPermitted => ProblemCode::PurposeNotPermitted,
            BrokerError::AgentSuspended => ProblemCode::AgentSuspended,
            BrokerError::PostNotRegistered => ProblemCode::PostNotRegistered,
            BrokerError::QuotaExceeded { .. } => ProblemCode::QuotaExceeded,
            BrokerError::ErrorBudgetSpent { .. } => ProblemCode::QuotaExceeded,
            BrokerError::QuotaUnavailable => ProblemCode::QuotaUnavailable,
            BrokerError::NotFound => ProblemCode::AllocataireNotFound,
            BrokerError::RouteNotFound => ProblemCode::RouteNotFound,
            BrokerError::MethodNotAllowed { .. } => ProblemCode::MethodNotAllowed,
            BrokerError::Upstream(_) => ProblemCode::UpstreamError,
            BrokerError::UpstreamTimeout => ProblemCode::UpstreamTimeout,
            BrokerError::UpstreamUnavailable { .. } => ProblemCode::UpstreamUnavailable,
            BrokerError::AuditUnavailable(_) => ProblemCode::AuditUnavailable,
            BrokerError::Internal(_) => ProblemCode::InternalError,
        }
    }

    /// The stable problem code (`urn:caf-broker:problem:<code>`).
    pub fn code(&self) -> &'static str {
        self.problem().as_str()
    }

    /// The HTTP status code, as a number so that this module stays framework-free.
    pub fn status(&self) -> u16 {
        self.problem().status()
    }

    /// A short, fixed human title for the problem type.
    pub fn title(&self) -> &'static str {
        self.problem().title()
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
            // One sentence whatever the cause: telling causes apart would let
            // a client probe key ids, issuers and rules. The cause is logged.
            BrokerError::Unauthenticated(_) => {
                "Send a valid access token from the identity provider as `Authorization: Bearer <JWT>`.".into()
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
    pub fn limit(&self) -> Option<QuotaLimit> {
        match self {
            BrokerError::QuotaExceeded { limit, .. } => Some(match limit {
                Window::Burst => QuotaLimit::Burst,
                Window::Daily => QuotaLimit::Daily,
                Window::AgentBurst => QuotaLimit::AgentBurst,
                Window::AgentDaily => QuotaLimit::AgentDaily,
            }),
            BrokerError::ErrorBudgetSpent { .. } => Some(QuotaLimit::AgentErrorBudget),
            _ => None,
        }
    }
}

/// The limit a `429 quota-exceeded` names: the post's `burst` or `daily`
/// quota (shared by its agents), the agent's own `agent-burst` or
/// `agent-daily`, or `agent-error-budget` when the agent caused too many
/// refusals lately. The first four are the names of the `RateLimit` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaLimit {
    Burst,
    Daily,
    AgentBurst,
    AgentDaily,
    AgentErrorBudget,
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
