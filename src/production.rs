//! Production guards: outside the `dev` and `test` environments, the settings
//! a security team would refuse. `check` fails and `serve` refuses to start
//! on each problem, naming every one; a warning is printed and logged.
//!
//! Each guard is a line of the README's "Production checklist":
//! - no development signing key (`auth.dev_signing_key_file`);
//! - no configured file under `certs-dev/`;
//! - no JWKS key, TLS key, audit HMAC key or checkpoint signing key equal to
//!   one shipped in `certs-dev/`, and no witness CA trusting a certificate
//!   shipped there (compared by fingerprint, wherever the copy lives);
//! - a checkpoint signing key for the audit log;
//! - TLS on any listener that is not on a loopback address, the operations
//!   listener (`server.ops_listen`) included;
//! - client certificates required with TLS (`server.client_auth = "required"`);
//! - secret files readable by their owner only;
//! - TLS certificates valid for 14 more days (a warning under 30).

use std::path::Path;

use jiff::Timestamp;

use sha2::{Digest, Sha256};

use crate::audit::AuditKey;
use crate::config::Settings;

/// The environments in which the guards do not apply.
pub const DEVELOPMENT: [&str; 2] = ["dev", "test"];

/// A certificate closer to its end than this many days is refused.
const REFUSE_WITHIN_DAYS: i64 = 14;
/// A certificate closer to its end than this many days is reported.
const WARN_WITHIN_DAYS: i64 = 30;

/// What the guards found: problems refuse the start, warnings are reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Whether `environment` is one where development shortcuts are allowed.
pub fn is_development(environment: &str) -> bool {
    DEVELOPMENT.contains(&environment)
}

/// Runs every guard for `settings` at `now`. In `dev` and `test` nothing is
/// checked; elsewhere every problem is reported, not only the first.
pub fn inspect(settings: &Settings, now: Timestamp) -> Findings {
    let mut findings = Findings::default();
    if is_development(&settings.environment) {
        return findings;
    }
    let problems = &mut findings.problems;
    if settings.auth.dev_signing_key_file.is_some() {
        problems.push(
            "auth.dev_signing_key_file: a development signing key; remove it outside dev and test"
                .into(),
        );
    }
    for (setting, file) in files(settings) {
        if file.components().any(|c| c.as_os_str() == "certs-dev") {
            problems.push(format!(
                "{setting}: {} is a development file (certs-dev/ is public)",
                file.display()
            ));
        }
    }
    shipped_keys(settings, problems);
    if !settings.server.tls && !settings.server.listen.ip().is_loopback() {
        problems.push(format!(
            "server.tls: false on {}, which is not a loopback address; serve TLS, or listen on loopback behind a local proxy",
            settings.server.listen
        ));
    }
    if let Some(ops) = settings.server.ops_listen
        && !settings.server.ops_tls
        && !ops.ip().is_loopback()
    {
        problems.push(format!(
            "server.ops_listen: plain HTTP on {ops}, which is not a loopback address; set server.ops_tls = true, or listen on loopback"
        ));
    }
    if settings.server.tls && settings.server.client_auth() != crate::tls::ClientAuth::Required {
        problems.push(
            "server.client_auth: must be \"required\" with TLS: a consular application is known by its certificate".into(),
        );
    }
    for (setting, file) in secrets(settings) {
        if let Some(mode) = group_or_others_bits(file) {
            problems.push(format!(
                "{setting}: {} is readable by group or others (mode {mode:o}); chmod 600",
                file.display()
            ));
        }
    }
    for (setting, file) in certificates(settings) {
        expiry(setting, file, now, &mut findings);
    }
    findings
}

