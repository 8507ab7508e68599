//! caf-broker: a secure, purpose-bound access broker to CAF dossiers for consular posts.
//!
//! # Layout
//!
//! A request walks one corridor, owned by [`broker`]:
//! authenticate ([`auth`]) -> authorize the purpose ([`policy`])
//! -> quota -> cache -> fetch ([`upstream`]) -> filter ([`policy`]) -> audit.
//!
//! The shared kernel ([`domain`], [`clock`], [`redis_link`], [`file_watch`]) may be imported by
//! any module and imports nothing of the crate.
//!
//! - [`clock`] (kernel): the one injected clock, monotonic and wall time, read by every stage.
//! - [`domain`] (kernel): identifiers parsed once (numéro, NIR, purpose, role, post, case
//!   reference) and the cache outcome.
//! - [`redis_link`] (kernel): how stages that keep state in Redis open it.
//! - [`file_watch`] (kernel): how stages follow a file that operators edit.
//! - [`policy`]: the policy file, compiled field rules, the pure filter, explain, policy tests.
//! - [`auth`]: JWT verification against a JWKS, a cache of verified tokens, dev token minting.
//! - [`quota`]: per-post and per-agent quotas and the error budget, local or shared through Redis.
//! - [`alerts`]: bulk-lookup detection: per-agent sliding windows, alerts, suspension.
//! - [`upstream`]: the `CafClient` trait and its connectors (embedded simulator).
//! - [`simulator`]: the synthetic CAF: deterministic dataset and standalone HTTP server.
//! - [`broker`]: the pipeline, free of any HTTP framework.
//! - [`error`]: `BrokerError`, classified by who caused it.
//! - [`routes`]: the HTTP edge: route table, header parsing, one call to the broker per data
//!   request, errors to problem+json.
//! - [`server`]: connections: the cap per client, TLS and ALPN, HTTP/1.1, HTTP/2 with its limits.
//! - [`config`]: typed, layered settings (file + `CAF_BROKER__*` env), all errors at once.
//! - [`tls`]: rustls server configuration.
//! - [`telemetry`]: tracing subscriber.
//! - [`startup`]: the composition root, `Application::build`.
//! - [`cli`]: the command line.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod file_watch;
pub mod policy;
pub mod production;
pub mod quota;
pub mod redis_link;
pub mod routes;
pub mod server;
pub mod simulator;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod upstream;
