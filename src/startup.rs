//! The composition root: builds every component once, binds the listeners (the
//! API's and, with `server.ops_listen`, the operations one), and runs the HTTP
//! server. Production (`serve`) and tests use the same path.

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
use crate::quota::{ErrorBudget, Quota, QuotaError};
use crate::routes::{self, EdgeLimits, Surface};
use crate::server::{Endpoint, Listeners, ServerOptions};
use crate::upstream::CafClient;

pub struct Application {
    server: Server,
    /// Keeps the policy file watcher alive as long as the server.
    _policy_watch: Option<WatchGuard>,
    /// Keeps the watch of `auth.revoked_jti_file` alive as long as the server.
    _revocations_watch: Option<WatchGuard>,
    port: u16,
    scheme: &'static str,
    /// The operations listener's port and scheme, when there is one.
    ops: Option<(u16, &'static str)>,
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
        let Components {
            policy,
            shadow,
            authenticator,
            quota,
            alerts,
            upstream,
            tls,
            ops_tls,
            warnings,
        } = Components::build(&settings, clock.clone()).await?;
        for warning in &warnings {
            tracing::warn!(%warning, "settings");
        }
        let policy = Arc::new(policy);
        // SIGHUP is caught from here on (its default would end the process);
        // one that comes while the audit log opens is served once it is open.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        // The audit log is open before the policy can be reloaded: every
        // reload is recorded in it, an applied one before it takes effect.
        let audit = Arc::new(
            AuditLog::open_with_clock(&settings.audit, clock.clone())
                .context("opening the audit log")?,
        );
        if policy.journal_reloads(reload_journal(&audit)).is_err() {
            anyhow::bail!("the policy's reload journal was set twice");
        }
        let policy_watch = match settings.policy.watch {
            true => Some(policy.watch().context("watching the policy file")?),
            false => None,
        };
        // The token lifecycle: revoked ids followed, keys and ids reloaded on SIGHUP,
        // and the shared revocation set read from the quotas' Redis.
        let mut authenticator = authenticator;
        let auth_files = authenticator.files();
        let revocations_watch = auth_files
            .watch_revocations()
            .context("watching auth.revoked_jti_file")?;
        reload_on_sighup(hangups, policy.clone(), auth_files);
        // A bad Redis setting was reported by Components::build already.
        if let Ok(Some(client)) = crate::quota::shared_redis_client(&settings.quotas) {
            let timeout = Duration::from_millis(settings.quotas.redis_timeout_ms);
            authenticator
                .share_revocations(&client, timeout)
                .context("reading the shared revoked token ids")?;
        }
        let error_budget = ErrorBudget::new(settings.quotas.agent_error_budget, clock.clone());
        let cache = RecordCache::with_clock(&settings.cache, clock.clone());
        // Shared state is built here, once, outside the per-worker factory below.
        let broker = web::Data::new(Broker::new(Stages {
            authenticator,
            policy,
            shadow,
            drift: DriftTracker::default(),
            quota,
            cache,
            upstream,
            audit,
            error_budget,
            alerts,
            client_post_from: settings.server.client_post_from(),
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
        let ops_listener = match settings.server.ops_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .with_context(|| format!("binding server.ops_listen {address}"))?,
            ),
            None => None,
        };

        let scheme = if tls.is_some() { "https" } else { "http" };
        let options = ServerOptions {
            workers: settings.server.workers,
            shutdown_timeout_secs: settings.server.shutdown_timeout_secs,
            request_timeout: Duration::from_secs(settings.server.request_timeout_secs),
            h2_max_concurrent_streams: settings.server.h2_max_concurrent_streams,
            max_header_list_bytes: settings.server.max_header_list_bytes,
            max_connections_per_ip: settings.server.max_connections_per_ip,
        };
        // Both listeners serve the same broker, limits and metrics: one
        // readiness, one set of counters, whichever listener is asked.
        let app = {
            let broker = broker.clone();
            move |surface: Surface| {
                App::new()
                    .app_data(broker.clone())
                    .app_data(limits.clone())
                    .app_data(metrics.clone())
                    .configure(routes::configure(surface))
            }
        };
        let api_surface = match ops_listener {
            Some(_) => Surface::Api,
            None => Surface::Everything,
        };
        let api_app = app.clone();
        let api = Endpoint {
            name: "caf-broker",
            listener,
            tls,
        };
        let mut listeners = Listeners::new(options).listen(api, move || api_app(api_surface))?;
        let mut ops = None;
        if let Some(listener) = ops_listener {
            ops = Some((
                listener.local_addr()?.port(),
                if ops_tls.is_some() { "https" } else { "http" },
            ));
            let endpoint = Endpoint {
                name: "caf-broker-ops",
                listener,
                tls: ops_tls,
            };
            listeners = listeners.listen(endpoint, move || app(Surface::Operations))?;
        }
        let server = listeners.run();
        Ok(Application {
            server,
            _policy_watch: policy_watch,
            _revocations_watch: revocations_watch,
            port,
            scheme,
            ops,
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

    /// The operations listener's port (`server.ops_listen`), if there is one.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops.map(|(port, _)| port)
    }

    /// The operations listener's scheme: `https` with `server.ops_tls`, else `http`.
    pub fn ops_scheme(&self) -> Option<&'static str> {
        self.ops.map(|(_, scheme)| scheme)
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

/// Every component `serve` builds from the settings alone, built once: the
/// policy (its tests passed), the token keys, the quota stage, the bulk-lookup
/// detector, the CAF connector and the TLS server configuration. Building them
/// binds nothing, starts no task that outlives them (a JWKS refresher stops
/// with its authenticator) and takes no lock: the audit directory is only
/// checked here ([`AuditLog::check`]), its writer is opened by
/// [`Application::build`]. `caf-broker check` builds exactly this, so that
/// what `check` accepts, `serve` builds.
pub struct Components {
    pub policy: PolicyStore,
    pub shadow: Option<ShadowPolicy>,
    pub authenticator: Authenticator,
    pub quota: Arc<dyn Quota>,
    pub alerts: Detector,
    pub upstream: Arc<dyn CafClient>,
    /// `None` when `server.tls = false`.
    pub tls: Option<rustls::ServerConfig>,
    /// The operations listener's TLS (`server.ops_tls`): the server's
    /// certificate, no client certificate asked for; `None` for plain HTTP.
    pub ops_tls: Option<rustls::ServerConfig>,
    /// What the settings and the production guards would have the operator
    /// change, without refusing to start: `check` prints them, `serve` logs them.
    pub warnings: Vec<String>,
}

/// Every problem found while building the [`Components`], one per line, each
/// naming the setting (or the file) it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Problems(pub Vec<String>);

impl Components {
    /// Builds every component, collecting every problem rather than stopping
    /// at the first. With a Redis quota backend, the quota stage makes one
    /// connection attempt bounded by `quotas.redis_timeout_ms`; an unreachable
    /// Redis is no problem, since the broker then starts on its local limits.
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Components, Problems> {
        crate::tls::install_default_provider();
        crate::auth::install_crypto_provider();
        let mut problems = Vec::new();
        let policy = PolicyStore::load(&settings.policy.file, settings.policy.tests_dir.as_deref())
            .map_err(|e| problems.extend(e.problems.iter().map(ToString::to_string)))
            .ok();
        let shadow = match &settings.policy.shadow_file {
            Some(file) => ShadowPolicy::load(file)
                .map(Some)
                .map_err(|e| {
                    let each = e.problems.iter();
                    problems.extend(each.map(|p| format!("policy.shadow_file: {p}")));
                })
                .ok(),
            None => Some(None),
        };
        let authenticator = Authenticator::connect_with_clock(&settings.auth, clock.clone()).await;
        let authenticator = concerning(&mut problems, "auth", authenticator);
        let alerts = alert_detector(settings, clock.clone())
            .map_err(|each| problems.extend(each))
            .ok();
        let quota = match crate::quota::build(&settings.quotas, clock.clone()).await {
            Ok(quota) => Some(quota),
            Err(QuotaError::Invalid(each)) => {
                problems.extend(each);
                None
            }
        };
        let clock_now = clock.wall();
        let upstream = settings.upstream.connect_with_clock(clock);
        let upstream = concerning(&mut problems, "upstream", upstream);
        let tls = match (
            &settings.server.tls_cert_file,
            &settings.server.tls_key_file,
        ) {
            (Some(cert), Some(key)) if settings.server.tls => {
                use crate::tls::{PemError, TlsError};
                let server = &settings.server;
                let client_ca = server.client_ca_file.as_deref();
                let is_client_ca = |file: &str| {
                    client_ca.is_some_and(|ca| ca.display().to_string() == file)
                        && server.client_auth() != crate::tls::ClientAuth::Off
                };
                let config = crate::tls::server_config_for_clients(
                    cert,
                    key,
                    server.client_auth(),
                    client_ca,
                )
                .map_err(|e| match &e {
                    TlsError::Pem(PemError::PrivateKey { .. }) => {
                        format!("server.tls_key_file: {e}")
                    }
                    TlsError::Pem(pem) if is_client_ca(pem.file()) => {
                        format!("server.client_ca_file: {e}")
                    }
                    TlsError::ClientVerifier(_) | TlsError::NoClientCa => {
                        format!("server.client_ca_file: {e}")
                    }
                    TlsError::Config(_) => format!("server.tls_cert_file, tls_key_file: {e}"),
                    _ => format!("server.tls_cert_file: {e}"),
                });
                concerning(&mut problems, "server", config).map(Some)
            }
            _ => Some(None),
        };
        let ops_tls = match (&tls, settings.server.ops_tls) {
            (Some(Some(server)), true) => {
                let config = crate::tls::server_config_without_clients(server);
                concerning(&mut problems, "server.ops_tls", config).map(Some)
            }
            // Without the server's configuration, its own problem is reported.
            _ => Some(None),
        };
        let audit = AuditLog::check(&settings.audit);
        problems.extend(audit.iter().map(ToString::to_string));
        let guards = crate::production::inspect(settings, clock_now);
        problems.extend(guards.problems);
        let mut warnings = settings.warnings.clone();
        warnings.extend(guards.warnings);
        match (
            policy,
            shadow,
            authenticator,
            quota,
            alerts,
            upstream,
            tls,
            ops_tls,
        ) {
            (
                Some(policy),
                Some(shadow),
                Some(authenticator),
                Some(quota),
                Some(alerts),
                Some(upstream),
                Some(tls),
                Some(ops_tls),
            ) if problems.is_empty() => Ok(Components {
                policy,
                shadow,
                authenticator,
                quota,
                alerts,
                upstream,
                tls,
                ops_tls,
                warnings,
            }),
            _ => {
                // The detector shares the quotas' Redis client: one bad file, one line.
                let mut seen = std::collections::HashSet::new();
                problems.retain(|p| seen.insert(p.clone()));
                Err(Problems(problems))
            }
        }
    }
}

/// The value, or `None` with the error recorded, prefixed by its section
/// unless its message names its setting already.
fn concerning<T, E: std::fmt::Display>(
    problems: &mut Vec<String>,
    section: &str,
    result: Result<T, E>,
) -> Option<T> {
    result
        .map_err(|e| {
            let message = e.to_string();
            problems.push(match message.starts_with(&format!("{section}.")) {
                true => message,
                false => format!("{section}: {message}"),
            });
        })
        .ok()
}

/// The bulk-lookup detector: it reads the wall time of the injected clock and
/// judges off-hours in the quota's time zone,
/// and shares its windows through the quota's Redis when that is the backend.
/// Each problem names its setting.
fn alert_detector(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Detector, Vec<String>> {
    // The same Redis as the quotas, reached the same way (TLS, ACL user, password file).
    let shared = crate::quota::shared_redis_client(&settings.quotas)
        .map_err(|QuotaError::Invalid(each)| each)?
        .map(|client| RedisLink {
            client,
            timeout: Duration::from_millis(settings.quotas.redis_timeout_ms),
        });
    Detector::new(&settings.alerts, &settings.quotas.time_zone, clock, shared)
        .map_err(|crate::alerts::AlertsError::Invalid(each)| each)
}

/// Writes each policy reload the store tells of as a `policy_reload` audit
/// record and waits until it is durable or refused (the store calls from a
/// blocking thread: the SIGHUP handler's or the file watch's). No deadline:
/// a record given up on could still be written, and would then tell of a
/// reload that was refused. The journal holds the log weakly: it never keeps
/// the log open past the application.
fn reload_journal(audit: &Arc<AuditLog>) -> crate::policy::ReloadJournal {
    use crate::audit::{AuditEntry, ReloadTrigger};
    use crate::policy::{ReloadCause, ReloadResult};
    let audit = Arc::downgrade(audit);
    let runtime = tokio::runtime::Handle::current();
    Box::new(move |event| {
        let audit = audit
            .upgrade()
            .ok_or_else(|| "the audit log is closed".to_owned())?;
        let trigger = match event.cause {
            ReloadCause::Signal => ReloadTrigger::Signal,
            ReloadCause::FileWatch => ReloadTrigger::FileWatch,
        };
        let from = event.from.clone();
        let entry = match &event.result {
            ReloadResult::Applied { to } => AuditEntry::policy_applied(trigger, from, to.clone()),
            ReloadResult::Rejected {
                candidate,
                problems,
            } => AuditEntry::policy_rejected(trigger, from, candidate.clone(), *problems),
        };
        runtime
            .block_on(audit.append(entry))
            .map(drop)
            .map_err(|error| error.to_string())
    })
}

/// SIGHUP reloads the policy (checked and tested first, swapped only if
/// sound), then `auth.revoked_jti_file` and `auth.jwks_file` (each keeps its
/// last good content if it cannot be read). Every outcome is logged (and, for
/// the policy, counted) where it happens.
fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    policy: Arc<PolicyStore>,
    auth_files: crate::auth::AuthFiles,
) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let (policy, auth_files) = (policy.clone(), auth_files.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let _ = policy.reload();
                auth_files.reload();
            })
            .await;
        }
    });
}

#[cfg(test)]
mod tests;
