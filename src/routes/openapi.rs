//! `GET /openapi.json`: the OpenAPI 3.1 document of the broker's HTTP API,
//! generated with utoipa from the handlers' `#[utoipa::path]` annotations and
//! the types they send (`allocataires.rs`, `ops.rs`, `metrics.rs`,
//! `problem.rs`).
//!
//! The problem answers every data operation shares and the headers every
//! answer carries are added to each operation by [`SharedAnswers`]. A test
//! checks the served document against real answers.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::json;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{IntoParams, Modify, OpenApi};

use super::problem::Problem;
use crate::error::ProblemCode;

/// The security scheme name of the bearer token.
const BEARER: &str = "bearer";
const PROBLEM_JSON: &str = "application/problem+json";

/// The document, built once per process.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = Object,
            content_type = "application/json")
    )
)]
pub async fn openapi_json() -> HttpResponse {
    static JSON: OnceLock<Option<String>> = OnceLock::new();
    match JSON.get_or_init(|| document().to_json().ok()) {
        Some(body) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body.clone()),
        None => HttpResponse::InternalServerError().finish(),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "caf-broker",
        description = "A purpose-bound access broker to CAF dossiers for consular posts. \
Every data request names its purpose (`X-Purpose`) and case (`X-Case-Reference`); the \
answer holds only the fields that purpose may see. Every answer carries `X-Request-Id` \
and `Cache-Control: no-store`. Failures are RFC 9457 problems with a stable `code`: an \
unknown path is answered `404 route-not-found`, a known path with another method \
`405 method-not-allowed` with an `Allow` header naming the method it takes. An incoming W3C `traceparent` header is honoured."
    ),
    paths(
        super::allocataires::read_by_numero,
        super::allocataires::search_by_nir,
        super::ops::healthz,
        super::ops::readyz,
        super::metrics::metrics,
        openapi_json
    ),
    components(schemas(Problem, ProblemCode)),
    modifiers(&SharedAnswers),
    tags(
        (name = "allocataires", description = "Dossiers, filtered for the declared purpose."),
        (name = "operations", description = "Health, readiness, metrics and this document; no authentication.")
    )
)]
struct ApiDoc;

/// The request headers of both data operations.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "read by the OpenAPI derive only")]
pub(super) struct DataHeaders {
    /// The purpose of the access: one of the policy's purposes that the
    /// caller's role may declare. Sent once.
    #[param(
        rename = "X-Purpose",
        pattern = "^[a-z0-9_]{1,64}$",
        example = "verification_radiation"
    )]
    x_purpose: String,
    /// The post's case or procedure reference the access is made for. Sent once.
    #[param(
        rename = "X-Case-Reference",
        pattern = "^[A-Za-z0-9._/-]{1,64}$",
        example = "TN-2026/0042"
    )]
    x_case_reference: String,
    /// `no-cache` forces a fresh read from the CAF (it still counts against the quota).
    #[param(rename = "Cache-Control", required = false, example = "no-cache")]
    cache_control: String,
    /// A W3C trace context (`00-<trace id>-<parent id>-<flags>`); the broker's
    /// spans join the caller's trace. One that does not parse is ignored, never
    /// refused, so it has no pattern here.
    #[param(rename = "traceparent", required = false)]
    traceparent: String,
}

/// Adds the bearer scheme, the shared problem answers of the data operations
/// and the headers of every answer.
struct SharedAnswers;

/// A problem answer shared by operations: its component name, status, codes
/// and the headers it carries besides those of every answer.
struct ProblemAnswer {
    name: &'static str,
    status: u16,
    description: &'static str,
    headers: &'static [&'static str],
    /// Only the `POST` operation answers it.
    body_only: bool,
}

