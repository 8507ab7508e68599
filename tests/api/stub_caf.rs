//! A CAF stand-in over HTTPS that requires the broker's client certificate,
//! answers each path from a script and counts the requests each path received;
//! and a broker in front of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use caf_broker::clock::{Clock, SystemClock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::helpers::{TestApp, repo, spawn_app_with_clock};

/// One scripted answer of the stub CAF.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200` with this JSON body.
    Json(Value),
    /// This status, with an empty body.
    Status(u16),
    /// `200` with this body as it is (text that is no record).
    Text(&'static str),
}

impl From<Value> for Reply {
    fn from(record: Value) -> Self {
        Reply::Json(record)
    }
}

/// The stub CAF: the scripted answers of a path are served in order, the last
/// one for good; a path without a script is answered `404`.
pub struct StubCaf {
    url: String,
    state: web::Data<Script>,
    handle: ServerHandle,
}

#[derive(Default)]
struct Script {
    /// Path (`/dossiers/1000002`, `/dossiers/recherche`) -> answers still to serve.
    answers: Mutex<HashMap<String, Vec<Reply>>>,
    /// Path -> requests received.
    received: Mutex<HashMap<String, u64>>,
}

impl StubCaf {
    pub async fn start<R: Clone + Into<Reply>>(script: &[(&str, Vec<R>)]) -> StubCaf {
        let state = web::Data::new(Script::default());
        {
            let mut answers = state.answers.lock().unwrap();
            for (path, replies) in script {
                answers.insert(
                    (*path).to_owned(),
                    replies.iter().cloned().map(Into::into).collect(),
                );
            }
        }
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(answer))
        })
        .workers(1)
        .shutdown_timeout(0)
        .bind_rustls_0_23(("127.0.0.1", 0), mutual_tls())
        .expect("the stub CAF binds");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        StubCaf {
            url: format!("https://localhost:{port}"),
            state,
            handle,
        }
    }

    /// Requests received on `path` so far.
    pub fn received(&self, path: &str) -> u64 {
        self.state
            .received
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn answer(req: HttpRequest, state: web::Data<Script>) -> HttpResponse {
    let path = req.path().to_owned();
    *state
        .received
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let mut answers = state.answers.lock().unwrap();
    let next = match answers.get_mut(&path) {
        Some(queue) if queue.len() > 1 => Some(queue.remove(0)),
        Some(queue) => queue.first().cloned(),
        None => None,
    };
    match next {
        Some(Reply::Json(record)) => HttpResponse::Ok().json(record),
        Some(Reply::Status(status)) => {
            HttpResponse::new(StatusCode::from_u16(status).expect("a valid status"))
        }
        Some(Reply::Text(body)) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
        None => HttpResponse::NotFound().json(json!({"error": "not_found"})),
    }
}

/// The development server certificate, and client certificates from the development CA only.
fn mutual_tls() -> rustls::ServerConfig {
    let provider = Arc::new(caf_broker::tls::provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(repo("certs-dev/ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_file_iter(repo("certs-dev/server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(repo("certs-dev/server.key.pem")).unwrap();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap()
}

/// A broker whose CAF is `caf`, without retries, so that each failed lookup is
/// exactly one request to the stub.
pub async fn broker_in_front_of(caf: &StubCaf) -> TestApp {
    broker_in_front_of_with(caf, &[], Arc::new(SystemClock)).await
}

/// As [`broker_in_front_of`], with extra `CAF_BROKER__*` overrides and the broker's clock.
pub async fn broker_in_front_of_with(
    caf: &StubCaf,
    extra: &[(&str, &str)],
    clock: Arc<dyn Clock>,
) -> TestApp {
    let ca = repo("certs-dev/ca.pem").display().to_string();
    let cert = repo("certs-dev/client-broker.pem").display().to_string();
    let key = repo("certs-dev/client-broker.key.pem")
        .display()
        .to_string();
    let mut overrides = vec![
        ("CAF_BROKER__UPSTREAM__KIND", "\"http\""),
        ("CAF_BROKER__UPSTREAM__URL", caf.url.as_str()),
        ("CAF_BROKER__UPSTREAM__CA_FILE", ca.as_str()),
        ("CAF_BROKER__UPSTREAM__CLIENT_CERT_FILE", cert.as_str()),
        ("CAF_BROKER__UPSTREAM__CLIENT_KEY_FILE", key.as_str()),
        ("CAF_BROKER__UPSTREAM__RETRIES", "0"),
    ];
    overrides.extend_from_slice(extra);
    spawn_app_with_clock(&overrides, clock).await
}
