//! The `[audit]` settings: where the log lives, the pseudonymization keys, retention, file size, batching and signed checkpoints.

use std::path::PathBuf;

use serde::Deserialize;

/// The smallest file size limit accepted: a few records per file.
const MIN_FILE_BYTES: u64 = 4096;

/// The longest replica or key id: a directory name and a short label.
const MAX_ID_CHARS: usize = 64;

/// A retired pseudonymization key: `{ id = "2025", file = "..." }` in
/// `audit.previous_hmac_keys`. `id` is what records written under it carry
/// in `key_id`; leave it out for the key used before keys had names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousHmacKey {
    #[serde(default)]
    pub id: Option<String>,
    pub file: PathBuf,
}

/// The `[audit]` section of `config/broker.toml`.
///
/// The directory and the key file have no default: where access records go and
/// how dossiers are pseudonymized are always explicit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The directory of the `audit-YYYY-MM-DD[.N].jsonl` files; created if missing.
    pub dir: PathBuf,
    /// The secret under which dossier identifiers are hashed (HMAC-SHA-256):
    /// hex digits, or raw bytes, at least 32 bytes of key either way.
    pub hmac_key_file: PathBuf,
    /// The name of that key, written in each record it pseudonymized
    /// (`key_id`), so that the key can rotate. Unset: records carry no
    /// `key_id`, as before keys had names.
    #[serde(default)]
    pub hmac_key_id: Option<String>,
    /// Keys used before the current one, still needed to find old records:
    /// `search` and `report` try every key, the writer uses only the current one.
    #[serde(default)]
    pub previous_hmac_keys: Vec<PreviousHmacKey>,
    /// This broker's name among the replicas sharing `dir`: it writes its log
    /// in `dir/<replica_id>`. The loader defaults it to the host name
    /// (sanitized); `None`, for a log opened by code, writes directly in `dir`.
    #[serde(default)]
    pub replica_id: Option<String>,
    /// Files whose UTC day is more than this many days before today are removed.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// A file reaching this size is closed and the day continues in `.1`, `.2`, ...
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// The most records written by one group commit (one fsync). 1 disables
    /// group commit, which only a benchmark wants.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// After a write failure, how often the log retries on its own (so that
    /// `/readyz` recovers even when no request arrives).
    #[serde(default = "default_retry_interval_ms")]
    pub retry_interval_ms: u64,
    /// The most records waiting for the writer; a request finding the queue
    /// full is refused at once with `503 audit-unavailable`.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The Ed25519 private key (PKCS#8 PEM, owner-readable only) that signs
    /// the tree's checkpoints; without it no checkpoint is signed (development only).
    #[serde(default)]
    pub checkpoint_signing_key_file: Option<PathBuf>,
    /// The name of the replicas' logs, e.g. `caf-broker.diplomatie.gouv.fr/prod`;
    /// required with a signing key. Each replica signs its checkpoints as
    /// [`AuditSettings::checkpoint_origin`], this name followed by its id.
    #[serde(default)]
    pub log_origin: Option<String>,
    /// A checkpoint is signed once this many records were written since the last one...
    #[serde(default = "default_checkpoint_every_records")]
    pub checkpoint_every_records: u64,
    /// ... or once this many seconds passed with records not yet covered (and at shutdown).
    #[serde(default = "default_checkpoint_every_secs")]
    pub checkpoint_every_secs: u64,
    /// A directory (another volume, host or owner than `dir`) where each
    /// signed checkpoint is also written, as `<replica>-<size>.checkpoint`;
    /// unset, checkpoints stay in `checkpoints.log` only.
    #[serde(default)]
    pub witness_dir: Option<PathBuf>,
    /// An `https://` URL to which each signed checkpoint is POSTed
    /// (`text/plain`, the note as it is); unset, none is sent.
    #[serde(default)]
    pub witness_url: Option<String>,
    /// The CA certificates (PEM) trusted for `witness_url`; required with it.
    #[serde(default)]
    pub witness_ca_file: Option<PathBuf>,
    /// The longest one POST to `witness_url` may take.
    #[serde(default = "default_witness_timeout_ms")]
    pub witness_timeout_ms: u64,
}

