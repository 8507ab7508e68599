//! Telemetry: the log subscriber, OpenTelemetry traces and Prometheus metrics.
//!
//! This is the only module that touches the OpenTelemetry, metrics and
//! metrics-exporter APIs; the edge, the pipeline and the capability modules call
//! the framework-free helpers re-exported here. Nothing here may carry personal data: spans, events and metric labels
//! hold routes, methods, statuses, posts, roles, purposes and outcomes, never
//! numéros, NIRs, names or tokens.
//!
//! # Span plan
//!
//! One server span per request, opened by the context middleware and named
//! `{METHOD} {route template}` (`GET /v1/allocataires/{numero}`; the raw path may
//! hold a numéro, so it is never recorded), with `otel.kind = "server"`,
//! `http.request.method`, `http.route`, `http.response.status_code`,
//! `otel.status_code` (`ERROR` on 5xx) and `request_id`. Its OpenTelemetry parent
//! is the caller's W3C `traceparent`, when sent ([`extract_parent_context`] then
//! [`set_parent`], before the span is first entered). Under it, one child span per
//! stage: `authenticate`, `authorize`, `quota`, `cache`, `upstream`
//! (`otel.kind = "client"`; the connector sends [`trace_headers`] to the CAF),
//! `filter` and `audit` (which stores [`current_trace_id`]). Attributes: `post`,
//! `role`, `purpose` (only once the policy knows it), `cache` (`hit`/`miss`) and
//! `outcome`.
//!
//! Only spans of this crate, at `INFO` or above, reach the OpenTelemetry layer;
//! log events never do, so a log line can never leak into a trace backend.

mod metrics;
mod otel;
#[cfg(test)]
mod test_recorder;

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use metrics::{
    HttpObservation, Metrics, UpstreamResult, names, record_alert, record_audit_write,
    record_cache, record_connection_refused, record_error_budget_refusal, record_http_request,
    record_quota_refusal, record_upstream, set_upstream_circuit_open,
};
pub use metrics::{Stage, record_audit_batch, record_stage, set_quota_daily_remaining};
pub use metrics::{record_audit_witness_failure, set_audit_witness_lag};
pub use metrics::{
    record_auth_failure, record_policy_reload, record_policy_shadow_diff,
    record_quota_redis_fallback, record_unknown_upstream_field,
};
pub use metrics::{
    record_jwks_refresh_failure, record_nir_redactions, record_upstream_mismatch,
    set_audit_writable,
};
pub use otel::{
    OtelLayer, batch_tracer_provider, current_trace_id, extract_parent_context, inject_context,
    layer, set_parent, simple_tracer_provider, trace_headers,
};

#[cfg(test)]
pub(crate) use test_recorder::TestRecorder;

/// The OpenTelemetry context type the helpers take and return.
pub use opentelemetry::Context as OtelContext;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `[telemetry]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    #[serde(default)]
    pub log_format: LogFormat,
    /// A tracing filter directive for the logs, e.g. `info` or `caf_broker=debug,info`;
    /// `RUST_LOG` takes precedence when set. Spans sent to OpenTelemetry do not
    /// depend on it (they are the crate's `INFO` spans).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The OpenTelemetry collector's OTLP/HTTP endpoint, e.g.
    /// `http://otel-collector:4318` (`/v1/traces` is appended unless the URL
    /// already ends with it); empty means no trace export.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// How long one export to the collector may take.
    #[serde(default = "default_otlp_timeout_ms")]
    pub otlp_timeout_ms: u64,
    /// The share of new traces recorded, from 0 to 1. A trace whose caller sent a
    /// `traceparent` follows the caller's decision. The default, 0.1, keeps a
    /// representative sample at a tenth of the export cost; set 1 to record all.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The `deployment.environment` resource attribute: the settings'
    /// top-level `environment` (`dev`, `staging`, `production`...).
    #[serde(skip, default = "default_environment")]
    pub environment: String,
}

fn default_log_level() -> String {
    "info".into()
}
fn default_otlp_timeout_ms() -> u64 {
    5_000
}
fn default_sampling_ratio() -> f64 {
    0.1
}
fn default_service_name() -> String {
    "caf-broker".into()
}
fn default_environment() -> String {
    "dev".into()
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: default_log_level(),
            otlp_endpoint: String::new(),
            otlp_timeout_ms: default_otlp_timeout_ms(),
            sampling_ratio: default_sampling_ratio(),
            service_name: default_service_name(),
            environment: default_environment(),
        }
    }
}

