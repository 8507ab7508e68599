//! The settings: a shipped configuration file layered with `CAF_BROKER__*` variables, through
//! `Settings::from_toml_with_env` (the loader `serve` and `check` use), validation included.
//!
//! The first byte picks the file (`config/broker.toml` or
//! `config/production.example.toml`); the rest is the environment, variables
//! separated by NUL bytes, each `NAME=value` where `NAME` follows the prefix
//! `CAF_BROKER__` (`SERVER__LISTEN=127.0.0.1:0`).
//! Invariants: no panic; a refusal lists at least one problem, none empty.

#![no_main]

use std::sync::LazyLock;

use caf_broker::config::Settings;
use caf_broker_fuzz::repo_text;
use libfuzzer_sys::fuzz_target;

static FILES: LazyLock<[(String, &str); 2]> = LazyLock::new(|| {
    [
        (repo_text("config/broker.toml"), "config/broker.toml"),
        (
            repo_text("config/production.example.toml"),
            "config/production.example.toml",
        ),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (text, origin) = &FILES[usize::from(which % 2)];
    let env: Vec<(String, String)> = rest
        .split(|&b| b == 0)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let pair = String::from_utf8_lossy(pair);
            let (name, value) = pair.split_once('=').unwrap_or((&pair, ""));
            (format!("CAF_BROKER__{name}"), value.to_owned())
        })
        .collect();
    match Settings::from_toml_with_env(text, origin, env) {
        Ok(settings) => {
            let _ = settings.server.client_auth();
            let _ = settings.server.client_post_from();
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "a refusal without a problem");
            assert!(error.problems.iter().all(|p| !p.is_empty()));
        }
    }
});