fn default_witness_timeout_ms() -> u64 {
    5000
}

fn default_checkpoint_every_records() -> u64 {
    1000
}

fn default_checkpoint_every_secs() -> u64 {
    60
}

fn default_retention_days() -> u32 {
    365
}

fn default_max_file_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_max_batch_records() -> usize {
    1024
}

fn default_retry_interval_ms() -> u64 {
    1000
}

/// Four full group commits: far more than a healthy disk ever lets wait,
/// and about 4 MiB of records at most.
fn default_queue_capacity() -> usize {
    4096
}

impl AuditSettings {
    /// Settings with every optional key at its default.
    pub fn new(dir: impl Into<PathBuf>, hmac_key_file: impl Into<PathBuf>) -> AuditSettings {
        AuditSettings {
            dir: dir.into(),
            hmac_key_file: hmac_key_file.into(),
            hmac_key_id: None,
            previous_hmac_keys: Vec::new(),
            replica_id: None,
            retention_days: default_retention_days(),
            max_file_bytes: default_max_file_bytes(),
            max_batch_records: default_max_batch_records(),
            retry_interval_ms: default_retry_interval_ms(),
            queue_capacity: default_queue_capacity(),
            checkpoint_signing_key_file: None,
            log_origin: None,
            checkpoint_every_records: default_checkpoint_every_records(),
            checkpoint_every_secs: default_checkpoint_every_secs(),
            witness_dir: None,
            witness_url: None,
            witness_ca_file: None,
            witness_timeout_ms: default_witness_timeout_ms(),
        }
    }

    /// The directory this broker writes: `dir/<replica_id>`, or `dir` itself
    /// when no replica id is set.
    pub fn log_dir(&self) -> PathBuf {
        match &self.replica_id {
            Some(id) => self.dir.join(id),
            None => self.dir.clone(),
        }
    }

    /// The origin this broker's checkpoints name: `log_origin/<replica_id>`
    /// (see [`super::signing::replica_origin`]), or `log_origin` itself when
    /// no replica id is set.
    pub fn checkpoint_origin(&self) -> Option<String> {
        let base = self.log_origin.as_deref()?;
        Some(match &self.replica_id {
            Some(id) => super::signing::replica_origin(base, id),
            None => base.to_owned(),
        })
    }

    /// A host name as a replica id: characters other than ASCII letters,
    /// digits, `.`, `_` and `-` become `-`, leading dots and dashes go, at
    /// most 64 characters; `broker` if nothing is left.
    pub fn replica_id_from_host(host: &str) -> String {
        let cleaned: String = host
            .trim()
            .chars()
            .map(|c| if is_id_char(c) { c } else { '-' })
            .collect();
        let cleaned: String = cleaned
            .trim_start_matches(['.', '-', '_'])
            .chars()
            .take(MAX_ID_CHARS)
            .collect();
        if cleaned.is_empty() {
            "broker".to_owned()
        } else {
            cleaned
        }
    }

