//! The production guards, through the real binary: outside `dev` and `test`,
//! `check` fails and `serve` refuses to start on each cause, naming every one;
//! with fresh keys and certificates the same configuration passes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};

#[path = "support/config_files.rs"]
mod config_files;

use config_files::{config_from, tempdir};

fn broker(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check(config: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = broker(&["check", "--config", config.to_str().unwrap()], env);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Writes `contents` to `dir/name`, readable and writable by its owner only.
fn secret(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A self-signed certificate for `localhost` ending `days` from now, and its key.
fn certificate(dir: &Path, name: &str, days: i64) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
    let end = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days);
    let end = end.to_zoned(jiff::tz::TimeZone::UTC);
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(
        i32::from(end.year()),
        u8::try_from(end.month()).unwrap(),
        u8::try_from(end.day()).unwrap(),
    );
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    (
        pem,
        secret(
            dir,
            &format!("{name}.key.pem"),
            key.serialize_pem().as_bytes(),
        ),
    )
}

/// A key set of one fresh Ed25519 key, as an identity provider would publish it.
fn fresh_jwks(dir: &Path) -> PathBuf {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public_key_raw());
    let jwks = serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "prod-1", "alg": "EdDSA", "use": "sig"}
    ]});
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    path
}

/// The production example's files, replaced by `files` (the setting's
/// placeholder path, then the file to use), with a Redis and a collector that
/// do not answer and a new audit directory.
fn production(dir: &Path, files: &Files) -> PathBuf {
    let password = secret(dir, "redis-password", b"hunter2-redis\n");
    let audit = dir.join("audit");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let jwks = format!("jwks_file = \"{}\"", path(&files.jwks));
    config_from(
        "config/production.example.toml",
        dir,
        &[
            ("/etc/caf-broker/tls/server.pem", &path(&files.server_cert)),
            (
                "/etc/caf-broker/tls/server.key.pem",
                &path(&files.server_key),
            ),
            (
                "/etc/caf-broker/tls/consular-ca.pem",
                &path(&files.consular_ca),
            ),
            (
                "jwks_url = \"https://idp.diplomatie.gouv.fr/.well-known/jwks.json\"",
                &jwks,
            ),
            ("jwks_ca_file = \"/etc/caf-broker/idp/ca.pem\"", ""),
            ("/etc/caf-broker/policy.toml", "config/policy.toml"),
            ("/etc/caf-broker/policy-tests", "config/policy-tests"),
            ("/etc/caf-broker/caf/ca.pem", &path(&files.caf_ca)),
            ("/etc/caf-broker/caf/broker.pem", &path(&files.client_cert)),
            (
                "/etc/caf-broker/caf/broker.key.pem",
                &path(&files.client_key),
            ),
            // Port 1: nothing answers there.
            ("rediss://redis.internal:6380/0", "rediss://127.0.0.1:1/0"),
            ("/etc/caf-broker/redis/ca.pem", &path(&files.caf_ca)),
            ("/run/secrets/caf-broker-redis", &path(&password)),
            ("/var/lib/caf-broker/audit", &path(&audit)),
            ("/etc/caf-broker/audit-hmac.key", &path(&files.audit_key)),
            (
                "/etc/caf-broker/audit-checkpoint.key.pem",
                &path(&files.checkpoint_key),
            ),
        ],
    )
}

/// The key material a deployment supplies.
struct Files {
    server_cert: PathBuf,
    server_key: PathBuf,
    /// The CA of the consular applications' client certificates.
    consular_ca: PathBuf,
    jwks: PathBuf,
    caf_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    audit_key: PathBuf,
    checkpoint_key: PathBuf,
}

