//! The broker binary killed with SIGKILL under concurrent load loses no audit
//! record of an answered request, its log still verifies after restart, and
//! the restarted log continues the signed tree.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caf_broker::audit::{
    AuditEntry, AuditLog, CheckpointVerifier, Outcome, verify_dir, verify_signed,
};
use caf_broker::auth::{DevClaims, mint_dev_token};
use caf_broker::config::Settings;

#[path = "support/audit_files.rs"]
mod audit_files;

use audit_files::records;

const ANSWERS_BEFORE_KILL: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_broker_has_recorded_every_request_it_answered() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let audit_dir = std::env::temp_dir().join(format!("caf-broker-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&audit_dir);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        ("CAF_BROKER__SERVER__LISTEN", format!("127.0.0.1:{port}")),
        ("CAF_BROKER__SERVER__TLS", "false".into()),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "off".into()),
        ("CAF_BROKER__AUDIT__DIR", audit_dir.display().to_string()),
        ("CAF_BROKER__UPSTREAM__RECORDS", "300".into()),
        // Checkpoints signed all along the load, so that the kill lands between them.
        ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "50".into()),
        (
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 100000, burst = 100000, per_day = 1000000 }".into(),
        ),
        // One record per request id: no off-hours alert when run at night.
        ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\"".into()),
        (
            "CAF_BROKER__QUOTAS__AGENT_DEFAULT",
            "{ per_second = 100000, burst = 100000, per_day = 1000000 }".into(),
        ),
    ];
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_caf-broker"))
            .current_dir(root)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let settings = Settings::load_with_env(
        &root.join("config/broker.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.clone())),
    )
    .unwrap();
    let claims = DevClaims {
        sub: "agent-7".into(),
        post: "TN-TUNIS".into(),
        role: "agent_consulaire".into(),
        ttl_secs: 600,
    };
    let token = mint_dev_token(&settings.auth, claims).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until_up(&client, &base).await;

    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers: Vec<_> = (0..16)
        .map(|worker| {
            let (client, base, token, answered) = (
                client.clone(),
                base.clone(),
                token.clone(),
                answered.clone(),
            );
            tokio::spawn(async move {
                for i in 0..10_000usize {
                    if Instant::now() > deadline {
                        break;
                    }
                    let numero = if (worker + i) % 2 == 0 {
                        "1000002"
                    } else {
                        "1000004"
                    };
                    let sent = client
                        .get(format!("{base}/v1/allocataires/{numero}"))
                        .bearer_auth(&token)
                        .header("X-Purpose", "verification_radiation")
                        .header("X-Case-Reference", "CRASH-1")
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    if response.status() == 200 {
                        let id = response.headers()["x-request-id"]
                            .to_str()
                            .unwrap()
                            .to_string();
                        answered.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();

    while answered.lock().unwrap().len() < ANSWERS_BEFORE_KILL && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.0.kill().unwrap(); // SIGKILL: no shutdown, no flush.
    child.0.wait().unwrap();
    for worker in workers {
        let _ = worker.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= ANSWERS_BEFORE_KILL,
        "only {} answers before the deadline",
        answered.len()
    );

    // A restart repairs a torn last line (never acknowledged), rebuilds the
    // tree and checks it against the last checkpoint signed before the kill,
    // or refuses to open; only then is the tree verified with the public key.
    let reopened = AuditLog::open(&settings.audit).unwrap();
    let log_dir = settings.audit.log_dir();
    let verifier = CheckpointVerifier::from_file(
        &root.join("certs-dev/audit-checkpoint.pub.pem"),
        settings.audit.log_origin.as_deref(),
    )
    .unwrap();
    let before = verify_signed(&log_dir, &verifier, None).unwrap();
    assert!(
        before.checkpoint_size.is_some_and(|size| size >= 50),
        "checkpoints were signed under load: {before}"
    );
    let entry = AuditEntry::new(uuid::Uuid::new_v4(), Outcome::Released, 200);
    let receipt = reopened.append(entry).await.unwrap();
    assert_eq!(receipt.seq, before.tree_size + 1);
    drop(reopened);
    let after = verify_signed(&log_dir, &verifier, None).unwrap();
    assert_eq!(after.tree_size, before.tree_size + 1, "the tree continues");
    assert_eq!(
        after.checkpoint_size,
        Some(after.tree_size),
        "the restarted writer signs its shutdown checkpoint over the whole tree"
    );
    let report = verify_dir(&log_dir).unwrap();
    let recorded: HashSet<String> = records(&log_dir)
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(report.records as usize, recorded.len());
    assert_eq!(report.records, after.tree_size);
    let lost: Vec<_> = answered
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered requests have no audit record",
        lost.len()
    );
    let _ = std::fs::remove_dir_all(&audit_dir);
}

async fn wait_until_up(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The broker process, killed if the test fails before it does so itself.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
