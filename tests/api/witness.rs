//! The witnesses: signed checkpoints copied to a directory and POSTed to an HTTPS stub while requests run; an unwritable directory never fails a request and is counted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use caf_broker::audit::{CheckpointVerifier, verify_signed};
use caf_broker::clock::SystemClock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::helpers::{fresh_dir, repo, spawn_app_with, spawn_stoppable_app};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

/// The checkpoint files of a witness directory, oldest (smallest tree) first.
fn witnessed(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "checkpoint"));
    files.sort();
    files
}

/// Polls `condition` every 20 ms for at most ten seconds: the witness
/// writes on a thread of its own.
async fn eventually(mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_witness_directory_receives_signed_checkpoints_while_requests_run() {
    let witness = fresh_dir("witness");
    let stoppable = spawn_stoppable_app(
        &[
            ("CAF_BROKER__AUDIT__WITNESS_DIR", witness.to_str().unwrap()),
            ("CAF_BROKER__AUDIT__REPLICA_ID", "paris-1"),
            ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "4"),
        ],
        Arc::new(SystemClock),
    )
    .await;
    let app = &stoppable.app;
    let token = app.token(AGENT);
    for round in 0..5 {
        let answers = futures_util::future::join_all(
            (0..4).map(|_| app.get_dossier("1000002", &token, RADIATION)),
        )
        .await;
        assert!(answers.iter().all(|r| r.status() == 200), "round {round}");
    }
    // While the broker runs, checkpoints reach the witness.
    assert!(
        eventually(async || !witnessed(&witness).is_empty()).await,
        "no checkpoint reached the witness"
    );
    let audit_dir = app.audit_dir.clone();
    stoppable.stop().await;

    let files = witnessed(&witness);
    let newest = files.last().unwrap();
    let name = newest.file_name().unwrap().to_str().unwrap();
    assert_eq!(name, "paris-1-00000000000000000020.checkpoint", "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| !f.file_name().unwrap().to_str().unwrap().starts_with('.')),
        "a temporary file stayed: {files:?}"
    );
    // Each is a note of `checkpoints.log`, and the newest checks the whole log
    // with the public key only.
    let log = std::fs::read_to_string(audit_dir.join("checkpoints.log")).unwrap();
    for file in &files {
        let note = std::fs::read_to_string(file).unwrap();
        assert!(
            log.contains(&note),
            "{} is not in checkpoints.log",
            file.display()
        );
    }
    let verifier = CheckpointVerifier::from_file(
        &repo("certs-dev/audit-checkpoint.pub.pem"),
        Some("caf-broker.localhost/dev"),
    )
    .unwrap();
    let report = verify_signed(&audit_dir, &verifier, Some(&std::fs::read(newest).unwrap()))
        .expect("the log verifies against the witness's checkpoint");
    assert_eq!(report.tree_size, 20);
}

#[tokio::test]
async fn an_unwritable_witness_directory_fails_no_request_and_is_counted() {
    // Under a regular file, no directory can be created, whoever runs the test.
    let blocker = fresh_dir("witness-blocked").join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let witness = blocker.join("witness");
    let app = spawn_app_with(&[
        ("CAF_BROKER__AUDIT__WITNESS_DIR", witness.to_str().unwrap()),
        ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "1"),
    ])
    .await;
    let failures = "caf_broker_audit_witness_failures_total";
    let before = app.counter(failures).await;
    let token = app.token(AGENT);
    for _ in 0..6 {
        assert_eq!(
            app.get_dossier("1000002", &token, RADIATION).await.status(),
            200
        );
    }
    assert!(
        eventually(async || app.counter(failures).await > before).await,
        "no witness failure counted:\n{}",
        app.metrics().await
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("caf_broker_audit_witness_lag_seconds "),
        "the lag is not exported:\n{metrics}"
    );
    // The records and their checkpoints are on the broker's own disk all the same.
    assert!(app.audit_dir.join("checkpoints.log").exists());
}

/// A witness over HTTPS (the development server certificate): it refuses the
/// first POST with 503, then keeps every body it accepts.
#[derive(Default)]
struct StubWitness {
    posts: Mutex<u32>,
    accepted: Mutex<Vec<Vec<u8>>>,
}

async fn add_checkpoint(body: web::Bytes, state: web::Data<StubWitness>) -> HttpResponse {
    let first = {
        let mut posts = state.posts.lock().unwrap();
        *posts += 1;
        *posts == 1
    };
    if first {
        return HttpResponse::ServiceUnavailable().finish();
    }
    state.accepted.lock().unwrap().push(body.to_vec());
    HttpResponse::Ok().finish()
}

fn server_tls() -> rustls::ServerConfig {
    let chain = CertificateDer::pem_file_iter(repo("certs-dev/server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(repo("certs-dev/server.key.pem")).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(caf_broker::tls::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}

#[tokio::test]
async fn a_witness_url_receives_each_checkpoint_over_https_after_a_refused_try() {
    let state = web::Data::new(StubWitness::default());
    let shared = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/add-checkpoint", web::post().to(add_checkpoint))
    })
    .workers(1)
    .shutdown_timeout(0)
    .bind_rustls_0_23(("127.0.0.1", 0), server_tls())
    .expect("the stub witness binds");
    let url = format!(
        "https://localhost:{}/add-checkpoint",
        server.addrs()[0].port()
    );
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);

    let ca = repo("certs-dev/ca.pem").display().to_string();
    let stoppable = spawn_stoppable_app(
        &[
            ("CAF_BROKER__AUDIT__WITNESS_URL", url.as_str()),
            ("CAF_BROKER__AUDIT__WITNESS_CA_FILE", ca.as_str()),
            ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "3"),
        ],
        Arc::new(SystemClock),
    )
    .await;
    let app = &stoppable.app;
    let token = app.token(AGENT);
    for _ in 0..9 {
        assert_eq!(
            app.get_dossier("1000002", &token, RADIATION).await.status(),
            200
        );
    }
    let audit_dir = app.audit_dir.clone();
    // The witness is fed off the request path: wait (bounded) until it holds
    // the checkpoint of all 9 records before stopping either side.
    let log_file = audit_dir.join("checkpoints.log");
    assert!(
        eventually(async || {
            let log = std::fs::read(&log_file).unwrap_or_default();
            let accepted = state.accepted.lock().unwrap();
            accepted.last().is_some_and(|newest| {
                newest.starts_with(b"caf-broker.localhost/dev/") && {
                    let text = String::from_utf8_lossy(newest);
                    text.lines().nth(1) == Some("9")
                        && log.ends_with(&[newest.as_slice(), b"\n"].concat())
                }
            })
        })
        .await,
        "the witness never received the checkpoint of size 9 (posts: {})",
        state.posts.lock().unwrap()
    );
    stoppable.stop().await;
    handle.stop(false).await;

    // The refused POST was tried again; the witness holds the newest
    // checkpoint, which checks the whole log with the public key only.
    assert!(*state.posts.lock().unwrap() >= 2);
    let accepted = state.accepted.lock().unwrap().clone();
    let newest = accepted.last().expect("no checkpoint reached the witness");
    let log = std::fs::read(audit_dir.join("checkpoints.log")).unwrap();
    assert!(
        log.ends_with(&[newest.as_slice(), b"\n"].concat()),
        "not the newest note"
    );
    let verifier = CheckpointVerifier::from_file(
        &repo("certs-dev/audit-checkpoint.pub.pem"),
        Some("caf-broker.localhost/dev"),
    )
    .unwrap();
    let report = verify_signed(&audit_dir, &verifier, Some(newest)).expect("the log verifies");
    assert_eq!(report.tree_size, 9);
}