/// Fresh files: nothing from `certs-dev/`, keys readable by their owner only,
/// the broker's certificates ending `days` from now.
fn fresh(dir: &Path, days: i64) -> Files {
    let (server_cert, server_key) = certificate(dir, "server", days);
    let (client_cert, client_key) = certificate(dir, "client", days);
    let (caf_ca, _) = certificate(dir, "caf-ca", 365);
    let audit_key = format!(
        "{}{}\n",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    Files {
        server_cert,
        server_key,
        consular_ca: caf_ca.clone(),
        jwks: fresh_jwks(dir),
        caf_ca,
        client_cert,
        client_key,
        audit_key: secret(dir, "audit-hmac.key", audit_key.as_bytes()),
        checkpoint_key: secret(
            dir,
            "audit-checkpoint.key.pem",
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .unwrap()
                .serialize_pem()
                .as_bytes(),
        ),
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The development files, where `certs-dev/` ships them.
fn development() -> Files {
    Files {
        server_cert: repo("certs-dev/server.pem"),
        server_key: repo("certs-dev/server.key.pem"),
        consular_ca: repo("certs-dev/ca.pem"),
        jwks: repo("certs-dev/jwks.json"),
        caf_ca: repo("certs-dev/ca.pem"),
        client_cert: repo("certs-dev/client-broker.pem"),
        client_key: repo("certs-dev/client-broker.key.pem"),
        audit_key: repo("certs-dev/audit-hmac.key"),
        checkpoint_key: repo("certs-dev/audit-checkpoint.key.pem"),
    }
}

fn assert_names_each(output: &str, causes: &[&str]) {
    for cause in causes {
        assert!(output.contains(cause), "{cause:?} missing from:\n{output}");
    }
}

#[test]
fn check_passes_on_the_production_example_with_fresh_keys_and_no_redis_or_collector_up() {
    let dir = tempdir("production-fresh");
    let config = production(&dir, &fresh(&dir, 90));
    let (ok, stdout, stderr) = check(&config, &[]);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(!stdout.contains("warning: server"), "{stdout}");
    // check writes nothing: the audit directory the broker would create is not there.
    assert!(!dir.join("audit").exists());
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"));
}

#[test]
fn check_fails_like_serve_on_the_production_example_whose_audit_directory_cannot_be_created() {
    let dir = tempdir("production-audit-uncreatable");
    let config = production(&dir, &fresh(&dir, 90));
    // A name longer than any file system takes: not even root can create it.
    let audit = dir.join("audit").display().to_string();
    let uncreatable = dir.join("x".repeat(300)).join("audit");
    let written = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        written.replacen(&audit, uncreatable.to_str().unwrap(), 1),
    )
    .unwrap();

    let served = broker(
        &["serve", "--config", config.to_str().unwrap()],
        &[("CAF_BROKER__SERVER__LISTEN", "127.0.0.1:0")],
    );
    let logs = text(&served.stderr) + &text(&served.stdout);
    assert!(!served.status.success(), "{logs}");
    assert!(logs.contains("audit.dir"), "{logs}");
    assert!(!logs.contains("caf-broker listening"), "{logs}");
    let (ok, stdout, stderr) = check(&config, &[]);
    assert!(!ok, "check passed where serve fails: {stdout}");
    assert_names_each(&stderr, &["audit.dir: ", "xxxx/audit"]);
    assert!(!dir.join("x".repeat(300)).exists(), "check leaves nothing");
}

#[test]
fn check_and_serve_refuse_the_development_files_in_production_naming_every_cause() {
    let dir = tempdir("production-dev-files");
    let config = production(&dir, &development());
    let dev_key = [(
        "CAF_BROKER__AUTH__DEV_SIGNING_KEY_FILE",
        "certs-dev/jwt-signing.key.pem",
    )];
    let causes = [
        "auth.dev_signing_key_file: a development signing key",
        "server.tls_cert_file: ",
        "certs-dev/server.pem is a development file",
        "certs-dev/server.key.pem is a development file",
        "server.client_ca_file: ",
        "certs-dev/jwks.json is a development file",
        "certs-dev/client-broker.pem is a development file",
        "certs-dev/audit-hmac.key is a development file",
        "certs-dev/audit-checkpoint.key.pem is a development file",
        "server.tls_cert_file: the certificate's key is one shipped in certs-dev/",
        "upstream.client_cert_file: the certificate's key is one shipped in certs-dev/",
        "auth.jwks_file: holds a key shipped in certs-dev/jwks.json",
        "audit.hmac_key_file: the key shipped in certs-dev/",
        "audit.checkpoint_signing_key_file: the key shipped in certs-dev/",
    ];
    let (ok, _, stderr) = check(&config, &dev_key);
    assert!(!ok);
    assert_names_each(&stderr, &causes);

    let served = broker(
        &["serve", "--config", config.to_str().unwrap()],
        &[
            dev_key[0],
            ("CAF_BROKER__SERVER__LISTEN", "127.0.0.1:0"),
            ("CAF_BROKER__TELEMETRY__LOG_FORMAT", "json"),
        ],
    );
    assert!(!served.status.success());
    let logs = text(&served.stderr) + &text(&served.stdout);
    assert_names_each(&logs, &causes);
    assert!(!logs.contains("caf-broker listening"), "{logs}");
    assert!(!dir.join("audit").exists(), "nothing is written");
}

#[test]
fn copies_of_the_development_keys_outside_certs_dev_are_refused_by_fingerprint() {
    let dir = tempdir("production-copies");
    let copies = dir.join("copies");
    std::fs::create_dir_all(&copies).unwrap();
    let copy = |name: &str| {
        let bytes = std::fs::read(repo(&format!("certs-dev/{name}"))).unwrap();
        secret(&copies, name, &bytes)
    };
    let files = Files {
        server_cert: copy("server.pem"),
        server_key: copy("server.key.pem"),
        jwks: copy("jwks.json"),
        audit_key: copy("audit-hmac.key"),
        checkpoint_key: copy("audit-checkpoint.key.pem"),
        ..fresh(&dir, 90)
    };
    let (ok, _, stderr) = check(&production(&dir, &files), &[]);
    assert!(!ok);
    assert_names_each(
        &stderr,
        &[
            "server.tls_cert_file: the certificate's key is one shipped in certs-dev/",
            "auth.jwks_file: holds a key shipped in certs-dev/jwks.json",
            "audit.hmac_key_file: the key shipped in certs-dev/",
            "audit.checkpoint_signing_key_file: the key shipped in certs-dev/",
        ],
    );
    assert!(!stderr.contains("is a development file"), "{stderr}");
    assert!(!stderr.contains("upstream.client_cert_file"), "{stderr}");
}

#[test]
fn a_witness_ca_from_certs_dev_is_refused_where_it_ships_and_copied_elsewhere() {
    let dir = tempdir("production-witness-ca");
    let config = production(&dir, &fresh(&dir, 90));
    let witness = |ca: &Path| {
        let (ok, stdout, stderr) = check(
            &config,
            &[
                (
                    "CAF_BROKER__AUDIT__WITNESS_URL",
                    "https://witness.example/add-checkpoint",
                ),
                ("CAF_BROKER__AUDIT__WITNESS_CA_FILE", ca.to_str().unwrap()),
            ],
        );
        (ok, stdout + &stderr)
    };
    let (ok, output) = witness(&repo("certs-dev/ca.pem"));
    assert!(!ok, "{output}");
    assert_names_each(
        &output,
        &[
            "audit.witness_ca_file: ",
            "certs-dev/ca.pem is a development file",
            "audit.witness_ca_file: trusts a certificate shipped in certs-dev/",
        ],
    );
    // A copy elsewhere, in a bundle after a fresh CA, is refused by fingerprint.
    let (fresh_ca, _) = certificate(&dir, "witness-ca", 365);
    let bundle = dir.join("witness-bundle.pem");
    let mut pem = std::fs::read(&fresh_ca).unwrap();
    pem.extend(std::fs::read(repo("certs-dev/ca.pem")).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let (ok, output) = witness(&bundle);
    assert!(!ok, "{output}");
    assert_names_each(
        &output,
        &["audit.witness_ca_file: trusts a certificate shipped in certs-dev/"],
    );
    assert!(!output.contains("is a development file"), "{output}");
    // The witness's own CA passes.
    let (ok, output) = witness(&fresh_ca);
    assert!(ok, "{output}");
}

#[test]
fn a_secret_file_group_or_others_may_read_is_refused_with_its_mode() {
    let dir = tempdir("production-modes");
    let files = fresh(&dir, 90);
    for (file, mode) in [
        (&files.server_key, 0o640),
        (&files.audit_key, 0o604),
        (&files.checkpoint_key, 0o660),
    ] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let (ok, _, stderr) = check(&production(&dir, &files), &[]);
    assert!(!ok);
    assert_names_each(
        &stderr,
        &[
            "server.tls_key_file: ",
            "is readable by group or others (mode 640); chmod 600",
            "audit.hmac_key_file: ",
            "(mode 604)",
            "audit.checkpoint_signing_key_file: ",
            "(mode 660)",
        ],
    );
    assert!(!stderr.contains("upstream.client_key_file"), "{stderr}");
}

#[test]
fn a_certificate_ending_within_14_days_is_refused_and_within_30_is_a_warning() {
    let dir = tempdir("production-expiry-soon");
    let (ok, _, stderr) = check(&production(&dir, &fresh(&dir, 10)), &[]);
    assert!(!ok);
    assert_names_each(
        &stderr,
        &[
            "server.tls_cert_file: the certificate ends in ",
            "upstream.client_cert_file: the certificate ends in ",
            "(at least 14 are required)",
        ],
    );

    let dir = tempdir("production-expiry-near");
    let (ok, stdout, stderr) = check(&production(&dir, &fresh(&dir, 20)), &[]);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert_names_each(
        &stdout,
        &[
            "warning: server.tls_cert_file: the certificate ends in ",
            "warning: upstream.client_cert_file: the certificate ends in ",
        ],
    );
}

#[test]
fn plain_http_is_refused_off_loopback_and_allowed_on_loopback() {
    let dir = tempdir("production-plain");
    let config = production(&dir, &fresh(&dir, 90));
    let plain = ("CAF_BROKER__SERVER__TLS", "false");
    let no_client_auth = ("CAF_BROKER__SERVER__CLIENT_AUTH", "off");
    let (ok, _, stderr) = check(
        &config,
        &[
            plain,
            no_client_auth,
            ("CAF_BROKER__SERVER__LISTEN", "0.0.0.0:8443"),
        ],
    );
    assert!(!ok);
    assert_names_each(&stderr, &["server.tls: false on 0.0.0.0:8443"]);
    let (ok, stdout, stderr) = check(
        &config,
        &[
            plain,
            no_client_auth,
            ("CAF_BROKER__SERVER__LISTEN", "[::1]:8443"),
        ],
    );
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn the_shipped_development_configuration_passes_because_it_says_dev() {
    let (ok, stdout, stderr) = check(&repo("config/broker.toml"), &[]);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    let (ok, _, stderr) = check(
        &repo("config/broker.toml"),
        &[("CAF_BROKER__ENVIRONMENT", "staging")],
    );
    assert!(!ok, "staging is not development");
    assert_names_each(
        &stderr,
        &["auth.dev_signing_key_file: a development signing key"],
    );
}

#[test]
fn token_refuses_to_mint_outside_dev_and_test() {
    let args = [
        "token",
        "--post",
        "TN-TUNIS",
        "--role",
        "agent_consulaire",
        "--sub",
        "agent-1",
    ];
    let minted = broker(&args, &[("CAF_BROKER__ENVIRONMENT", "test")]);
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    let refused = broker(&args, &[("CAF_BROKER__ENVIRONMENT", "production")]);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    assert!(
        text(&refused.stderr).contains("dev and test only"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn the_environment_is_required_and_its_old_place_still_works_with_a_warning() {
    let dir = tempdir("production-environment");
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[("\nenvironment = \"dev\"\n", "\n")],
    );
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok);
    assert_names_each(&stderr, &["environment: required"]);

    let config = config_from(
        "config/broker.toml",
        &dir,
        &[
            ("\nenvironment = \"dev\"\n", "\n"),
            (
                "service_name = \"caf-broker\"",
                "service_name = \"caf-broker\"\nenvironment = \"dev\"",
            ),
        ],
    );
    let (ok, stdout, stderr) = check(&config, &[]);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert_names_each(
        &stdout,
        &["warning: ", "telemetry.environment: renamed `environment`"],
    );
}

#[test]
fn a_plain_operations_listener_is_refused_off_loopback_and_allowed_on_loopback_or_over_tls() {
    let dir = tempdir("production-ops");
    let config = production(&dir, &fresh(&dir, 90));
    let (ok, _, stderr) = check(
        &config,
        &[("CAF_BROKER__SERVER__OPS_LISTEN", "0.0.0.0:9464")],
    );
    assert!(!ok);
    assert_names_each(
        &stderr,
        &["server.ops_listen: plain HTTP on 0.0.0.0:9464, which is not a loopback address"],
    );
    for allowed in [
        &[("CAF_BROKER__SERVER__OPS_LISTEN", "127.0.0.1:9464")][..],
        &[
            ("CAF_BROKER__SERVER__OPS_LISTEN", "0.0.0.0:9464"),
            ("CAF_BROKER__SERVER__OPS_TLS", "true"),
        ][..],
    ] {
        let (ok, stdout, stderr) = check(&config, allowed);
        assert!(ok, "{allowed:?}\nstdout: {stdout}\nstderr: {stderr}");
    }

    let served = broker(
        &["serve", "--config", config.to_str().unwrap()],
        &[
            ("CAF_BROKER__SERVER__LISTEN", "127.0.0.1:0"),
            ("CAF_BROKER__SERVER__OPS_LISTEN", "0.0.0.0:0"),
        ],
    );
    assert!(!served.status.success());
    let logs = text(&served.stderr) + &text(&served.stdout);
    assert_names_each(&logs, &["server.ops_listen: plain HTTP on 0.0.0.0:0"]);
    assert!(!logs.contains("caf-broker listening"), "{logs}");
}

#[test]
fn client_certificates_are_required_with_tls_outside_dev_and_test() {
    let dir = tempdir("production-client-auth");
    let config = production(&dir, &fresh(&dir, 90));
    for weaker in ["optional", "off"] {
        let (ok, _, stderr) = check(&config, &[("CAF_BROKER__SERVER__CLIENT_AUTH", weaker)]);
        assert!(!ok, "client_auth = {weaker} passed");
        assert_names_each(
            &stderr,
            &[
                "server.client_auth: must be \"required\" with TLS: a consular application is known by its certificate",
            ],
        );
    }
    let served = broker(
        &["serve", "--config", config.to_str().unwrap()],
        &[
            ("CAF_BROKER__SERVER__LISTEN", "127.0.0.1:0"),
            ("CAF_BROKER__SERVER__CLIENT_AUTH", "optional"),
        ],
    );
    assert!(!served.status.success());
    let logs = text(&served.stderr) + &text(&served.stdout);
    assert_names_each(&logs, &["server.client_auth: must be \"required\""]);
    assert!(!logs.contains("caf-broker listening"), "{logs}");
    // The same settings in a test environment are allowed.
    let (ok, stdout, stderr) = check(
        &config,
        &[
            ("CAF_BROKER__SERVER__CLIENT_AUTH", "optional"),
            ("CAF_BROKER__ENVIRONMENT", "test"),
        ],
    );
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
}
