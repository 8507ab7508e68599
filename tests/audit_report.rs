//! The audit log of several replicas and a rotated key, through the binary on logs it wrote:
//! the data subject's access report (JSON, and HTML parsed and shown in a headless browser),
//! search under every key, verify over every replica, and the modes of what the broker creates.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use caf_broker::audit::{AuditKey, Record};
use caf_broker::auth::{DevClaims, mint_dev_token};
use caf_broker::config::Settings;
use caf_broker::domain::{Lookup, NumeroAllocataire};
use serde_json::Value;

#[path = "support/audit_files.rs"]
mod audit_files;

const SUBJECT: &str = "1000001";
const RADIATION: &str = "verification_radiation";

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("caf-broker-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The settings every command of this test shares, and those of one replica.
fn env_for(audit_root: &Path, keys: &Keys, replica: &str) -> Vec<(String, String)> {
    vec![
        ("CAF_BROKER__SERVER__TLS".into(), "false".into()),
        ("CAF_BROKER__SERVER__CLIENT_AUTH".into(), "off".into()),
        (
            "CAF_BROKER__AUDIT__DIR".into(),
            audit_root.display().to_string(),
        ),
        ("CAF_BROKER__AUDIT__REPLICA_ID".into(), replica.into()),
        ("CAF_BROKER__ALERTS__OFF_HOURS".into(), "\"\"".into()),
        ("CAF_BROKER__UPSTREAM__RECORDS".into(), "300".into()),
        // A signed checkpoint after every batch, so that a killed broker leaves some.
        (
            "CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS".into(),
            "1".into(),
        ),
    ]
    .into_iter()
    .chain(keys.env())
    .collect()
}

/// The key in use and the former ones, as settings.
struct Keys {
    current: (String, PathBuf),
    previous: Vec<(String, PathBuf)>,
}

impl Keys {
    fn env(&self) -> Vec<(String, String)> {
        let previous: Vec<String> = self
            .previous
            .iter()
            .map(|(id, file)| format!("{{ id = \"{id}\", file = \"{}\" }}", file.display()))
            .collect();
        vec![
            (
                "CAF_BROKER__AUDIT__HMAC_KEY_FILE".into(),
                self.current.1.display().to_string(),
            ),
            // Quoted: an unquoted 2026 would be read as a number.
            (
                "CAF_BROKER__AUDIT__HMAC_KEY_ID".into(),
                format!("\"{}\"", self.current.0),
            ),
            (
                "CAF_BROKER__AUDIT__PREVIOUS_HMAC_KEYS".into(),
                format!("[{}]", previous.join(", ")),
            ),
        ]
    }
}

/// Runs one replica of the broker, sends each `(agent, numero)` lookup, and
/// kills it once every answer is in: what was answered is on disk.
async fn run_replica(env: &[(String, String)], lookups: &[(&str, &str)]) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = env.to_vec();
    env.push((
        "CAF_BROKER__SERVER__LISTEN".into(),
        format!("127.0.0.1:{port}"),
    ));
    let _child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_caf-broker"))
            .current_dir(repo())
            .envs(env.iter().cloned())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let settings =
        Settings::load_with_env(&repo().join("config/broker.toml"), env.iter().cloned()).unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the broker never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (agent, numero) in lookups {
        let claims = DevClaims {
            sub: (*agent).into(),
            post: "TN-TUNIS".into(),
            role: "agent_consulaire".into(),
            ttl_secs: 600,
        };
        let token = mint_dev_token(&settings.auth, claims).unwrap();
        let answer = client
            .get(format!("{base}/v1/allocataires/{numero}"))
            .bearer_auth(&token)
            .header("X-Purpose", RADIATION)
            .header("X-Case-Reference", "TN-2026/77")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{numero}");
    }
}

