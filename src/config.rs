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
    /// The deployment's name (`environment` at the top level): in `dev` and
    /// `test` development shortcuts are allowed; any other name (`staging`,
    /// `production`) turns the production guards on.
    pub environment: String,
    /// What loading accepted but would have the operator change (a key under
    /// its old name): `check` prints them, `serve` logs them.
    pub warnings: Vec<String>,
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
    /// A second listener for `/healthz`, `/readyz` and `/metrics`, which then
    /// leave the API listener; unset, the API listener serves them.
    #[serde(default)]
    pub ops_listen: Option<SocketAddr>,
    /// Serve the operations listener over TLS with the server's certificate
    /// (no client certificate asked for); false serves plain HTTP.
    #[serde(default)]
    pub ops_tls: bool,
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
        let file = table.clone();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let overrides = apply_env(&mut table, env, &mut problems);
        let environment = take_environment(&mut table, origin, &mut problems, &mut warnings);

        let mut sections = Sections {
            table,
            places: Places {
                file_name: origin,
                file,
                overrides,
            },
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
            places,
            mut problems,
        } = sections;
        for unknown in table.keys() {
            let place = places.of(std::slice::from_ref(unknown));
            let known = SECTIONS.map(|s| format!("`{s}`")).join(", ");
            problems.push(format!(
                "{place}: [{unknown}]: unknown section, expected one of {known}"
            ));
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
            let environment = environment?;
            let mut telemetry = telemetry?;
            telemetry.environment = environment.clone();
            let mut audit = audit?;
            audit.replica_id.get_or_insert_with(host_replica_id);
            Some(Settings {
                environment,
                warnings,
                server: server?,
                auth: auth?,
                policy: policy?,
                upstream: upstream?,
                quotas: quotas?,
                cache: cache?,
                audit,
                telemetry,
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
        self.validate_ops(&mut problems);
        problems
    }

    /// The operations listener: elsewhere than the API's, and over TLS only
    /// when the server has a certificate.
    fn validate_ops(&self, problems: &mut Vec<String>) {
        let Some(ops) = self.ops_listen else {
            if self.ops_tls {
                problems.push("server.ops_tls: needs server.ops_listen".into());
            }
            return;
        };
        let api = self.listen;
        let same_ip =
            ops.ip() == api.ip() || ops.ip().is_unspecified() || api.ip().is_unspecified();
        if ops.port() != 0 && ops.port() == api.port() && same_ip {
            problems.push(format!(
                "server.ops_listen: {ops} overlaps server.listen ({api}); give the operations listener a port of its own"
            ));
        }
        if self.ops_tls && !self.tls {
            problems.push(
                "server.ops_tls: needs server.tls = true: the operations listener serves the server's certificate".into(),
            );
        }
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

/// The sections of the settings, in the order they are read.
pub const SECTIONS: [&str; 9] = [
    "server",
    "auth",
    "policy",
    "upstream",
    "quotas",
    "cache",
    "audit",
    "telemetry",
    "alerts",
];

/// Where each value of the merged table comes from: the file, or the
/// environment variable that set it (or a table above it, or a key below it).
struct Places<'a> {
    file_name: &'a str,
    /// The file's table, before the environment was applied.
    file: toml::Table,
    /// Each applied variable: the path of keys it set, and its name.
    overrides: Vec<(Vec<String>, String)>,
}

impl Places<'_> {
    /// `environment: NAME` when a variable put the value at `path` there,
    /// else the file's name.
    fn of(&self, path: &[String]) -> String {
        // The variable that set this key, or a table above it; the deepest wins.
        let above = self
            .overrides
            .iter()
            .filter(|(set, _)| path.starts_with(set))
            .max_by_key(|(set, _)| set.len());
        // Or a key below it, when the file does not hold this key at all.
        let below = || {
            self.overrides
                .iter()
                .find(|(set, _)| set.starts_with(path))
                .filter(|_| !holds(&self.file, path))
        };
        match above.or_else(below) {
            Some((_, name)) => format!("environment: {name}"),
            None => self.file_name.to_owned(),
        }
    }

    /// As [`Places::of`], for a problem of a module's validation, which names
    /// its key as text (`quotas.posts.TN-TUNIS.per_day: must be ...`).
    fn of_problem(&self, problem: &str) -> String {
        let key = problem.split(": ").next().unwrap_or("");
        let by_env = self.overrides.iter().rev().find(|(set, _)| {
            let set = set.join(".");
            key == set || key.starts_with(&format!("{set}.")) || set.starts_with(&format!("{key}."))
        });
        match by_env {
            Some((_, name)) => format!("environment: {name}"),
            None => self.file_name.to_owned(),
        }
    }
}

/// Whether `table` has a value at `path`.
fn holds(table: &toml::Table, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    match table.get(first) {
        Some(toml::Value::Table(inner)) => holds(inner, rest),
        Some(_) => rest.is_empty(),
        None => false,
    }
}

/// Removes the value at `path`; false when there is none.
fn remove(table: &mut toml::Table, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(toml::Value::Table(inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

/// The path of keys that `dotted` (`posts.TN-TUNIS`, as the TOML deserializer
/// names where an error is) spells in `table`; keys may themselves hold dots.
fn resolve(table: &toml::Table, dotted: &str) -> Option<Vec<String>> {
    for (key, value) in table {
        if dotted == key {
            return Some(vec![key.clone()]);
        }
        let Some(rest) = dotted
            .strip_prefix(key.as_str())
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        if let Some(mut path) = value.as_table().and_then(|inner| resolve(inner, rest)) {
            path.insert(0, key.clone());
            return Some(path);
        }
    }
    None
}

/// What went wrong in a deserialization error, and the keys (within the
/// section) of the value it happened in, when the error names them.
fn split_error(error: &toml::de::Error, section: &toml::Value) -> (String, Vec<String>) {
    let message = one_line(error.message());
    let shown = error.to_string();
    let keys = shown
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .and_then(|dotted| resolve(section.as_table()?, dotted))
        .unwrap_or_default();
    (message, keys)
}

/// The name in backticks that follows `prefix` in a serde message
/// (`unknown field `per_secon`, expected ...`).
fn named_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// The sections of the settings table, taken out one by one so that whatever
/// remains at the end is unknown.
struct Sections<'a> {
    table: toml::Table,
    places: Places<'a>,
    problems: Vec<String>,
}

impl Sections<'_> {
    /// Takes, parses and validates one section, recording every problem.
    ///
    /// Serde stops at the first problem of a section, so each one found is
    /// recorded, the key that caused it is removed, and the section is read
    /// again: every unknown key and every bad value is reported, each blamed on
    /// the file or on the variable that set it. A section that needed a bad
    /// value removed is not validated further (its default would be judged in
    /// place of what was written).
    fn take<T: Section>(&mut self) -> Option<T> {
        let mut value = match self.table.remove(T::NAME) {
            Some(value) => value,
            None if T::OPTIONAL => toml::Value::Table(toml::Table::new()),
            None => {
                let place = self.places.file_name;
                let problem = format!("{place}: [{}]: missing section", T::NAME);
                self.problems.push(problem);
                return None;
            }
        };
        let mut bad_values: Vec<Vec<String>> = Vec::new();
        loop {
            let error = match value.clone().try_into::<T>() {
                Ok(section) if bad_values.is_empty() => {
                    for problem in section.problems() {
                        let place = self.places.of_problem(&problem);
                        self.problems.push(format!("{place}: {problem}"));
                    }
                    return Some(section);
                }
                Ok(_) => return None,
                Err(error) => error,
            };
            let (message, keys) = split_error(&error, &value);
            let mut path = vec![T::NAME.to_owned()];
            path.extend(keys.iter().cloned());
            let table_name = path.join(".");
            if let Some(field) = named_after(&message, "unknown field ") {
                path.push(field);
                let place = self.places.of(&path);
                self.problems
                    .push(format!("{place}: [{table_name}]: {message}"));
            } else if let Some(field) = named_after(&message, "missing field ") {
                path.push(field);
                // The field was written, with a bad value already reported.
                if !bad_values.contains(&path) {
                    let place = self.places.of(&path);
                    self.problems
                        .push(format!("{place}: [{table_name}]: {message}"));
                }
                return None;
            } else if keys.is_empty() {
                let place = self.places.of(&path);
                self.problems
                    .push(format!("{place}: [{table_name}]: {message}"));
                return None;
            } else {
                let place = self.places.of(&path);
                self.problems
                    .push(format!("{place}: {table_name}: {message}"));
                bad_values.push(path.clone());
            }
            let removed = value
                .as_table_mut()
                .is_some_and(|table| remove(table, &path[1..]));
            if !removed {
                return None;
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

/// `audit.replica_id` when unset: this host's name, made a safe directory name.
fn host_replica_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|file| std::fs::read_to_string(file).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    AuditSettings::replica_id_from_host(&host)
}

/// The top-level `environment`, or, under its old name `[telemetry]
/// environment`, with a warning. Required: a deployment says what it is.
fn take_environment(
    table: &mut toml::Table,
    origin: &str,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let top = table.remove("environment");
    let old = table
        .get_mut("telemetry")
        .and_then(toml::Value::as_table_mut)
        .and_then(|telemetry| telemetry.remove("environment"));
    if old.is_some() {
        warnings.push(format!(
            "{origin}: telemetry.environment: renamed `environment`, at the top level; the old name will go"
        ));
    }
    let value = match (top, old) {
        (Some(top), Some(old)) if top != old => {
            problems.push(format!(
                "{origin}: environment: differs from telemetry.environment, its old name; keep environment only"
            ));
            return None;
        }
        (Some(value), _) | (None, Some(value)) => value,
        (None, None) => {
            problems.push(format!(
                "{origin}: environment: required: dev, test, or the deployment's name (e.g. production), before any [section]"
            ));
            return None;
        }
    };
    match value.as_str() {
        Some(name) if is_environment_name(name) => Some(name.to_owned()),
        _ => {
            problems.push(format!(
                "{origin}: environment: 1 to 64 characters of [A-Za-z0-9._-]"
            ));
            None
        }
    }
}

fn is_environment_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Applies `CAF_BROKER__SECTION__KEY=value` overrides. A value is read as a
/// TOML value when it is one (`true`, `8443`, `["ES256"]`), else as a string.
/// Returns the path each applied variable set, with the variable's name.
///
/// The levels of a name are read in lower case, as keys are written, except a
/// post code under `quotas.posts`, which is written in upper case
/// (`CAF_BROKER__QUOTAS__POSTS__TN-TUNIS__PER_DAY` is
/// `quotas.posts.TN-TUNIS.per_day`, whatever the case of the variable).
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) -> Vec<(Vec<String>, String)> {
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // Stable, by name only: of two settings of one name, the later wins.
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    let mut applied = Vec::new();
    for (name, raw) in overrides {
        let mut path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let top_level = path.len() == 1 && path[0] == "environment";
        if (path.len() < 2 && !top_level) || path.iter().any(String::is_empty) {
            problems.push(format!(
                "environment: {name}: expected {ENV_PREFIX}SECTION__KEY (double underscores between levels)"
            ));
            continue;
        }
        if let [section, posts, code, ..] = path.as_mut_slice()
            && section == "quotas"
            && posts == "posts"
        {
            code.make_ascii_uppercase();
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        match insert_path(table, &path, value) {
            Ok(()) => applied.push((path, name)),
            Err(at) => problems.push(format!("environment: {name}: `{at}` is not a table")),
        }
    }
    applied
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
    fn an_operations_listener_needs_a_port_of_its_own() {
        let ops = |listen: &str, ops_listen: &str| {
            let env = vec![
                ("CAF_BROKER__SERVER__LISTEN".to_string(), listen.to_string()),
                (
                    "CAF_BROKER__SERVER__OPS_LISTEN".to_string(),
                    ops_listen.to_string(),
                ),
            ];
            Settings::from_toml_with_env(&shipped(), "broker.toml", env)
        };
        let settings = ops("127.0.0.1:8443", "127.0.0.1:9464").unwrap();
        assert_eq!(settings.server.ops_listen.unwrap().port(), 9464);
        assert!(!settings.server.ops_tls);
        assert!(
            ops("127.0.0.1:0", "127.0.0.1:0").is_ok(),
            "port 0 picks two"
        );
        assert!(ops("127.0.0.1:8443", "[::1]:8443").is_ok());
        for (listen, ops_listen) in [
            ("127.0.0.1:8443", "127.0.0.1:8443"),
            ("127.0.0.1:8443", "0.0.0.0:8443"),
            ("0.0.0.0:8443", "127.0.0.1:8443"),
        ] {
            let problems = ops(listen, ops_listen).unwrap_err().problems;
            assert_eq!(
                problems,
                [format!(
                    "environment: CAF_BROKER__SERVER__OPS_LISTEN: server.ops_listen: {ops_listen} overlaps server.listen ({listen}); give the operations listener a port of its own"
                )]
            );
        }
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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The one problem that mentions `needle`, failing unless there is exactly one.
    fn the_problem<'a>(err: &'a ConfigError, needle: &str) -> &'a str {
        let found: Vec<&String> = err.problems.iter().filter(|p| p.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle}: {:#?}", err.problems);
        found[0]
    }

    #[test]
    fn a_typo_in_quotas_or_policy_in_the_file_names_the_file_and_the_key() {
        let text = shipped()
            .replace("time_zone = ", "time_zon = \"UTC\"\ntime_zone = ")
            .replace("tests_dir = ", "test_dir = \"x\"\ntests_dir = ");
        let err = Settings::from_toml_with_env(&text, "broker.toml", no_env()).unwrap_err();
        assert!(
            the_problem(&err, "`time_zon`")
                .starts_with("broker.toml: [quotas]: unknown field `time_zon`, expected one of"),
            "{err}"
        );
        assert!(
            the_problem(&err, "`test_dir`")
                .starts_with("broker.toml: [policy]: unknown field `test_dir`, expected one of"),
            "{err}"
        );
        assert_eq!(err.problems.len(), 2, "{err}");
    }

    #[test]
    fn a_typo_in_quotas_or_policy_in_the_environment_names_the_variable_and_the_key() {
        let env = env(&[
            ("CAF_BROKER__QUOTAS__PER_SECON", "5"),
            ("CAF_BROKER__QUOTAS__DEFAULT__PER_HOUR", "5"),
            ("CAF_BROKER__POLICY__WATH", "false"),
        ]);
        let err = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap_err();
        let expected = [
            (
                "`per_secon`",
                "environment: CAF_BROKER__QUOTAS__PER_SECON: [quotas]: unknown field `per_secon`",
            ),
            (
                "`per_hour`",
                "environment: CAF_BROKER__QUOTAS__DEFAULT__PER_HOUR: [quotas.default]: unknown field `per_hour`",
            ),
            (
                "`wath`",
                "environment: CAF_BROKER__POLICY__WATH: [policy]: unknown field `wath`",
            ),
        ];
        for (needle, start) in expected {
            let problem = the_problem(&err, needle);
            assert!(
                problem.starts_with(start),
                "{problem:?} should start with {start:?}"
            );
        }
        assert_eq!(err.problems.len(), 3, "{err}");
    }

    #[test]
    fn every_problem_of_a_section_is_reported_from_the_file_and_the_environment() {
        let text = shipped()
            .replace("[quotas]", "[quotas]\nbackend_kind = 1\nreplicas = 2")
            .replace("backend = \"local\"", "backend = \"memcached\"")
            .replace(
                "default = { per_second = 5, burst = 20, per_day = 2000 }",
                "default = { per_second = 5, burst = 20, per_day = 2000, per_hour = 9 }",
            );
        let env = env(&[
            ("CAF_BROKER__QUOTAS__TIMEZONE", "\"UTC\""),
            ("CAF_BROKER__QUOTAS__REDIS_TIMEOUT_MS", "\"fast\""),
        ]);
        let err = Settings::from_toml_with_env(&text, "broker.toml", env).unwrap_err();
        let expected = [
            "broker.toml: [quotas]: unknown field `backend_kind`",
            "broker.toml: [quotas]: unknown field `replicas`",
            "broker.toml: quotas.backend: unknown variant `memcached`",
            "broker.toml: [quotas.default]: unknown field `per_hour`",
            "environment: CAF_BROKER__QUOTAS__TIMEZONE: [quotas]: unknown field `timezone`",
            "environment: CAF_BROKER__QUOTAS__REDIS_TIMEOUT_MS: quotas.redis_timeout_ms: invalid type: string \"fast\"",
        ];
        for start in expected {
            assert!(
                err.problems.iter().any(|p| p.starts_with(start)),
                "no problem starts with {start:?}: {:#?}",
                err.problems
            );
        }
        assert_eq!(err.problems.len(), expected.len(), "{err}");
    }

    #[test]
    fn a_post_code_in_a_variable_name_is_matched_in_any_case_and_kept_in_upper_case() {
        let text = shipped().replace(
            "[audit]",
            "[quotas.posts.TN-TUNIS]\nper_second = 10\nburst = 40\nper_day = 5000\n\n[audit]",
        );
        let env = env(&[
            ("CAF_BROKER__QUOTAS__POSTS__TN-TUNIS__PER_DAY", "7000"),
            (
                "CAF_BROKER__QUOTAS__POSTS__ma-rabat",
                "{ per_second = 1, burst = 2, per_day = 3 }",
            ),
        ]);
        let settings = Settings::from_toml_with_env(&text, "broker.toml", env).unwrap();
        let posts = &settings.quotas.posts;
        assert_eq!(posts.keys().collect::<Vec<_>>(), ["MA-RABAT", "TN-TUNIS"]);
        assert_eq!(posts["TN-TUNIS"].per_day, 7000);
        assert_eq!(posts["TN-TUNIS"].burst, 40);
        assert_eq!(posts["MA-RABAT"].burst, 2);

        let env = vec![(
            "CAF_BROKER__QUOTAS__POSTS__TN-TUNIS__PER_DAY".to_owned(),
            "0".to_owned(),
        )];
        let err = Settings::from_toml_with_env(&text, "broker.toml", env).unwrap_err();
        assert_eq!(
            err.problems,
            [
                "environment: CAF_BROKER__QUOTAS__POSTS__TN-TUNIS__PER_DAY: quotas.posts.TN-TUNIS.per_day: must be at least 1"
            ]
        );
    }

    #[test]
    fn an_unknown_section_from_the_environment_names_the_variable() {
        let env = env(&[("CAF_BROKER__QUOTA__BACKEND", "\"redis\"")]);
        let err = Settings::from_toml_with_env(&shipped(), "broker.toml", env).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].starts_with(
                "environment: CAF_BROKER__QUOTA__BACKEND: [quota]: unknown section, expected one of `server`"
            ),
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
