//! `spawn_app()`: a real broker on a free port, built by the same
//! `Application::build` as production, and an HTTPS client that trusts the dev CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use caf_broker::auth::{DevClaims, mint_dev_token_at};
use caf_broker::clock::{Clock, SystemClock};
use caf_broker::config::Settings;
use caf_broker::startup::Application;
use serde_json::Value;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub struct TestApp {
    pub address: String,
    /// The operations listener's address, with `server.ops_listen` set.
    pub ops_address: Option<String>,
    /// This app's own audit log directory, `audit.dir/<replica id>` (a fresh
    /// temporary `audit.dir` unless overridden).
    pub audit_dir: PathBuf,
    pub client: reqwest::Client,
    pub settings: Settings,
    /// The broker's clock: tokens are minted at its time.
    pub clock: Arc<dyn Clock>,
}

/// The shipped embedded default, on 127.0.0.1:0, with a smaller dataset.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// As [`spawn_app`], with extra `CAF_BROKER__*` overrides.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with_clock(overrides, Arc::new(SystemClock)).await
}

/// As [`spawn_app_with`], with the clock of every stage given (a frozen one
/// makes quotas, cache TTLs, detection windows and token expiry exact).
pub async fn spawn_app_with_clock(overrides: &[(&str, &str)], clock: Arc<dyn Clock>) -> TestApp {
    let (app, server) = build_app(overrides, clock).await;
    tokio::spawn(server.run_until_stopped());
    app
}

/// As [`spawn_app_with`], with the loaded settings changed by `tweak` before
/// the build (what variables cannot say, such as removing a key).
pub async fn spawn_app_tweaked(
    overrides: &[(&str, &str)],
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let (app, server) = build_app_tweaked(overrides, Arc::new(SystemClock), tweak).await;
    tokio::spawn(server.run_until_stopped());
    app
}

/// A broker that is stopped by the test: `stop` returns once the server and
/// what it does on shutdown are done.
pub struct StoppableApp {
    pub app: TestApp,
    handle: actix_web::dev::ServerHandle,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl StoppableApp {
    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.running
            .await
            .expect("the server task ends")
            .expect("the server stops cleanly");
    }
}

/// As [`spawn_app_with_clock`], keeping the means to stop the broker.
pub async fn spawn_stoppable_app(
    overrides: &[(&str, &str)],
    clock: Arc<dyn Clock>,
) -> StoppableApp {
    let (app, server) = build_app(overrides, clock).await;
    let handle = server.handle();
    let running = tokio::spawn(server.run_until_stopped());
    StoppableApp {
        app,
        handle,
        running,
    }
}

/// The test settings and the application built from them, not yet running.
async fn build_app(overrides: &[(&str, &str)], clock: Arc<dyn Clock>) -> (TestApp, Application) {
    build_app_tweaked(overrides, clock, |_| {}).await
}

async fn build_app_tweaked(
    overrides: &[(&str, &str)],
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, Application) {
    let audit_dir = fresh_dir("audit");
    let mut env = vec![
        (
            "CAF_BROKER__AUDIT__DIR".to_string(),
            audit_dir.display().to_string(),
        ),
        (
            "CAF_BROKER__SERVER__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("CAF_BROKER__SERVER__WORKERS".to_string(), "2".to_string()),
        // Each watcher holds an inotify instance; only the reload tests need one.
        ("CAF_BROKER__POLICY__WATCH".to_string(), "false".to_string()),
        (
            "CAF_BROKER__SERVER__SHUTDOWN_TIMEOUT_SECS".to_string(),
            "0".to_string(),
        ),
        (
            "CAF_BROKER__UPSTREAM__RECORDS".to_string(),
            "300".to_string(),
        ),
        // Tests run at any hour: the off-hours rule is on only where a test
        // turns it on, with a frozen clock.
        (
            "CAF_BROKER__ALERTS__OFF_HOURS".to_string(),
            "\"\"".to_string(),
        ),
        // Tests of other stages send more than an agent's burst with one token;
        // the tests of per-agent limits set their own.
        (
            "CAF_BROKER__QUOTAS__AGENT_DEFAULT".to_string(),
            "{ per_second = 1000, burst = 1000, per_day = 1000000 }".to_string(),
        ),
    ];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut settings =
        Settings::load_with_env(&repo("config/broker.toml"), env).expect("test settings load");
    tweak(&mut settings);
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("application builds");
    let address = format!("{}://localhost:{}", app.scheme(), app.port());
    let ops_address = app
        .ops_port()
        .zip(app.ops_scheme())
        .map(|(port, scheme)| format!("{scheme}://localhost:{port}"));
    let test_app = TestApp {
        ops_address,
        audit_dir: settings.audit.log_dir(),
        address,
        client: client(),
        settings,
        clock,
    };
    (test_app, app)
}

/// An HTTPS client that trusts only the development CA.
pub fn client() -> reqwest::Client {
    let ca = std::fs::read(repo("certs-dev/ca.pem")).expect("dev CA");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("dev CA parses")])
        .build()
        .expect("client builds")
}

impl TestApp {
    /// A valid dev token for `role` at post TN-TUNIS.
    pub fn token(&self, role: &str) -> String {
        self.token_for("TN-TUNIS", role)
    }

    pub fn token_for(&self, post: &str, role: &str) -> String {
        self.token_of(post, "agent-42", role)
    }

    /// A dev token for agent `sub` of `post`, valid for twelve hours (the
    /// longest lifetime the broker accepts by default) from the broker's time
    /// (a test may move its clock by hours).
    pub fn token_of(&self, post: &str, sub: &str, role: &str) -> String {
        let claims = DevClaims {
            sub: sub.into(),
            post: post.into(),
            role: role.into(),
            ttl_secs: 43_200,
        };
        mint_dev_token_at(&self.settings.auth, claims, self.clock.as_ref()).expect("dev token")
    }

    /// `GET /v1/allocataires/{numero}` with the given token and purpose.
    pub async fn get_dossier(&self, numero: &str, token: &str, purpose: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/allocataires/{numero}", self.address))
            .bearer_auth(token)
            .header("X-Purpose", purpose)
            .header("X-Case-Reference", "TN-2026/0042")
            .send()
            .await
            .expect("request sent")
    }

    /// The broker's `/metrics` text, from the operations listener when there is one.
    pub async fn metrics(&self) -> String {
        let address = self.ops_address.as_deref().unwrap_or(&self.address);
        self.client
            .get(format!("{address}/metrics"))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("a text body")
    }

    /// The value of one counter series, written as in `/metrics`
    /// (`name{label="value"}`); 0 before its first increment. The recorder is
    /// shared by every broker of this test binary, so callers compare before
    /// and after, or pick labels of their own.
    pub async fn counter(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }

    /// `POST /v1/allocataires/recherche` with a JSON body.
    pub async fn search(&self, body: &Value, token: &str, purpose: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/allocataires/recherche", self.address))
            .bearer_auth(token)
            .header("X-Purpose", purpose)
            .header("X-Case-Reference", "TN-2026/0042")
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

/// Asserts an RFC 9457 problem with `status` and `code`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of a `{code}` problem"
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("problem is JSON");
    assert_eq!(body["type"], format!("urn:caf-broker:problem:{code}"));
    assert_eq!(body["code"], code);
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id);
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

/// A new, empty directory under the system's temporary directory.
pub fn fresh_dir(kind: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("caf-broker-test-{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}
