//! What binding a token to a client certificate costs the token check
//! (RFC 8705 `cnf.x5t#S256`): an unbound token sent without a certificate
//! against a bound one sent with its certificate, side by side, on a cache
//! hit (the common case: an agent's token is checked again on every request)
//! and on a full verification (signature, claims, then the binding).
//!
//! Run with `cargo bench --bench auth`; compare the two medians of a group as
//! a ratio.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use caf_broker::auth::{Authenticator, DevClaims, mint_bound_dev_token_at, mint_dev_token_at};
use caf_broker::clock::SystemClock;
use caf_broker::config::Settings;
use caf_broker::tls::{ClientCertificate, Thumbprint};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn claims() -> DevClaims {
    DevClaims {
        sub: "agent-42".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 3600,
    }
}

fn token_check(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let settings = Settings::load_with_env(&repo("config/broker.toml"), Vec::new())
        .expect("the shipped settings load");
    let auth = rt
        .block_on(Authenticator::connect_with_clock(
            &settings.auth,
            Arc::new(SystemClock),
        ))
        .expect("the development key set loads");
    let leaf = caf_broker::tls::certificates(&repo("certs-dev/client-TN-TUNIS.pem"))
        .expect("the development client certificate")
        .swap_remove(0);
    let thumbprint: Thumbprint = ClientCertificate::new(leaf).thumbprint();
    let unbound = || mint_dev_token_at(&settings.auth, claims(), &SystemClock).expect("a token");
    let bound = || {
        mint_bound_dev_token_at(&settings.auth, claims(), thumbprint, &SystemClock)
            .expect("a bound token")
    };

    let mut hit = c.benchmark_group("token check, cache hit");
    let (plain, tied) = (unbound(), bound());
    auth.authenticate(&plain).expect("accepted");
    auth.authenticate_with_client(&tied, Some(thumbprint))
        .expect("accepted");
    hit.bench_function("unbound, no certificate", |b| {
        b.iter(|| black_box(auth.authenticate(black_box(&plain))))
    });
    hit.bench_function("bound, its certificate", |b| {
        b.iter(|| black_box(auth.authenticate_with_client(black_box(&tied), Some(thumbprint))))
    });
    hit.finish();

    // A token never seen: minted in the untimed setup, verified in full.
    let mut full = c.benchmark_group("token check, full verification");
    full.bench_function("unbound, no certificate", |b| {
        b.iter_batched(
            unbound,
            |token| black_box(auth.authenticate(&token)),
            BatchSize::SmallInput,
        )
    });
    full.bench_function("bound, its certificate", |b| {
        b.iter_batched(
            bound,
            |token| black_box(auth.authenticate_with_client(&token, Some(thumbprint))),
            BatchSize::SmallInput,
        )
    });
    full.finish();
}

criterion_group!(benches, token_check);
criterion_main!(benches);
