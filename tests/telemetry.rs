//! The running binary's telemetry: traces exported to a small OTLP/HTTP receiver,
//! `/metrics`, logs and `/openapi.json`, over the fixed dossiers, with no
//! personal data in any of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caf_broker::auth::{DevClaims, mint_dev_token};
use caf_broker::config::Settings;
use caf_broker::simulator::Dataset;
use serde_json::{Value, json};

const NUMEROS: [&str; 5] = ["1000001", "1000002", "1000003", "1000004", "1000005"];
const NIRS: [&str; 5] = [
    "180057512345627",
    "295109912611193",
    "253072A07300443",
    "253072B07300470",
    "160019912345604",
];
const PURPOSE: &str = "verification_radiation";
const CASE: &str = "TN-2026/0042";
/// A caller's W3C trace context; its trace must be continued by the broker.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// One POST received by the OTLP receiver.
#[derive(Debug, Clone)]
struct Export {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A tiny OTLP/HTTP receiver: answers every request `200` with an empty
/// protobuf body and keeps what it got.
struct OtlpReceiver {
    port: u16,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl OtlpReceiver {
    fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("receiver binds");
        let port = listener.local_addr().unwrap().port();
        let exports = Arc::new(Mutex::new(Vec::new()));
        let kept = exports.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve_connection(stream, &kept));
            }
        });
        OtlpReceiver { port, exports }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn exports(&self) -> Vec<Export> {
        self.exports.lock().unwrap().clone()
    }
}

