//! What the fuzz targets share: the repository's files and an authenticator on a fixed clock.

use std::path::PathBuf;
use std::sync::Arc;

use caf_broker::auth::{AuthSettings, Authenticator};
use caf_broker::clock::ManualClock;

/// The wall time the authenticator's clock stands at: a few minutes after the seed
/// tokens of `seeds/jwt/` were minted, so that they are still valid.
pub const NOW_UNIX_SECS: i64 = 1_796_070_200;

/// A file of the repository, by its path from the root.
pub fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A file of the repository as text; the targets read only files that exist.
pub fn repo_text(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).expect("a file of the repository")
}

/// The `[auth]` settings of `config/broker.toml`, with the JWKS file given, the
/// paths made absolute and the dev clients allowed (so that `client_id` is read).
pub fn auth_settings(jwks_file: &std::path::Path) -> AuthSettings {
    let text = format!(
        r#"
issuer = "https://idp.diplomatie.gouv.fr/dev"
audience = "caf-broker"
jwks_file = {jwks:?}
algorithms = ["ES256", "EdDSA", "RS256"]
leeway_secs = 30
token_cache_capacity = 1000
allowed_clients = ["caf-broker-token"]
"#,
        jwks = jwks_file.display().to_string(),
    );
    toml::from_str(&text).expect("valid [auth] settings")
}

/// An authenticator of `jwks_file` whose clock stands at [`NOW_UNIX_SECS`].
pub fn authenticator(
    jwks_file: &std::path::Path,
) -> Result<Authenticator, caf_broker::auth::AuthSetupError> {
    let clock = ManualClock::new(
        jiff::Timestamp::from_second(NOW_UNIX_SECS).expect("a representable instant"),
    );
    Authenticator::with_clock(&auth_settings(jwks_file), Arc::new(clock))
}

/// The input as text: libFuzzer's bytes, invalid UTF-8 replaced.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