/// Every file the settings name, with its setting.
fn files(settings: &Settings) -> Vec<(&'static str, &Path)> {
    let s = settings;
    let optional = [
        ("server.tls_cert_file", s.server.tls_cert_file.as_deref()),
        ("server.tls_key_file", s.server.tls_key_file.as_deref()),
        ("server.client_ca_file", s.server.client_ca_file.as_deref()),
        ("auth.jwks_file", s.auth.jwks_file.as_deref()),
        ("auth.jwks_ca_file", s.auth.jwks_ca_file.as_deref()),
        (
            "auth.dev_signing_key_file",
            s.auth.dev_signing_key_file.as_deref(),
        ),
        ("upstream.ca_file", s.upstream.ca_file.as_deref()),
        (
            "upstream.client_cert_file",
            s.upstream.client_cert_file.as_deref(),
        ),
        (
            "upstream.client_key_file",
            s.upstream.client_key_file.as_deref(),
        ),
        ("quotas.redis_ca_file", s.quotas.redis_ca_file.as_deref()),
        (
            "quotas.redis_password_file",
            s.quotas.redis_password_file.as_deref(),
        ),
        ("policy.tests_dir", s.policy.tests_dir.as_deref()),
        ("policy.shadow_file", s.policy.shadow_file.as_deref()),
        (
            "audit.checkpoint_signing_key_file",
            s.audit.checkpoint_signing_key_file.as_deref(),
        ),
        ("audit.witness_ca_file", s.audit.witness_ca_file.as_deref()),
    ];
    let required = [
        ("policy.file", s.policy.file.as_path()),
        ("audit.dir", s.audit.dir.as_path()),
        ("audit.hmac_key_file", s.audit.hmac_key_file.as_path()),
    ];
    let set = optional
        .into_iter()
        .filter_map(|(setting, file)| Some((setting, file?)));
    let former_keys = s
        .audit
        .previous_hmac_keys
        .iter()
        .map(|key| ("audit.previous_hmac_keys", key.file.as_path()));
    required.into_iter().chain(set).chain(former_keys).collect()
}

/// The files that hold a secret: private keys, the audit key, the Redis password.
fn secrets(settings: &Settings) -> Vec<(&'static str, &Path)> {
    const SECRET: [&str; 7] = [
        "server.tls_key_file",
        "auth.dev_signing_key_file",
        "upstream.client_key_file",
        "quotas.redis_password_file",
        "audit.hmac_key_file",
        "audit.checkpoint_signing_key_file",
        "audit.previous_hmac_keys",
    ];
    let mut secrets = files(settings);
    secrets.retain(|(setting, _)| SECRET.contains(setting));
    secrets
}

/// The certificates whose end is watched: the broker's own, towards clients and the CAF.
fn certificates(settings: &Settings) -> Vec<(&'static str, &Path)> {
    let mut certificates = files(settings);
    certificates.retain(|(setting, _)| {
        ["server.tls_cert_file", "upstream.client_cert_file"].contains(setting)
    });
    if !settings.server.tls {
        certificates.retain(|(setting, _)| *setting != "server.tls_cert_file");
    }
    certificates
}

