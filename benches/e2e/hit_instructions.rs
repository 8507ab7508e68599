//! Cache hits through the whole pipeline, in process: the fixed workload that `benches/e2e/callgrind.sh` counts instructions of.
//!
//! `hit_instructions REQUESTS` builds the broker as `serve` does (the shipped
//! config/broker.toml, the embedded CAF, the audit log on disk under a
//! temporary directory), warms the cache with one request, then sends
//! REQUESTS cache hits for one dossier, one after the other, through
//! `Broker::serve`, each waiting for its audit record to be durable. Every
//! answer must be released, else it exits non-zero. It runs on one thread
//! (a current-thread runtime; the audit writer keeps its own thread), so that
//! the count of instructions per request changes only when the code does.

use std::path::Path;
use std::sync::Arc;

use caf_broker::audit::AuditLog;
use caf_broker::auth::{DevClaims, mint_dev_token};
use caf_broker::broker::{Broker, Request, Stages};
use caf_broker::cache::RecordCache;
use caf_broker::clock::{Clock, SystemClock};
use caf_broker::config::Settings;
use caf_broker::domain::{CaseReference, Lookup, NumeroAllocataire, Purpose};
use caf_broker::error::BrokerError;
use caf_broker::policy::DriftTracker;
use caf_broker::quota::ErrorBudget;
use caf_broker::startup::Components;

fn main() -> std::process::ExitCode {
    let requests: u64 = match std::env::args().nth(1).map(|n| n.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: hit_instructions REQUESTS");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(requests)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(requests: u64) -> Result<(), String> {
    let audit_dir = std::env::temp_dir().join(format!("caf-broker-hits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&audit_dir);
    let outcome = serve_hits(&audit_dir, requests).await;
    let _ = std::fs::remove_dir_all(&audit_dir);
    outcome
}

async fn serve_hits(audit_dir: &Path, requests: u64) -> Result<(), String> {
    // The shipped settings' relative paths are the repository's.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).map_err(|e| e.to_string())?;
    let env = [
        ("CAF_BROKER__AUDIT__DIR", audit_dir.display().to_string()),
        ("CAF_BROKER__POLICY__WATCH", "false".to_owned()),
        // A hit does not depend on the size of the embedded CAF; start-up does.
        ("CAF_BROKER__UPSTREAM__RECORDS", "50".to_owned()),
        ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\"".to_owned()),
        // Quotas out of the way: every request is a hit, none a 429.
        (
            "CAF_BROKER__QUOTAS__DEFAULT__PER_SECOND",
            "1000000".to_owned(),
        ),
        ("CAF_BROKER__QUOTAS__DEFAULT__BURST", "1000000".to_owned()),
        (
            "CAF_BROKER__QUOTAS__DEFAULT__PER_DAY",
            "100000000".to_owned(),
        ),
        (
            "CAF_BROKER__QUOTAS__AGENT_DEFAULT__PER_SECOND",
            "1000000".to_owned(),
        ),
        (
            "CAF_BROKER__QUOTAS__AGENT_DEFAULT__BURST",
            "1000000".to_owned(),
        ),
        (
            "CAF_BROKER__QUOTAS__AGENT_DEFAULT__PER_DAY",
            "100000000".to_owned(),
        ),
    ];
    let settings = Settings::load_with_env(
        &root.join("config/broker.toml"),
        env.map(|(k, v)| (k.to_owned(), v)),
    )
    .map_err(|e| e.to_string())?;
    let broker = broker(&settings).await?;
    let token = mint_dev_token(
        &settings.auth,
        DevClaims {
            sub: "bench-agent".into(),
            post: "TN-TUNIS".into(),
            role: "agent_consulaire".into(),
            ttl_secs: 3600,
        },
    )
    .map_err(|e| e.to_string())?;
    // The first request fills the cache; the REQUESTS after it are hits.
    for _ in 0..=requests {
        let answer = broker.serve(request(&token)).await;
        if let Err(e) = answer.result {
            return Err(format!("a request was not released: {e}"));
        }
    }
    Ok(())
}

/// The broker `Application::build` builds, without the HTTP edge.
async fn broker(settings: &Settings) -> Result<Broker, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let components = Components::build(settings, clock.clone())
        .await
        .map_err(|e| e.to_string())?;
    let audit =
        AuditLog::open_with_clock(&settings.audit, clock.clone()).map_err(|e| e.to_string())?;
    Ok(Broker::new(Stages {
        authenticator: components.authenticator,
        policy: Arc::new(components.policy),
        shadow: components.shadow,
        drift: DriftTracker::default(),
        quota: components.quota,
        cache: RecordCache::with_clock(&settings.cache, clock.clone()),
        upstream: components.upstream,
        audit: Arc::new(audit),
        error_budget: ErrorBudget::new(settings.quotas.agent_error_budget, clock),
        alerts: components.alerts,
        client_post_from: settings.server.client_post_from(),
    }))
}

/// An agent's request for a dossier the embedded CAF has, for a purpose its role may declare.
fn request(token: &str) -> Request<'_, std::future::Ready<Result<Lookup, BrokerError>>> {
    Request {
        request_id: uuid::Uuid::new_v4(),
        bearer_token: Some(token),
        client_certificate: None,
        purpose: Purpose::parse("verification_radiation")
            .map_err(|e| BrokerError::InvalidRequest(e.to_string())),
        case_reference: CaseReference::parse("BENCH-1")
            .map_err(|e| BrokerError::InvalidRequest(e.to_string())),
        lookup: std::future::ready(
            NumeroAllocataire::parse("1000002")
                .map(Lookup::Numero)
                .map_err(|e| BrokerError::InvalidRequest(e.to_string())),
        ),
        fresh: false,
    }
}