const PROBLEM_ANSWERS: [ProblemAnswer; 13] = [
    ProblemAnswer {
        name: "InvalidRequest",
        status: 400,
        description: "A malformed identifier, a bad NIR key, a missing, repeated or invalid `X-Purpose` or `X-Case-Reference`, a purpose the policy does not define, or a body that is not `{\"nir\": \"…\"}`.",
        headers: &[],
        body_only: false,
    },
    ProblemAnswer {
        name: "Unauthenticated",
        status: 401,
        description: "A missing, malformed, expired, not-yet-valid or wrongly signed token, a wrong issuer or audience, a disallowed algorithm, a role the policy does not define, a token bound to another client certificate than the connection's (or sent without one), an unbound token where only bound ones are accepted, or a `post` that is not the one the client certificate names.",
        headers: &["WWW-Authenticate"],
        body_only: false,
    },
    ProblemAnswer {
        name: "PurposeNotPermitted",
        status: 403,
        description: "The caller's role may not declare this purpose (`purpose-not-permitted`), with `quotas.known_posts_only` the caller's post has no quota entry (`post-not-registered`), or the agent is suspended after a bulk-lookup alert (`agent-suspended`, with `alerts.block = true`).",
        headers: &[],
        body_only: false,
    },
    ProblemAnswer {
        name: "AllocataireNotFound",
        status: 404,
        description: "The CAF has no such dossier.",
        headers: &[],
        body_only: false,
    },
    ProblemAnswer {
        name: "PayloadTooLarge",
        status: 413,
        description: "The body is larger than `server.max_body_bytes`.",
        headers: &[],
        body_only: true,
    },
    ProblemAnswer {
        name: "RequestTimeout",
        status: 408,
        description: "The body did not arrive in full within `server.request_timeout_secs` of the request's head; the connection is closed (`Connection: close` over HTTP/1.1).",
        headers: &[],
        body_only: true,
    },
    ProblemAnswer {
        name: "UnsupportedMediaType",
        status: 415,
        description: "The body is not sent as `Content-Type: application/json`.",
        headers: &[],
        body_only: true,
    },
    ProblemAnswer {
        name: "QuotaExceeded",
        status: 429,
        description: "A quota is spent: the post's burst or daily quota (shared by its agents), the agent's own, or the agent's error budget. The body's `limit` names it (`burst`, `daily`, `agent-burst`, `agent-daily`, `agent-error-budget`; no `RateLimit` fields with the last).",
        headers: &["Retry-After", "RateLimit-Policy", "RateLimit"],
        body_only: false,
    },
    ProblemAnswer {
        name: "HeadersTooLarge",
        status: 431,
        description: "The header fields (names, values and 32 bytes per field) exceed `server.max_header_list_bytes`. Over HTTP/2 the connection itself answers 431, without a problem body.",
        headers: &[],
        body_only: false,
    },
    ProblemAnswer {
        name: "InternalError",
        status: 500,
        description: "A fault of the broker itself; quote the request id to the operators.",
        headers: &[],
        body_only: false,
    },
    ProblemAnswer {
        name: "UpstreamError",
        status: 502,
        description: "The CAF answered with an error, unreadable data, or another dossier than the one asked for (nothing of it is released or cached).",
        headers: &[],
        body_only: false,
    },
    ProblemAnswer {
        name: "Unavailable",
        status: 503,
        description: "The CAF cannot be called (circuit open: `upstream-unavailable`), the audit log cannot be written (`audit-unavailable`; no data is released), or the shared quota store is unreachable and set to refuse (`quota-unavailable`).",
        headers: &["Retry-After"],
        body_only: false,
    },
    ProblemAnswer {
        name: "UpstreamTimeout",
        status: 504,
        description: "The CAF did not answer in time.",
        headers: &[],
        body_only: false,
    },
];

/// The codes a data operation answers with `status`.
fn codes_of(status: u16) -> Vec<ProblemCode> {
    ProblemCode::ALL
        .iter()
        .filter(|code| code.status() == status)
        .filter(|code| {
            !matches!(
                code,
                ProblemCode::RouteNotFound | ProblemCode::MethodNotAllowed
            )
        })
        .copied()
        .collect()
}

fn header(description: &str, schema: ObjectBuilder) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(schema.schema_type(Type::String)))
        .description(Some(description))
        .build()
}