/// The permission bits of `file` that let its group or others read or write
/// it, if any are set (a missing file is reported by the stage that reads it).
fn group_or_others_bits(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Refuses a certificate that ends within 14 days, warns within 30.
fn expiry(setting: &str, file: &Path, now: Timestamp, findings: &mut Findings) {
    let Some(not_after) = crate::tls::certificates(file)
        .ok()
        .and_then(|chain| chain.first().and_then(|leaf| crate::tls::not_after(leaf)))
    else {
        // An unreadable certificate is reported by the stage that loads it.
        return;
    };
    let days = (not_after - now.as_second()).max(0) / 86_400;
    if days < REFUSE_WITHIN_DAYS {
        findings.problems.push(format!(
            "{setting}: the certificate ends in {days} days (at least 14 are required); renew it"
        ));
    } else if days < WARN_WITHIN_DAYS {
        findings.warnings.push(format!(
            "{setting}: the certificate ends in {days} days; renew it before 14 are left"
        ));
    }
}

/// The SHA-256 fingerprints of the public keys of every certificate shipped in
/// `certs-dev/` (a private key there is public, so is anything it signs for).
const SHIPPED_TLS_KEYS: &[&str] = &[
    "052ede6b2d59da9f48663b179931e94f9129d8e8660d07d390841d5ec9159f13",
    "255dc67ff8754dba23deece0db15e20ed856dbeff5c23d5a0406f877077af19d",
    "29d9478a9c478164d3058da21baad4a5d416c980da5edfc55b9f67b6ed808108",
    "4f95aff8f23237d7cf0229ea3b94a39774e7b822df49e2d9d48e073418e0096c",
    "5893dc9ef47e73cd977c1040317e0a6fa5386fedb3cfb2a0d855130711ec0a68",
    "5ad45515feb47ed746f6fcb0e690f67ce5a729426b4906df1099d3f6380325eb",
    "61cbed8f7ce6fa24bbb98333429f0687b7f6581e38c5713a05dad7f4c4fbfd4c",
    "952fb159895a7e96039f85d006e9740f29e89f83de02d240e0cf1ee3755fcfaf",
    "fc4cbd09b033cdbfc592e5c55b250b00cb26fe6dd2bcf2a8be8124e6eb076f40",
];

/// The RFC 7638 thumbprints of the keys of `certs-dev/jwks.json`.
const SHIPPED_JWKS_KEYS: &[&str] = &[
    "mchJb55fP24D41St094QTCX71qQ0kZwv8Rvn6ni1NHU",
    "MIe529Gilb6UcMTD5967eOuFDtMdQdcX_1OgXnxjFco",
];

/// The fingerprint ([`AuditKey::fingerprint`]) of `certs-dev/audit-hmac.key`.
const SHIPPED_AUDIT_KEY: &str = "80b7d66e1ea20fff427b01145b62f4583cffb6feb5cc75b97f081773d6761d87";

/// The SHA-256 of the raw public key of `certs-dev/audit-checkpoint.key.pem`
/// ([`crate::audit::CheckpointSigner::public_key_sha256`]).
const SHIPPED_CHECKPOINT_KEY: &str =
    "fe825d0b8e8097165ee45e4107046e981ce4f0172706a0f46b9a1cf7b692acfc";

/// Refuses key material equal to what `certs-dev/` ships, wherever it was copied.
fn shipped_keys(settings: &Settings, problems: &mut Vec<String>) {
    for (setting, file) in certificates(settings) {
        let shipped = crate::tls::certificates(file)
            .ok()
            .and_then(|chain| {
                chain
                    .first()
                    .and_then(|leaf| crate::tls::public_key_sha256(leaf))
            })
            .is_some_and(|fingerprint| SHIPPED_TLS_KEYS.contains(&fingerprint.as_str()));
        if shipped {
            problems.push(format!(
                "{setting}: the certificate's key is one shipped in certs-dev/ (public); use the PKI's"
            ));
        }
    }
    if let Some(file) = &settings.auth.jwks_file {
        let shipped = std::fs::read(file)
            .ok()
            .map(|json| jwks_thumbprints(&json))
            .unwrap_or_default()
            .into_iter()
            .any(|thumbprint| SHIPPED_JWKS_KEYS.contains(&thumbprint.as_str()));
        if shipped {
            problems.push(
                "auth.jwks_file: holds a key shipped in certs-dev/jwks.json (public); use the identity provider's"
                    .into(),
            );
        }
    }
    // A witness reached through a public CA could be anyone holding its key.
    if let Some(file) = &settings.audit.witness_ca_file {
        let shipped = crate::tls::certificates(file)
            .unwrap_or_default()
            .iter()
            .filter_map(|der| crate::tls::public_key_sha256(der))
            .any(|fingerprint| SHIPPED_TLS_KEYS.contains(&fingerprint.as_str()));
        if shipped {
            problems.push(
                "audit.witness_ca_file: trusts a certificate shipped in certs-dev/ (public): anyone could pose as the witness; use the witness's own CA"
                    .into(),
            );
        }
    }
    let audit_key = AuditKey::from_file(&settings.audit.hmac_key_file);
    if audit_key.is_ok_and(|key| key.fingerprint() == SHIPPED_AUDIT_KEY) {
        problems.push(
            "audit.hmac_key_file: the key shipped in certs-dev/ (public); generate one with `openssl rand -hex 32`"
                .into(),
        );
    }
    let checkpoint_key = settings
        .audit
        .checkpoint_signing_key_file
        .as_deref()
        .map(|file| {
            crate::audit::CheckpointSigner::from_file(file, "caf-broker")
                .map(|signer| signer.public_key_sha256())
        });
    match checkpoint_key {
        Some(Ok(fingerprint)) if fingerprint == SHIPPED_CHECKPOINT_KEY => problems.push(
            "audit.checkpoint_signing_key_file: the key shipped in certs-dev/ (public); generate one with `openssl genpkey -algorithm ED25519`"
                .into(),
        ),
        None => problems.push(
            "audit.checkpoint_signing_key_file: not set; without it no checkpoint is signed and the audit log can be rewritten unseen"
                .into(),
        ),
        _ => {}
    }
}

/// The RFC 7638 thumbprint (SHA-256 of the required members, in order,
/// without spaces), base64url, of every key of a JWKS document.
fn jwks_thumbprints(json: &[u8]) -> Vec<String> {
    use base64::Engine;
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let keys = document["keys"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .filter_map(|key| {
            let members: &[&str] = match key["kty"].as_str()? {
                "EC" => &["crv", "kty", "x", "y"],
                "OKP" => &["crv", "kty", "x"],
                "RSA" => &["e", "kty", "n"],
                _ => return None,
            };
            let mut canonical = serde_json::Map::new();
            for member in members {
                canonical.insert((*member).into(), key.get(*member)?.clone());
            }
            // A Map without preserve_order keeps its keys sorted, as RFC 7638 asks.
            let text = serde_json::to_string(&canonical).ok()?;
            let digest = Sha256::digest(text.as_bytes());
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn the_shipped_fingerprints_are_those_of_certs_dev() {
        let mut tls: Vec<String> = std::fs::read_dir(repo("certs-dev"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let name = path.file_name().unwrap().to_string_lossy();
                // Certificates only: neither private keys nor bare public keys.
                name.ends_with(".pem") && !name.ends_with(".key.pem") && !name.ends_with(".pub.pem")
            })
            .flat_map(|path| crate::tls::certificates(&path).unwrap())
            .filter_map(|der| crate::tls::public_key_sha256(&der))
            .collect();
        tls.sort();
        tls.dedup();
        let mut expected: Vec<String> = SHIPPED_TLS_KEYS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(tls, expected, "regenerate SHIPPED_TLS_KEYS");
        let jwks = jwks_thumbprints(&std::fs::read(repo("certs-dev/jwks.json")).unwrap());
        assert_eq!(jwks, SHIPPED_JWKS_KEYS, "regenerate SHIPPED_JWKS_KEYS");
        let audit = AuditKey::from_file(&repo("certs-dev/audit-hmac.key")).unwrap();
        assert_eq!(audit.fingerprint(), SHIPPED_AUDIT_KEY);
        let checkpoint = crate::audit::CheckpointSigner::from_file(
            &repo("certs-dev/audit-checkpoint.key.pem"),
            "caf-broker",
        )
        .unwrap();
        assert_eq!(checkpoint.public_key_sha256(), SHIPPED_CHECKPOINT_KEY);
    }

    #[test]
    fn a_jwk_thumbprint_follows_rfc_7638() {
        // RFC 7638, section 3.1: the example RSA key and its thumbprint.
        let jwks = br#"{"keys":[{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}]}"#;
        assert_eq!(
            jwks_thumbprints(jwks),
            ["NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"]
        );
    }
}
