//! The standalone CAF simulator: the CAF protocol of `CONTRACT.md` section 9
//! over plain HTTP, with injectable latency and failures for fault tests.
//!
//! It never logs a NIR or a dossier number: no request logger is installed and
//! handlers log nothing about the dossier asked for.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};

use super::dataset::Dataset;
use super::rng::mix;

/// How the standalone simulator runs (`caf-broker simulate` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorOptions {
    /// Where to listen; port 0 picks a free port (see [`RunningSimulator::local_addr`]).
    pub listen: SocketAddr,
    pub seed: u64,
    /// Generated dossiers in addition to the five fixed ones.
    pub records: usize,
    /// Delay added to every dossier answer, failures included.
    pub latency_ms: u64,
    /// Fraction (0 to 1) of dossier requests answered `503`.
    pub fail_rate: f64,
}

/// Why the simulator's options were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulatorError {
    #[error("fail rate must be a fraction of requests between 0 and 1 (e.g. 0.1), got {0}")]
    FailRate(f64),
}

impl SimulatorOptions {
    pub fn validate(&self) -> Result<(), SimulatorError> {
        if self.fail_rate.is_finite() && (0.0..=1.0).contains(&self.fail_rate) {
            Ok(())
        } else {
            Err(SimulatorError::FailRate(self.fail_rate))
        }
    }
}

/// Shared by every worker: built once, outside the server factory.
struct State {
    dataset: Arc<Dataset>,
    latency: Duration,
    fail_rate: f64,
    seed: u64,
    requests: AtomicU64,
}

impl State {
    /// Counts a dossier request, applies the latency and, for the drawn
    /// fraction of requests, answers `503` instead of the dossier. The draw
    /// depends only on the seed and the request's rank, so a sequential client
    /// sees the same failures on every run.
    async fn admit(&self) -> Option<HttpResponse> {
        let rank = self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let draw = (mix(self.seed ^ mix(rank)) >> 11) as f64 / (1u64 << 53) as f64;
        (draw < self.fail_rate).then(|| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"))
    }
}

fn error(status: StatusCode, code: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": code }))
}

fn dossier_or_not_found(body: Option<Vec<u8>>) -> HttpResponse {
    match body {
        Some(body) => HttpResponse::Ok()
            .content_type(ContentType::json())
            .body(body),
        None => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

async fn get_dossier(state: web::Data<State>, numero: web::Path<String>) -> HttpResponse {
    if let Some(refusal) = state.admit().await {
        return refusal;
    }
    dossier_or_not_found(state.dataset.json_by_numero(&numero))
}

#[derive(serde::Deserialize)]
struct Recherche {
    nir: String,
}

async fn search_dossier(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    if let Some(refusal) = state.admit().await {
        return refusal;
    }
    match serde_json::from_slice::<Recherche>(&body) {
        Ok(query) => dossier_or_not_found(state.dataset.json_by_nir(&query.nir)),
        Err(_) => error(StatusCode::BAD_REQUEST, "bad_request"),
    }
}

async fn stats(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .json(serde_json::json!({ "requests_total": state.requests.load(Ordering::Relaxed) }))
}

async fn no_route() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "not_found")
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dossiers/recherche", web::post().to(search_dossier))
        .route("/dossiers/{numero}", web::get().to(get_dossier))
        .route("/_sim/stats", web::get().to(stats))
        .default_service(web::to(no_route));
}

/// A simulator serving in the background.
///
/// Await it (or call [`RunningSimulator::run_until_stopped`]) to serve until it
/// stops: after [`RunningSimulator::stop`], through its
/// [`handle`](RunningSimulator::handle), or on Ctrl-C / SIGTERM (actix's own
/// signal handling). Dropping it leaves the server running.
#[derive(Debug)]
pub struct RunningSimulator {
    local_addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl RunningSimulator {
    /// The bound address (the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL to give an `http` upstream, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// A handle that can stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops gracefully (in-flight requests get up to one second) and waits for the end.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        // The server has stopped; how its task ended does not matter any more.
        let _ = self.task.await;
    }

    /// Serves until the server is stopped.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)?
    }
}

impl IntoFuture for RunningSimulator {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run_until_stopped())
    }
}

/// Generates the dataset and starts serving it in the background. Must run
/// inside a Tokio runtime.
pub async fn start(options: SimulatorOptions) -> io::Result<RunningSimulator> {
    options
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dataset = Arc::new(Dataset::generate(options.seed, options.records));
    start_with_dataset(options, dataset).await
}