/// Reads HTTP/1.1 requests (keep-alive, `Content-Length` or chunked) until the peer closes.
fn serve_connection(stream: TcpStream, kept: &Mutex<Vec<Export>>) {
    let mut writer = stream.try_clone().expect("stream clones");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let (mut length, mut chunked, mut content_type) = (0usize, false, String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "content-type" => content_type = value.to_string(),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap_or(0);
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        kept.lock().unwrap().push(Export {
            path,
            content_type,
            body,
        });
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The broker binary on a free port, plain HTTP, with its logs (stderr) captured.
struct Broker {
    child: Child,
    address: String,
    settings: Settings,
    audit_dir: PathBuf,
}

impl Broker {
    async fn start(otlp_endpoint: Option<&str>) -> Broker {
        Broker::start_with(otlp_endpoint, &[]).await
    }

    /// As [`Broker::start`], with extra `CAF_BROKER__*` settings.
    async fn start_with(otlp_endpoint: Option<&str>, extra: &[(&'static str, &str)]) -> Broker {
        let port = free_port();
        let audit_dir = std::env::temp_dir().join(format!(
            "caf-broker-telemetry-{}-{port}",
            std::process::id()
        ));
        let mut env = vec![
            ("CAF_BROKER__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("CAF_BROKER__SERVER__TLS", "false".into()),
            ("CAF_BROKER__SERVER__WORKERS", "2".into()),
            ("CAF_BROKER__SERVER__SHUTDOWN_TIMEOUT_SECS", "0".into()),
            ("CAF_BROKER__UPSTREAM__RECORDS", "50".into()),
            ("CAF_BROKER__AUDIT__DIR", audit_dir.display().to_string()),
            // One agent reads every fixed dossier at once: more than an agent's burst.
            (
                "CAF_BROKER__QUOTAS__AGENT_DEFAULT",
                "{ per_second = 1000, burst = 1000, per_day = 1000000 }".into(),
            ),
            ("CAF_BROKER__TELEMETRY__LOG_FORMAT", "\"json\"".into()),
            ("CAF_BROKER__TELEMETRY__LOG_LEVEL", "\"debug\"".into()),
            ("CAF_BROKER__TELEMETRY__SAMPLING_RATIO", "1".into()),
            (
                "CAF_BROKER__TELEMETRY__ENVIRONMENT",
                "\"ci-telemetry\"".into(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        if let Some(endpoint) = otlp_endpoint {
            env.push((
                "CAF_BROKER__TELEMETRY__OTLP_ENDPOINT",
                format!("\"{endpoint}\""),
            ));
        }
        let settings = Settings::load_with_env(
            &repo("config/broker.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.clone())),
        )
        .expect("test settings load");
        let child = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--config", "config/broker.toml", "serve"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the broker starts");
        let broker = Broker {
            child,
            address: format!("http://127.0.0.1:{port}"),
            settings,
            audit_dir,
        };
        broker.wait_until_up().await;
        broker
    }

    async fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(res) = reqwest::get(format!("{}/healthz", self.address)).await
                && res.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "the broker did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn token(&self) -> String {
        let claims = DevClaims {
            sub: "agent-42".into(),
            post: "TN-TUNIS".into(),
            role: "agent_consulaire".into(),
            ttl_secs: 600,
        };
        mint_dev_token(&self.settings.auth, claims).expect("dev token")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// SIGTERM, as an orchestrator stops it; returns its logs once it has exited.
    fn stop(mut self) -> String {
        // The shell's own `kill`, so that no procps package is needed.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "the broker did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut logs = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut logs).expect("logs read");
        }
        let _ = std::fs::remove_dir_all(&self.audit_dir);
        logs
    }
}

/// A test that fails before `stop` must not leave a broker running.
impl Drop for Broker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every personal value of the fixed dossiers: numéros, NIRs, and the names
/// and address lines of the allocataire, spouse and children.
fn personal_values() -> Vec<String> {
    let dataset = Dataset::generate(Dataset::DEFAULT_SEED, 0);
    let mut values: Vec<String> = NUMEROS.iter().chain(&NIRS).map(|s| s.to_string()).collect();
    for numero in NUMEROS {
        let record = dataset.by_numero(numero).expect("a fixed dossier");
        let mut people = vec![&record["allocataire"], &record["conjoint"]];
        if let Some(children) = record["enfants"].as_array() {
            people.extend(children);
        }
        for person in people {
            for key in ["nom_naissance", "nom_usage", "prenoms"] {
                if let Some(name) = person[key].as_str() {
                    values.push(name.to_string());
                }
            }
        }
        for key in ["destinataire", "numero_libelle_voie"] {
            if let Some(line) = record["adresse"][key].as_str() {
                values.push(line.to_string());
            }
        }
    }
    // Very short names could match by chance in binary data; four letters and up are checked.
    values.retain(|v| v.len() >= 4);
    values.sort();
    values.dedup();
    values
}

fn assert_no_personal_data(what: &str, haystack: &[u8], token: &str) {
    for value in personal_values() {
        assert!(
            !contains(haystack, value.as_bytes()),
            "{what} holds the personal value {value:?}"
        );
    }
    assert!(
        !contains(haystack, token.as_bytes()),
        "{what} holds the bearer token"
    );
    // The signature alone would do as much harm as the whole token.
    let signature = token.rsplit('.').next().unwrap_or_default();
    assert!(
        !contains(haystack, signature.as_bytes()),
        "{what} holds the token's signature"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `name` as the protobuf `Span.name` field (number 5, length-delimited) encodes it.
fn span_name_field(name: &str) -> Vec<u8> {
    let mut field = vec![0x2A, u8::try_from(name.len()).expect("a short name")];
    field.extend_from_slice(name.as_bytes());
    field
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Reads every fixed dossier by numéro and by NIR, and a few failures.
async fn full_run(broker: &Broker, token: &str) {
    let client = reqwest::Client::new();
    for (i, numero) in NUMEROS.iter().enumerate() {
        let mut request = client
            .get(broker.url(&format!("/v1/allocataires/{numero}")))
            .bearer_auth(token)
            .header("X-Purpose", PURPOSE)
            .header("X-Case-Reference", CASE);
        if i == 0 {
            request = request.header("traceparent", TRACEPARENT);
        }
        let res = request.send().await.expect("request sent");
        assert_eq!(res.status(), 200, "GET {numero}");
    }
    for nir in NIRS {
        let res = client
            .post(broker.url("/v1/allocataires/recherche"))
            .bearer_auth(token)
            .header("X-Purpose", PURPOSE)
            .header("X-Case-Reference", CASE)
            .json(&json!({ "nir": nir }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 200, "POST recherche");
    }
    // Failures log and trace too: a bad token, a bad NIR key, an unknown dossier.
    let res = client
        .get(broker.url("/v1/allocataires/1000002"))
        .bearer_auth(format!("{token}x"))
        .header("X-Purpose", PURPOSE)
        .header("X-Case-Reference", CASE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = client
        .post(broker.url("/v1/allocataires/recherche"))
        .bearer_auth(token)
        .header("X-Purpose", PURPOSE)
        .header("X-Case-Reference", CASE)
        .json(&json!({ "nir": "295109912611194" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = client
        .get(broker.url("/v1/allocataires/9999999"))
        .bearer_auth(token)
        .header("X-Purpose", PURPOSE)
        .header("X-Case-Reference", CASE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_full_run_over_the_fixed_dossiers_exports_its_spans_and_no_personal_data() {
    let receiver = OtlpReceiver::start();
    let broker = Broker::start(Some(&receiver.endpoint())).await;
    let token = broker.token();
    full_run(&broker, &token).await;

    let metrics = reqwest::get(broker.url("/metrics")).await.unwrap();
    let metrics_status = metrics.status();
    let metrics_type = metrics.headers().get("content-type").cloned();
    let metrics = metrics.text().await.unwrap();

    // The batch exporter waits 5 s between exports: what arrives now was flushed by the shutdown.
    let logs = broker.stop();
    let exports = receiver.exports();
    assert!(!exports.is_empty(), "no span was exported; logs:\n{logs}");
    for export in &exports {
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(export.content_type, "application/x-protobuf");
    }
    let spans: Vec<u8> = exports.iter().flat_map(|e| e.body.clone()).collect();

    // The resource, and the attributes of the span plan.
    for expected in [
        "service.name",
        "caf-broker",
        "service.version",
        env!("CARGO_PKG_VERSION"),
        "deployment.environment",
        "ci-telemetry",
        "http.route",
        "http.response.status_code",
    ] {
        assert!(
            contains(&spans, expected.as_bytes()),
            "the exported spans lack {expected:?}"
        );
    }
    // The span plan, by span name (route templates, never raw paths).
    for name in [
        "GET /v1/allocataires/{numero}",
        "POST /v1/allocataires/recherche",
        "authenticate",
        "authorize",
        "quota",
        "cache",
        "upstream",
        "filter",
        "audit",
    ] {
        assert!(
            contains(&spans, &span_name_field(name)),
            "no span named {name:?} was exported"
        );
    }
    assert!(
        contains(&spans, &hex_bytes(TRACE_ID)),
        "the caller's traceparent was not honoured"
    );
    assert_no_personal_data("the exported spans", &spans, &token);

    assert_eq!(metrics_status, 200);
    assert_eq!(
        metrics_type.expect("a content type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for expected in [
        "# TYPE caf_broker_http_requests_total counter",
        "caf_broker_http_request_duration_seconds_bucket",
        r#"route="/v1/allocataires/{numero}""#,
        r#"purpose="verification_radiation""#,
        r#"post="TN-TUNIS""#,
    ] {
        assert!(
            metrics.contains(expected),
            "/metrics lacks {expected:?}:\n{metrics}"
        );
    }
    // Sums and timings are numbers that may hold any digits: labels are where a numéro would leak.
    let labels: String = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(&l[l.find('{')?..=l.rfind('}')?]))
        .collect();
    assert_no_personal_data("/metrics labels", labels.as_bytes(), &token);
    let text_only: String = metrics
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_no_personal_data("/metrics", text_only.as_bytes(), &token);

    assert!(
        logs.contains("\"request_id\""),
        "no request line in the logs:\n{logs}"
    );
    assert_no_personal_data("the logs", logs.as_bytes(), &token);
}

#[tokio::test]
async fn without_an_endpoint_the_broker_exports_nothing() {
    let receiver = OtlpReceiver::start();
    // The receiver is within reach, named by the OpenTelemetry variables that
    // an exporter built with its defaults would follow: only
    // `telemetry.otlp_endpoint` may send the broker's spans anywhere.
    let endpoint = receiver.endpoint();
    let traces = format!("{endpoint}/v1/traces");
    let broker = Broker::start_with(
        None,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ],
    )
    .await;
    let token = broker.token();
    let res = reqwest::Client::new()
        .get(broker.url("/v1/allocataires/1000002"))
        .bearer_auth(&token)
        .header("X-Purpose", PURPOSE)
        .header("X-Case-Reference", CASE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let logs = broker.stop();
    assert!(receiver.exports().is_empty());
    assert_no_personal_data("the logs", logs.as_bytes(), &token);
}

#[tokio::test]
async fn a_bulk_lookup_alert_is_a_warning_naming_the_agent_and_rule_but_no_dossier() {
    let broker = Broker::start_with(
        None,
        &[
            ("CAF_BROKER__ALERTS__DISTINCT_DOSSIERS_PER_HOUR", "3"),
            // The run must not depend on the hour it is made at.
            ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\""),
        ],
    )
    .await;
    let token = broker.token();
    let client = reqwest::Client::new();
    for numero in NUMEROS {
        let res = client
            .get(broker.url(&format!("/v1/allocataires/{numero}")))
            .bearer_auth(&token)
            .header("X-Purpose", PURPOSE)
            .header("X-Case-Reference", CASE)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let logs = broker.stop();
    let alerts: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "bulk-lookup alert")
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "one alert for five dossiers over a threshold of three:\n{logs}"
    );
    let alert = &alerts[0];
    assert_eq!(alert["level"], "WARN");
    assert_eq!(alert["post"], "TN-TUNIS");
    assert_eq!(alert["sub"], "agent-42");
    assert_eq!(alert["rule"], "distinct_dossiers");
    let figures: Value = serde_json::from_str(alert["figures"].as_str().expect("figures")).unwrap();
    assert_eq!(
        figures,
        json!({"distinct_dossiers": 4, "threshold": 3, "window_secs": 3600})
    );
    assert_no_personal_data("the alert", alert.to_string().as_bytes(), &token);
    assert_no_personal_data("the logs", logs.as_bytes(), &token);
}

/// Follows a local `$ref` (`#/components/...`) in the document.
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(doc, doc.pointer(pointer).unwrap_or(&Value::Null))
        }
        None => node,
    }
}

/// Checks one real answer against the documented operation: status, content
/// type, headers, and the body's keys and problem code.
async fn check_answer(doc: &Value, path: &str, method: &str, res: reqwest::Response) {
    let status = res.status().as_u16();
    let what = format!("{method} {path} -> {status}");
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{what}: undocumented operation");
    let documented = resolve(doc, &operation["responses"][status.to_string()]);
    assert!(documented.is_object(), "{what}: undocumented status");

    let headers = res.headers().clone();
    for (name, _) in documented["headers"].as_object().into_iter().flatten() {
        let optional = [
            "Retry-After",
            "RateLimit-Policy",
            "RateLimit",
            "X-Policy-Version",
        ]
        .contains(&name.as_str())
            && status >= 500;
        assert!(
            optional || headers.contains_key(name.to_ascii_lowercase().as_str()),
            "{what}: documented header {name} missing"
        );
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (documented_type, media) = documented["content"]
        .as_object()
        .and_then(|c| c.iter().next())
        .expect("documented content");
    assert!(
        content_type.starts_with(documented_type.split(';').next().unwrap_or_default()),
        "{what}: content type {content_type} is not {documented_type}"
    );
    if !content_type.contains("json") {
        return;
    }
    let body: Value = res.json().await.expect("a JSON body");
    let schema = resolve(doc, &media["schema"]);
    if let Some(properties) = schema["properties"].as_object() {
        for (key, _) in body.as_object().expect("an object body") {
            assert!(
                properties.contains_key(key),
                "{what}: undocumented field {key}"
            );
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().unwrap();
            assert!(
                body.get(key).is_some(),
                "{what}: documented field {key} missing"
            );
        }
    }
    // A problem answer gives one example per code it may carry.
    if let Some(code) = body["code"].as_str() {
        assert!(
            media["examples"].get(code).is_some(),
            "{what}: undocumented code {code}"
        );
    }
    if body.get("meta").is_some() {
        let meta = &doc["components"]["schemas"]["Meta"]["properties"];
        for (key, _) in body["meta"].as_object().unwrap() {
            assert!(meta.get(key).is_some(), "{what}: undocumented meta.{key}");
        }
        let cache = &doc["components"]["schemas"]["CacheOutcome"]["enum"];
        assert!(cache.as_array().unwrap().contains(&body["meta"]["cache"]));
    }
}

#[tokio::test]
async fn the_served_openapi_document_matches_real_answers() {
    let broker = Broker::start(None).await;
    let token = broker.token();
    let client = reqwest::Client::new();
    let res = client
        .get(broker.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    let numero = "/v1/allocataires/{numero}";
    let recherche = "/v1/allocataires/recherche";
    let get = |path: &str, bearer: &str, purpose: &str| {
        client
            .get(broker.url(path))
            .bearer_auth(bearer)
            .header("X-Purpose", purpose)
            .header("X-Case-Reference", CASE)
    };
    let post = |body: Value| {
        client
            .post(broker.url(recherche))
            .bearer_auth(&token)
            .header("X-Purpose", PURPOSE)
            .header("X-Case-Reference", CASE)
            .json(&body)
    };
    let cases = [
        (
            numero,
            "get",
            get("/v1/allocataires/1000002", &token, PURPOSE),
        ),
        (
            numero,
            "get",
            get("/v1/allocataires/12345678", &token, PURPOSE),
        ),
        (
            numero,
            "get",
            get("/v1/allocataires/1000002", "not-a-jwt", PURPOSE),
        ),
        (
            numero,
            "get",
            get("/v1/allocataires/1000002", &token, "accompagnement_social"),
        ),
        (
            numero,
            "get",
            get("/v1/allocataires/9999999", &token, PURPOSE),
        ),
        (recherche, "post", post(json!({ "nir": NIRS[1] }))),
        (recherche, "post", post(json!({ "nir": "295109912611194" }))),
        (recherche, "post", post(json!({ "nir": "x".repeat(8192) }))),
        (
            recherche,
            "post",
            client
                .post(broker.url(recherche))
                .bearer_auth(&token)
                .header("X-Purpose", PURPOSE)
                .header("X-Case-Reference", CASE)
                .header("content-type", "text/plain")
                .body("{}"),
        ),
        ("/healthz", "get", client.get(broker.url("/healthz"))),
        ("/readyz", "get", client.get(broker.url("/readyz"))),
        ("/metrics", "get", client.get(broker.url("/metrics"))),
        (
            "/openapi.json",
            "get",
            client.get(broker.url("/openapi.json")),
        ),
    ];
    let mut statuses = Vec::new();
    for (path, method, request) in cases {
        let res = request.send().await.expect("request sent");
        statuses.push(res.status().as_u16());
        check_answer(&doc, path, method, res).await;
    }
    assert_eq!(
        statuses,
        [
            200, 400, 401, 403, 404, 200, 400, 413, 415, 200, 200, 200, 200
        ]
    );

    // An unknown route and a wrong method are problems with their documented codes.
    let codes = doc["components"]["schemas"]["ProblemCode"]["enum"]
        .as_array()
        .unwrap()
        .clone();
    for res in [
        client.get(broker.url("/v2/nothing")).send().await.unwrap(),
        client
            .delete(broker.url("/v1/allocataires/1"))
            .send()
            .await
            .unwrap(),
    ] {
        let body: Value = res.json().await.unwrap();
        assert!(codes.contains(&body["code"]), "{body}");
    }
    broker.stop();
}
