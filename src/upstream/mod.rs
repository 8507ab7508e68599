//! The CAF side: the `CafClient` trait, its settings, and its connectors.
//!
//! A connector answers a [`Lookup`] with the raw CAF record (`Some`), a clean
//! "no such dossier" (`None`), or an [`UpstreamError`]. It never filters:
//! the policy runs on every answer, in the broker.

mod embedded;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;

use crate::domain::Lookup;

pub use embedded::EmbeddedCaf;

/// A raw CAF record, shared rather than copied between the stages that read it.
pub type Record = Arc<serde_json::Value>;

/// The future a connector returns; boxed so that connectors can be chosen at run time.
pub type Fetch<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Record>, UpstreamError>> + Send + 'a>>;

/// A source of CAF dossiers.
pub trait CafClient: Send + Sync {
    fn fetch<'a>(&'a self, lookup: &'a Lookup) -> Fetch<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The CAF answered with an error status or data that is not a record.
    #[error("the CAF answered with an error or unreadable data")]
    Failed(#[source] anyhow::Error),
    /// The CAF did not answer in time.
    #[error("the CAF did not answer in time")]
    Timeout,
    /// The CAF is not being called right now (unreachable, or protected by a breaker).
    #[error("the CAF cannot be reached")]
    Unavailable,
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
    /// Base URL of the CAF service, for `kind = "http"`.
    #[serde(default)]
    pub url: Option<String>,
    /// Dataset seed of the embedded simulator.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Number of generated dossiers of the embedded simulator (besides the fixed ones).
    #[serde(default = "default_records")]
    pub records: usize,
}

fn default_seed() -> u64 {
    crate::simulator::Dataset::DEFAULT_SEED
}
fn default_records() -> usize {
    crate::simulator::Dataset::DEFAULT_RECORDS
}

impl UpstreamSettings {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.kind {
            UpstreamKind::Embedded => {
                if self.records > 1_000_000 {
                    problems.push("upstream.records: at most 1000000".into());
                }
            }
            UpstreamKind::Http => {
                problems.push(
                    "upstream.kind: \"http\" is not available in this version; use \"embedded\""
                        .into(),
                );
            }
        }
        problems
    }

    /// Builds the connector these settings describe.
    pub fn connect(&self) -> Arc<dyn CafClient> {
        Arc::new(EmbeddedCaf::generate(self.seed, self.records))
    }
}
