//! Typed settings: `config/broker.toml` layered with `CAF_BROKER__SECTION__KEY`
//! environment variables; unknown keys rejected; every problem reported at once.
//!
//! This is the only module that reads settings from files and the environment.
//! Each capability module owns the struct of its own section; this module only
//! assembles them and collects their problems.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::alerts::AlertSettings;
use crate::audit::AuditSettings;
use crate::auth::AuthSettings;
use crate::cache::CacheSettings;
use crate::quota::QuotaSettings;
use crate::telemetry::TelemetrySettings;
use crate::tls::{ClientAuth, PostSource};
use crate::upstream::UpstreamSettings;

/// The prefix of environment overrides; levels are separated by `__`.
pub const ENV_PREFIX: &str = "CAF_BROKER__";

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub policy: PolicySettings,
    pub upstream: UpstreamSettings,
    pub quotas: QuotaSettings,
    pub cache: CacheSettings,
    pub audit: AuditSettings,
    pub telemetry: TelemetrySettings,
    pub alerts: AlertSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Serve HTTPS (true by default); false only behind a TLS-terminating proxy.
    #[serde(default = "yes")]
    pub tls: bool,
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Whether TLS clients are asked for a certificate (`off`, `optional`,
    /// `required`); no default: required with `tls = true`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// PEM bundle of the CAs that issue the consular applications'
    /// certificates; read when `client_auth` is `optional` or `required`.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Where a client certificate names its post (`cn`, `san_uri`, `none`);
    /// no default: required when `client_auth` is `optional` or `required`.
    #[serde(default)]
    pub client_post_from: Option<PostSource>,
    /// HTTP worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for open connections.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// The deadline of a whole request, head and body: a slower client gets
    /// `408 request-timeout` and its connection is closed.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: a stream opened beyond it is
    /// reset with `REFUSED_STREAM`.
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// The largest header list of a request (names, values and 32 bytes per
    /// field, as HTTP/2 counts it); larger is answered `431`.
    #[serde(default = "default_max_header_list_bytes")]
    pub max_header_list_bytes: u32,
    /// Live connections accepted from one client address (an IPv6 client is
    /// counted by its /64); more are closed at once.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// The policy file security teams tune; no default, it is always explicit.
    pub file: PathBuf,
    /// The directory of policy tests, run by `caf-broker check`, at start-up
    /// and before every reload.
    #[serde(default)]
    pub tests_dir: Option<PathBuf>,
    /// Reload the policy when its file (or a policy test) changes; SIGHUP
    /// reloads it in any case.
    #[serde(default = "yes")]
    pub watch: bool,
    /// A candidate policy evaluated beside the live one on real traffic
    /// (differences are counted and logged, never served).
    #[serde(default)]
    pub shadow_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_max_body_bytes() -> usize {
    4096
}
fn default_shutdown_timeout_secs() -> u64 {
    5
}
fn default_request_timeout_secs() -> u64 {
    10
}
fn default_h2_max_concurrent_streams() -> u32 {
    100
}
fn default_max_header_list_bytes() -> u32 {
    16 * 1024
}
fn default_max_connections_per_ip() -> usize {
    256
}

/// Every problem found in the settings, one per line, each naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Settings {
    /// Loads `path`, applies the process environment, and validates the result.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{origin}: cannot read the file: {e}")],
        })?;
        Self::from_toml_with_env(&text, &origin, env)
    }

    /// Parses settings from TOML text named `origin` (a file name, for messages).
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![format!("{origin}: {}", one_line(&e.to_string()))],
        })?;
        let mut problems = Vec::new();
        apply_env(&mut table, env, &mut problems);

        let mut sections = Sections {
            table,
            origin,
            problems,
        };
        let server = sections.take::<ServerSettings>();
        let auth = sections.take::<AuthSettings>();
        let policy = sections.take::<PolicySettings>();
        let upstream = sections.take::<UpstreamSettings>();
        let quotas = sections.take::<QuotaSettings>();
        let cache = sections.take::<CacheSettings>();
        let audit = sections.take::<AuditSettings>();
        let telemetry = sections.take::<TelemetrySettings>();
        let alerts = sections.take::<AlertSettings>();
        let Sections {
            table,
            mut problems,
            ..
        } = sections;
        for unknown in table.keys() {
            problems.push(format!("{origin}: [{unknown}]: unknown section"));
        }
        if let (Some(server), Some(auth)) = (&server, &auth)
            && auth.require_bound_tokens
            && server.client_auth() == ClientAuth::Off
        {
            problems.push(format!(
                "{origin}: auth.require_bound_tokens: needs server.client_auth = \"optional\" or \"required\": a bound token is checked against the connection's client certificate"
            ));
        }
        let settings = (|| {
            Some(Settings {
                server: server?,
                auth: auth?,
                policy: policy?,
                upstream: upstream?,
                quotas: quotas?,
                cache: cache?,
                audit: audit?,
                telemetry: telemetry?,
                alerts: alerts?,
            })
        })();
        match settings {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(ConfigError { problems }),
        }
    }
}

