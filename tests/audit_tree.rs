//! The audit log as a signed transparency log, on a real log written by the
//! binary: `audit verify --public-key` names each forgery an administrator
//! could make (the hash chain recomputed each time), and the broker refuses
//! to start on a log that no longer matches its last signed checkpoint.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use caf_broker::audit::tree::{Edge, leaf_hash};
use caf_broker::audit::{AuditLog, CheckpointSigner};
use caf_broker::auth::{DevClaims, mint_dev_token};
use caf_broker::config::Settings;
use sha2::{Digest, Sha256};

const RECORDS: usize = 40;
const ORIGIN: &str = "caf-broker.localhost/dev";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn env_for(audit_dir: &Path, port: u16) -> Vec<(String, String)> {
    [
        ("CAF_BROKER__SERVER__LISTEN", format!("127.0.0.1:{port}")),
        ("CAF_BROKER__SERVER__TLS", "false".into()),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "off".into()),
        ("CAF_BROKER__AUDIT__DIR", audit_dir.display().to_string()),
        ("CAF_BROKER__AUDIT__REPLICA_ID", "\"r1\"".into()),
        // About five records a file: several files to swap and delete.
        ("CAF_BROKER__AUDIT__MAX_FILE_BYTES", "4096".into()),
        ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "4".into()),
        ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\"".into()),
        (
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 1000, burst = 1000, per_day = 100000 }".into(),
        ),
        (
            "CAF_BROKER__QUOTAS__AGENT_DEFAULT",
            "{ per_second = 1000, burst = 1000, per_day = 100000 }".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A log of [`RECORDS`] data requests written by the broker binary, stopped
/// by SIGTERM (so that its shutdown checkpoint is written); built once.
fn pristine() -> &'static Path {
    static LOG: OnceLock<PathBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("audit-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let audit_dir = dir.join("pristine");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = env_for(&audit_dir, port);
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_caf-broker"))
                .current_dir(root())
                .envs(env.iter().cloned())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let settings =
            Settings::load_with_env(&root().join("config/broker.toml"), env.iter().cloned())
                .unwrap();
        let claims = DevClaims {
            sub: "agent-7".into(),
            post: "TN-TUNIS".into(),
            role: "agent_consulaire".into(),
            ttl_secs: 600,
        };
        let token = mint_dev_token(&settings.auth, claims).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let base = format!("http://127.0.0.1:{port}");
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while client.get(format!("{base}/healthz")).send().await.is_err() {
                assert!(Instant::now() < deadline, "the broker did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for _ in 0..RECORDS {
                let response = client
                    .get(format!("{base}/v1/allocataires/1000002"))
                    .bearer_auth(&token)
                    .header("X-Purpose", "verification_radiation")
                    .header("X-Case-Reference", "TREE-1")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        });
        let stopped = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", child.0.id())])
            .status()
            .unwrap();
        assert!(stopped.success());
        assert!(
            child.0.wait().unwrap().success(),
            "the broker stopped badly"
        );
        // The replica's own log, under audit.dir/<replica id>.
        audit_dir.join("r1")
    })
}

/// A copy of the pristine log to forge.
fn copy(name: &str) -> PathBuf {
    let from = pristine();
    let to = from.with_file_name(name);
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    to
}

fn verify(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .current_dir(root())
        .args([
            "audit",
            "verify",
            "--public-key",
            "certs-dev/audit-checkpoint.pub.pem",
        ])
        .args(extra)
        .arg(dir)
        .output()
        .unwrap()
}

/// `verify` fails, and its error says `why`.
fn assert_refused(dir: &Path, extra: &[&str], why: &str) {
    let out = verify(dir, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "verify passed a forged log: {stderr}"
    );
    assert!(stderr.contains(why), "{why:?} not in: {stderr}");
}

/// The audit files in chain order, each with its lines.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut names: Vec<(caf_broker::audit::FileName, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = caf_broker::audit::FileName::parse(p.file_name()?.to_str()?)?;
            Some((name, p))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|(_, path)| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text.lines().map(str::to_owned).collect())
        })
        .collect()
}

fn write_files(files: &[(PathBuf, Vec<String>)]) {
    for (path, lines) in files {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text).unwrap();
    }
}

