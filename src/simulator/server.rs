//! The standalone CAF simulator: the CAF protocol (README, "The CAF connector")
//! over HTTP or HTTPS (optionally requiring a client certificate from a given
//! CA, as the real CAF does), with injectable latency and failures for fault
//! tests, requests a test can hold and release, and a `kill` that returns once
//! the CAF is really gone.
//!
//! It never logs a NIR or a dossier number: no request logger is installed and
//! handlers log nothing about the dossier asked for.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::watch;

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
    /// PEM chain (leaf first) of the server certificate; with `tls_key_file`,
    /// the simulator speaks HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the server certificate.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, every client must present a certificate
    /// issued by one of them (mutual TLS), or the handshake fails.
    pub client_ca_file: Option<PathBuf>,
}

/// Why the simulator's options were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulatorError {
    #[error("fail rate must be a fraction of requests between 0 and 1 (e.g. 0.1), got {0}")]
    FailRate(f64),
    #[error(
        "a TLS certificate and its key go together: give both --tls-cert and --tls-key, or neither"
    )]
    TlsPair,
    #[error(
        "--client-ca checks client certificates, which needs TLS: give --tls-cert and --tls-key too"
    )]
    ClientCaWithoutTls,
}

impl SimulatorOptions {
    /// Plain HTTP on `listen` with the default dataset, no latency and no failures.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            seed: Dataset::DEFAULT_SEED,
            records: Dataset::DEFAULT_RECORDS,
            latency_ms: 0,
            fail_rate: 0.0,
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
        }
    }

    pub fn validate(&self) -> Result<(), SimulatorError> {
        if !(self.fail_rate.is_finite() && (0.0..=1.0).contains(&self.fail_rate)) {
            return Err(SimulatorError::FailRate(self.fail_rate));
        }
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            _ => return Err(SimulatorError::TlsPair),
        };
        if self.client_ca_file.is_some() && !tls {
            return Err(SimulatorError::ClientCaWithoutTls);
        }
        Ok(())
    }
}

/// Shared by every worker: built once, outside the server factory.
struct State {
    dataset: Arc<Dataset>,
    latency: Duration,
    /// The fail rate's `f64` bits, so that a test can change it while serving.
    fail_rate_bits: AtomicU64,
    seed: u64,
    requests: AtomicU64,
    /// Dossier requests being answered, held ones included; a test may wait
    /// on it (see [`RunningSimulator::in_flight_reaches`]).
    in_flight: watch::Sender<u64>,
    max_in_flight: AtomicU64,
    /// While `true`, each dossier request, once counted, waits until it turns
    /// `false` (see [`RunningSimulator::hold`]).
    held: watch::Sender<bool>,
}

/// Counts a dossier request as in flight until dropped.
struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

/// Counts a worker thread of the server until the thread ends, after its
/// runtime, and with it every connection the worker held, is dropped.
struct LiveWorker(Arc<watch::Sender<u64>>);

