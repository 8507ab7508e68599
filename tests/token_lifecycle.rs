//! The token lifecycle of the real binary: `caf-broker serve` reads its JWKS
//! file again on SIGHUP, and a key withdrawn from it takes the tokens it
//! verified out of the token cache.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

#[path = "support/config_files.rs"]
mod config_files;

use config_files::{config_from, tempdir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How long the test waits for the reload, polling every 25 ms.
const POLLS: usize = 400;
const POLL: Duration = Duration::from_millis(25);

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
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
    let audit = format!("dir = \"{}\"", dir.join("audit").display());
    let jwks = format!("jwks_file = \"{}\"", jwks.display());
    let config = config_from(
        "config/broker.toml",
        dir,
        &[
            ("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:0\""),
            ("tls = true", "tls = false"),
            ("client_auth = \"optional\"", "client_auth = \"off\""),
            ("dir = \"var/audit\"", &audit),
            ("log_format = \"text\"", "log_format = \"json\""),
            ("jwks_file = \"certs-dev/jwks.json\"", &jwks),
        ],
    );
    let (mut child, listening, _drained) = config_files::serve(&config);
    let port = listening.and_then(|event| u16::try_from(event["port"].as_u64()?).ok());
    match port {
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