    /// Every problem at once, each as `audit.<key>: <message>`; empty when sound.
    ///
    /// The key file itself is read by [`super::AuditKey::from_file`], which names
    /// the file when it is missing or too short.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push("audit.dir: must name the directory of the audit log".to_owned());
        }
        if self.hmac_key_file.as_os_str().is_empty() {
            problems.push(
                "audit.hmac_key_file: must name the file holding the pseudonymization key (at least 32 bytes)"
                    .to_owned(),
            );
        }
        if let Some(id) = &self.replica_id
            && !is_id(id)
        {
            problems.push(format!(
                "audit.replica_id: {id:?} is not a directory name; use 1 to {MAX_ID_CHARS} ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
            ));
        }
        let mut key_ids: Vec<Option<&str>> = vec![self.hmac_key_id.as_deref()];
        if let Some(id) = &self.hmac_key_id
            && !is_id(id)
        {
            problems.push(format!(
                "audit.hmac_key_id: {id:?} is not a key id; use 1 to {MAX_ID_CHARS} ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
            ));
        }
        for (index, previous) in self.previous_hmac_keys.iter().enumerate() {
            let at = format!("audit.previous_hmac_keys[{index}]");
            if previous.file.as_os_str().is_empty() {
                problems.push(format!("{at}.file: must name the file of a former key"));
            }
            if let Some(id) = &previous.id
                && !is_id(id)
            {
                problems.push(format!(
                    "{at}.id: {id:?} is not a key id; use 1 to {MAX_ID_CHARS} ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
                ));
            }
            let id = previous.id.as_deref();
            if key_ids.contains(&id) {
                problems.push(match id {
                    Some(id) => format!(
                        "{at}.id: {id:?} is already the id of another key; each key needs its own id"
                    ),
                    None => format!(
                        "{at}.id: missing, and another key already has no id; at most one key (the one used before keys had names) may have none"
                    ),
                });
            }
            key_ids.push(id);
        }
        if !(1..=36_500).contains(&self.retention_days) {
            problems.push(format!(
                "audit.retention_days: {} is out of range; use 1 to 36500 (the CNIL recommends 180 to 365)",
                self.retention_days
            ));
        }
        if self.max_file_bytes < MIN_FILE_BYTES {
            problems.push(format!(
                "audit.max_file_bytes: {} is below the minimum of {MIN_FILE_BYTES}",
                self.max_file_bytes
            ));
        }
        if !(1..=65_536).contains(&self.max_batch_records) {
            problems.push(format!(
                "audit.max_batch_records: {} is out of range; use 1 to 65536",
                self.max_batch_records
            ));
        }
        if !(10..=60_000).contains(&self.retry_interval_ms) {
            problems.push(format!(
                "audit.retry_interval_ms: {} is out of range; use 10 to 60000",
                self.retry_interval_ms
            ));
        }
        if !(1..=1_048_576).contains(&self.queue_capacity) {
            problems.push(format!(
                "audit.queue_capacity: {} is out of range; use 1 to 1048576",
                self.queue_capacity
            ));
        }
        match (&self.checkpoint_signing_key_file, &self.log_origin) {
            (Some(_), None) => problems.push(
                "audit.log_origin: required with audit.checkpoint_signing_key_file: the log's name in its checkpoints"
                    .to_owned(),
            ),
            (_, Some(origin)) => {
                if let Err(problem) = super::signing::check_origin(origin) {
                    problems.push(format!("audit.log_origin: {problem}"));
                }
            }
            (None, None) => {}
        }
        if !(1..=1_000_000).contains(&self.checkpoint_every_records) {
            problems.push(format!(
                "audit.checkpoint_every_records: {} is out of range; use 1 to 1000000",
                self.checkpoint_every_records
            ));
        }
        if !(1..=86_400).contains(&self.checkpoint_every_secs) {
            problems.push(format!(
                "audit.checkpoint_every_secs: {} is out of range; use 1 to 86400",
                self.checkpoint_every_secs
            ));
        }
        if let Some(witness) = &self.witness_dir {
            if witness.as_os_str().is_empty() {
                problems.push(
                    "audit.witness_dir: empty; name a directory, or leave the key out".to_owned(),
                );
            } else if self.checkpoint_signing_key_file.is_none() {
                problems.push(
                    "audit.witness_dir: needs audit.checkpoint_signing_key_file: only signed checkpoints are sent to the witness"
                        .to_owned(),
                );
            }
        }
        if let Some(url) = &self.witness_url {
            if !url.starts_with("https://") {
                problems.push(format!(
                    "audit.witness_url: {url:?} is not an https:// URL; the checkpoints are sent over TLS only"
                ));
            }
            if self.witness_ca_file.is_none() {
                problems.push(
                    "audit.witness_ca_file: required with audit.witness_url: the CA certificates trusted for the witness"
                        .to_owned(),
                );
            }
            if self.checkpoint_signing_key_file.is_none() {
                problems.push(
                    "audit.witness_url: needs audit.checkpoint_signing_key_file: only signed checkpoints are sent to the witness"
                        .to_owned(),
                );
            }
        }
        if !(100..=60_000).contains(&self.witness_timeout_ms) {
            problems.push(format!(
                "audit.witness_timeout_ms: {} is out of range; use 100 to 60000",
                self.witness_timeout_ms
            ));
        }
        problems
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A replica or key id: also a safe directory name (no `/`, not `.` or `..`).
pub(super) fn is_id(id: &str) -> bool {
    id.chars().count() <= MAX_ID_CHARS
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(is_id_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dir_and_key_file_are_required() {
        let settings: AuditSettings =
            toml::from_str("dir = \"var/audit\"\nhmac_key_file = \"k\"").unwrap();
        assert_eq!(settings.retention_days, 365);
        assert_eq!(settings.max_file_bytes, 64 * 1024 * 1024);
        assert!(settings.validate().is_empty());
        assert!(toml::from_str::<AuditSettings>("dir = \"var/audit\"").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<AuditSettings>(
            "dir = \"a\"\nhmac_key_file = \"k\"\nretention_day = 3",
        )
        .unwrap_err();
        assert!(err.to_string().contains("retention_day"), "{err}");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let mut settings = AuditSettings::new("", "");
        settings.retention_days = 0;
        settings.max_file_bytes = 10;
        settings.max_batch_records = 0;
        settings.retry_interval_ms = 0;
        settings.queue_capacity = 0;
        settings.checkpoint_signing_key_file = Some("k.pem".into());
        settings.checkpoint_every_records = 0;
        settings.checkpoint_every_secs = 0;
        settings.replica_id = Some("../elsewhere".into());
        settings.witness_dir = Some("".into());
        settings.witness_url = Some("http://witness.example".into());
        settings.witness_timeout_ms = 0;
        settings.hmac_key_id = Some("2026".into());
        settings.previous_hmac_keys = vec![
            PreviousHmacKey {
                id: Some("2026".into()),
                file: "old.key".into(),
            },
            PreviousHmacKey {
                id: Some("a b".into()),
                file: "".into(),
            },
        ];
        let problems = settings.validate();
        for key in [
            "audit.replica_id",
            "audit.previous_hmac_keys[0].id",
            "audit.previous_hmac_keys[1].id",
            "audit.previous_hmac_keys[1].file",
            "audit.dir",
            "audit.hmac_key_file",
            "audit.retention_days",
            "audit.max_file_bytes",
            "audit.max_batch_records",
            "audit.retry_interval_ms",
            "audit.queue_capacity",
            "audit.log_origin",
            "audit.checkpoint_every_records",
            "audit.checkpoint_every_secs",
            "audit.witness_dir",
            "audit.witness_url",
            "audit.witness_ca_file",
            "audit.witness_timeout_ms",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key}: {problems:?}"
            );
        }
    }

    #[test]
    fn previous_keys_are_read_with_and_without_an_id() {
        let settings: AuditSettings = toml::from_str(
            "dir = \"a\"\nhmac_key_file = \"k2\"\nhmac_key_id = \"2026\"\nreplica_id = \"paris-1\"\n\
             previous_hmac_keys = [{ file = \"k0\" }, { id = \"2025\", file = \"k1\" }]",
        )
        .unwrap();
        assert!(settings.validate().is_empty(), "{:?}", settings.validate());
        assert_eq!(settings.previous_hmac_keys[0].id, None);
        assert_eq!(settings.log_dir(), PathBuf::from("a/paris-1"));
        assert!(
            toml::from_str::<AuditSettings>(
                "dir = \"a\"\nhmac_key_file = \"k\"\nprevious_hmac_keys = [{ file = \"k0\", key = 1 }]"
            )
            .is_err()
        );
    }

    #[test]
    fn a_host_name_becomes_a_safe_replica_id() {
        for (host, id) in [
            (
                "broker-1.diplomatie.gouv.fr\n",
                "broker-1.diplomatie.gouv.fr",
            ),
            ("../../etc", "etc"),
            ("hôte 2", "h-te-2"),
            ("", "broker"),
            ("...", "broker"),
        ] {
            let got = AuditSettings::replica_id_from_host(host);
            assert_eq!(got, id, "{host:?}");
            assert!(is_id(&got), "{got}");
        }
        assert_eq!(
            AuditSettings::replica_id_from_host(&"x".repeat(100)).len(),
            64
        );
    }
}
