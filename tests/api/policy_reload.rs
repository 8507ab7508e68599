//! The policy changes under a running broker: on SIGHUP and on file change,
//! checked and tested before it is swapped in; a bad file changes nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{TestApp, repo, spawn_app_with};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";

fn policy_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caf-broker-reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.toml");
    std::fs::copy(repo("config/policy.toml"), &file).unwrap();
    file
}

/// Replaces the file the way editors and deployment tools do: write aside, then rename.
fn replace(file: &PathBuf, text: &str) {
    let aside = file.with_extension("toml.new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, file).unwrap();
}

async fn version(app: &TestApp) -> String {
    let response = app
        .get_dossier("1000002", &app.token(AGENT), RADIATION)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["meta"]["policy_version"].as_str().unwrap().to_string()
}

/// Waits (bounded) until the broker has refused `n` policy files in all.
async fn wait_for_rejections(app: &TestApp, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready: Value = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rejected = ready["checks"]["policy"]["reloads"]["rejected"]
            .as_u64()
            .unwrap();
        if rejected >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no rejection seen within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_version_change(app: &TestApp, from: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = version(app).await;
        if now != from || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_changed_policy_file_is_applied_and_a_broken_one_is_refused() {
    let file = policy_copy("watch");
    let file_setting = file.display().to_string();
    let app = spawn_app_with(&[
        ("CAF_BROKER__POLICY__FILE", file_setting.as_str()),
        ("CAF_BROKER__POLICY__WATCH", "true"),
        (
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 100, burst = 100, per_day = 1000 }",
        ),
    ])
    .await;
    let original = version(&app).await;

    let text = std::fs::read_to_string(&file).unwrap();
    replace(&file, &format!("# reviewed again\n{text}"));
    let changed = wait_for_version_change(&app, &original).await;
    assert_ne!(changed, original, "the watcher applied the new file");

    // A path the CAF record does not have: the file is refused, the last good policy stays.
    replace(
        &file,
        &text.replacen(
            "\"statut_dossier\",",
            "\"statut_dossier\",\n  \"allocataire.numero_fiscal\",",
            1,
        ),
    );
    wait_for_rejections(&app, 1).await;
    assert_eq!(
        version(&app).await,
        changed,
        "a broken policy is never applied"
    );
}

#[tokio::test]
async fn sighup_reloads_a_policy_that_passes_its_tests_and_keeps_the_old_one_otherwise() {
    let file = policy_copy("sighup");
    let file_setting = file.display().to_string();
    let app = spawn_app_with(&[
        ("CAF_BROKER__POLICY__FILE", file_setting.as_str()),
        ("CAF_BROKER__POLICY__WATCH", "false"),
        (
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 100, burst = 100, per_day = 1000 }",
        ),
    ])
    .await;
    let original = version(&app).await;
    let text = std::fs::read_to_string(&file).unwrap();

    // Releasing the agent's identity for a radiation check breaks the shipped policy tests.
    replace(
        &file,
        &text.replacen(
            "  \"mise_a_jour\",\n]",
            "  \"mise_a_jour\",\n  \"allocataire.nom_naissance\",\n]",
            1,
        ),
    );
    hangup();
    wait_for_rejections(&app, 1).await;
    assert_eq!(
        version(&app).await,
        original,
        "a policy failing its tests is not applied"
    );
    let body: Value = app
        .get_dossier("1000002", &app.token(AGENT), RADIATION)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["data"].get("allocataire").is_none());

    replace(&file, &format!("# reviewed\n{text}"));
    hangup();
    assert_ne!(wait_for_version_change(&app, &original).await, original);
}

fn hangup() {
    // The shell's own `kill`, so that no procps package is needed.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", std::process::id())])
        .status()
        .unwrap();
    assert!(status.success());
}
