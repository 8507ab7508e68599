//! The synthetic CAF: a deterministic dataset of dossiers and a standalone HTTP server.
//!
//! The dataset ([`Dataset`]) holds five fixed dossiers (`1000001` to `1000005`,
//! the same whatever the seed, listed in README) and a
//! configurable number of generated ones, numbered `2000000 + i`. Generated
//! dossiers are rebuilt on demand from `(seed, index)`; only their identities
//! (NIR and birth facts) are kept in memory, with a NIR index.
//!
//! Every date is relative to a fixed "today" (2026-11-01), so the data never
//! depends on the wall clock.
//!
//! The server ([`start`]) speaks the CAF protocol (README, "The CAF connector")
//! over HTTP or HTTPS, optionally requiring a client certificate from a given CA
//! (mutual TLS, as the real CAF does), and never logs a NIR or a dossier number.

mod benefits;
mod calendar;
mod dataset;
mod fixed;
mod generate;
mod people;
mod record;
mod rng;
mod server;

#[cfg(test)]
mod tests;

pub use dataset::Dataset;
pub use server::{RunningSimulator, SimulatorError, SimulatorOptions, start, start_with_dataset};
