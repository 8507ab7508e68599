//! `GET /v1/allocataires/{numero}` and `POST /v1/allocataires/recherche`.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{bearer_token, client_certificate, declared};
use super::openapi::DataHeaders;
use super::{ApiError, EdgeLimits, RequestId};
use crate::broker::{Answer, Broker, Released, Request};
use crate::domain::CacheOutcome;
use crate::domain::{Lookup, Nir, NumeroAllocataire, PostCode, Purpose};
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
    // The default service of the `/v1/allocataires` scope: any other path
    // under it is `404 route-not-found`, any other method `405` with `Allow: GET`.
    let Some(numero) = super::numero_segment(req.match_info().unprocessed()) else {
        return Err(ApiError::new(BrokerError::RouteNotFound, &req));
    };
    if req.method() != actix_web::http::Method::GET {
        return Err(ApiError::new(
            BrokerError::MethodNotAllowed { allow: "GET" },
            &req,
        ));
    }
    let lookup = NumeroAllocataire::parse(numero)
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

/// The body of a released answer: the [`Envelope`] around the view the
/// filter wrote, which goes in as it is, never parsed back into a `Value`.
fn envelope(data: &[u8], meta: &Meta<'_>) -> Result<Vec<u8>, serde_json::Error> {
    const HEAD: &[u8] = br#"{"data":"#;
    const META: &[u8] = br#","meta":"#;
    let mut body = Vec::with_capacity(HEAD.len() + data.len() + META.len() + 256);
    body.extend_from_slice(HEAD);
    body.extend_from_slice(data);
    body.extend_from_slice(META);
    serde_json::to_writer(&mut body, meta)?;
    body.push(b'}');
    Ok(body)
}

/// The answer to a data request: what [`envelope`] writes (this type
/// documents it in the OpenAPI document, and a test holds the two together).
#[cfg_attr(not(test), allow(dead_code))]
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
    #[schema(value_type = String, format = "uuid")]
    request_id: &'a str,
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
    let Answer {
        result,
        post,
        purpose,
    } = broker.serve(request).await;
    observe(req, post, purpose, &result);
    let Released {
        data,
        policy_version,
        cache,
        quota,
        purpose,
        ..
    } = result.map_err(|e| ApiError::new(e, req))?;
    let mut id = uuid::Uuid::encode_buffer();
    let meta = Meta {
        purpose: &purpose,
        policy_version: &policy_version,
        request_id: request_id.uuid().hyphenated().encode_lower(&mut id),
        cache,
    };
    let body =
        envelope(&data, &meta).map_err(|e| ApiError::new(BrokerError::Internal(e.into()), req))?;
    let mut res = HttpResponse::Ok();
    res.content_type("application/json")
        .insert_header((X_POLICY_VERSION.clone(), &*policy_version));
    for (name, value) in quota.into_pairs() {
        match [&RATELIMIT_POLICY, &RATELIMIT]
            .into_iter()
            .find(|known| known.as_str().eq_ignore_ascii_case(name))
        {
            Some(known) => res.insert_header((known.clone(), value)),
            None => res.insert_header((name, value)),
        };
    }
    Ok(res.body(body))
}

/// The names of the headers of every released answer, parsed once (HTTP
/// names are case-insensitive; these are the lowercase forms of
/// `X-Policy-Version` and of the quota's `RateLimit-Policy` and `RateLimit`).
static X_POLICY_VERSION: HeaderName = HeaderName::from_static("x-policy-version");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Hands the broker's labels to the request-context middleware for the
/// request metric (the broker already put them on the request's span), and
/// labels the span with the cache use and outcome of a release.
fn observe(
    req: &HttpRequest,
    post: Option<PostCode>,
    purpose: Option<Purpose>,
    result: &Result<Released, BrokerError>,
) {
    req.extensions_mut()
        .insert(super::context::Observed { post, purpose });
    if let Ok(released) = result {
        let span = tracing::Span::current();
        span.record("outcome", "released");
        span.record("cache", released.cache.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_written_around_a_released_view_is_the_documented_envelope() {
        let view = serde_json::json!({
            "numero_allocataire": "1000002",
            "adresse": {"commune": "Tunis \"centre\"", "pays": "TN"},
            "enfants": [{"prenom": "Léa"}],
            "montant": 412.5,
            "radie": null,
        });
        let purpose = Purpose::parse("verification_radiation").unwrap();
        let meta = Meta {
            purpose: &purpose,
            policy_version: "sha256:00",
            request_id: "67e55044-10b1-426f-9247-bb680e5fe0c8",
            cache: CacheOutcome::Hit,
        };
        let written = envelope(&serde_json::to_vec(&view).unwrap(), &meta).unwrap();
        let documented = serde_json::to_vec(&Envelope {
            data: &view,
            meta: Meta { ..meta },
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(documented).unwrap()
        );
    }
}