impl LiveWorker {
    /// Called on the worker's thread as it builds its application: the first
    /// call on a thread registers it.
    fn register(live: &Arc<watch::Sender<u64>>) {
        WORKER.with(|worker| {
            let mut worker = worker.borrow_mut();
            if worker.is_none() {
                live.send_modify(|n| *n += 1);
                *worker = Some(LiveWorker(live.clone()));
            }
        });
    }
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

thread_local! {
    /// The worker this thread is, dropped when the thread ends.
    static WORKER: std::cell::RefCell<Option<LiveWorker>> = const { std::cell::RefCell::new(None) };
}

impl State {
    /// Counts a dossier request, waits while requests are held, applies the
    /// latency and, for the drawn fraction of requests, answers `503` instead
    /// of the dossier. The draw depends only on the seed and the request's
    /// rank, so a sequential client sees the same failures on every run.
    async fn admit(&self) -> (InFlight<'_>, Option<HttpResponse>) {
        let rank = self.requests.fetch_add(1, Ordering::Relaxed);
        let mut now_in_flight = 0;
        self.in_flight.send_modify(|n| {
            *n += 1;
            now_in_flight = *n;
        });
        self.max_in_flight
            .fetch_max(now_in_flight, Ordering::Relaxed);
        let guard = InFlight(self);
        // The sender lives in `self`: waiting cannot fail for want of it.
        let _ = self.held.subscribe().wait_for(|held| !held).await;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let fail_rate = f64::from_bits(self.fail_rate_bits.load(Ordering::Relaxed));
        let draw = (mix(self.seed ^ mix(rank)) >> 11) as f64 / (1u64 << 53) as f64;
        let refusal =
            (draw < fail_rate).then(|| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        (guard, refusal)
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
    let (_in_flight, refusal) = state.admit().await;
    if let Some(refusal) = refusal {
        return refusal;
    }
    dossier_or_not_found(state.dataset.json_by_numero(&numero))
}

#[derive(serde::Deserialize)]
struct Recherche {
    nir: String,
}

async fn search_dossier(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let (_in_flight, refusal) = state.admit().await;
    if let Some(refusal) = refusal {
        return refusal;
    }
    match serde_json::from_slice::<Recherche>(&body) {
        Ok(query) => dossier_or_not_found(state.dataset.json_by_nir(&query.nir)),
        Err(_) => error(StatusCode::BAD_REQUEST, "bad_request"),
    }
}

async fn stats(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "requests_total": state.requests.load(Ordering::Relaxed),
        "max_in_flight": state.max_in_flight.load(Ordering::Relaxed),
    }))
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
pub struct RunningSimulator {
    local_addr: SocketAddr,
    scheme: &'static str,
    handle: ServerHandle,
    state: web::Data<State>,
    /// Worker threads not yet ended.
    live_workers: Arc<watch::Sender<u64>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl fmt::Debug for RunningSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningSimulator")
            .field("local_addr", &self.local_addr)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl RunningSimulator {
    /// The bound address (the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL to give an `http` upstream, e.g. `https://127.0.0.1:40123`
    /// (`http://` when the simulator runs without TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// Changes the fraction of dossier requests answered `503`, while serving
    /// (a fault test's switch between a failing and a recovered CAF).
    pub fn set_fail_rate(&self, fail_rate: f64) -> Result<(), SimulatorError> {
        if !(fail_rate.is_finite() && (0.0..=1.0).contains(&fail_rate)) {
            return Err(SimulatorError::FailRate(fail_rate));
        }
        self.state
            .fail_rate_bits
            .store(fail_rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Dossier requests received so far (what `GET /_sim/stats` reports).
    pub fn requests_total(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// From now on, holds every dossier request, once counted, unanswered
    /// until [`release`](Self::release) (or the end of the server): a fault
    /// test's CAF that never answers, or calls made to overlap for certain.
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// Lets held dossier requests, and those to come, be answered.
    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Returns once `n` dossier requests are in flight at the same time, held
    /// ones included.
    pub async fn in_flight_reaches(&self, n: u64) {
        // The sender lives in `self.state`: waiting cannot fail for want of it.
        let _ = self.state.in_flight.subscribe().wait_for(|c| *c >= n).await;
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

    /// Stops at once, dropping open connections and in-flight requests, as a
    /// crashed CAF would, and returns once the CAF is gone: the listening
    /// socket closed (a new connection is refused) and every worker thread
    /// ended, its connections closed. A worker still alive after
    /// [`KILL_WAIT`] is left behind with a warning.
    pub async fn kill(self) {
        // Returns once the accepting thread, which owns the listening socket, has ended.
        self.handle.stop(false).await;
        // The server has stopped; how its task ended does not matter any more.
        let _ = self.task.await;
        // A forced stop does not wait for the workers: each drops its
        // connections when its thread's runtime ends, just before the thread.
        let mut live = self.live_workers.subscribe();
        let ended = tokio::time::timeout(KILL_WAIT, live.wait_for(|n| *n == 0))
            .await
            .is_ok();
        if !ended {
            tracing::warn!(
                workers = *live.borrow(),
                "workers of the killed CAF simulator are still running"
            );
        }
    }

    /// Serves until the server is stopped.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)?
    }
}

/// How long [`RunningSimulator::kill`] waits for the workers to end; they do
/// so within milliseconds.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

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
    let tls = server_tls(&options)?;
    let records = dataset.len();
    let state = web::Data::new(State {
        dataset,
        latency: Duration::from_millis(options.latency_ms),
        fail_rate_bits: AtomicU64::new(options.fail_rate.to_bits()),
        seed: options.seed,
        requests: AtomicU64::new(0),
        in_flight: watch::Sender::new(0),
        max_in_flight: AtomicU64::new(0),
        held: watch::Sender::new(false),
    });
    let shared = state.clone();
    let live_workers = Arc::new(watch::Sender::new(0));
    let live = live_workers.clone();
    // The factory runs on each worker's thread.
    let server = HttpServer::new(move || {
        LiveWorker::register(&live);
        App::new().app_data(shared.clone()).configure(routes)
    })
    .shutdown_timeout(1)
    // Without it, small HTTP/2 answers wait out the peer's delayed ACK (~40 ms).
    .tcp_nodelay(true);
    let (server, scheme) = match tls {
        Some(tls) => (server.bind_rustls_0_23(options.listen, tls)?, "https"),
        None => (server.bind(options.listen)?, "http"),
    };
    let local_addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("the simulator did not bind any address"))?;
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(
        %local_addr,
        scheme,
        client_certificates = options.client_ca_file.is_some(),
        records,
        latency_ms = options.latency_ms,
        fail_rate = options.fail_rate,
        "CAF simulator listening"
    );
    Ok(RunningSimulator {
        local_addr,
        scheme,
        handle,
        state,
        live_workers,
        task,
    })
}

fn invalid_input(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error)
}

/// The server's TLS configuration, if TLS is asked for; with a client CA, a
/// client certificate issued by it is required.
fn server_tls(options: &SimulatorOptions) -> io::Result<Option<rustls::ServerConfig>> {
    let (Some(cert), Some(key)) = (&options.tls_cert_file, &options.tls_key_file) else {
        return Ok(None);
    };
    let Some(client_ca) = &options.client_ca_file else {
        return crate::tls::server_config(cert, key)
            .map(Some)
            .map_err(invalid_input);
    };
    let provider = Arc::new(crate::tls::provider());
    let roots = crate::tls::trust_store(client_ca).map_err(invalid_input)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(invalid_input)?;
    let chain = crate::tls::certificates(cert).map_err(invalid_input)?;
    let key = crate::tls::private_key(key).map_err(invalid_input)?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(invalid_input)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(invalid_input)?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn options(fail_rate: f64) -> SimulatorOptions {
        SimulatorOptions {
            seed: 7,
            records: 20,
            fail_rate,
            ..SimulatorOptions::new(([127, 0, 0, 1], 0).into())
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
        assert_eq!(
            (status, body),
            (200, json!({"requests_total": 5, "max_in_flight": 1}))
        );
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
        assert_eq!((status, body["requests_total"].clone()), (200, json!(4)));
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
    #[test]
    fn tls_files_come_in_pairs_and_a_client_ca_needs_tls() {
        let cert_only = SimulatorOptions {
            tls_cert_file: Some("certs-dev/server.pem".into()),
            ..options(0.0)
        };
        assert_eq!(cert_only.validate(), Err(SimulatorError::TlsPair));
        let ca_only = SimulatorOptions {
            client_ca_file: Some("certs-dev/ca.pem".into()),
            ..options(0.0)
        };
        assert_eq!(ca_only.validate(), Err(SimulatorError::ClientCaWithoutTls));
        let full = SimulatorOptions {
            tls_cert_file: Some("certs-dev/server.pem".into()),
            tls_key_file: Some("certs-dev/server.key.pem".into()),
            client_ca_file: Some("certs-dev/ca.pem".into()),
            ..options(0.0)
        };
        assert_eq!(full.validate(), Ok(()));
    }

    #[tokio::test]
    async fn an_unreadable_client_ca_is_refused_before_listening() {
        let error = start(SimulatorOptions {
            tls_cert_file: Some("certs-dev/server.pem".into()),
            tls_key_file: Some("certs-dev/server.key.pem".into()),
            client_ca_file: Some("certs-dev/no-such-ca.pem".into()),
            ..options(0.0)
        })
        .await
        .err()
        .map(|e| (e.kind(), e.to_string()));
        let (kind, message) = error.unwrap();
        assert_eq!(kind, io::ErrorKind::InvalidInput);
        assert!(message.contains("certs-dev/no-such-ca.pem"), "{message}");
    }

    // Two runtime threads: the test's blocking socket calls must not stall the
    // server's own task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_killed_the_simulator_has_closed_every_connection_and_refuses_new_ones() {
        use std::io::{Read, Write};
        use std::net::TcpStream;

        let sim = start(options(0.0)).await.unwrap();
        let addr = sim.local_addr();
        // An idle keep-alive connection, and one whose request is held unanswered.
        let idle = TcpStream::connect(addr).unwrap();
        (&idle)
            .write_all(b"GET /_sim/stats HTTP/1.1\r\nhost: sim\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 512];
        let read = (&idle).read(&mut answer).unwrap();
        assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
        sim.hold();
        let busy = TcpStream::connect(addr).unwrap();
        (&busy)
            .write_all(b"GET /dossiers/1000001 HTTP/1.1\r\nhost: sim\r\n\r\n")
            .unwrap();
        sim.in_flight_reaches(1).await;

        sim.kill().await;
        for (name, stream) in [("idle", &idle), ("busy", &busy)] {
            // Not waiting: an open connection has nothing to read yet.
            stream.set_nonblocking(true).unwrap();
            let mut rest = [0u8; 512];
            match (&*stream).read(&mut rest) {
                Ok(0) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                other => panic!("the {name} connection is still open: {other:?}"),
            }
        }
        let refused = TcpStream::connect(addr).map(drop).map_err(|e| e.kind());
        assert_eq!(refused, Err(io::ErrorKind::ConnectionRefused));
    }

    #[tokio::test]
    async fn the_fail_rate_can_be_switched_while_serving() {
        let sim = start(options(1.0)).await.unwrap();
        let http = client();
        let url = format!("{}/dossiers/1000001", sim.url());
        assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 503);
        sim.set_fail_rate(0.0).unwrap();
        assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 200);
        assert_eq!(sim.set_fail_rate(2.0), Err(SimulatorError::FailRate(2.0)));
        assert_eq!(sim.requests_total(), 2);
        sim.kill().await;
    }
}