fn headers() -> [(&'static str, utoipa::openapi::Header); 7] {
    [
        (
            "X-Request-Id",
            header(
                "The request id, chosen by the broker; also in problem bodies and `meta`.",
                ObjectBuilder::new()
                    .format(Some(utoipa::openapi::SchemaFormat::Custom("uuid".into()))),
            ),
        ),
        (
            "Cache-Control",
            header(
                "Always `no-store`.",
                ObjectBuilder::new().enum_values(Some(["no-store"])),
            ),
        ),
        (
            "X-Policy-Version",
            header(
                "The policy that filtered the answer.",
                ObjectBuilder::new().pattern(Some("^sha256:[0-9a-f]{64}$")),
            ),
        ),
        (
            "RateLimit-Policy",
            header(
                "The post's and the agent's quota policies (IETF httpapi RateLimit header fields draft), e.g. `\"burst\";q=20;w=4, \"daily\";q=2000;w=86400, \"agent-burst\";q=10;w=5, \"agent-daily\";q=500;w=86400`.",
                ObjectBuilder::new(),
            ),
        ),
        (
            "RateLimit",
            header(
                "What is left of each policy, e.g. `\"burst\";r=19;t=0, \"daily\";r=1999;t=43200, \"agent-burst\";r=9;t=1, \"agent-daily\";r=499;t=43200`.",
                ObjectBuilder::new(),
            ),
        ),
        (
            "Retry-After",
            header(
                "Seconds to wait before retrying.",
                ObjectBuilder::new().pattern(Some("^[0-9]+$")),
            ),
        ),
        (
            "WWW-Authenticate",
            header(
                "`Bearer error=\"invalid_token\"`.",
                ObjectBuilder::new().enum_values(Some([r#"Bearer error="invalid_token""#])),
            ),
        ),
    ]
}

fn header_ref(name: &str) -> RefOr<utoipa::openapi::Header> {
    RefOr::Ref(Ref::new(format!("#/components/headers/{name}")))
}

/// A problem answer: the one `Problem` schema, by reference, so that a
/// generated client has one problem type; the codes this status may carry are
/// named in the description and given one example each.
fn problem_response(answer: &ProblemAnswer) -> Response {
    let codes = codes_of(answer.status);
    let listed: Vec<String> = codes
        .iter()
        .map(|code| format!("`{}`", code.as_str()))
        .collect();
    let examples = codes.iter().map(|code| {
        let example = ExampleBuilder::new().value(Some(json!({
            "type": format!("urn:caf-broker:problem:{}", code.as_str()),
            "title": code.title(),
            "status": answer.status,
            "detail": "…",
            "code": code.as_str(),
            "request_id": "0b7e0f53-5d5c-4f6e-9d3e-2f0c8a1b6c4d",
        })));
        (code.as_str(), example.build())
    });
    let mut response = ResponseBuilder::new()
        .description(format!(
            "{} Codes: {}.",
            answer.description,
            listed.join(", ")
        ))
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .examples_from_iter(examples)
                .build(),
        );
    for name in ["X-Request-Id", "Cache-Control"]
        .iter()
        .chain(answer.headers)
    {
        response = response.header_ref(*name, Ref::new(format!("#/components/headers/{name}")));
    }
    response.build()
}

impl Modify for SharedAnswers {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            BEARER.into(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A token of the identity provider: ES256, EdDSA or RS256, with the post, role and subject of the agent.",
                    ))
                    .build(),
            )),
        );
        for (name, header) in headers() {
            components.headers.insert(name.into(), RefOr::T(header));
        }
        for answer in &PROBLEM_ANSWERS {
            components
                .responses
                .insert(answer.name.into(), RefOr::T(problem_response(answer)));
        }

        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                let is_data = path.starts_with("/v1/");
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                // Every answer carries these two; data answers also the policy and quota.
                for response in responses.values_mut() {
                    if let RefOr::T(response) = response {
                        let mut names = vec!["X-Request-Id", "Cache-Control"];
                        if is_data {
                            names.extend(["X-Policy-Version", "RateLimit-Policy", "RateLimit"]);
                        }
                        for name in names {
                            response.headers.insert(name.into(), header_ref(name));
                        }
                    }
                }
                if is_data {
                    for answer in PROBLEM_ANSWERS
                        .iter()
                        .filter(|answer| has_body || !answer.body_only)
                    {
                        responses.insert(
                            answer.status.to_string(),
                            RefOr::Ref(Ref::new(format!("#/components/responses/{}", answer.name))),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BrokerError, Unauthenticated};
    use crate::quota::Window;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_path() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            paths,
            [
                "/healthz",
                "/metrics",
                "/openapi.json",
                "/readyz",
                "/v1/allocataires/recherche",
                "/v1/allocataires/{numero}",
            ]
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_problem_code_the_broker_sends_is_documented_with_its_status() {
        let errors = [
            BrokerError::InvalidRequest("x".into()),
            BrokerError::PayloadTooLarge { limit_bytes: 1 },
            BrokerError::UnsupportedMediaType,
            BrokerError::RequestTimeout { limit_secs: 1 },
            BrokerError::HeadersTooLarge { limit_bytes: 4096 },
            BrokerError::Unauthenticated(Unauthenticated::MissingToken),
            BrokerError::PurposeNotPermitted,
            BrokerError::AgentSuspended,
            BrokerError::PostNotRegistered,
            BrokerError::QuotaUnavailable,
            BrokerError::ErrorBudgetSpent {
                retry_after_secs: 1,
            },
            BrokerError::NotFound,
            BrokerError::RouteNotFound,
            BrokerError::MethodNotAllowed { allow: "GET" },
            BrokerError::Upstream(anyhow::anyhow!("x")),
            BrokerError::UpstreamTimeout,
            BrokerError::UpstreamUnavailable {
                retry_after_secs: Some(1),
            },
            BrokerError::AuditUnavailable(anyhow::anyhow!("x")),
            BrokerError::Internal(anyhow::anyhow!("x")),
        ];
        for error in errors {
            assert!(
                ProblemCode::ALL.contains(&error.problem()),
                "{} {} is not documented",
                error.status(),
                error.code()
            );
        }
        let limits = &doc()["components"]["schemas"]["QuotaLimit"]["enum"];
        for window in [
            Window::Burst,
            Window::Daily,
            Window::AgentBurst,
            Window::AgentDaily,
        ] {
            assert!(
                limits
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(window.as_str())),
                "the 429 limit {} is not documented",
                window.as_str()
            );
        }
        let schema = &doc()["components"]["schemas"]["ProblemCode"]["enum"];
        for code in ProblemCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(
                schema
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(code.as_str()))
            );
        }
    }

    #[test]
    fn data_operations_document_their_headers_security_and_problems() {
        let doc = doc();
        let get = &doc["paths"]["/v1/allocataires/{numero}"]["get"];
        let post = &doc["paths"]["/v1/allocataires/recherche"]["post"];
        for op in [get, post] {
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for name in [
                "X-Purpose",
                "X-Case-Reference",
                "Cache-Control",
                "traceparent",
            ] {
                assert!(params.contains(&name), "{name} missing in {params:?}");
            }
            assert_eq!(op["security"][0]["bearer"], json!([]));
            let ok = &op["responses"]["200"];
            assert_eq!(
                ok["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Envelope"
            );
            for h in [
                "X-Request-Id",
                "Cache-Control",
                "X-Policy-Version",
                "RateLimit-Policy",
                "RateLimit",
            ] {
                assert!(ok["headers"][h].is_object(), "{h}");
            }
            for status in [
                "400", "401", "403", "404", "429", "500", "502", "503", "504",
            ] {
                assert!(op["responses"][status].is_object(), "{status}");
            }
        }
        assert!(get["responses"]["413"].is_null());
        assert!(post["responses"]["413"].is_object());
        assert!(post["responses"]["415"].is_object());
        assert!(get["responses"]["408"].is_null());
        assert!(post["responses"]["408"].is_object());
        assert!(get["responses"]["431"].is_object());
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/SearchBody"
        );
        let too_many = &doc["components"]["responses"]["QuotaExceeded"];
        assert!(too_many["headers"]["Retry-After"].is_object());
        let problem = &doc["components"]["schemas"]["Problem"];
        assert!(problem["properties"]["limit"].is_object(), "{problem}");
        assert!(
            !problem["required"]
                .as_array()
                .unwrap()
                .contains(&json!("limit"))
        );
        let unavailable = &doc["components"]["responses"]["Unavailable"]["content"][PROBLEM_JSON];
        assert_eq!(
            unavailable["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        let codes: Vec<&str> = unavailable["examples"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            codes,
            [
                "audit-unavailable",
                "quota-unavailable",
                "upstream-unavailable"
            ]
        );
        assert_eq!(
            problem["properties"]["code"]["$ref"],
            "#/components/schemas/ProblemCode"
        );
    }
}
