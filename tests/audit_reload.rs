//! Policy reloads in the audit log of the real binary: each reload, by SIGHUP
//! or by a change of the file, is a `policy_reload` record with the versions
//! before and after, followed at once by a signed checkpoint that covers it;
//! a refused file is recorded as `rejected`; the log still verifies, and a
//! data subject's report never lists a reload.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use caf_broker::audit::{CheckpointVerifier, Record, RecordKind, split_checkpoints};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[path = "support/config_files.rs"]
mod config_files;

/// How long a reload (and its checkpoint) may take to show in the files.
const WAIT: Duration = Duration::from_secs(20);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The broker, killed if the test fails before it stops.
struct Broker {
    child: Child,
    port: u16,
    env: Vec<(String, String)>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// `caf-broker serve` on plain HTTP with its own policy file and audit
    /// directory; checkpoints are due by count or time only long after the
    /// test, so that any checkpoint it sees is one a reload forced.
    fn start(dir: &Path, watch: bool) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env: Vec<(String, String)> = [
            ("CAF_BROKER__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("CAF_BROKER__SERVER__TLS", "false".into()),
            ("CAF_BROKER__SERVER__CLIENT_AUTH", "off".into()),
            (
                "CAF_BROKER__POLICY__FILE",
                policy(dir).display().to_string(),
            ),
            ("CAF_BROKER__POLICY__WATCH", watch.to_string()),
            (
                "CAF_BROKER__AUDIT__DIR",
                dir.join("audit").display().to_string(),
            ),
            ("CAF_BROKER__AUDIT__REPLICA_ID", "\"r1\"".into()),
            (
                "CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS",
                "100000".into(),
            ),
            ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_SECS", "86400".into()),
            ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\"".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let child = config_files::spawn_quiet(&env);
        let broker = Broker { child, port, env };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// One data request for dossier 1000002; returns the policy version that filtered it.
    fn lookup(&self) -> String {
        let token = config_files::agent_7_token(&self.env);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .get(format!(
                    "http://127.0.0.1:{}/v1/allocataires/1000002",
                    self.port
                ))
                .bearer_auth(&token)
                .header("X-Purpose", "verification_radiation")
                .header("X-Case-Reference", "RELOAD-1")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            body["meta"]["policy_version"].as_str().unwrap().to_owned()
        })
    }

    fn hangup(&self) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -HUP {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and a clean exit (the shutdown checkpoint written).
    fn stop(mut self) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(
            self.child.wait().unwrap().success(),
            "the broker stopped badly"
        );
    }
}

fn policy(dir: &Path) -> PathBuf {
    dir.join("policy.toml")
}

/// A fresh directory with a copy of the shipped policy.
fn scratch(name: &str) -> PathBuf {
    let dir = config_files::tempdir(name);
    std::fs::copy(root().join("config/policy.toml"), policy(&dir)).unwrap();
    dir
}

