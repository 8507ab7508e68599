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

/// The route templates: what spans, logs and metric labels call a request
/// by (the raw path may hold a numéro, so it is never recorded).
pub(crate) mod template {
    pub const DOSSIER: &str = "/v1/allocataires/{numero}";
    pub const SEARCH: &str = "/v1/allocataires/recherche";
    pub const OPENAPI: &str = "/openapi.json";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
}

/// Where the dossiers are, and the segment `{numero}` stands for.
const DOSSIERS: &str = "/v1/allocataires";

impl Surface {
    /// The template of the route that serves `path` on this listener, or
    /// `None` (`404 route-not-found`). It follows [`configure`] with string
    /// comparisons only, so no request runs a regular expression to be named.
    pub(crate) fn route_of(self, path: &str) -> Option<&'static str> {
        use template::*;
        if self.serves_data() {
            if path == SEARCH {
                return Some(SEARCH);
            }
            if path == OPENAPI {
                return Some(OPENAPI);
            }
            if path
                .strip_prefix(DOSSIERS)
                .and_then(numero_segment)
                .is_some()
            {
                return Some(DOSSIER);
            }
        }
        if self.serves_operations() {
            return [HEALTHZ, READYZ, METRICS]
                .into_iter()
                .find(|route| path == *route);
        }
        None
    }
}

/// The `{numero}` of what follows [`DOSSIERS`] in a path: one non-empty
/// segment, as the template `/v1/allocataires/{numero}` matches it.
fn numero_segment(rest: &str) -> Option<&str> {
    let segment = rest.strip_prefix('/')?;
    (!segment.is_empty() && !segment.contains('/')).then_some(segment)
}

/// The route table of a listener. The caller provides `web::Data<Broker>`,
/// `web::Data<EdgeLimits>` and `web::Data<Metrics>`, built once for all
/// workers and all listeners. Any other path is `404 route-not-found`.
///
/// Every route is a fixed path or prefix: the dossier route is the default
/// service of the `/v1/allocataires` scope, which reads its `{numero}`
/// itself, so that routing a request compares strings and never runs the
/// regular expression a `{numero}` segment would compile to.
pub fn configure(surface: Surface) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let mut scope = web::scope("").wrap(from_fn(move |req, next| {
            context::request_context(surface, req, next)
        }));
        if surface.serves_data() {
            scope = scope.service(
                web::scope(DOSSIERS)
                    .service(
                        web::resource("/recherche")
                            .route(web::post().to(allocataires::search_by_nir))
                            .default_service(problem::method_not_allowed("POST")),
                    )
                    .default_service(web::to(allocataires::read_by_numero)),
            );
        }
        if surface.serves_operations() {
            scope = scope
                .service(get_only(template::HEALTHZ, web::get().to(ops::healthz)))
                .service(get_only(template::READYZ, web::get().to(ops::readyz)))
                .service(get_only(template::METRICS, web::get().to(metrics::metrics)));
        }
        if surface.serves_data() {
            let with_operations = surface.serves_operations();
            scope = scope.service(get_only(
                template::OPENAPI,
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

#[cfg(test)]
mod tests {
    use super::Surface;

    #[test]
    fn each_listener_names_a_request_by_the_template_of_the_route_that_serves_it() {
        // path, then its template on Everything, on Api, on Operations
        let cases: &[(&str, [Option<&str>; 3])] = &[
            (
                "/v1/allocataires/1000002",
                [
                    Some("/v1/allocataires/{numero}"),
                    Some("/v1/allocataires/{numero}"),
                    None,
                ],
            ),
            (
                "/v1/allocataires/%2e%2e",
                [
                    Some("/v1/allocataires/{numero}"),
                    Some("/v1/allocataires/{numero}"),
                    None,
                ],
            ),
            (
                "/v1/allocataires/recherche",
                [
                    Some("/v1/allocataires/recherche"),
                    Some("/v1/allocataires/recherche"),
                    None,
                ],
            ),
            ("/v1/allocataires/", [None, None, None]),
            ("/v1/allocataires", [None, None, None]),
            ("/v1/allocataires/1/2", [None, None, None]),
            ("/v1/allocataires/1000002/", [None, None, None]),
            ("/v1/allocataires1000002", [None, None, None]),
            ("/v1//allocataires/1000002", [None, None, None]),
            (
                "/openapi.json",
                [Some("/openapi.json"), Some("/openapi.json"), None],
            ),
            ("/healthz", [Some("/healthz"), None, Some("/healthz")]),
            ("/readyz", [Some("/readyz"), None, Some("/readyz")]),
            ("/metrics", [Some("/metrics"), None, Some("/metrics")]),
            ("/metrics/", [None, None, None]),
            ("/", [None, None, None]),
        ];
        for (path, [everything, api, operations]) in cases {
            assert_eq!(Surface::Everything.route_of(path), *everything, "{path}");
            assert_eq!(Surface::Api.route_of(path), *api, "{path}");
            assert_eq!(Surface::Operations.route_of(path), *operations, "{path}");
        }
    }
}
