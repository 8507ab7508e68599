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
/// The origin replica `r1` signs under: `audit.log_origin/<replica id>`.
const R1_ORIGIN: &str = "caf-broker.localhost/dev/r1";

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
    assert_eq!(
        notes.matches(&format!("{R1_ORIGIN}\n")).count(),
        RECORDS / 4
    );
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
        "a checkpoint of another log (origin caf-broker.localhost/other, expected caf-broker.localhost/dev/r1)",
    );
    let mut log = std::fs::read(dir.join("checkpoints.log")).unwrap();
    log.extend_from_slice(&note);
    log.push(b'\n');
    std::fs::write(dir.join("checkpoints.log"), log).unwrap();
    assert_refused(&dir, &[], "a checkpoint of another log");
}

#[test]
fn each_replica_signs_under_its_own_origin_and_one_replicas_checkpoint_never_stands_for_anothers() {
    let dir = copy("replica-swap");
    let notes = std::fs::read_to_string(dir.join("checkpoints.log")).unwrap();
    assert!(notes.starts_with(&format!("{R1_ORIGIN}\n")), "{notes}");
    // The same key signing the same tree as replica r2: a valid checkpoint
    // of r2's log, which a witness keeps apart from r1's, never r1's.
    let r2 = CheckpointSigner::from_file(
        &root().join("certs-dev/audit-checkpoint.key.pem"),
        &format!("{ORIGIN}/r2"),
    )
    .unwrap();
    let mut edge = Edge::empty();
    for (_, lines) in files(&dir) {
        for line in lines {
            edge.push(leaf_hash(line.as_bytes()));
        }
    }
    let given = dir.with_file_name("replica-swap-r2.note");
    std::fs::write(&given, r2.sign(edge.size(), edge.root()).unwrap()).unwrap();
    assert_refused(
        &dir,
        &["--checkpoint", given.to_str().unwrap()],
        "a checkpoint of another log (origin caf-broker.localhost/dev/r2, expected caf-broker.localhost/dev/r1)",
    );
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
        // The forged copy is the log directory itself, still signed as r1.
        audit.replica_id = None;
        audit.log_origin = Some(R1_ORIGIN.to_owned());
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

/// Runs `caf-broker audit <args>` from the repository.
fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .current_dir(root())
        .arg("audit")
        .args(args)
        .output()
        .unwrap()
}

/// The proofs `audit prove` prints for the dossier every pristine record is about.
fn proofs() -> Vec<serde_json::Value> {
    let dir = pristine().to_str().unwrap();
    let out = audit(&["prove", "--numero", "1000002", "--dir", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `audit verify-proof` on one proof document, with the public key only
/// (the configuration named does not exist: nothing else is read).
fn verify_proof(name: &str, proof: &serde_json::Value) -> Output {
    let file = pristine().with_file_name(format!("{name}.proof.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(proof).unwrap()).unwrap();
    audit(&[
        "--config",
        "/nonexistent/broker.toml",
        "verify-proof",
        "--public-key",
        "certs-dev/audit-checkpoint.pub.pem",
        "--origin",
        ORIGIN,
        file.to_str().unwrap(),
    ])
}

fn assert_proof_refused(name: &str, proof: &serde_json::Value, why: &str) {
    let out = verify_proof(name, proof);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a {name} proof passed: {stderr}");
    assert!(stderr.contains(why), "{why:?} not in: {stderr}");
}

#[test]
fn every_access_to_the_dossier_gets_an_inclusion_proof_that_verifies_with_only_the_public_key() {
    let proofs = proofs();
    assert_eq!(proofs.len(), RECORDS, "one proof per access");
    let log = std::fs::read(pristine().join("checkpoints.log")).unwrap();
    let (notes, _) = caf_broker::audit::split_checkpoints(&log);
    let latest = String::from_utf8(notes.last().unwrap().to_vec()).unwrap();
    for proof in &proofs {
        let record: serde_json::Value =
            serde_json::from_str(proof["record"].as_str().unwrap()).unwrap();
        assert_eq!(proof["leaf_index"], record["seq"].as_u64().unwrap() - 1);
        assert_eq!(proof["tree_size"], RECORDS as u64);
        assert_eq!(
            proof["checkpoint"],
            latest.as_str(),
            "the latest checkpoint"
        );
    }
    for proof in [&proofs[0], &proofs[17], &proofs[RECORDS - 1]] {
        let out = verify_proof("sound", proof);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!(
                "of the tree of size {RECORDS} signed by {R1_ORIGIN}"
            )),
            "{stdout}"
        );
    }
}

#[test]
fn verify_proof_names_an_edited_record_a_wrong_index_and_a_forged_checkpoint() {
    let proof = proofs().swap_remove(5);
    let mut edited = proof.clone();
    let record = edited["record"]
        .as_str()
        .unwrap()
        .replace("TN-TUNIS", "FR-PARIS");
    edited["record"] = record.into();
    assert_proof_refused("edited", &edited, "the record is not leaf 5");
    let mut wrong_index = proof.clone();
    wrong_index["leaf_index"] = 6.into();
    assert_proof_refused("wrong-index", &wrong_index, "the leaf index 6 is wrong");
    // A checkpoint whose root is rewritten keeps a signature that no longer holds.
    let mut forged = proof.clone();
    let note = forged["checkpoint"].as_str().unwrap().to_owned();
    let root_line = note.lines().nth(2).unwrap();
    let mut edge = Edge::empty();
    edge.push(leaf_hash(b"forged"));
    let fake_root = base64_of(&edge.root().0);
    forged["checkpoint"] = note.replacen(root_line, &fake_root, 1).into();
    assert_proof_refused("forged", &forged, "not signed by the given key");
    // A checkpoint signed by the key for another log.
    let other = CheckpointSigner::from_file(
        &root().join("certs-dev/audit-checkpoint.key.pem"),
        "caf-broker.localhost/other",
    )
    .unwrap();
    let mut replayed = proof.clone();
    let note = other.sign(RECORDS as u64, edge.root()).unwrap();
    replayed["checkpoint"] = String::from_utf8(note).unwrap().into();
    assert_proof_refused("replayed", &replayed, "a checkpoint of another log");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The signed notes of a log's `checkpoints.log`, oldest first, each in a file.
fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let log = std::fs::read(dir.join("checkpoints.log")).unwrap();
    let (notes, _) = caf_broker::audit::split_checkpoints(&log);
    notes
        .iter()
        .enumerate()
        .map(|(i, note)| {
            let file = dir.with_file_name(format!(
                "{}-{i}.note",
                dir.file_name().unwrap().to_str().unwrap()
            ));
            std::fs::write(&file, note).unwrap();
            file
        })
        .collect()
}

fn consistency(dir: &Path, old: &Path, new: &Path) -> Output {
    audit(&[
        "consistency",
        "--public-key",
        "certs-dev/audit-checkpoint.pub.pem",
        "--origin",
        ORIGIN,
        "--dir",
        dir.to_str().unwrap(),
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ])
}

fn assert_inconsistent(dir: &Path, old: &Path, new: &Path, why: &str) {
    let out = consistency(dir, old, new);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "consistency passed: {stderr}");
    assert!(stderr.contains(why), "{why:?} not in: {stderr}");
}

#[test]
fn a_later_checkpoint_is_proven_to_extend_an_earlier_one_and_a_rollback_is_named() {
    let notes = checkpoint_files(pristine());
    let (old, new) = (&notes[1], notes.last().unwrap());
    let out = consistency(pristine(), old, new);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "the checkpoint of size {RECORDS} extends the one of size 8"
        )),
        "{stdout}"
    );
    assert_inconsistent(
        pristine(),
        new,
        old,
        "rolled back: the new checkpoint signs 8",
    );
    // The witness holds the latest checkpoint; the log was cut behind it.
    let dir = copy("consistency-cut");
    let mut files = files(&dir);
    files.last_mut().unwrap().1.pop();
    write_files(&files);
    assert_inconsistent(&dir, old, new, "rolled back: the log holds 39 records");
}