/// Serves an existing dataset (`options.seed` still seeds the failure draws;
/// `options.records` is not used).
pub async fn start_with_dataset(
    options: SimulatorOptions,
    dataset: Arc<Dataset>,
) -> io::Result<RunningSimulator> {
    options
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let records = dataset.len();
    let state = web::Data::new(State {
        dataset,
        latency: Duration::from_millis(options.latency_ms),
        fail_rate: options.fail_rate,
        seed: options.seed,
        requests: AtomicU64::new(0),
    });
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        .shutdown_timeout(1)
        .bind(options.listen)?;
    let local_addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("the simulator did not bind any address"))?;
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(%local_addr, records, latency_ms = options.latency_ms, fail_rate = options.fail_rate, "CAF simulator listening");
    Ok(RunningSimulator {
        local_addr,
        handle,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn options(fail_rate: f64) -> SimulatorOptions {
        SimulatorOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            seed: 7,
            records: 20,
            latency_ms: 0,
            fail_rate,
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn the_simulator_serves_dossiers_searches_and_stats_over_http() {
        let sim = start(options(0.0)).await.unwrap();
        let base = sim.url();
        let http = client();

        let (status, body) = status_and_json(
            http.get(format!("{base}/dossiers/1000002"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["numero_allocataire"], "1000002");
        assert_eq!(body["statut_dossier"], "radie");

        let (status, body) = status_and_json(
            http.get(format!("{base}/dossiers/9999999"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, body), (404, json!({"error": "not_found"})));

        let search = |nir: &str| {
            http.post(format!("{base}/dossiers/recherche"))
                .json(&json!({ "nir": nir }))
                .send()
        };
        let (status, body) = status_and_json(search("253072A07300443").await.unwrap()).await;
        assert_eq!(
            (status, body["numero_allocataire"].clone()),
            (200, json!("1000003"))
        );
        let (status, body) = status_and_json(search("295109912611194").await.unwrap()).await;
        assert_eq!((status, body), (404, json!({"error": "not_found"})));

        let bad = http
            .post(format!("{base}/dossiers/recherche"))
            .header("content-type", "application/json")
            .body("{\"nir\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 400);

        let (status, body) =
            status_and_json(http.get(format!("{base}/_sim/stats")).send().await.unwrap()).await;
        assert_eq!((status, body), (200, json!({"requests_total": 5})));
        sim.stop().await;
    }

    #[tokio::test]
    async fn a_fail_rate_of_one_answers_every_dossier_request_with_503() {
        let sim = start(options(1.0)).await.unwrap();
        let base = sim.url();
        let http = client();
        for _ in 0..3 {
            let (status, body) = status_and_json(
                http.get(format!("{base}/dossiers/1000001"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!((status, body), (503, json!({"error": "unavailable"})));
        }
        let post = http
            .post(format!("{base}/dossiers/recherche"))
            .json(&json!({"nir": "180057512345627"}))
            .send();
        assert_eq!(post.await.unwrap().status().as_u16(), 503);
        let (status, body) =
            status_and_json(http.get(format!("{base}/_sim/stats")).send().await.unwrap()).await;
        assert_eq!((status, body), (200, json!({"requests_total": 4})));
        sim.stop().await;
    }

    #[tokio::test]
    async fn failures_are_drawn_the_same_way_on_every_run_for_a_seed() {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let sim = start(options(0.5)).await.unwrap();
            let http = client();
            let mut statuses = Vec::new();
            for _ in 0..24 {
                statuses.push(
                    http.get(format!("{}/dossiers/1000001", sim.url()))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16(),
                );
            }
            sim.stop().await;
            runs.push(statuses);
        }
        assert_eq!(runs[0], runs[1]);
        assert!(
            runs[0].contains(&200) && runs[0].contains(&503),
            "{:?}",
            runs[0]
        );
    }

    #[tokio::test]
    async fn latency_delays_each_dossier_answer() {
        let sim = start(SimulatorOptions {
            latency_ms: 60,
            ..options(0.0)
        })
        .await
        .unwrap();
        let http = client();
        let started = std::time::Instant::now();
        let response = http
            .get(format!("{}/dossiers/1000004", sim.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(started.elapsed() >= Duration::from_millis(60));
        sim.stop().await;
    }

    #[tokio::test]
    async fn a_fail_rate_outside_zero_to_one_is_refused_with_a_clear_error() {
        for rate in [1.5, -0.1, f64::NAN, f64::INFINITY] {
            let error = start(options(rate))
                .await
                .err()
                .map(|e| (e.kind(), e.to_string()));
            let (kind, message) = error.unwrap();
            assert_eq!(kind, io::ErrorKind::InvalidInput);
            assert!(message.contains("between 0 and 1"), "{message}");
        }
        assert!(options(0.0).validate().is_ok() && options(1.0).validate().is_ok());
    }
}
