//! Configuration files and processes for tests of the real binary: a fresh
//! directory, a shipped configuration copied with some of its lines replaced,
//! and `caf-broker serve` started on one of them.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

/// A fresh directory for one test, under the system's temporary directory.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caf-broker-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of a shipped configuration with each `(from, to)` replaced, written
/// to `dir`; every `from` must be there, so that a changed file fails loudly.
pub fn config_from(shipped: &str, dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(shipped)).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{shipped} no longer contains {from:?}");
        text = text.replacen(from, to, 1);
    }
    let config = dir.join("broker.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// A `caf-broker serve` process whose log is JSON (`telemetry.log_format =
/// "json"` in its configuration), its "caf-broker listening" event, if it
/// logged one among its first 200 lines, and the thread that drains the rest
/// of its log (so that it never blocks on a full pipe; it ends with the process).
pub fn serve(config: &Path) -> (Child, Option<serde_json::Value>, JoinHandle<()>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = logs
        .by_ref()
        .take(200)
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|event| event["message"] == "caf-broker listening");
    let drained = std::thread::spawn(move || logs.for_each(drop));
    (child, listening, drained)
}

/// `caf-broker` with its default command (`serve` over `config/broker.toml`),
/// from the repository's root, with `env` added and `RUST_LOG` removed; its
/// output discarded.
pub fn spawn_quiet(env: &[(String, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().cloned())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the broker starts")
}

/// A dev token of agent `agent-7` of TN-TUNIS (`agent_consulaire`, 10 minutes),
/// signed with the keys of the broker started with `env` over `config/broker.toml`.
pub fn agent_7_token(env: &[(String, String)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = caf_broker::config::Settings::load_with_env(
        &root.join("config/broker.toml"),
        env.iter().cloned(),
    )
    .unwrap();
    let claims = caf_broker::auth::DevClaims {
        sub: "agent-7".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 600,
    };
    caf_broker::auth::mint_dev_token(&settings.auth, claims).unwrap()
}
