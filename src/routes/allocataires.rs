//! `GET /v1/allocataires/{numero}` and `POST /v1/allocataires/recherche`.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{bearer_token, client_certificate, declared};
use super::openapi::DataHeaders;
use super::{ApiError, EdgeLimits, RequestId};
use crate::broker::{Answer, Broker, Released, Request};
use crate::domain::CacheOutcome;
use crate::domain::{Lookup, Nir, NumeroAllocataire, Purpose};
use crate::error::BrokerError;

/// Reads a dossier by its numéro allocataire.
///
/// A numéro that is not 1 to 7 digits, or is zeros only, is answered `400
/// invalid-request`. Leading zeros are ignored: `0000042` is dossier `42`.
#[utoipa::path(
    get,
    path = "/v1/allocataires/{numero}",
    tag = "allocataires",
    params(
        ("numero" = String, Path, description = "The numéro allocataire: 1 to 7 digits, not all zeros; leading zeros are ignored (`0000042` is `42`).",
            pattern = "^[0-9]{1,7}$", example = "1000002"),
        DataHeaders
    ),
    responses(
        (status = 200, description = "The dossier, filtered for the purpose.", body = Envelope,
            content_type = "application/json")
    ),
    security(("bearer" = []))
)]
pub async fn read_by_numero(
    req: HttpRequest,
    broker: web::Data<Broker>,
) -> Result<HttpResponse, ApiError> {
    let lookup = NumeroAllocataire::parse(req.match_info().query("numero"))
        .map(Lookup::Numero)
        .map_err(|e| BrokerError::InvalidRequest(format!("{e}.")));
    answer(&req, &broker, std::future::ready(lookup)).await
}

/// A lookup by NIR, sent in the body so that it never sits in a URL.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    /// 13 characters (digits; `2A` or `2B` for a Corsican department) and a
    /// 2-digit mod-97 key, checked before any lookup.
    #[schema(
        pattern = "^[0-9]{5}([0-9]{2}|2[ABab])[0-9]{8}$",
        example = "295109912611193"
    )]
    nir: String,
}

/// Finds a dossier by NIR.
///
/// The NIR is sent in the body so that it never sits in a URL or a log.
#[utoipa::path(
    post,
    path = "/v1/allocataires/recherche",
    tag = "allocataires",
    params(DataHeaders),
    request_body(content = SearchBody, content_type = "application/json",
        description = "`{\"nir\": \"…\"}` and nothing else, at most `server.max_body_bytes`."),
    responses(
        (status = 200, description = "The dossier, filtered for the purpose.", body = Envelope,
            content_type = "application/json")
    ),
    security(("bearer" = []))
)]
pub async fn search_by_nir(
    req: HttpRequest,
    broker: web::Data<Broker>,
    limits: web::Data<EdgeLimits>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The body is read only if the broker authenticates the caller.
    let lookup = async { read_nir(&req, payload, &limits).await.map(Lookup::Nir) };
    answer(&req, &broker, lookup).await
}

/// The NIR of a search body, checked (key included) before any lookup.
async fn read_nir(
    req: &HttpRequest,
    payload: web::Payload,
    limits: &EdgeLimits,
) -> Result<Nir, BrokerError> {
    if !is_json(req) {
        return Err(BrokerError::UnsupportedMediaType);
    }
    // The deadline runs from the request's arrival, so a body trickled in
    // byte by byte cannot hold a worker's attention past it.
    let deadline = super::context::Arrival::of(req).instant() + limits.request_timeout;
    let body = tokio::time::timeout_at(deadline, read_body(req, payload, limits.max_body_bytes))
        .await
        .map_err(|_| BrokerError::RequestTimeout {
            limit_secs: limits.request_timeout.as_secs(),
        })??;
    nir_of_search_body(&body)
}