impl ServerSettings {
    /// `server.client_auth`, `off` when unset (validation requires it with TLS).
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth.unwrap_or(ClientAuth::Off)
    }

    /// Where client certificates name their post; `none` unless the server
    /// asks for certificates.
    pub fn client_post_from(&self) -> PostSource {
        match self.client_auth() {
            ClientAuth::Off => PostSource::None,
            _ => self.client_post_from.unwrap_or(PostSource::None),
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.validate_client_auth(&mut problems);
        if self.tls {
            if self.tls_cert_file.is_none() {
                problems.push("server.tls_cert_file: required when server.tls = true".into());
            }
            if self.tls_key_file.is_none() {
                problems.push("server.tls_key_file: required when server.tls = true".into());
            }
        }
        if !(64..=1_048_576).contains(&self.max_body_bytes) {
            problems.push("server.max_body_bytes: must be between 64 and 1048576".into());
        }
        if !(1..=300).contains(&self.request_timeout_secs) {
            problems.push("server.request_timeout_secs: must be between 1 and 300".into());
        }
        if !(1..=10_000).contains(&self.h2_max_concurrent_streams) {
            problems.push("server.h2_max_concurrent_streams: must be between 1 and 10000".into());
        }
        if !(4096..=1_048_576).contains(&self.max_header_list_bytes) {
            problems.push("server.max_header_list_bytes: must be between 4096 and 1048576".into());
        }
        if !(1..=1_000_000).contains(&self.max_connections_per_ip) {
            problems.push("server.max_connections_per_ip: must be between 1 and 1000000".into());
        }
        problems
    }

    /// Client certificates: chosen explicitly with TLS, possible only with
    /// TLS, and verified against a CA bundle, with the place of the post said.
    fn validate_client_auth(&self, problems: &mut Vec<String>) {
        let asked = matches!(
            self.client_auth,
            Some(ClientAuth::Optional | ClientAuth::Required)
        );
        if self.tls && self.client_auth.is_none() {
            problems.push(
                "server.client_auth: required when server.tls = true: \"off\", \"optional\" or \"required\"".into(),
            );
        }
        if !self.tls && asked {
            problems.push(
                "server.client_auth: client certificates need server.tls = true; set \"off\" behind a TLS-terminating proxy".into(),
            );
        }
        if asked && self.client_ca_file.is_none() {
            problems.push(
                "server.client_ca_file: required when server.client_auth is \"optional\" or \"required\"".into(),
            );
        }
        if asked && self.client_post_from.is_none() {
            problems.push(
                "server.client_post_from: required when server.client_auth is \"optional\" or \"required\": \"cn\", \"san_uri\" or \"none\"".into(),
            );
        }
    }
}

impl PolicySettings {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.file.as_os_str().is_empty() {
            problems.push("policy.file: must name the policy file".into());
        }
        problems
    }
}

/// The sections of the settings table, taken out one by one so that whatever
/// remains at the end is unknown.
struct Sections<'a> {
    table: toml::Table,
    origin: &'a str,
    problems: Vec<String>,
}

impl Sections<'_> {
    /// Takes, parses and validates one section, recording its problems.
    fn take<T: Section>(&mut self) -> Option<T> {
        let value = match self.table.remove(T::NAME) {
            Some(value) => value,
            None if T::OPTIONAL => toml::Value::Table(toml::Table::new()),
            None => {
                let problem = format!("{}: [{}]: missing section", self.origin, T::NAME);
                self.problems.push(problem);
                return None;
            }
        };
        match value.try_into::<T>() {
            Ok(section) => {
                let origin = self.origin;
                let problems = section.problems().into_iter();
                self.problems
                    .extend(problems.map(|p| format!("{origin}: {p}")));
                Some(section)
            }
            Err(e) => {
                let message = one_line(&e.to_string());
                let problem = format!("{}: [{}]: {message}", self.origin, T::NAME);
                self.problems.push(problem);
                None
            }
        }
    }
}