/// What an administrator would do after editing: renumber `seq` from 1 and
/// recompute every `prev` and `hash`, as the chain's documentation explains.
fn rechain(files: &mut [(PathBuf, Vec<String>)]) {
    let mut prev = "0".repeat(64);
    let mut seq = 1u64;
    for (_, lines) in files.iter_mut() {
        for line in lines.iter_mut() {
            let cut = line.rfind(",\"hash\":\"").unwrap();
            let mut body = format!("{}}}", &line[..cut]);
            let after_seq = body.find(',').unwrap();
            body = format!("{{\"seq\":{seq}{}", &body[after_seq..]);
            let at = body.rfind("\"prev\":\"").unwrap() + 8;
            body.replace_range(at..at + 64, &prev);
            let hash = hex::encode(Sha256::digest(body.as_bytes()));
            *line = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
            prev = hash;
            seq += 1;
        }
    }
}

#[test]
fn the_log_written_by_the_binary_verifies_with_the_public_key_and_prints_its_tree() {
    let out = verify(pristine(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("tree size {RECORDS}, root ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("the latest at size {RECORDS}")),
        "the shutdown checkpoint covers every record: {stdout}"
    );
    // Checkpoints every 4 records, and the last at shutdown.
    let notes = std::fs::read_to_string(pristine().join("checkpoints.log")).unwrap();
    assert_eq!(notes.matches(&format!("{ORIGIN}\n")).count(), RECORDS / 4);
    assert!(files(pristine()).len() >= 5, "several files were written");
    // Without the key, the chain alone is verified, as before.
    let chain_only = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .current_dir(root())
        .args(["audit", "verify"])
        .arg(pristine())
        .output()
        .unwrap();
    assert!(chain_only.status.success());
    let warning = String::from_utf8_lossy(&chain_only.stderr);
    assert!(
        warning.contains("only the hash chain was checked"),
        "{warning}"
    );
}

#[test]
fn a_record_deleted_and_the_chain_recomputed_is_named() {
    let dir = copy("deleted");
    let mut files = files(&dir);
    files[1].1.remove(2);
    rechain(&mut files);
    write_files(&files);
    // The chain alone cannot tell: it was recomputed.
    let chain_only = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(["audit", "verify"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(chain_only.status.success());
    assert_refused(&dir, &[], "records were deleted and the chain recomputed");
}

#[test]
fn a_record_edited_and_the_chain_recomputed_is_named() {
    let dir = copy("edited");
    let mut files = files(&dir);
    let line = &mut files[2].1[1];
    assert!(line.contains("\"sub\":\"agent-7\""));
    *line = line.replace("\"sub\":\"agent-7\"", "\"sub\":\"agent-9\"");
    rechain(&mut files);
    write_files(&files);
    assert_refused(
        &dir,
        &[],
        "a record was edited or moved and the chain recomputed",
    );
}

#[test]
fn a_log_cut_short_is_named_as_truncated() {
    let dir = copy("truncated");
    let mut files = files(&dir);
    let last = files.last_mut().unwrap();
    last.1.truncate(last.1.len().saturating_sub(2));
    write_files(&files);
    assert_refused(&dir, &[], "the log was truncated");
}

#[test]
fn the_last_file_deleted_is_named_as_truncated() {
    let dir = copy("last-file");
    let files = files(&dir);
    std::fs::remove_file(&files.last().unwrap().0).unwrap();
    assert_refused(&dir, &[], "the log was truncated");
}

#[test]
fn old_files_deleted_behind_a_hand_written_retention_checkpoint_are_named() {
    let dir = copy("retention");
    let files = files(&dir);
    // The administrator computes everything an unsigned checkpoint needs:
    // the last removed record, and even the tree's edge after it.
    let mut edge = Edge::empty();
    let removed = &files[..2];
    for (_, lines) in removed {
        for line in lines {
            edge.push(leaf_hash(line.as_bytes()));
        }
    }
    let last: serde_json::Value = serde_json::from_str(removed[1].1.last().unwrap()).unwrap();
    // And signs it with a key of its own, under the log's origin.
    let own_key = dir.join("own.key.pem");
    std::fs::write(
        &own_key,
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem(),
    )
    .unwrap();
    let own = CheckpointSigner::from_file(&own_key, ORIGIN).unwrap();
    let note = String::from_utf8(own.sign(edge.size(), edge.root()).unwrap()).unwrap();
    let checkpoint = serde_json::json!({
        "seq": last["seq"],
        "hash": last["hash"],
        "time": last["time"],
        "removed_through": removed[1].0.file_name().unwrap().to_str().unwrap(),
        "edge": edge.hashes().iter().map(|h| hex::encode(h.0)).collect::<Vec<_>>(),
        "note": note,
    });
    std::fs::write(dir.join("checkpoint.json"), checkpoint.to_string()).unwrap();
    for (path, _) in removed {
        std::fs::remove_file(path).unwrap();
    }
    std::fs::remove_file(&own_key).unwrap();
    assert_refused(
        &dir,
        &[],
        "the retention checkpoint (checkpoint.json) is not signed by the given key",
    );
}

#[test]
fn two_files_swapped_are_named_as_reordered() {
    let dir = copy("swapped");
    let files = files(&dir);
    let (a, b) = (&files[1].0, &files[2].0);
    let tmp = dir.join("swap.tmp");
    std::fs::rename(a, &tmp).unwrap();
    std::fs::rename(b, a).unwrap();
    std::fs::rename(&tmp, b).unwrap();
    assert_refused(&dir, &[], "records were reordered");
}

#[test]
fn a_checkpoint_of_another_log_is_named_whether_in_the_log_or_given() {
    let dir = copy("other-origin");
    // The same key signing another log's checkpoint: valid, but not this log's.
    let other = CheckpointSigner::from_file(
        &root().join("certs-dev/audit-checkpoint.key.pem"),
        "caf-broker.localhost/other",
    )
    .unwrap();
    let mut edge = Edge::empty();
    edge.push(leaf_hash(b"another log"));
    let note = other.sign(edge.size(), edge.root()).unwrap();
    let given = dir.join("given.note");
    std::fs::write(&given, &note).unwrap();
    assert_refused(
        &dir,
        &["--checkpoint", given.to_str().unwrap()],
        "a checkpoint of another log (origin caf-broker.localhost/other, expected caf-broker.localhost/dev)",
    );
    let mut log = std::fs::read(dir.join("checkpoints.log")).unwrap();
    log.extend_from_slice(&note);
    log.push(b'\n');
    std::fs::write(dir.join("checkpoints.log"), log).unwrap();
    assert_refused(&dir, &[], "a checkpoint of another log");
}

#[test]
fn a_checkpoint_kept_by_a_witness_reveals_a_log_rolled_back_with_its_checkpoints() {
    let dir = copy("rolled-back");
    // The administrator cuts the records and the checkpoints that covered them...
    let log = std::fs::read_to_string(dir.join("checkpoints.log")).unwrap();
    let notes: Vec<&str> = log.split_inclusive("\n\n").collect();
    let witnessed = notes.chunks(2).last().unwrap().concat();
    let kept: String = notes[..notes.len() - 2].concat();
    std::fs::write(dir.join("checkpoints.log"), kept).unwrap();
    let mut files = files(&dir);
    let last = files.last_mut().unwrap();
    last.1.truncate(last.1.len().saturating_sub(1));
    write_files(&files);
    assert!(verify(&dir, &[]).status.success(), "locally consistent");
    // ...but the witness kept the latest one.
    let given = dir.with_file_name("witnessed.note");
    std::fs::write(&given, witnessed.trim_end_matches('\n').to_owned() + "\n").unwrap();
    assert_refused(
        &dir,
        &["--checkpoint", given.to_str().unwrap()],
        "the log was truncated",
    );
}

#[test]
fn the_broker_refuses_to_start_on_a_log_that_no_longer_matches_its_last_checkpoint() {
    let port = 9; // never bound: only the audit log is opened
    for (name, forge, why) in [
        (
            "open-truncated",
            (|dir: &Path| {
                let files = files(dir);
                std::fs::remove_file(&files.last().unwrap().0).unwrap();
            }) as fn(&Path),
            "records were removed (truncation)",
        ),
        (
            "open-rewritten",
            |dir: &Path| {
                let mut files = files(dir);
                let line = &mut files[0].1[0];
                *line = line.replace("\"sub\":\"agent-7\"", "\"sub\":\"agent-9\"");
                rechain(&mut files);
                write_files(&files);
            },
            "the records do not match the last signed checkpoint",
        ),
    ] {
        let dir = copy(name);
        forge(&dir);
        let settings =
            Settings::load_with_env(&root().join("config/broker.toml"), env_for(&dir, port))
                .unwrap();
        let mut audit = settings.audit.clone();
        // The forged copy is the log directory itself.
        audit.replica_id = None;
        audit.checkpoint_signing_key_file = Some(root().join("certs-dev/audit-checkpoint.key.pem"));
        audit.hmac_key_file = root().join("certs-dev/audit-hmac.key");
        let err = AuditLog::open(&audit).unwrap_err().to_string();
        assert!(err.contains(why), "{name}: {err}");
        assert!(
            err.contains("does not match its signed checkpoints"),
            "{err}"
        );
    }
}

/// The broker process, killed if the test fails before it stops.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