/// The NIR of a search body already read: `{"nir": "…"}` and nothing else,
/// its key checked. Every refusal is `400 invalid-request`, whose detail never
/// quotes the body.
pub fn nir_of_search_body(body: &[u8]) -> Result<Nir, BrokerError> {
    let search: SearchBody = serde_json::from_slice(body).map_err(|e| {
        // serde's message may quote the input; only its category and position are sent back.
        let why = match e.classify() {
            serde_json::error::Category::Data => {
                "it must be an object with exactly one string field `nir`"
            }
            _ => "it is not valid JSON",
        };
        BrokerError::InvalidRequest(format!(
            "The request body could not be read ({why}; line {}, column {}).",
            e.line(),
            e.column()
        ))
    })?;
    Nir::parse(&search.nir).map_err(|e| BrokerError::InvalidRequest(format!("nir: {e}.")))
}

/// `Cache-Control: no-cache` asks for a fresh CAF read (it still counts against the quota).
fn wants_fresh(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(CACHE_CONTROL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-cache"))
}

/// One `Content-Type: application/json`, with no parameter but a `charset`
/// naming UTF-8 (JSON is UTF-8 only, RFC 8259): any other media type, a
/// repeated header or another charset is refused before the body is read.
fn is_json(req: &HttpRequest) -> bool {
    let mut values = req.headers().get_all(CONTENT_TYPE);
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or_default().trim();
    mime.eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            let (name, charset) = parameter.split_once('=').unwrap_or((parameter, ""));
            name.trim().eq_ignore_ascii_case("charset")
                && charset
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("utf-8")
        })
}

/// Reads the body, refusing it as soon as it is known to exceed `limit` bytes.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, BrokerError> {
    use futures_util::StreamExt;

    let too_large = BrokerError::PayloadTooLarge { limit_bytes: limit };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            BrokerError::InvalidRequest("The request body could not be read completely.".into())
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The answer to a data request.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    /// The dossier, holding only the fields the purpose may see (CAF record
    /// field names, see the policy); absent fields were not released.
    #[schema(value_type = Object)]
    data: &'a serde_json::Value,
    meta: Meta<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Meta<'a> {
    /// The declared purpose, as sent in `X-Purpose`.
    #[schema(value_type = String, pattern = "^[a-z0-9_]{1,64}$", example = "verification_radiation")]
    purpose: &'a Purpose,
    /// The policy that filtered the answer (also in `X-Policy-Version`).
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    policy_version: &'a str,
    /// The request id (also in `X-Request-Id`).
    #[schema(format = "uuid")]
    request_id: String,
    cache: CacheOutcome,
}

/// Hands the request to the broker once, then answers and labels it from
/// the broker's [`Answer`].
async fn answer(
    req: &HttpRequest,
    broker: &Broker,
    lookup: impl Future<Output = Result<Lookup, BrokerError>>,
) -> Result<HttpResponse, ApiError> {
    let request_id = RequestId::of(req);
    let declared = declared(req.headers());
    let request = Request {
        request_id: request_id.uuid(),
        bearer_token: bearer_token(req.headers()),
        client_certificate: client_certificate(req),
        purpose: declared.purpose,
        case_reference: declared.case_reference,
        lookup,
        fresh: wants_fresh(req),
    };
    let answer = broker.serve(request).await;
    observe(req, &answer);
    let Released {
        data,
        policy_version,
        cache,
        quota,
        purpose,
        ..
    } = answer.result.map_err(|e| ApiError::new(e, req))?;
    let envelope = Envelope {
        data: &data,
        meta: Meta {
            purpose: &purpose,
            policy_version: &policy_version,
            request_id: request_id.to_string(),
            cache,
        },
    };
    let body = serde_json::to_vec(&envelope)
        .map_err(|e| ApiError::new(BrokerError::Internal(e.into()), req))?;
    let mut res = HttpResponse::Ok();
    res.content_type("application/json")
        .insert_header(("X-Policy-Version", &*policy_version));
    for field in quota.pairs() {
        res.insert_header(field);
    }
    Ok(res.body(body))
}

/// Hands the broker's labels to the request-context middleware for the
/// request metric (the broker already put them on the request's span), and
/// labels the span with the cache use and outcome of a release.
fn observe(req: &HttpRequest, answer: &Answer) {
    req.extensions_mut().insert(super::context::Observed {
        post: answer.post.clone(),
        purpose: answer.purpose.clone(),
    });
    if let Ok(released) = &answer.result {
        let span = tracing::Span::current();
        span.record("outcome", "released");
        span.record("cache", released.cache.as_str());
    }
}