impl TelemetrySettings {
    /// Every problem of the section, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if EnvFilter::try_new(&self.log_level).is_err() {
            problems
                .push("telemetry.log_level: not a valid filter directive (e.g. \"info\")".into());
        }
        if !self.otlp_endpoint.is_empty() && otel::traces_url(&self.otlp_endpoint).is_none() {
            problems.push(
                "telemetry.otlp_endpoint: an http:// or https:// URL with a host (e.g. \"http://otel-collector:4318\"), or empty"
                    .into(),
            );
        }
        if !(1..=60_000).contains(&self.otlp_timeout_ms) {
            problems.push("telemetry.otlp_timeout_ms: from 1 to 60000".into());
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            problems.push("telemetry.sampling_ratio: a number from 0 to 1".into());
        }
        if !is_attribute_value(&self.service_name) {
            problems.push("telemetry.service_name: 1 to 64 characters of [A-Za-z0-9._-]".into());
        }
        problems
    }

    fn otlp_timeout(&self) -> Duration {
        Duration::from_millis(self.otlp_timeout_ms)
    }
}

fn is_attribute_value(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Why telemetry could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp_endpoint: {0}")]
    InvalidEndpoint(String),
    #[error("building the OTLP exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("flushing the remaining spans")]
    Shutdown(#[source] opentelemetry_sdk::error::OTelSdkError),
    #[error("a telemetry thread (exporter check or shutdown) failed")]
    ShutdownThread,
    #[error("installing the metrics recorder: {0}")]
    Metrics(String),
}

/// Keeps trace export alive; flushes the spans still queued and shuts the
/// exporter down when dropped or on [`TelemetryGuard::shutdown`]. Hold it for
/// the life of the process (`let _telemetry = telemetry::init(..)?;`).
#[must_use = "dropping the guard stops trace export at once"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported to a collector.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the queued spans and stops the exporter. It blocks up to the
    /// export timeout, on a thread of its own, so it may be called from async code.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(provider) => shutdown_provider(provider),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = shutdown_provider(provider)
        {
            eprintln!("caf-broker: telemetry shutdown: {e}");
        }
    }
}

/// The blocking HTTP client of the exporter must not be driven (nor dropped)
/// on an async runtime's thread, so the shutdown runs on a plain thread.
fn shutdown_provider(provider: SdkTracerProvider) -> Result<(), TelemetryError> {
    std::thread::Builder::new()
        .name("otel-shutdown".into())
        .spawn(move || provider.shutdown())
        .map_err(|_| TelemetryError::ShutdownThread)?
        .join()
        .map_err(|_| TelemetryError::ShutdownThread)?
        .map_err(TelemetryError::Shutdown)
}

/// Builds the OTLP exporter `init` would build, when `otlp_endpoint` is set,
/// and drops it: what `caf-broker check` needs, with no collector required and
/// nothing installed. Like the shutdown, it runs on a plain thread, where the
/// exporter's blocking HTTP client may be built and dropped.
pub fn check_exporter(settings: &TelemetrySettings) -> Result<(), TelemetryError> {
    if settings.otlp_endpoint.is_empty() {
        return Ok(());
    }
    let settings = settings.clone();
    std::thread::Builder::new()
        .name("otel-check".into())
        .spawn(move || otel::otlp_exporter(&settings).map(drop))
        .map_err(|_| TelemetryError::ShutdownThread)?
        .join()
        .map_err(|_| TelemetryError::ShutdownThread)?
}

/// Installs the global subscriber: the log layer (text or JSON, filtered by
/// `log_level` or `RUST_LOG`) and, when `otlp_endpoint` is set, the
/// OpenTelemetry layer over a batch OTLP/HTTP exporter. Sets the W3C TraceContext
/// propagator globally. A second call in one process (as in tests) changes
/// nothing and returns an inert guard.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    let provider = if settings.otlp_endpoint.is_empty() {
        None
    } else {
        Some(otel::otlp_tracer_provider(settings)?)
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or collector gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match settings.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // Logs see events only: formatting every span's fields for the log layer
    // would cost more than the request itself, and each log line carries its
    // request id. Spans go to OpenTelemetry alone (when it is on).
    let logs = logs.with_filter(filter.and(filter_fn(|meta| meta.is_event())));
    let installed = match &provider {
        Some(provider) => tracing_subscriber::registry()
            .with(logs)
            .with(otel::layer(provider))
            .try_init(),
        // No layer wants spans: none is created, entered or stored per request.
        // (An absent `Option` layer would still let every span into the registry.)
        None => tracing_subscriber::registry().with(logs).try_init(),
    };
    match (installed, provider) {
        (Ok(()), Some(provider)) => {
            otel::install_globals(&provider);
            Ok(TelemetryGuard {
                provider: Some(provider),
            })
        }
        (Ok(()), None) => {
            otel::install_propagator();
            Ok(TelemetryGuard::default())
        }
        (Err(_), provider) => {
            // Already initialized: the first subscriber stays; this provider is not used.
            if let Some(provider) = provider {
                shutdown_provider(provider)?;
            }
            Ok(TelemetryGuard::default())
        }
    }
}

#[cfg(test)]
mod tests;
