//! The CAF side: the `CafClient` trait, its settings, and its connectors.
//!
//! A connector answers a [`Lookup`] with the raw CAF record (`Some`), a clean
//! "no such dossier" (`None`), or an [`UpstreamError`]. It never filters:
//! the policy runs on every answer, in the broker. [`check_answer`] tells
//! whether a record is the dossier asked for; the broker applies it to every
//! answer before the cache keeps it.
//!
//! Two connectors: [`EmbeddedCaf`] (the simulator's dataset in process) and
//! [`HttpCaf`] (a CAF service over HTTPS with a client certificate, timeouts,
//! bounded retries, a circuit breaker and a cap on concurrent calls).

mod breaker;
mod check;
mod embedded;
mod http;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;

use crate::clock::{Clock, SystemClock};
use crate::domain::Lookup;
use embedded::{default_records, default_seed};

pub use check::{answers, check_answer};
pub use embedded::EmbeddedCaf;
pub use http::HttpCaf;

/// A raw CAF record, shared rather than copied between the stages that read it.
pub type Record = Arc<serde_json::Value>;

/// The future a connector returns; boxed so that connectors can be chosen at run time.
pub type Fetch<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Record>, UpstreamError>> + Send + 'a>>;

/// A source of CAF dossiers.
pub trait CafClient: Send + Sync {
    fn fetch<'a>(&'a self, lookup: &'a Lookup) -> Fetch<'a>;

    /// Whether the connector is calling the CAF right now, for readiness and
    /// metrics. Connectors without a circuit breaker are always ready.
    fn health(&self) -> UpstreamHealth {
        UpstreamHealth::Ready
    }
}

/// What a connector says about its CAF, without calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum UpstreamHealth {
    /// Requests go to the CAF (the circuit is closed, or there is none).
    Ready,
    /// The open period is over: the next request (or the one in flight) is
    /// the single probe that tests whether the CAF has recovered.
    HalfOpen,
    /// The circuit is open: the CAF is not called for about `retry_after_secs`.
    CircuitOpen { retry_after_secs: u64 },
}

impl UpstreamHealth {
    /// Readiness in the sense of `GET /readyz`: false only while the circuit is open.
    pub fn is_ready(self) -> bool {
        !matches!(self, UpstreamHealth::CircuitOpen { .. })
    }
}

/// Why a lookup got no answer from the CAF. Messages are categories only: they
/// never quote the CAF's body, a dossier number or a NIR.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The CAF answered with an error status or data that is not a record, or
    /// could not be reached (the cause says which, as a category).
    #[error("the CAF answered with an error or unreadable data")]
    Failed(#[source] anyhow::Error),
    /// The CAF did not answer in time.
    #[error("the CAF did not answer in time")]
    Timeout,
    /// The CAF is not being called right now: the circuit breaker is open after
    /// repeated failures. `retry_after_secs` hints when it will be tried again.
    #[error("the CAF is not being called for now")]
    Unavailable { retry_after_secs: Option<u64> },
    /// The CAF answered with a record that is not the dossier asked for (its
    /// numéro, or its NIR for a search, differs): nothing of it may be used.
    #[error("the CAF answered with another dossier than the one asked for")]
    WrongDossier,
}

impl UpstreamError {
    /// An owned copy of a shared error, for callers that got it from a
    /// single-flight load (every waiter receives the same `Arc`). The cause of
    /// `Failed` is carried over as its message chain, which holds categories only.
    pub fn from_shared(shared: Arc<UpstreamError>) -> UpstreamError {
        Arc::try_unwrap(shared).unwrap_or_else(|shared| match &*shared {
            UpstreamError::Failed(cause) => UpstreamError::Failed(anyhow::anyhow!("{cause:#}")),
            UpstreamError::Timeout => UpstreamError::Timeout,
            UpstreamError::Unavailable { retry_after_secs } => UpstreamError::Unavailable {
                retry_after_secs: *retry_after_secs,
            },
            UpstreamError::WrongDossier => UpstreamError::WrongDossier,
        })
    }
}

/// Why a connector could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("upstream settings are invalid: {}", .0.join("; "))]
    Settings(Vec<String>),
    /// A PEM file of the connector's TLS material, named by its setting.
    #[error("upstream.{setting}: {source}")]
    Pem {
        setting: &'static str,
        source: crate::tls::PemError,
    },
    #[error(
        "the CAF's CA certificates and the client certificate do not make a TLS configuration: {0}"
    )]
    Tls(#[from] rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// The built-in simulator, in process, no network.
    Embedded,
    /// A CAF service over HTTPS speaking the simulator's protocol.
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub kind: UpstreamKind,
    /// Base URL of the CAF service, for `kind = "http"`: `https://...`, or
    /// `http://` to a loopback address only (tests and local development).
    #[serde(default)]
    pub url: Option<String>,
    /// PEM bundle of the CA certificates that may sign the CAF's server
    /// certificate; no other root is trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM chain (leaf first) of the broker's client certificate towards the CAF.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM (PKCS#8, SEC1 or PKCS#1) private key of that certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Time allowed to open a connection (TCP and TLS handshake).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed for a whole lookup: waiting for a slot, every attempt and
    /// the backoff between them, up to the last byte of the answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts after a connection error or a `503`, never after
    /// anything else.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Base of the jittered exponential backoff between attempts.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Consecutive failed lookups (timeouts, connection errors, 5xx) that open the circuit.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit spares the CAF before one probe is let through.
    #[serde(default = "default_breaker_open_secs")]
    pub breaker_open_secs: u64,
    /// Upstream calls in flight at once, across the whole process.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Dataset seed of the embedded simulator.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Number of generated dossiers of the embedded simulator (besides the fixed ones).
    #[serde(default = "default_records")]
    pub records: usize,
}

fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_timeout_ms() -> u64 {
    3_000
}
fn default_retries() -> u32 {
    2
}
fn default_retry_backoff_ms() -> u64 {
    50
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_secs() -> u64 {
    30
}
fn default_max_concurrent() -> usize {
    64
}

impl UpstreamSettings {
    /// Settings for the embedded simulator with every HTTP knob at its default.
    pub fn embedded(seed: u64, records: usize) -> Self {
        Self {
            kind: UpstreamKind::Embedded,
            url: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            breaker_failures: default_breaker_failures(),
            breaker_open_secs: default_breaker_open_secs(),
            max_concurrent: default_max_concurrent(),
            seed,
            records,
        }
    }

    /// Settings for a CAF at `url` with every other knob at its default.
    pub fn http(url: &str) -> Self {
        Self {
            kind: UpstreamKind::Http,
            url: Some(url.to_owned()),
            ..Self::embedded(default_seed(), default_records())
        }
    }

    /// Every problem with these settings, each as `upstream.<key>: ...`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.kind {
            UpstreamKind::Embedded => {
                if self.records > 1_000_000 {
                    problems.push("upstream.records: at most 1000000".into());
                }
            }
            UpstreamKind::Http => self.validate_http(&mut problems),
        }
        problems
    }

    fn validate_http(&self, problems: &mut Vec<String>) {
        let mut range = |key: &str, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                problems.push(format!(
                    "upstream.{key}: between {min} and {max}, got {value}"
                ));
            }
        };
        range("connect_timeout_ms", self.connect_timeout_ms, 1, 60_000);
        range("timeout_ms", self.timeout_ms, 1, 120_000);
        range("retries", u64::from(self.retries), 0, 5);
        range("retry_backoff_ms", self.retry_backoff_ms, 1, 10_000);
        range(
            "breaker_failures",
            u64::from(self.breaker_failures),
            1,
            1_000,
        );
        range("breaker_open_secs", self.breaker_open_secs, 1, 3_600);
        range(
            "max_concurrent",
            u64::try_from(self.max_concurrent).unwrap_or(u64::MAX),
            1,
            10_000,
        );
        if self.connect_timeout_ms > self.timeout_ms {
            problems.push(
                "upstream.connect_timeout_ms: must not exceed upstream.timeout_ms, which bounds the whole lookup"
                    .into(),
            );
        }

        let Some(url) = &self.url else {
            problems.push("upstream.url: required when upstream.kind is \"http\"".into());
            return;
        };
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(format!("upstream.url: not a URL ({e})"));
                return;
            }
        };
        if parsed.query().is_some() || parsed.fragment().is_some() {
            problems.push("upstream.url: a base URL without query or fragment".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            problems.push(
                "upstream.url: must not carry credentials; the broker authenticates with its client certificate"
                    .into(),
            );
        }
        let tls_files = [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ];
        match parsed.scheme() {
            "https" => {
                for (key, file) in tls_files {
                    if file.is_none() {
                        problems.push(format!(
                            "upstream.{key}: required with an https:// url (the CAF is reached with mutual TLS)"
                        ));
                    }
                }
            }
            "http" => {
                if !crate::tls::is_loopback(&parsed) {
                    problems.push(
                        "upstream.url: plain http:// is allowed only to a loopback address (127.0.0.1, ::1, localhost); use https://"
                            .into(),
                    );
                }
                for (key, file) in tls_files {
                    if file.is_some() {
                        problems.push(format!(
                            "upstream.{key}: set, but the url is http:// and would not use it; use an https:// url"
                        ));
                    }
                }
            }
            other => problems.push(format!(
                "upstream.url: the scheme must be https (or http to loopback), got {other:?}"
            )),
        }
    }

    /// Builds the connector these settings describe, with the system clock.
    pub fn connect(&self) -> Result<Arc<dyn CafClient>, UpstreamSetupError> {
        self.connect_with_clock(Arc::new(SystemClock))
    }

    /// Builds the connector with the given clock (the circuit breaker reads it).
    pub fn connect_with_clock(
        &self,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn CafClient>, UpstreamSetupError> {
        match self.kind {
            UpstreamKind::Embedded => Ok(Arc::new(EmbeddedCaf::generate(self.seed, self.records))),
            UpstreamKind::Http => Ok(Arc::new(HttpCaf::new(self, clock)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn https() -> UpstreamSettings {
        UpstreamSettings {
            ca_file: Some("certs-dev/ca.pem".into()),
            client_cert_file: Some("certs-dev/client-broker.pem".into()),
            client_key_file: Some("certs-dev/client-broker.key.pem".into()),
            ..UpstreamSettings::http("https://caf.example.gouv.fr/api")
        }
    }

    #[test]
    fn a_complete_https_configuration_is_valid() {
        assert_eq!(https().validate(), Vec::<String>::new());
    }

    #[test]
    fn the_embedded_kind_ignores_the_http_settings() {
        let settings = UpstreamSettings {
            timeout_ms: 0,
            ..UpstreamSettings::embedded(1, 10)
        };
        assert_eq!(settings.validate(), Vec::<String>::new());
    }

    #[test]
    fn http_without_a_url_is_refused() {
        let settings = UpstreamSettings {
            url: None,
            ..https()
        };
        assert_eq!(
            settings.validate(),
            vec!["upstream.url: required when upstream.kind is \"http\"".to_owned()]
        );
    }

    #[test]
    fn https_needs_the_ca_and_the_client_certificate_and_every_problem_is_reported() {
        let settings = UpstreamSettings {
            retries: 9,
            max_concurrent: 0,
            ..UpstreamSettings::http("https://caf.example.gouv.fr")
        };
        let problems = settings.validate();
        for key in [
            "ca_file",
            "client_cert_file",
            "client_key_file",
            "retries",
            "max_concurrent",
        ] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("upstream.{key}: "))),
                "{key} missing from {problems:?}"
            );
        }
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn plain_http_is_allowed_to_loopback_only() {
        for url in [
            "http://127.0.0.1:8600",
            "http://localhost:8600/caf",
            "http://[::1]:8600",
        ] {
            assert_eq!(
                UpstreamSettings::http(url).validate(),
                Vec::<String>::new(),
                "{url}"
            );
        }
        let problems = UpstreamSettings::http("http://caf.example.gouv.fr").validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("only to a loopback address"));
    }

    #[test]
    fn tls_files_with_a_plain_http_url_are_refused_rather_than_ignored() {
        let settings = UpstreamSettings {
            url: Some("http://127.0.0.1:8600".into()),
            ..https()
        };
        assert_eq!(settings.validate().len(), 3);
    }

    #[test]
    fn odd_urls_and_timeouts_are_refused_with_their_key() {
        let cases = [
            ("ftp://caf.example.gouv.fr", "upstream.url: the scheme"),
            ("not a url", "upstream.url: not a URL"),
            ("https://caf.example.gouv.fr/?x=1", "without query"),
            ("https://user:pw@caf.example.gouv.fr", "credentials"),
        ];
        for (url, expected) in cases {
            let settings = UpstreamSettings {
                url: Some(url.into()),
                ..https()
            };
            let problems = settings.validate();
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{url}: {problems:?}"
            );
        }
        let settings = UpstreamSettings {
            connect_timeout_ms: 5_000,
            timeout_ms: 1_000,
            ..https()
        };
        assert_eq!(
            settings.validate(),
            vec!["upstream.connect_timeout_ms: must not exceed upstream.timeout_ms, which bounds the whole lookup".to_owned()]
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_defaults_fill_the_rest() {
        let parsed: Result<UpstreamSettings, _> =
            toml::from_str("kind = \"http\"\nurl = \"https://x\"\ntimeout = 3");
        assert!(parsed.is_err());
        let parsed: UpstreamSettings =
            toml::from_str("kind = \"http\"\nurl = \"https://caf.example.gouv.fr\"").unwrap();
        assert_eq!(
            (
                parsed.timeout_ms,
                parsed.retries,
                parsed.breaker_failures,
                parsed.max_concurrent
            ),
            (3_000, 2, 5, 64)
        );
    }

    #[test]
    fn a_shared_error_becomes_an_owned_one_of_the_same_kind() {
        let owned = UpstreamError::from_shared(Arc::new(UpstreamError::Timeout));
        assert!(matches!(owned, UpstreamError::Timeout));
        let shared = Arc::new(UpstreamError::Failed(anyhow::anyhow!("status 500")));
        let _other_waiter = shared.clone();
        match UpstreamError::from_shared(shared) {
            UpstreamError::Failed(cause) => assert_eq!(cause.to_string(), "status 500"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_embedded_connector_is_always_ready() {
        let client = UpstreamSettings::embedded(1, 0).connect().unwrap();
        assert_eq!(client.health(), UpstreamHealth::Ready);
        assert!(client.health().is_ready());
        assert!(
            !UpstreamHealth::CircuitOpen {
                retry_after_secs: 3
            }
            .is_ready()
        );
    }
}
