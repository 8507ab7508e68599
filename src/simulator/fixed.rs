//! The five fixed dossiers (`1000001` to `1000005`) that docs, tests and
//! acceptance checks name: the policy tests' fixtures
//! (`config/policy-tests/fixtures/`), served as they are whatever the seed.

use std::sync::OnceLock;

use serde_json::Value;

/// The fixed dossiers' numbers, in order.
pub(super) const NUMEROS: [&str; 5] = ["1000001", "1000002", "1000003", "1000004", "1000005"];

/// The fixed dossiers' NIRs, in the same order.
pub(super) const NIRS: [&str; 5] = [
    "180057512345627",
    "295109912611193",
    "253072A07300443",
    "253072B07300470",
    "160019912345604",
];

/// The fixtures, in the same order, as written in the repository.
const FIXTURES: [&str; 5] = [
    include_str!("../../config/policy-tests/fixtures/1000001.json"),
    include_str!("../../config/policy-tests/fixtures/1000002.json"),
    include_str!("../../config/policy-tests/fixtures/1000003.json"),
    include_str!("../../config/policy-tests/fixtures/1000004.json"),
    include_str!("../../config/policy-tests/fixtures/1000005.json"),
];

/// The fixed dossier at `position` (0 to 4), parsed once per process.
pub(super) fn dossier(position: usize) -> Option<&'static Value> {
    static PARSED: OnceLock<Vec<Option<Value>>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            FIXTURES
                .iter()
                .map(|text| serde_json::from_str(text).ok())
                .collect()
        })
        .get(position)?
        .as_ref()
}
