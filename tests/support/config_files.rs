//! Configuration files for tests of the real binary: a fresh directory, and a
//! shipped configuration copied with some of its lines replaced.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::path::{Path, PathBuf};

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