fn broker(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(args)
        .current_dir(repo())
        .envs(env.iter().cloned())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `(replica, seq)` of every record of the subject's dossier, read straight
/// from the files under each key.
fn subject_records(root: &Path, keys: &[(&str, &Path)]) -> BTreeSet<(String, u64)> {
    let lookup = Lookup::Numero(NumeroAllocataire::parse(SUBJECT).unwrap());
    let mut found = BTreeSet::new();
    for replica in ["paris", "tunis"] {
        for record in audit_files::records(&root.join(replica)) {
            let matches = keys.iter().any(|(id, file)| {
                let key = AuditKey::from_file(file).unwrap();
                record.dossier.as_deref() == Some(key.pseudonymize(&lookup).as_str())
                    && record.key_id.as_deref() == Some(*id)
            });
            if matches {
                found.insert((replica.to_owned(), record.seq));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_report_covers_every_replica_and_key_and_only_the_subjects_dossier() {
    let scratch = Scratch::new("two-replicas");
    let root = scratch.0.join("audit");
    let key_2025 = scratch.0.join("hmac-2025.key");
    let key_2026 = scratch.0.join("hmac-2026.key");
    std::fs::write(&key_2025, "11".repeat(32)).unwrap();
    std::fs::write(&key_2026, "22".repeat(32)).unwrap();
    let before_rotation = Keys {
        current: ("2025".into(), key_2025.clone()),
        previous: vec![],
    };
    let after_rotation = Keys {
        current: ("2026".into(), key_2026.clone()),
        previous: vec![("2025".into(), key_2025.clone())],
    };

    // Replica paris writes under the 2025 key; then the key rotates and replica tunis writes under 2026.
    run_replica(
        &env_for(&root, &before_rotation, "paris"),
        &[
            ("agent-a", SUBJECT),
            ("agent-a", "1000002"),
            ("agent-b", SUBJECT),
        ],
    )
    .await;
    run_replica(
        &env_for(&root, &after_rotation, "tunis"),
        &[("agent-c", "1000003"), ("agent-c", SUBJECT)],
    )
    .await;
    let env = env_for(&root, &after_rotation, "reader");

    // Records name their key; the subject's dossier is in both replicas' logs.
    let expected = subject_records(&root, &[("2025", &key_2025), ("2026", &key_2026)]);
    assert_eq!(
        expected,
        BTreeSet::from([
            ("paris".to_owned(), 1),
            ("paris".to_owned(), 3),
            ("tunis".to_owned(), 2)
        ])
    );
    let all: Vec<Record> = ["paris", "tunis"]
        .iter()
        .flat_map(|r| audit_files::records(&root.join(r)))
        .collect();
    assert_eq!(all.len(), 5);

    // What the broker created is its owner's alone.
    for dir in [root.clone(), root.join("paris"), root.join("tunis")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }

    // The JSON report: every access of the subject, from both replicas, no agent.
    let out = broker(
        &["audit", "report", "--numero", SUBJECT, "--format", "json"],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["format"], "caf-broker-access-report/1");
    let accesses = report["accesses"].as_array().unwrap();
    let reported: BTreeSet<(String, u64)> = accesses
        .iter()
        .map(|a| {
            (
                a["replica"].as_str().unwrap().to_owned(),
                a["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(reported, expected);
    for access in accesses {
        assert_eq!(access["post"], "TN-TUNIS");
        assert_eq!(access["purpose"], RADIATION);
        assert_eq!(access["outcome"], "released");
        assert!(!access["released"].as_array().unwrap().is_empty());
        assert!(access.get("agent").is_none(), "{access}");
    }
    let json = text(&out.stdout);
    for hidden in ["agent-a", "agent-b", "agent-c", "TN-2026/77", "request_id"] {
        assert!(!json.contains(hidden), "{hidden} in {json}");
    }
    let logs: Vec<(&str, u64)> = report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            // The broker was killed: its last checkpoint may not cover its last
            // access (that is proven in tests/audit_tree.rs); one given covers them all.
            if !l["checkpoint"].is_null() {
                let last = accesses
                    .iter()
                    .filter(|a| a["replica"] == l["replica"])
                    .map(|a| a["seq"].as_u64().unwrap())
                    .max()
                    .unwrap();
                assert!(
                    l["checkpoint"]["tree_size"].as_u64().unwrap() >= last,
                    "{l}"
                );
            }
            (
                l["replica"].as_str().unwrap(),
                l["accesses"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(logs, [("paris", 2), ("tunis", 1)]);
    let per_month: u64 = report["per_month"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["accesses"].as_u64().unwrap())
        .sum();
    assert_eq!(per_month, 3);

    // With --include-agents, each access names its agent.
    let out = broker(
        &[
            "audit",
            "report",
            "--numero",
            SUBJECT,
            "--format",
            "json",
            "--include-agents",
            "--dir",
            root.to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let agents: BTreeSet<&str> = report["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, BTreeSet::from(["agent-a", "agent-b", "agent-c"]));

    // Search tries every listed key: without the former key, paris's records are out of reach.
    let out = broker(&["audit", "search", "--numero", SUBJECT], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3);
    let only_current = env_for(
        &root,
        &Keys {
            current: ("2026".into(), key_2026.clone()),
            previous: vec![],
        },
        "reader",
    );
    let out = broker(&["audit", "search", "--numero", SUBJECT], &only_current);
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );

    // The HTML page: parsed without error, one table with a row per access,
    // one inline SVG with a bar per month, nothing fetched from elsewhere.
    let out = broker(
        &["audit", "report", "--numero", SUBJECT, "--format", "html"],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = text(&out.stdout);
    let page = parse_html(&html);
    assert!(page.errors.is_empty(), "{:?}\n{html}", page.errors);
    assert_eq!(page.count("table"), 1, "{html}");
    assert_eq!(page.count("svg"), 1, "{html}");
    assert_eq!(page.count("tr"), 1 + 3, "a header row and one per access");
    assert_eq!(page.count("rect"), page.months(&report), "{html}");
    assert_eq!(page.count("script"), 0);
    assert!(page.external.is_empty(), "{:?}", page.external);
    assert!(page.text.contains("TN-TUNIS") && page.text.contains(RADIATION));
    for hidden in ["agent-a", "TN-2026/77"] {
        assert!(!html.contains(hidden), "{hidden}");
    }
    screenshot(&scratch.0, &html);

    // verify reads every replica; a file others may read is warned about.
    let out = broker(&["audit", "verify"], &env);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("replica paris: ok: 3 records")
            && stdout.contains("replica tunis: ok: 2 records"),
        "{stdout}"
    );
    assert!(
        !text(&out.stderr).contains("lets others"),
        "{}",
        text(&out.stderr)
    );
    // With the checkpoint key's public half, each replica's tree is checked
    // against its own signed checkpoints.
    let out = broker(
        &[
            "audit",
            "verify",
            "--public-key",
            "certs-dev/audit-checkpoint.pub.pem",
        ],
        &env,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for (replica, size) in [("paris", 3), ("tunis", 2)] {
        assert!(
            stdout.contains(&format!("replica {replica}: ok: {size} records"))
                && stdout.contains(&format!("the latest at size {size}")),
            "{stdout}"
        );
    }
    let file = std::fs::read_dir(root.join("tunis"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = broker(&["audit", "verify", root.to_str().unwrap()], &env);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains(file.to_str().unwrap())
            && stderr.contains("0644"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_log_lying_directly_in_the_audit_directory_and_readers_still_read_it() {
    let scratch = Scratch::new("single-log");
    let root = scratch.0.join("audit");
    let key = scratch.0.join("hmac.key");
    std::fs::write(&key, "33".repeat(32)).unwrap();
    let keys = Keys {
        current: ("2026".into(), key.clone()),
        previous: vec![],
    };
    // A log written before replicas: its files directly in audit.dir.
    run_replica(&env_for(&root, &keys, "old"), &[("agent-a", SUBJECT)]).await;
    for entry in std::fs::read_dir(root.join("old")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::rename(&path, root.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::remove_dir(root.join("old")).unwrap();

    let env = env_for(&root, &keys, "new");
    let out = broker(&["check"], &env);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        stderr.contains("audit.dir") && stderr.contains(&format!("{}/new/", root.display())),
        "{stderr}"
    );
    let out = broker(&["audit", "verify"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 1 records"),
        "{}",
        text(&out.stdout)
    );
    let out = broker(
        &["audit", "report", "--numero", SUBJECT, "--format", "json"],
        &env,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accesses"].as_array().unwrap().len(), 1);
    assert!(report["logs"][0]["replica"].is_null());
}

/// What the test reads of a page.
struct Page {
    tags: Vec<String>,
    errors: Vec<String>,
    /// `src`, `href` or `url(` references: a standalone page has none.
    external: Vec<String>,
    text: String,
}

impl Page {
    fn count(&self, tag: &str) -> usize {
        self.tags.iter().filter(|t| *t == tag).count()
    }

    fn months(&self, report: &Value) -> usize {
        report["per_month"].as_array().unwrap().len()
    }
}

fn parse_html(html: &str) -> Page {
    let mut page = Page {
        tags: Vec::new(),
        errors: Vec::new(),
        external: Vec::new(),
        text: String::new(),
    };
    for token in html5gum::Tokenizer::new(html) {
        match token.unwrap() {
            html5gum::Token::StartTag(tag) => {
                page.tags.push(text(&tag.name));
                for (name, value) in &tag.attributes {
                    let name = text(name);
                    if name == "src" || name == "href" {
                        page.external.push(text(value));
                    }
                }
            }
            html5gum::Token::String(s) => {
                let s = text(&s);
                if s.contains("url(") || s.contains("@import") {
                    page.external.push(s.clone());
                }
                page.text.push_str(&s);
            }
            html5gum::Token::Error(e) => page.errors.push(format!("{:?}", e.value)),
            _ => {}
        }
    }
    page
}

/// Chromium, headless, renders the page to a PNG that must hold a real
/// picture. Without chromium the step is skipped, except under CI, where it fails.
fn screenshot(dir: &Path, html: &str) {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed: this test renders the access report in a headless browser \
             (apt-get install chromium)"
        );
        eprintln!("chromium is not installed: the report was parsed, not rendered");
        return;
    };
    let page = dir.join("report.html");
    let png = dir.join("report.png");
    std::fs::write(&page, html).unwrap();
    // Bounded: a browser that hangs fails the test instead of holding it.
    let out = Command::new("timeout")
        .args([
            "120",
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,900",
            &format!("--user-data-dir={}", dir.join("chromium").display()),
            &format!("--screenshot={}", png.display()),
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    assert_eq!(bytes.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 900));
    // A blank 1200x900 page compresses to a few kilobytes; text, a table and a chart do not.
    assert!(bytes.len() > 20_000, "a {} byte screenshot", bytes.len());
    if let Ok(keep) = std::env::var("CAF_BROKER_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