/// The version the broker gives a policy file: `sha256:` and its hex digest.
fn version_of(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// Replaces the policy file the way deployment tools do: write aside, then rename.
fn replace_policy(dir: &Path, text: &str) {
    let aside = dir.join("policy.toml.new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, policy(dir)).unwrap();
}

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("audit").join("r1")
}

/// Every record of the replica's log, in chain order.
fn records(dir: &Path) -> Vec<Record> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(log_dir(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut records: Vec<Record> = files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            text.lines()
                .map(|line| serde_json::from_str::<Record>(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    records.sort_by_key(|r| r.seq);
    records
}

fn reloads(dir: &Path) -> Vec<Record> {
    records(dir)
        .into_iter()
        .filter(|r| r.kind == Some(RecordKind::PolicyReload))
        .collect()
}

/// Waits (bounded) until the log holds `n` reload records; returns them.
fn wait_for_reloads(dir: &Path, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = reloads(dir);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{n} reload record(s) expected, {} found",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The size of the latest checkpoint of `checkpoints.log`, checked with the public key.
fn latest_checkpoint_size(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(log_dir(dir).join("checkpoints.log")).ok()?;
    let (notes, _) = split_checkpoints(&bytes);
    // Replica r1 signs as `audit.log_origin/r1`.
    let verifier = CheckpointVerifier::from_file(
        &root().join("certs-dev/audit-checkpoint.pub.pem"),
        Some("caf-broker.localhost/dev"),
    )
    .unwrap()
    .for_replica("r1");
    Some(verifier.verify(notes.last()?).unwrap().size)
}

/// Waits (bounded) until a signed checkpoint covers the record `seq`.
fn wait_for_checkpoint_covering(dir: &Path, seq: u64) {
    let deadline = Instant::now() + WAIT;
    while latest_checkpoint_size(dir).is_none_or(|size| size < seq) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint covers the reload record {seq} (latest: {:?})",
            latest_checkpoint_size(dir)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .current_dir(root())
        .arg("audit")
        .args(args)
        .output()
        .unwrap()
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `record` is an applied reload by `trigger`, from policy text `from` to `to`.
fn assert_applied(record: &Record, trigger: &str, from: &str, to: &str) {
    let line = serde_json::to_string(record).unwrap();
    assert!(
        line.contains(r#""outcome":"applied""#)
            && line.contains(&format!(r#""trigger":"{trigger}""#)),
        "{line}"
    );
    assert_eq!(
        record.previous_policy_version.as_deref(),
        Some(version_of(from).as_str())
    );
    assert_eq!(
        record.policy_version.as_deref(),
        Some(version_of(to).as_str())
    );
}

/// A reload record holds no request, agent or dossier.
fn assert_no_request(record: &Record) {
    let line = serde_json::to_string(record).unwrap();
    assert!(
        record.post.is_none()
            && record.sub.is_none()
            && record.dossier.is_none()
            && record.purpose.is_none()
            && record.released.is_empty(),
        "{line}"
    );
    assert!(!line.contains("\"status\""), "{line}");
}

#[test]
fn a_reload_by_sighup_is_recorded_with_both_versions_and_checkpointed_at_once() {
    let dir = scratch("reload-sighup");
    let original = std::fs::read_to_string(policy(&dir)).unwrap();
    let broker = Broker::start(&dir, false);
    assert_eq!(broker.lookup(), version_of(&original));
    assert!(latest_checkpoint_size(&dir).is_none());

    let reviewed = format!("# reviewed\n{original}");
    replace_policy(&dir, &reviewed);
    broker.hangup();
    let applied = wait_for_reloads(&dir, 1).remove(0);
    assert_applied(&applied, "signal", &original, &reviewed);
    assert_no_request(&applied);
    wait_for_checkpoint_covering(&dir, applied.seq);
    // The record is written before the new policy filters anything.
    assert_eq!(broker.lookup(), version_of(&reviewed));
    let after = records(&dir).pop().unwrap();
    assert!(after.seq > applied.seq && after.kind.is_none());

    // A file that fails its checks is recorded as rejected; the live policy stays.
    let broken = reviewed.replacen("description = ", "colour = \"blue\"\ndescription = ", 1);
    replace_policy(&dir, &broken);
    broker.hangup();
    let rejected = wait_for_reloads(&dir, 2).remove(1);
    let line = serde_json::to_string(&rejected).unwrap();
    assert!(line.contains(r#""outcome":"rejected""#), "{line}");
    assert_eq!(
        rejected.rejected_policy_version.as_deref(),
        Some(version_of(&broken).as_str())
    );
    assert_eq!(
        rejected.policy_version.as_deref(),
        Some(version_of(&reviewed).as_str())
    );
    assert!(
        rejected
            .figures
            .as_ref()
            .and_then(|f| f.get("problems"))
            .is_some_and(|n| n.as_u64() >= Some(1)),
        "{line}"
    );
    assert_no_request(&rejected);
    wait_for_checkpoint_covering(&dir, rejected.seq);
    assert_eq!(broker.lookup(), version_of(&reviewed));
    broker.stop();

    let log = log_dir(&dir);
    let log = log.to_str().unwrap();
    let out = audit(&[
        "verify",
        "--public-key",
        "certs-dev/audit-checkpoint.pub.pem",
        log,
    ]);
    assert_success(&out);
    // A search finds the dossier's accesses only; a report lists them, never a reload.
    let out = audit(&["search", "--numero", "1000002", "--dir", log]);
    assert_success(&out);
    let found = String::from_utf8_lossy(&out.stdout);
    assert_eq!(found.lines().count(), 3, "{found}");
    assert!(!found.contains("policy_reload"), "{found}");
    let out = audit(&[
        "report", "--numero", "1000002", "--format", "json", "--dir", log,
    ]);
    assert_success(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accesses"].as_array().unwrap().len(), 3, "{report}");
}

#[test]
fn a_reload_by_file_watch_is_recorded_as_such_and_checkpointed_at_once() {
    let dir = scratch("reload-watch");
    let original = std::fs::read_to_string(policy(&dir)).unwrap();
    let broker = Broker::start(&dir, true);
    assert_eq!(broker.lookup(), version_of(&original));

    let reviewed = format!("# reviewed by the watch\n{original}");
    replace_policy(&dir, &reviewed);
    let applied = wait_for_reloads(&dir, 1).remove(0);
    assert_applied(&applied, "file_watch", &original, &reviewed);
    wait_for_checkpoint_covering(&dir, applied.seq);
    broker.stop();

    let log = log_dir(&dir);
    let out = audit(&[
        "verify",
        "--public-key",
        "certs-dev/audit-checkpoint.pub.pem",
        log.to_str().unwrap(),
    ]);
    assert_success(&out);
    assert_eq!(reloads(&dir).len(), 1, "one edit, one reload record");
}
