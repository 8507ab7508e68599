//! The token lifecycle of the real binary: `caf-broker serve` reads its JWKS
//! file again on SIGHUP, and a key withdrawn from it takes the tokens it
//! verified out of the token cache.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How long the test waits for the reload, polling every 25 ms.
const POLLS: usize = 400;
const POLL: Duration = Duration::from_millis(25);

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caf-broker-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The development JWKS with only the keys named.
fn dev_jwks(kids: &[&str]) -> String {
    let jwks: Value =
        serde_json::from_slice(&std::fs::read(repo("certs-dev/jwks.json")).unwrap()).unwrap();
    let keys: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| kids.iter().any(|kid| key["kid"] == *kid))
        .collect();
    assert_eq!(keys.len(), kids.len());
    json!({ "keys": keys }).to_string()
}

/// A token of agent-42 at TN-TUNIS signed with a dev key under `kid`.
fn token(key_file: &str, kid: &str) -> String {
    caf_broker::auth::install_crypto_provider();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pem = std::fs::read(repo(key_file)).unwrap();
    let (key, alg) = match EncodingKey::from_ed_pem(&pem) {
        Ok(key) => (key, Algorithm::EdDSA),
        Err(_) => (EncodingKey::from_ec_pem(&pem).unwrap(), Algorithm::ES256),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    header.typ = Some("at+jwt".into());
    let claims = json!({
        "iss": "https://idp.diplomatie.gouv.fr/dev", "aud": "caf-broker",
        "sub": "agent-42", "post": "TN-TUNIS", "role": "agent_consulaire",
        "iat": now, "exp": now + 600, "jti": format!("{kid}-token"),
    });
    encode(&header, &claims, &key).unwrap()
}

/// `caf-broker serve` on plain HTTP and a free port, with its JWKS in `dir`;
/// returns the child and its port.
fn serve(dir: &Path, jwks: &Path) -> (Child, u16) {
    let mut text = std::fs::read_to_string(repo("config/broker.toml")).unwrap();
    for (from, to) in [
        (
            "listen = \"127.0.0.1:8443\"",
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        ("tls = true", "tls = false".to_owned()),
        (
            "client_auth = \"optional\"",
            "client_auth = \"off\"".to_owned(),
        ),
        (
            "dir = \"var/audit\"",
            format!("dir = \"{}\"", dir.join("audit").display()),
        ),
        ("log_format = \"text\"", "log_format = \"json\"".to_owned()),
        (
            "jwks_file = \"certs-dev/jwks.json\"",
            format!("jwks_file = \"{}\"", jwks.display()),
        ),
    ] {
        assert!(
            text.contains(from),
            "config/broker.toml no longer contains {from:?}"
        );
        text = text.replacen(from, &to, 1);
    }
    let config = dir.join("broker.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(ROOT)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = logs
        .by_ref()
        .take(200)
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .find(|event| event["message"] == "caf-broker listening")
        .and_then(|event| event["port"].as_u64());
    // Keep reading the broker's log so that it never blocks on a full pipe.
    std::thread::spawn(move || logs.for_each(drop));
    match port.and_then(|port| u16::try_from(port).ok()) {
        Some(port) => (child, port),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker did not start");
        }
    }
}

async fn status(port: u16, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/allocataires/1000002"))
        .bearer_auth(token)
        .header("X-Purpose", "verification_radiation")
        .header("X-Case-Reference", "TN-2026/0042")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Stops the child however the test ends.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sighup_rereads_the_jwks_file_and_a_withdrawn_key_takes_its_cached_tokens_with_it() {
    let dir = tempdir("jwks-sighup");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, dev_jwks(&["dev-2026", "dev-es256"])).unwrap();
    let (child, port) = serve(&dir, &jwks);
    let serving = Serving(child);
    let withdrawn = token("certs-dev/jwt-signing.key.pem", "dev-2026");
    let kept = token("certs-dev/jwt-es256.key.pem", "dev-es256");
    assert_eq!(status(port, &withdrawn).await, 200);
    assert_eq!(
        status(port, &withdrawn).await,
        200,
        "now served from the cache"
    );
    assert_eq!(status(port, &kept).await, 200);

    std::fs::write(&jwks, dev_jwks(&["dev-es256"])).unwrap();
    // The JWKS file is not watched: until SIGHUP, the broker keeps its keys.
    assert_eq!(status(port, &withdrawn).await, 200);
    let hangup = Command::new("kill")
        .args(["-HUP", &serving.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    let mut last = 0;
    for _ in 0..POLLS {
        last = status(port, &withdrawn).await;
        if last == 401 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(last, 401, "the withdrawn key's token is still served");
    assert_eq!(status(port, &kept).await, 200);
}
