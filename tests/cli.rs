//! The command line, run as a real process: check, policy explain, token, simulate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

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

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("caf-broker-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
