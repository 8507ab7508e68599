//! The pipeline built as `serve` builds it, on an audit disk a test controls:
//! an `fdatasync` that fails, or one that hangs.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Components;
use crate::audit::AuditLog;
use crate::auth::{DevClaims, mint_dev_token};
use crate::broker::{Broker, Request, Stages};
use crate::cache::RecordCache;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::{CaseReference, Lookup, NumeroAllocataire, Purpose};
use crate::error::BrokerError;
use crate::policy::DriftTracker;
use crate::quota::ErrorBudget;

/// The shipped settings, with an audit directory of the test's own.
fn settings(name: &str) -> Settings {
    let dir =
        std::env::temp_dir().join(format!("caf-broker-startup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let env = [
        ("CAF_BROKER__AUDIT__DIR", dir.display().to_string()),
        ("CAF_BROKER__UPSTREAM__RECORDS", "50".to_owned()),
        ("CAF_BROKER__POLICY__WATCH", "false".to_owned()),
        ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\"".to_owned()),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Its relative paths are the repository's: tests run from its root.
    Settings::load_with_env(
        &root.join("config/broker.toml"),
        env.map(|(k, v)| (k.to_owned(), v)),
    )
    .expect("the shipped settings load")
}

/// The broker `Application::build` would build, with the audit log given.
async fn broker(settings: &Settings, audit: AuditLog) -> Broker {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let components = match Components::build(settings, clock.clone()).await {
        Ok(components) => components,
        Err(problems) => panic!("the shipped settings build: {problems}"),
    };
    Broker::new(Stages {
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
    })
}

/// An agent's request for a dossier the embedded CAF has, for a purpose its role may declare.
async fn ask(broker: &Broker, settings: &Settings) -> Result<u16, BrokerError> {
    let token = mint_dev_token(
        &settings.auth,
        DevClaims {
            sub: "agent-42".into(),
            post: "TN-TUNIS".into(),
            role: "agent_consulaire".into(),
            ttl_secs: 600,
        },
    )
    .expect("a dev token");
    let request = Request {
        request_id: uuid::Uuid::new_v4(),
        bearer_token: Some(&token),
        client_certificate: None,
        purpose: Purpose::parse("verification_radiation")
            .map_err(|e| BrokerError::InvalidRequest(e.to_string())),
        case_reference: CaseReference::parse("TN-2026/0042")
            .map_err(|e| BrokerError::InvalidRequest(e.to_string())),
        lookup: std::future::ready(Ok(Lookup::Numero(
            NumeroAllocataire::parse("1000002").expect("a numéro"),
        ))),
        fresh: false,
    };
    broker.serve(request).await.result.map(|_| 200)
}

fn failing_fdatasync(_: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::other("injected fdatasync failure"))
}

#[tokio::test]
async fn a_request_whose_audit_record_cannot_be_synced_is_refused_503_and_releases_nothing() {
    let settings = settings("sync-fails");
    let audit = AuditLog::open_with_sync(&settings.audit, Arc::new(SystemClock), failing_fdatasync)
        .expect("the audit log opens");
    let broker = broker(&settings, audit).await;
    match ask(&broker, &settings).await {
        Err(error @ BrokerError::AuditUnavailable(_)) => {
            assert_eq!((error.status(), error.code()), (503, "audit-unavailable"));
        }
        other => panic!("a record that is not durable must not be answered: {other:?}"),
    }
    assert!(!broker.readiness().audit_writable);
    let _ = std::fs::remove_dir_all(&settings.audit.dir);
}

#[tokio::test]
async fn the_same_request_on_a_disk_that_syncs_is_answered_200() {
    // The control of the test above: only the injected fdatasync differs.
    let settings = settings("sync-works");
    let audit = AuditLog::open_with_sync(
        &settings.audit,
        Arc::new(SystemClock),
        |file: &std::fs::File| file.sync_data(),
    )
    .expect("the audit log opens");
    let broker = broker(&settings, audit).await;
    assert_eq!(ask(&broker, &settings).await.ok(), Some(200));
    let _ = std::fs::remove_dir_all(&settings.audit.dir);
}

/// A disk whose `fdatasync` does not return until the test lets it.
static HUNG: (Mutex<bool>, Condvar) = (Mutex::new(true), Condvar::new());

fn hung_fdatasync(file: &std::fs::File) -> std::io::Result<()> {
    let (held, changed) = &HUNG;
    let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
    while *held {
        held = changed.wait(held).unwrap_or_else(|e| e.into_inner());
    }
    file.sync_data()
}

fn release_hung_disk() {
    let (held, changed) = &HUNG;
    *held.lock().unwrap_or_else(|e| e.into_inner()) = false;
    changed.notify_all();
}

#[tokio::test]
async fn a_request_whose_audit_record_is_not_confirmed_in_time_is_refused_503() {
    let settings = settings("sync-hangs");
    let audit = AuditLog::open_with_sync(&settings.audit, Arc::new(SystemClock), hung_fdatasync)
        .expect("the audit log opens");
    // The production wait is 5 s; the mechanism is the same with 50 ms.
    let broker = broker(&settings, audit)
        .await
        .with_audit_timeout(Duration::from_millis(50));
    let answer = tokio::time::timeout(Duration::from_secs(60), ask(&broker, &settings)).await;
    // Let the writer finish before anything is dropped: dropping the log joins it.
    release_hung_disk();
    match answer {
        Ok(Err(error @ BrokerError::AuditUnavailable(_))) => {
            assert_eq!((error.status(), error.code()), (503, "audit-unavailable"));
        }
        Ok(other) => panic!("a record not confirmed in time must not be answered: {other:?}"),
        Err(_) => panic!("the request waited for the hung disk instead of timing out"),
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&settings.audit.dir);
}

#[tokio::test]
async fn a_request_waits_five_seconds_for_its_audit_record() {
    let settings = settings("timeout-default");
    let audit = AuditLog::open(&settings.audit).expect("the audit log opens");
    let broker = broker(&settings, audit).await;
    assert_eq!(broker.audit_timeout(), Duration::from_secs(5));
    drop(broker);
    let _ = std::fs::remove_dir_all(&settings.audit.dir);
}
