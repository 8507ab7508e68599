//! The HTTP edge: the route table, the request context, the data handlers, and the
//! one mapping from [`BrokerError`](crate::error::BrokerError) to problem+json.

mod allocataires;
mod context;
mod extract;
mod metrics;
pub mod openapi;
mod ops;
mod problem;

use actix_web::middleware::from_fn;
use actix_web::web;

pub use context::RequestId;
pub use problem::ApiError;

/// Limits the edge applies before any handler runs.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub max_body_bytes: usize,
    /// The deadline of a whole request; a body still arriving past it is
    /// answered `408` and its connection closed.
    pub request_timeout: std::time::Duration,
    /// The largest header list (RFC 9113 size: names, values, 32 per field).
    pub max_header_list_bytes: u32,
}

/// The whole route table. The caller provides `web::Data<Broker>` and
/// `web::Data<EdgeLimits>`, built once for all workers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("")
            .wrap(from_fn(context::request_context))
            .service(
                web::resource("/v1/allocataires/recherche")
                    .route(web::post().to(allocataires::search_by_nir))
                    .default_service(problem::method_not_allowed("POST")),
            )
            .service(
                web::resource("/v1/allocataires/{numero}")
                    .route(web::get().to(allocataires::read_by_numero))
                    .default_service(problem::method_not_allowed("GET")),
            )
            .service(get_only("/healthz", web::get().to(ops::healthz)))
            .service(get_only("/readyz", web::get().to(ops::readyz)))
            .service(get_only("/metrics", web::get().to(metrics::metrics)))
            .service(get_only(
                "/openapi.json",
                web::get().to(openapi::openapi_json),
            ))
            .default_service(web::to(problem::route_not_found)),
    );
}

/// A known path served on GET only: any other method is `405` with `Allow: GET`,
/// as on the data routes.
fn get_only(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(problem::method_not_allowed("GET"))
}
