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

pub use allocataires::nir_of_search_body;
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

/// The routes one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The one listener: the data routes, `/healthz`, `/readyz`, `/metrics`
    /// and `/openapi.json`.
    Everything,
    /// The API listener beside an operations listener: the data routes and
    /// `/openapi.json`, which then documents only those.
    Api,
    /// The operations listener (`server.ops_listen`): `/healthz`, `/readyz`
    /// and `/metrics`.
    Operations,
}

impl Surface {
    fn serves_data(self) -> bool {
        self != Surface::Operations
    }

    fn serves_operations(self) -> bool {
        self != Surface::Api
    }
}

/// The route table of a listener. The caller provides `web::Data<Broker>`,
/// `web::Data<EdgeLimits>` and `web::Data<Metrics>`, built once for all
/// workers and all listeners. Any other path is `404 route-not-found`.
pub fn configure(surface: Surface) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let mut scope = web::scope("").wrap(from_fn(context::request_context));
        if surface.serves_data() {
            scope = scope
                .service(
                    web::resource("/v1/allocataires/recherche")
                        .route(web::post().to(allocataires::search_by_nir))
                        .default_service(problem::method_not_allowed("POST")),
                )
                .service(
                    web::resource("/v1/allocataires/{numero}")
                        .route(web::get().to(allocataires::read_by_numero))
                        .default_service(problem::method_not_allowed("GET")),
                );
        }
        if surface.serves_operations() {
            scope = scope
                .service(get_only("/healthz", web::get().to(ops::healthz)))
                .service(get_only("/readyz", web::get().to(ops::readyz)))
                .service(get_only("/metrics", web::get().to(metrics::metrics)));
        }
        if surface.serves_data() {
            let with_operations = surface.serves_operations();
            scope = scope.service(get_only(
                "/openapi.json",
                web::get().to(move || openapi::openapi_json(with_operations)),
            ));
        }
        cfg.service(scope.default_service(web::to(problem::route_not_found)));
    }
}

/// A known path served on GET only: any other method is `405` with `Allow: GET`,
/// as on the data routes.
fn get_only(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(problem::method_not_allowed("GET"))
}
