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

/// The paths an operations listener takes from the API listener.
const OPERATIONS_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The document of a listener: [`document`], or without the operations paths
/// when an operations listener serves them (the document names only what the
/// listener serving it answers).
pub fn document_for(with_operations: bool) -> &'static Document {
    static WITHOUT_OPERATIONS: OnceLock<Document> = OnceLock::new();
    if with_operations {
        return document();
    }
    WITHOUT_OPERATIONS.get_or_init(|| {
        let mut document = ApiDoc::openapi();
        let paths = &mut document.paths.paths;
        paths.retain(|path, _| !OPERATIONS_PATHS.contains(&path.as_str()));
        document
    })
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
pub async fn openapi_json(with_operations: bool) -> HttpResponse {
    static WITH: OnceLock<Option<String>> = OnceLock::new();
    static WITHOUT: OnceLock<Option<String>> = OnceLock::new();
    let json = if with_operations { &WITH } else { &WITHOUT };
    match json.get_or_init(|| document_for(with_operations).to_json().ok()) {
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

/// A problem answer shared by the data operations: its component name, its
/// status, the headers it carries besides those of every answer, and whether
/// only the `POST` operation (which has a body) answers it. Its description
/// lists the cases of each code of that status ([`ProblemCode::when`]).
type ProblemAnswer = (&'static str, u16, &'static [&'static str], bool);

/// Headers of an answer that only some of its codes carry: the answer's name,
/// the header, and when it is sent. The document describes them in place
/// (a header of an OpenAPI answer is not required unless it says so).
const SOMETIMES_SENT: [(&str, &str, &str); 3] = [
    (
        "QuotaExceeded",
        "RateLimit-Policy",
        "Sent when a quota is spent (`limit`: `burst`, `daily`, `agent-burst`, `agent-daily`); absent with `agent-error-budget`, which is not a quota.",
    ),
    (
        "QuotaExceeded",
        "RateLimit",
        "Sent when a quota is spent (`limit`: `burst`, `daily`, `agent-burst`, `agent-daily`); absent with `agent-error-budget`, which is not a quota.",
    ),
    (
        "Unavailable",
        "Retry-After",
        "Sent with `upstream-unavailable` (seconds until the open circuit lets a probe through); absent with `audit-unavailable` and `quota-unavailable`.",
    ),
];

const PROBLEM_ANSWERS: [ProblemAnswer; 13] = [
    ("InvalidRequest", 400, &[], false),
    ("Unauthenticated", 401, &["WWW-Authenticate"], false),
    ("PurposeNotPermitted", 403, &[], false),
    ("AllocataireNotFound", 404, &[], false),
    ("RequestTimeout", 408, &[], true),
    ("PayloadTooLarge", 413, &[], true),
    ("UnsupportedMediaType", 415, &[], true),
    (
        "QuotaExceeded",
        429,
        &["Retry-After", "RateLimit-Policy", "RateLimit"],
        false,
    ),
    ("HeadersTooLarge", 431, &[], false),
    ("InternalError", 500, &[], false),
    ("UpstreamError", 502, &[], false),
    ("Unavailable", 503, &["Retry-After"], false),
    ("UpstreamTimeout", 504, &[], false),
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
                "What is left of each policy, e.g. `\"burst\";r=19;t=1, \"daily\";r=1999;t=43200, \"agent-burst\";r=9;t=1, \"agent-daily\";r=499;t=43200`.",
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
fn problem_response(&(answer_name, status, headers, _): &ProblemAnswer) -> Response {
    let codes = codes_of(status);
    let cases: Vec<String> = codes
        .iter()
        .map(|code| format!("`{}`: {}", code.as_str(), code.when()))
        .collect();
    let examples = codes.iter().map(|code| {
        let example = ExampleBuilder::new().value(Some(json!({
            "type": format!("urn:caf-broker:problem:{}", code.as_str()),
            "title": code.title(),
            "status": status,
            "detail": "…",
            "code": code.as_str(),
            "request_id": "0b7e0f53-5d5c-4f6e-9d3e-2f0c8a1b6c4d",
        })));
        (code.as_str(), example.build())
    });
    let mut response = ResponseBuilder::new().description(cases.join(" ")).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .examples_from_iter(examples)
            .build(),
    );
    for name in ["X-Request-Id", "Cache-Control"].iter().chain(headers) {
        let sometimes = SOMETIMES_SENT
            .iter()
            .find(|(of, header, _)| *of == answer_name && header == name);
        let shared = self::headers()
            .into_iter()
            .find(|(shared, _)| shared == name);
        response = match (sometimes, shared) {
            (Some((_, _, when)), Some((_, mut header))) => {
                let what = header.description.take().unwrap_or_default();
                header.description = Some(format!("{what} {when}"));
                response.header(*name, header)
            }
            _ => response.header_ref(*name, Ref::new(format!("#/components/headers/{name}"))),
        };
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
                .insert(answer.0.into(), RefOr::T(problem_response(answer)));
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
                    for (name, status, _, body_only) in PROBLEM_ANSWERS {
                        if has_body || !body_only {
                            responses.insert(
                                status.to_string(),
                                RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))),
                            );
                        }
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

    /// The answer of `error` as the routes send it.
    fn answer_of(error: BrokerError) -> actix_web::HttpResponse {
        use actix_web::ResponseError;
        let req = actix_web::test::TestRequest::default().to_http_request();
        crate::routes::problem::ApiError::new(error, &req).error_response()
    }

    #[test]
    fn the_headers_of_each_429_and_503_are_the_ones_the_document_names_for_its_code() {
        let allowance = crate::quota::Allowance {
            burst_limit: 1,
            burst_window_secs: 1,
            burst_remaining: 0,
            burst_reset_secs: 1,
            daily_limit: 10,
            daily_remaining: 9,
        };
        let state = crate::quota::QuotaState {
            post: allowance,
            agent: allowance,
            daily_reset_secs: 60,
        };
        let errors = [
            BrokerError::QuotaExceeded {
                state,
                retry_after_secs: 1,
                limit: Window::Burst,
            },
            BrokerError::ErrorBudgetSpent {
                retry_after_secs: 1,
            },
            BrokerError::UpstreamUnavailable {
                retry_after_secs: Some(1),
            },
            BrokerError::QuotaUnavailable,
            BrokerError::AuditUnavailable(anyhow::anyhow!("x")),
        ];
        let doc = doc();
        for error in errors {
            let code = error.problem().as_str();
            let limit = error
                .limit()
                .map(|l| {
                    serde_json::to_value(l)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .unwrap_or_default();
            let answer = PROBLEM_ANSWERS
                .iter()
                .find(|(_, status, _, _)| *status == error.status())
                .unwrap();
            let response = answer_of(error);
            let documented = doc["components"]["responses"][answer.0]["headers"]
                .as_object()
                .unwrap();
            for (name, header) in documented {
                if ["X-Request-Id", "Cache-Control"].contains(&name.as_str()) {
                    continue; // set by the middleware, on every answer
                }
                let description = header["description"].as_str().unwrap_or("");
                let absent_with = description.split("absent with ").nth(1).unwrap_or("");
                let absent = [code, limit.as_str()]
                    .iter()
                    .any(|c| !c.is_empty() && absent_with.contains(&format!("`{c}`")));
                assert_eq!(
                    response.headers().contains_key(name.as_str()),
                    !absent,
                    "{code} {limit}: {name} ({description})"
                );
            }
            for sent in ["retry-after", "ratelimit", "ratelimit-policy"] {
                if response.headers().contains_key(sent) {
                    assert!(
                        documented
                            .keys()
                            .any(|name| name.eq_ignore_ascii_case(sent)),
                        "{code}: {sent} sent but not documented"
                    );
                }
            }
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
        for name in ["RateLimit-Policy", "RateLimit"] {
            let description = too_many["headers"][name]["description"].as_str().unwrap();
            assert!(
                description.contains("absent with `agent-error-budget`"),
                "{description}"
            );
        }
        let retry = &doc["components"]["responses"]["Unavailable"]["headers"]["Retry-After"];
        let description = retry["description"].as_str().unwrap();
        assert!(
            description.contains("absent with `audit-unavailable` and `quota-unavailable`"),
            "{description}"
        );
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
