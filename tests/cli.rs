//! The command line, run as a real process: check, policy explain, token, simulate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "support/config_files.rs"]
mod config_files;

use config_files::{config_from, serve, tempdir};

fn broker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_passes_on_the_shipped_configuration() {
    let out = broker(&["check"]);
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("ok: config/broker.toml is valid"));
}

#[test]
fn check_reports_every_problem_of_a_broken_configuration_and_fails() {
    let dir = tempdir("check-broken");
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/broker.toml"))
            .unwrap();
    let broken = shipped
        .replace("leeway_secs = 30", "leeway_secs = 30\nleway = 1")
        .replace(
            "kind = \"embedded\"",
            "kind = \"embedded\"\nrecords_typo = 3",
        )
        .replace("max_body_bytes = 4096", "max_body_bytes = 1");
    let config = dir.join("broker.toml");
    std::fs::write(&config, broken).unwrap();
    let out = broker(&["check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown field `leway`"), "{stderr}");
    assert!(stderr.contains("unknown field `records_typo`"), "{stderr}");
    assert!(stderr.contains("server.max_body_bytes"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `check` with the shipped configuration and these environment variables.
fn check_with_env(vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .arg("check")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs")
}

#[test]
fn check_reads_a_post_code_in_a_variable_name_in_upper_case() {
    // Only registered posts are served: a post code read as `tn-tunis` would
    // be refused as no post code at all.
    let whole = (
        "CAF_BROKER__QUOTAS__POSTS__TN-TUNIS",
        "{ per_second = 1, burst = 2, per_day = 3 }",
    );
    let only = ("CAF_BROKER__QUOTAS__KNOWN_POSTS_ONLY", "true");
    let out = check_with_env(&[
        whole,
        only,
        ("CAF_BROKER__QUOTAS__POSTS__TN-TUNIS__PER_DAY", "7000"),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));

    let out = check_with_env(&[
        whole,
        only,
        ("CAF_BROKER__QUOTAS__POSTS__TN-TUNIS__PER_DAY", "0"),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "environment: CAF_BROKER__QUOTAS__POSTS__TN-TUNIS__PER_DAY: quotas.posts.TN-TUNIS.per_day: must be at least 1"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("tn-tunis"), "{stderr}");
}

#[test]
fn check_names_the_variable_that_holds_an_unknown_key_and_reports_every_one() {
    let out = check_with_env(&[
        ("CAF_BROKER__QUOTAS__PER_SECON", "5"),
        ("CAF_BROKER__QUOTAS__DEFAULT__PER_HOUR", "5"),
        ("CAF_BROKER__POLICY__WATH", "false"),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for problem in [
        "environment: CAF_BROKER__QUOTAS__PER_SECON: [quotas]: unknown field `per_secon`",
        "environment: CAF_BROKER__QUOTAS__DEFAULT__PER_HOUR: [quotas.default]: unknown field `per_hour`",
        "environment: CAF_BROKER__POLICY__WATH: [policy]: unknown field `wath`",
    ] {
        assert!(stderr.contains(problem), "{problem}\n{stderr}");
    }
    assert!(!stderr.contains("broker.toml"), "{stderr}");
}

#[test]
fn check_reads_the_redis_ca_and_password_files_without_showing_the_url() {
    let dir = tempdir("check-redis");
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/broker.toml"))
            .unwrap();
    let missing = dir.join("missing.pem");
    let broken = shipped.replace(
        "backend = \"local\"",
        &format!(
            "backend = \"redis\"\nredis_url = \"rediss://:s3cret@127.0.0.1:6380/0\"\n\
             redis_ca_file = \"{}\"",
            missing.display()
        ),
    );
    let config = dir.join("broker.toml");
    std::fs::write(&config, broken).unwrap();
    let out = broker(&["check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("quotas.redis_ca_file: cannot read"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn check_fails_on_a_policy_naming_a_field_the_caf_record_does_not_have() {
    let dir = tempdir("check-policy");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy = std::fs::read_to_string(root.join("config/policy.toml"))
        .unwrap()
        .replacen(
            "\"statut_dossier\",",
            "\"statut_dossier\",\n  \"allocataire.numero_fiscal\",",
            1,
        );
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(["check"])
        .current_dir(root)
        .env("CAF_BROKER__POLICY__FILE", dir.join("policy.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("allocataire.numero_fiscal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_reads_the_witness_ca_file_like_serve_and_names_one_that_holds_no_certificate() {
    let dir = tempdir("check-witness-ca");
    let not_a_certificate = dir.join("witness-ca.pem");
    std::fs::write(&not_a_certificate, "this is not a certificate\n").unwrap();
    let audit = format!("dir = \"{}\"", dir.join("audit").display());
    let witness = format!(
        "witness_url = \"https://127.0.0.1:9/add-checkpoint\"\nwitness_ca_file = \"{}\"",
        not_a_certificate.display()
    );
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[
            ("dir = \"var/audit\"", &audit),
            (
                "# witness_url = \"https://witness.example/add-checkpoint\"",
                &witness,
            ),
        ],
    );
    let out = broker(&["check", "--config", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "audit.witness_ca_file: {} holds no PEM certificate",
            not_a_certificate.display()
        )),
        "{stderr}"
    );
    // serve refuses the same file, with the same words.
    let served = serve_must_fail(&config);
    let logs = text(&served.stderr) + &text(&served.stdout);
    assert!(logs.contains("audit.witness_ca_file: "), "{logs}");

    // A missing file is named too; a CA that reads passes (nothing is sent).
    let missing = dir.join("missing-ca.pem");
    let out = check_with_env(&[
        (
            "CAF_BROKER__AUDIT__WITNESS_URL",
            "https://127.0.0.1:9/add-checkpoint",
        ),
        (
            "CAF_BROKER__AUDIT__WITNESS_CA_FILE",
            missing.to_str().unwrap(),
        ),
        (
            "CAF_BROKER__AUDIT__DIR",
            &dir.join("audit").display().to_string(),
        ),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("audit.witness_ca_file: cannot read PEM certificates from")
            && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
    let out = check_with_env(&[
        (
            "CAF_BROKER__AUDIT__WITNESS_URL",
            "https://127.0.0.1:9/add-checkpoint",
        ),
        ("CAF_BROKER__AUDIT__WITNESS_CA_FILE", "certs-dev/ca.pem"),
        (
            "CAF_BROKER__AUDIT__DIR",
            &dir.join("audit").display().to_string(),
        ),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

const EMBEDDED_UPSTREAM: &str = "kind = \"embedded\"              # the built-in CAF simulator; \"http\" for a CAF service\nseed = 42\nrecords = 10000";

/// `[upstream]` of kind "http" over mutual TLS, with the development files
/// except the ones given. Nothing listens on port 9: check must not connect.
fn http_upstream(ca: &str, cert: &str) -> String {
    format!(
        "kind = \"http\"\nurl = \"https://127.0.0.1:9/api\"\nca_file = \"{ca}\"\n\
         client_cert_file = \"{cert}\"\nclient_key_file = \"certs-dev/client-broker.key.pem\""
    )
}

#[test]
fn check_names_the_upstream_client_certificate_that_is_not_a_certificate() {
    let dir = tempdir("check-upstream-cert");
    let not_a_certificate = dir.join("client.pem");
    std::fs::write(&not_a_certificate, "this is not a certificate\n").unwrap();
    let upstream = http_upstream("certs-dev/ca.pem", not_a_certificate.to_str().unwrap());
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[(EMBEDDED_UPSTREAM, &upstream)],
    );
    let out = broker(&["check", "--config", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "upstream.client_cert_file: {}",
            not_a_certificate.display()
        )),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("ok:"));
}

#[test]
fn check_names_the_upstream_ca_file_that_is_missing() {
    let dir = tempdir("check-upstream-ca");
    let missing = dir.join("missing-ca.pem");
    let upstream = http_upstream(missing.to_str().unwrap(), "certs-dev/client-broker.pem");
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[(EMBEDDED_UPSTREAM, &upstream)],
    );
    let out = broker(&["check", "--config", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("upstream.ca_file: ") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn check_names_an_otlp_endpoint_that_is_not_a_url() {
    let dir = tempdir("check-otlp");
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[(
            "otlp_endpoint = \"\"",
            "otlp_endpoint = \"otel-collector:4318\"",
        )],
    );
    let out = broker(&["check", "--config", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("telemetry.otlp_endpoint: "), "{stderr}");
}

#[test]
fn check_prints_every_problem_of_every_component_at_once_without_the_redis_password() {
    let dir = tempdir("check-many");
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let not_a_key = dir.join("server.key.pem");
    std::fs::write(&not_a_key, "no key here\n").unwrap();
    // A file where the audit directory should be.
    let audit_dir = dir.join("audit");
    std::fs::write(&audit_dir, "").unwrap();
    let upstream = http_upstream(missing, "certs-dev/client-broker.pem");
    let redis = format!(
        "backend = \"redis\"\nredis_url = \"rediss://:s3cret@127.0.0.1:6380/0\"\nredis_ca_file = \"{missing}\""
    );
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[
            (EMBEDDED_UPSTREAM, &upstream),
            ("backend = \"local\"", &redis),
            (
                "tls_key_file = \"certs-dev/server.key.pem\"",
                &format!("tls_key_file = \"{}\"", not_a_key.display()),
            ),
            (
                "dir = \"var/audit\"",
                &format!("dir = \"{}\"", audit_dir.display()),
            ),
            (
                "hmac_key_file = \"certs-dev/audit-hmac.key\"",
                &format!("hmac_key_file = \"{missing}\""),
            ),
        ],
    );
    let out = broker(&["check", "--config", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("5 problem(s) found"), "{stderr}");
    for setting in [
        "upstream.ca_file: ",
        "quotas.redis_ca_file: ",
        "server.tls_key_file: ",
        "audit.dir: ",
        "audit.hmac_key_file: ",
    ] {
        assert!(stderr.contains(setting), "{setting} missing from: {stderr}");
    }
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `serve` on `config`, which must fail before it listens: its output, or
/// a failure of the test if it is still running after 60 s.
fn serve_must_fail(config: &Path) -> Output {
    let mut serving = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while serving.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = serving.kill();
            let _ = serving.wait();
            panic!("serve started on a configuration it should refuse");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    serving.wait_with_output().unwrap()
}

#[test]
fn check_fails_like_serve_on_an_audit_directory_whose_last_record_is_unreadable() {
    let dir = tempdir("check-audit-unreadable");
    let root = dir.join("audit");
    let audit = root.join("replica-1");
    std::fs::create_dir_all(&audit).unwrap();
    let garbled = audit.join("audit-2026-01-05.jsonl");
    std::fs::write(&garbled, "this is not an audit record\n").unwrap();
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[
            ("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:0\""),
            (
                "dir = \"var/audit\"",
                &format!("dir = \"{}\"\nreplica_id = \"replica-1\"", root.display()),
            ),
        ],
    );

    let served = serve_must_fail(&config);
    assert!(!served.status.success());
    assert!(
        text(&served.stderr).contains("last record is unreadable"),
        "{}",
        text(&served.stderr)
    );
    let checked = broker(&["check", "--config", config.to_str().unwrap()]);
    assert!(
        !checked.status.success(),
        "check passed where serve fails: {}",
        text(&checked.stdout)
    );
    let stderr = text(&checked.stderr);
    assert!(
        stderr.contains("audit-2026-01-05.jsonl") && stderr.contains("last record is unreadable"),
        "{stderr}"
    );
    // check leaves the directory as it found it.
    let names: Vec<_> = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["audit-2026-01-05.jsonl"]);
}

#[test]
fn check_passes_beside_the_running_broker_it_checks_and_leaves_its_audit_lock_alone() {
    let dir = tempdir("check-live");
    let audit = dir.join("audit");
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[
            ("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:0\""),
            ("tls = true", "tls = false"),
            ("client_auth = \"optional\"", "client_auth = \"off\""),
            (
                "dir = \"var/audit\"",
                &format!("dir = \"{}\"\nreplica_id = \"live\"", audit.display()),
            ),
            ("log_format = \"text\"", "log_format = \"json\""),
        ],
    );
    let (mut serving, listening, _drained) = serve(&config);
    let port = listening.and_then(|event| event["port"].as_u64());

    let checked = broker(&["check", "--config", config.to_str().unwrap()]);
    let lock = std::fs::File::options()
        .write(true)
        .open(audit.join("live/writer.lock"));
    let still_locked = lock.map(|file| file.try_lock().is_err());
    let ready = port.map(|port| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .map(|answer| answer.status().as_u16())
        })
    });
    let _ = serving.kill();
    let _ = serving.wait();

    assert!(port.is_some(), "the broker did not start");
    assert!(
        checked.status.success(),
        "stdout: {}\nstderr: {}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    assert!(
        still_locked.unwrap(),
        "the running broker no longer holds writer.lock"
    );
    assert_eq!(ready.unwrap().unwrap(), 200);
}

#[test]
fn policy_explain_lists_the_fields_and_transforms_of_a_permitted_pair() {
    let out = broker(&[
        "policy",
        "explain",
        "--role",
        "agent_consulaire",
        "--purpose",
        "verification_radiation",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("radiation.date_effet"), "{stdout}");
    assert!(stdout.contains("radiation.motif"), "{stdout}");
    assert!(
        stdout.contains("AUTRE"),
        "the map transform is shown: {stdout}"
    );
    assert!(!stdout.contains("allocataire.nom_naissance"), "{stdout}");
}

#[test]
fn policy_explain_says_why_a_pair_is_refused_and_exits_non_zero() {
    let out = broker(&[
        "policy",
        "explain",
        "--role",
        "agent_consulaire",
        "--purpose",
        "accompagnement_social",
    ]);
    assert!(!out.status.success());
    assert!(!text(&out.stdout).trim().is_empty());
}

#[test]
fn policy_explain_has_a_json_form_for_tools() {
    let out = broker(&[
        "policy",
        "explain",
        "--role",
        "assistant_social",
        "--purpose",
        "accompagnement_social",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert!(json.to_string().contains("enfants"), "{json}");
}

#[test]
fn check_names_the_client_ca_file_that_cannot_verify_client_certificates() {
    for (file, why) in [
        ("certs-dev/no-such-ca.pem", "no-such-ca.pem"),
        (
            "certs-dev/client-TN-TUNIS.key.pem",
            "holds no PEM certificate",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
            .arg("check")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .env("CAF_BROKER__SERVER__CLIENT_CA_FILE", file)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{file}: {stderr}");
        assert!(
            stderr.contains("server.client_ca_file: ") && stderr.contains(why),
            "{file}: {stderr}"
        );
    }
}

#[test]
fn token_bind_cert_binds_the_token_to_the_certificates_sha256() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};

    let out = broker(&[
        "token",
        "--post",
        "TN-TUNIS",
        "--role",
        "agent_consulaire",
        "--sub",
        "agent-1",
        "--bind-cert",
        "certs-dev/client-TN-TUNIS.pem",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    let payload = token.trim().split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let leaf = CertificateDer::pem_file_iter(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/client-TN-TUNIS.pem"),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap();
    let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(leaf.as_ref()));
    assert_eq!(claims["cnf"]["x5t#S256"], expected.as_str());
    assert_eq!(claims["post"], "TN-TUNIS");

    let missing = broker(&[
        "token",
        "--post",
        "TN-TUNIS",
        "--role",
        "agent_consulaire",
        "--sub",
        "agent-1",
        "--bind-cert",
        "certs-dev/no-such-certificate.pem",
    ]);
    assert!(!missing.status.success());
    assert!(missing.stdout.is_empty());
    assert!(text(&missing.stderr).contains("no-such-certificate.pem"));
}

#[test]
fn token_prints_a_three_part_jwt_and_refuses_without_a_dev_key() {
    let out = broker(&[
        "token",
        "--post",
        "TN-TUNIS",
        "--role",
        "agent_consulaire",
        "--sub",
        "agent-1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().split('.').count(), 3);

    let dir = tempdir("token-no-key");
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/broker.toml"))
            .unwrap();
    let without_dev_key: String = shipped
        .lines()
        .filter(|l| !l.starts_with("dev_signing"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = dir.join("broker.toml");
    std::fs::write(&config, without_dev_key).unwrap();
    let without_key = broker(&[
        "token",
        "--post",
        "TN-TUNIS",
        "--role",
        "agent_consulaire",
        "--sub",
        "agent-1",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        text(&without_key.stderr).contains("dev"),
        "{}",
        text(&without_key.stderr)
    );
    assert!(without_key.stdout.is_empty());
    assert!(!without_key.status.success());
}

#[test]
fn simulate_serves_dossiers_and_counts_requests() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--records", "50"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        let client = reqwest::Client::new();
        let found = client
            .get(format!("http://{addr}/dossiers/1000002"))
            .send()
            .await?;
        let missing = client
            .get(format!("http://{addr}/dossiers/9999999"))
            .send()
            .await?;
        let stats: serde_json::Value = client
            .get(format!("http://{addr}/_sim/stats"))
            .send()
            .await?
            .json()
            .await?;
        Ok::<_, reqwest::Error>((found.status().as_u16(), missing.status().as_u16(), stats))
    });
    let _ = child.kill();
    let _ = child.wait();
    let (found, missing, stats) = result.unwrap();
    assert_eq!((found, missing), (200, 404));
    assert_eq!(stats["requests_total"], 2);
}

#[test]
fn check_reports_a_bad_operations_listener_naming_each_problem() {
    let unparsable = check_with_env(&[("CAF_BROKER__SERVER__OPS_LISTEN", "localhost")]);
    assert!(!unparsable.status.success());
    let stderr = text(&unparsable.stderr);
    assert!(
        stderr.contains("environment: CAF_BROKER__SERVER__OPS_LISTEN")
            && stderr.contains("server.ops_listen"),
        "{stderr}"
    );

    let checked = check_with_env(&[
        ("CAF_BROKER__SERVER__TLS", "false"),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "off"),
        // The shipped API listener's address.
        ("CAF_BROKER__SERVER__OPS_LISTEN", "127.0.0.1:8443"),
        ("CAF_BROKER__SERVER__OPS_TLS", "true"),
    ]);
    assert!(!checked.status.success());
    let stderr = text(&checked.stderr);
    for problem in [
        "server.ops_listen: 127.0.0.1:8443 overlaps server.listen (127.0.0.1:8443)",
        "server.ops_tls: needs server.tls = true",
    ] {
        assert!(
            stderr.contains(problem),
            "{problem:?} missing from:\n{stderr}"
        );
    }

    let alone = check_with_env(&[("CAF_BROKER__SERVER__OPS_TLS", "true")]);
    assert!(!alone.status.success());
    let stderr = text(&alone.stderr);
    assert!(
        stderr.contains("server.ops_tls: needs server.ops_listen"),
        "{stderr}"
    );
    let fine = check_with_env(&[
        ("CAF_BROKER__SERVER__OPS_LISTEN", "127.0.0.1:9464"),
        ("CAF_BROKER__SERVER__OPS_TLS", "true"),
    ]);
    assert!(fine.status.success(), "{}", text(&fine.stderr));
}

/// Whether something accepts TCP connections on `port` of 127.0.0.1.
fn accepts(port: u64) -> bool {
    let port = u16::try_from(port).unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn serve_with_an_operations_listener_answers_on_both_ports_and_sigterm_closes_both() {
    let dir = tempdir("serve-ops");
    let config = config_from(
        "config/broker.toml",
        &dir,
        &[
            (
                "listen = \"127.0.0.1:8443\"",
                "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"",
            ),
            ("tls = true", "tls = false"),
            ("client_auth = \"optional\"", "client_auth = \"off\""),
            (
                "dir = \"var/audit\"",
                &format!("dir = \"{}\"", dir.join("audit").display()),
            ),
            ("log_format = \"text\"", "log_format = \"json\""),
        ],
    );
    let (mut serving, listening, drained) = serve(&config);
    let ports = listening.as_ref().and_then(|event| {
        Some((
            event["port"].as_u64()?,
            event["ops_port"].as_u64()?,
            event["ops_scheme"].as_str()?.to_owned(),
        ))
    });
    let answers = ports.as_ref().map(|(api, ops, _)| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut statuses = Vec::new();
            for (port, path) in [
                (ops, "/healthz"),
                (ops, "/readyz"),
                (ops, "/metrics"),
                (api, "/readyz"),
                (api, "/metrics"),
                (api, "/openapi.json"),
            ] {
                let answer = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await;
                statuses.push(answer.map(|a| a.status().as_u16()).unwrap_or(0));
            }
            statuses
        })
    });
    let terminated = Command::new("kill")
        .args(["-TERM", &serving.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while serving.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = serving.kill();
    let exited = serving.wait().unwrap();
    let _ = drained.join();

    let (api, ops, ops_scheme) = ports.expect("the broker logged both ports");
    assert_eq!(ops_scheme, "http");
    assert_ne!(api, ops);
    assert_eq!(answers.unwrap(), [200, 200, 200, 404, 404, 200]);
    assert!(terminated.success());
    assert!(
        exited.success(),
        "a SIGTERM stops the broker cleanly: {exited}"
    );
    assert!(!accepts(api), "the API port still accepts after the stop");
    assert!(
        !accepts(ops),
        "the operations port still accepts after the stop"
    );
}
