//! The composition root: builds every component once, binds the listener, and
//! runs the HTTP server. Production (`serve`) and tests use the same path.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, web};
use anyhow::Context;

use crate::alerts::{Detector, RedisLink};
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::broker::{Broker, Stages};
use crate::cache::RecordCache;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::policy::{DriftTracker, PolicyStore, ShadowPolicy, WatchGuard};
use crate::quota::ErrorBudget;
use crate::routes::{self, EdgeLimits};
use crate::server::ServerOptions;

pub struct Application {
    server: Server,
    /// Keeps the policy file watcher alive as long as the server.
    _policy_watch: Option<WatchGuard>,
    port: u16,
    scheme: &'static str,
    broker: web::Data<Broker>,
    refusals: RefusalsTicker,
}

/// How often the minutes of refusals past an agent's error budget that have
/// ended are written to the audit log.
const REFUSALS_INTERVAL: Duration = Duration::from_secs(5);

impl Application {
    /// Builds every component from the settings and binds the listener; the
    /// server does not accept requests until [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock every stage reads (tests
    /// freeze the whole broker with one manual clock).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        crate::tls::install_default_provider();
        crate::auth::install_crypto_provider();

        let policy = PolicyStore::load(&settings.policy.file, settings.policy.tests_dir.as_deref())
            .with_context(|| format!("loading the policy {}", settings.policy.file.display()))?;
        let policy = Arc::new(policy);
        let policy_watch = match settings.policy.watch {
            true => Some(policy.watch().context("watching the policy file")?),
            false => None,
        };
        reload_on_sighup(policy.clone())?;
        let shadow = match &settings.policy.shadow_file {
            Some(file) => Some(
                ShadowPolicy::load(file)
                    .with_context(|| format!("loading the shadow policy {}", file.display()))?,
            ),
            None => None,
        };
        let authenticator = Authenticator::connect_with_clock(&settings.auth, clock.clone())
            .await
            .context("loading the token keys")?;
        let error_budget = ErrorBudget::new(settings.quotas.agent_error_budget, clock.clone());
        let alerts = alert_detector(&settings, clock.clone())?;
        let quota = crate::quota::build(&settings.quotas, clock.clone())
            .await
            .context("building the quota stage")?;
        let upstream = settings
            .upstream
            .connect_with_clock(clock.clone())
            .context("building the CAF connector")?;
        let cache = RecordCache::with_clock(&settings.cache, clock.clone());
        let audit =
            AuditLog::open_with_clock(&settings.audit, clock).context("opening the audit log")?;
        // Shared state is built here, once, outside the per-worker factory below.
        let broker = web::Data::new(Broker::new(Stages {
            authenticator,
            policy,
            shadow,
            drift: DriftTracker::default(),
            quota,
            cache,
            upstream,
            audit: Arc::new(audit),
            error_budget,
            alerts,
        }));
        let refusals = RefusalsTicker::spawn(broker.clone(), REFUSALS_INTERVAL);
        let metrics = web::Data::new(
            crate::telemetry::Metrics::install().context("installing the metrics recorder")?,
        );
        let limits = web::Data::new(EdgeLimits {
            max_body_bytes: settings.server.max_body_bytes,
            request_timeout: Duration::from_secs(settings.server.request_timeout_secs),
            max_header_list_bytes: settings.server.max_header_list_bytes,
        });

        let listener = TcpListener::bind(settings.server.listen)
            .with_context(|| format!("binding {}", settings.server.listen))?;
        let port = listener.local_addr()?.port();

        let app_broker = broker.clone();
        let tls = match (
            &settings.server.tls_cert_file,
            &settings.server.tls_key_file,
        ) {
            (Some(cert), Some(key)) if settings.server.tls => {
                Some(crate::tls::server_config(cert, key)?)
            }
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let options = ServerOptions {
            workers: settings.server.workers,
            shutdown_timeout_secs: settings.server.shutdown_timeout_secs,
            request_timeout: Duration::from_secs(settings.server.request_timeout_secs),
            h2_max_concurrent_streams: settings.server.h2_max_concurrent_streams,
            max_header_list_bytes: settings.server.max_header_list_bytes,
            max_connections_per_ip: settings.server.max_connections_per_ip,
            tls,
        };
        let server = crate::server::serve(listener, options, move || {
            App::new()
                .app_data(app_broker.clone())
                .app_data(limits.clone())
                .app_data(metrics.clone())
                .configure(routes::configure)
        })?;
        Ok(Application {
            server,
            _policy_watch: policy_watch,
            port,
            scheme,
            broker,
            refusals,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https` or `http`, as configured.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// A handle to stop the server from elsewhere (tests, signal handlers).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM or a handle), then
    /// writes the summaries of refusals still counting, so that none is lost.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.refusals.stop().await;
        self.broker.record_all_refusals().await;
        served
    }
}

/// The task that writes the ended minutes of refusals every few seconds.
struct RefusalsTicker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RefusalsTicker {
    /// It stops when told to or when the sender is dropped with the application,
    /// never in the middle of writing summaries.
    fn spawn(broker: web::Data<Broker>, every: Duration) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => broker.record_closed_refusals().await,
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The bulk-lookup detector: it judges off-hours in the quota's time zone,
/// and shares its windows through the quota's Redis when that is the backend.
fn alert_detector(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Detector> {
    // The same Redis as the quotas, reached the same way (TLS, ACL user, password file).
    let shared = crate::quota::shared_redis_client(&settings.quotas)
        .context("building the bulk-lookup detector's Redis client")?
        .map(|client| RedisLink {
            client,
            timeout: Duration::from_millis(settings.quotas.redis_timeout_ms),
        });
    Detector::new(&settings.alerts, &settings.quotas.time_zone, clock, shared)
        .context("building the bulk-lookup detector")
}

/// SIGHUP reloads the policy: checked and tested first, swapped only if sound.
fn reload_on_sighup(policy: Arc<PolicyStore>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let policy = policy.clone();
            // The outcome is logged and counted by the store itself.
            let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
        }
    });
    Ok(())
}