/// A section of the settings: its name, whether it may be left out (every key
/// has a default), and the module's own validation.
trait Section: DeserializeOwned {
    const NAME: &'static str;
    const OPTIONAL: bool = false;
    fn problems(&self) -> Vec<String>;
}

macro_rules! section {
    ($type:ty, $name:literal $(, optional = $optional:literal)?) => {
        impl Section for $type {
            const NAME: &'static str = $name;
            $(const OPTIONAL: bool = $optional;)?
            fn problems(&self) -> Vec<String> {
                self.validate()
            }
        }
    };
}

section!(ServerSettings, "server");
section!(AuthSettings, "auth");
section!(PolicySettings, "policy");
section!(UpstreamSettings, "upstream");
section!(QuotaSettings, "quotas");
section!(CacheSettings, "cache", optional = true);
section!(AuditSettings, "audit");
section!(TelemetrySettings, "telemetry", optional = true);
section!(AlertSettings, "alerts", optional = true);

/// Applies `CAF_BROKER__SECTION__KEY=value` overrides. A value is read as a
/// TOML value when it is one (`true`, `8443`, `["ES256"]`), else as a string.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) {
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // Stable, by name only: of two settings of one name, the later wins.
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, raw) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            problems.push(format!(
                "environment: {name}: expected {ENV_PREFIX}SECTION__KEY (double underscores between levels)"
            ));
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        if let Err(at) = insert_path(table, &path, value) {
            problems.push(format!("environment: {name}: `{at}` is not a table"));
        }
    }
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, key) in parents.iter().enumerate() {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| path[..=depth].join("."))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/broker.toml");
        std::fs::read_to_string(path).unwrap()
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn shipped_config_loads() {
        let settings = Settings::from_toml_with_env(&shipped(), "broker.toml", no_env()).unwrap();
        assert!(settings.server.tls);
        assert_eq!(settings.auth.audience, "caf-broker");
    }

    #[test]
    fn the_production_example_is_a_valid_configuration() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml");
        let settings = Settings::load_with_env(&path, no_env()).unwrap();
        assert!(settings.server.tls);
        assert!(settings.auth.dev_signing_key_file.is_none());
    }

    #[test]
    fn environment_overrides_nested_keys_with_typed_values() {
        let env = vec![
            (
                "CAF_BROKER__SERVER__LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            ("CAF_BROKER__SERVER__TLS".to_string(), "false".to_string()),
            (
                "CAF_BROKER__SERVER__CLIENT_AUTH".to_string(),
                "off".to_string(),
            ),
            ("CAF_BROKER__AUTH__LEEWAY_SECS".to_string(), "5".to_string()),
            ("OTHER_VAR".to_string(), "ignored".to_string()),
        ];
        let settings = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap();
        assert_eq!(settings.server.listen.port(), 0);
        assert!(!settings.server.tls);
        assert_eq!(settings.auth.leeway_secs, 5);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_place() {
        let text = shipped()
            .replace("[server]", "[server]\nlisten_typo = 1")
            .replace("[upstream]", "[upstream]\nkind_typo = 1")
            + "\n[nonsense]\nx = 1\n";
        let env = vec![(
            "CAF_BROKER__AUTH__ALGORITHMS".to_string(),
            r#"["none"]"#.to_string(),
        )];
        let err = Settings::from_toml_with_env(&text, "broker.toml", env).unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("broker.toml: [server]: unknown field `listen_typo`"),
            "{all}"
        );
        assert!(
            all.contains("[upstream]: unknown field `kind_typo`"),
            "{all}"
        );
        assert!(all.contains("[nonsense]: unknown section"), "{all}");
        assert!(all.contains("auth.algorithms"), "{all}");
        assert!(err.problems.len() >= 4, "{all}");
    }

    #[test]
    fn edge_limits_have_defaults_and_each_bad_one_is_reported() {
        let settings = Settings::from_toml_with_env(&shipped(), "broker.toml", no_env()).unwrap();
        assert_eq!(settings.server.request_timeout_secs, 10);
        assert_eq!(settings.server.h2_max_concurrent_streams, 100);
        assert_eq!(settings.server.max_header_list_bytes, 16384);
        assert_eq!(settings.server.max_connections_per_ip, 256);
        let env = [
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("H2_MAX_CONCURRENT_STREAMS", "0"),
            ("MAX_HEADER_LIST_BYTES", "100"),
            ("MAX_CONNECTIONS_PER_IP", "0"),
        ]
        .map(|(k, v)| (format!("CAF_BROKER__SERVER__{k}"), v.to_string()));
        let err = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap_err();
        for key in [
            "server.request_timeout_secs",
            "server.h2_max_concurrent_streams",
            "server.max_header_list_bytes",
            "server.max_connections_per_ip",
        ] {
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn security_settings_have_no_default() {
        let text = shipped().replace("issuer =", "# issuer =");
        let err = Settings::from_toml_with_env(&text, "broker.toml", no_env()).unwrap_err();
        assert!(err.to_string().contains("missing field `issuer`"), "{err}");
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let err =
            Settings::from_toml_with_env("[server\nlisten=1", "broker.toml", no_env()).unwrap_err();
        assert!(err.to_string().starts_with("broker.toml:"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn the_alerts_section_may_be_left_out_and_is_checked_when_present() {
        let mut table: toml::Table = toml::from_str(&shipped()).unwrap();
        assert!(
            table.remove("alerts").is_some(),
            "the shipped config has [alerts]"
        );
        let without = toml::to_string(&table).unwrap();
        let settings = Settings::from_toml_with_env(&without, "broker.toml", no_env()).unwrap();
        assert_eq!(settings.alerts.distinct_dossiers_per_hour, 60);
        let env = vec![
            (
                "CAF_BROKER__ALERTS__OFF_HOURS".to_string(),
                "\"25:00-06:00\"".to_string(),
            ),
            (
                "CAF_BROKER__ALERTS__BLOCK_SEC".to_string(),
                "60".to_string(),
            ),
        ];
        let err = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("[alerts]: unknown field `block_sec`"), "{all}");
        let env = vec![(
            "CAF_BROKER__ALERTS__OFF_HOURS".to_string(),
            "\"25:00-06:00\"".to_string(),
        )];
        let err = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap_err();
        assert!(
            err.to_string()
                .contains("alerts.off_hours: \"25:00\" is not a time of day"),
            "{err}"
        );
    }

    #[test]
    fn client_certificates_are_chosen_explicitly_and_each_contradiction_is_reported() {
        let settings = Settings::from_toml_with_env(&shipped(), "broker.toml", no_env()).unwrap();
        assert_eq!(settings.server.client_auth(), ClientAuth::Optional);
        assert_eq!(settings.server.client_post_from(), PostSource::Cn);
        let text = shipped()
            .replace("client_auth =", "# client_auth =")
            .replace("client_post_from =", "# client_post_from =");
        let err = Settings::from_toml_with_env(&text, "broker.toml", no_env()).unwrap_err();
        assert!(
            err.to_string()
                .contains("server.client_auth: required when server.tls = true"),
            "{err}"
        );
        let text = shipped()
            .replace("client_ca_file =", "# client_ca_file =")
            .replace("client_post_from =", "# client_post_from =");
        let env = [
            ("SERVER__TLS", "false"),
            ("SERVER__CLIENT_AUTH", "required"),
            ("AUTH__REQUIRE_BOUND_TOKENS", "true"),
        ]
        .map(|(k, v)| (format!("CAF_BROKER__{k}"), v.to_string()));
        let err = Settings::from_toml_with_env(&text, "broker.toml", env).unwrap_err();
        for problem in [
            "server.client_auth: client certificates need server.tls = true",
            "server.client_ca_file: required",
            "server.client_post_from: required",
        ] {
            assert!(err.to_string().contains(problem), "{problem}: {err}");
        }
        let env = [
            ("SERVER__CLIENT_AUTH", "off"),
            ("AUTH__REQUIRE_BOUND_TOKENS", "true"),
        ]
        .map(|(k, v)| (format!("CAF_BROKER__{k}"), v.to_string()));
        let err = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap_err();
        assert!(
            err.to_string()
                .contains("auth.require_bound_tokens: needs server.client_auth"),
            "{err}"
        );
        assert_eq!(err.problems.len(), 1, "{err}");
    }

    #[test]
    fn a_malformed_environment_name_is_a_problem() {
        let env = vec![("CAF_BROKER__LISTEN".to_string(), "x".to_string())];
        let err = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap_err();
        assert!(err.to_string().contains("CAF_BROKER__LISTEN"), "{err}");
    }
}