#[test]
fn a_forked_log_re_signed_with_the_key_is_named_by_the_witness_old_checkpoint() {
    let witnessed = checkpoint_files(pristine());
    // The administrator, holding the key, rewrites a record and re-signs.
    let dir = copy("forked");
    let mut files = files(&dir);
    files[0].1[2] = files[0].1[2].replace("TN-TUNIS", "FR-PARIS");
    rechain(&mut files);
    write_files(&files);
    let mut edge = Edge::empty();
    for (_, lines) in &files {
        for line in lines {
            edge.push(leaf_hash(line.as_bytes()));
        }
    }
    let signer = CheckpointSigner::from_file(
        &root().join("certs-dev/audit-checkpoint.key.pem"),
        R1_ORIGIN,
    )
    .unwrap();
    let resigned = dir.with_file_name("forked-new.note");
    std::fs::write(&resigned, signer.sign(edge.size(), edge.root()).unwrap()).unwrap();
    assert_inconsistent(
        &dir,
        &witnessed[1],
        &resigned,
        "forked: the new checkpoint (size 40) does not extend the old one (size 8)",
    );
    // Against the witness's latest checkpoint, the rewritten log is not the one signed.
    assert_inconsistent(
        &dir,
        &witnessed[1],
        witnessed.last().unwrap(),
        "is not the one the new checkpoint signs",
    );
}

#[test]
fn the_access_report_names_the_signed_checkpoint_its_accesses_are_proven_against() {
    let dir = pristine().to_str().unwrap();
    let out = audit(&[
        "report", "--numero", "1000002", "--format", "json", "--dir", dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checkpoint = &report["logs"][0]["checkpoint"];
    let log = std::fs::read(pristine().join("checkpoints.log")).unwrap();
    let (notes, _) = caf_broker::audit::split_checkpoints(&log);
    let latest = String::from_utf8(notes.last().unwrap().to_vec()).unwrap();
    assert_eq!(checkpoint["origin"], R1_ORIGIN, "{report}");
    assert_eq!(checkpoint["tree_size"], RECORDS as u64);
    assert_eq!(checkpoint["signed_note"], latest.as_str());
    let root = checkpoint["root_hash"].as_str().unwrap();
    assert!(
        latest.contains(&format!("\n{RECORDS}\n{root}\n")),
        "{latest}"
    );
    // A log whose records no longer match the checkpoint is not proven.
    let edited = copy("report-edited");
    let mut files = files(&edited);
    files[0].1[0] = files[0].1[0].replace("TN-TUNIS", "FR-PARIS");
    rechain(&mut files);
    write_files(&files);
    let out = audit(&[
        "report",
        "--numero",
        "1000002",
        "--format",
        "json",
        "--dir",
        edited.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["logs"][0]["checkpoint"].is_null(), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no longer matches its latest signed checkpoint"),
        "{stderr}"
    );
}
