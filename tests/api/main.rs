//! Integration tests through the public HTTPS surface, on port 0, with the
//! embedded simulator as the CAF.

mod alerts;
mod audit;
#[path = "../support/audit_files.rs"]
mod audit_files;
mod cache;
mod clock;
mod edge;
mod error_budget;
mod errors;
mod helpers;
mod hostile;
mod lifecycle;
mod mtls;
mod openapi;
mod ops;
mod policy_matrix;
mod policy_reload;
mod quotas;
mod quotas_redis;
#[path = "../support/redis_server.rs"]
#[allow(dead_code)] // each test crate uses part of the shared harness
mod redis_server;
mod spans;
mod stub_caf;
mod tls;
mod tokens;
mod upstream;
mod upstream_check;
mod witness;
