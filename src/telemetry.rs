//! Logs: the tracing subscriber, text or JSON, filtered by level.
//!
//! Nothing here may carry personal data: spans and events elsewhere record
//! posts, roles, purposes and outcomes, never numéros, NIRs, names or tokens.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    #[serde(default)]
    pub log_format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `caf_broker=debug,info`;
    /// `RUST_LOG` takes precedence when set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// OTLP/HTTP endpoint for traces; empty means off.
    #[serde(default)]
    pub otlp_endpoint: String,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: default_log_level(),
            otlp_endpoint: String::new(),
        }
    }
}

impl TelemetrySettings {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if EnvFilter::try_new(&self.log_level).is_err() {
            problems
                .push("telemetry.log_level: not a valid filter directive (e.g. \"info\")".into());
        }
        if !self.otlp_endpoint.is_empty() {
            problems.push(
                "telemetry.otlp_endpoint: OpenTelemetry export is not available in this version; leave it empty"
                    .into(),
            );
        }
        problems
    }
}

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
