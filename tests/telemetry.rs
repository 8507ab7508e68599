//! The running binary's telemetry: traces exported to a small OTLP/HTTP receiver,
//! `/metrics` and logs, over the fixed dossiers, with no
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
            ("CAF_BROKER__SERVER__CLIENT_AUTH", "off".into()),
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
            ("CAF_BROKER__ENVIRONMENT", "\"test\"".into()),
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

    /// A GET of `path` by `token`'s agent, with the purpose and case of these tests.
    fn get(&self, client: &reqwest::Client, path: &str, token: &str) -> reqwest::RequestBuilder {
        with_case(client.get(self.url(path)), token)
    }

    /// Reads one fixed dossier (a 200), stops; the token used and the logs.
    async fn read_one_dossier_and_stop(self) -> (String, String) {
        let token = self.token();
        let res = self
            .get(&reqwest::Client::new(), "/v1/allocataires/1000002", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        (token, self.stop())
    }

    /// A search (`POST /v1/allocataires/recherche`) by `token`'s agent, as [`Broker::get`].
    fn search(&self, client: &reqwest::Client, token: &str) -> reqwest::RequestBuilder {
        with_case(client.post(self.url("/v1/allocataires/recherche")), token)
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
fn with_case(request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    request
        .bearer_auth(token)
        .header("X-Purpose", PURPOSE)
        .header("X-Case-Reference", CASE)
}

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
        let mut request = broker.get(&client, &format!("/v1/allocataires/{numero}"), token);
        if i == 0 {
            request = request.header("traceparent", TRACEPARENT);
        }
        let res = request.send().await.expect("request sent");
        assert_eq!(res.status(), 200, "GET {numero}");
    }
    for nir in NIRS {
        let res = broker
            .search(&client, token)
            .json(&json!({ "nir": nir }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), 200, "POST recherche");
    }
    // Failures log and trace too: a bad token, a bad NIR key, an unknown dossier.
    let res = broker
        .get(&client, "/v1/allocataires/1000002", &format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = broker
        .search(&client, token)
        .json(&json!({ "nir": "295109912611194" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = broker
        .get(&client, "/v1/allocataires/9999999", token)
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
        "http.route",
        "http.response.status_code",
    ] {
        assert!(
            contains(&spans, expected.as_bytes()),
            "the exported spans lack {expected:?}"
        );
    }
    // The environment as a resource attribute: its key, then its string value
    // (protobuf: field 2, an AnyValue of 6 bytes whose field 1 is "test").
    assert!(
        contains(&spans, b"deployment.environment\x12\x06\x0a\x04test"),
        "the exported spans lack deployment.environment = \"test\""
    );
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
    let (token, logs) = broker.read_one_dossier_and_stop().await;
    assert!(receiver.exports().is_empty());
    assert_no_personal_data("the logs", logs.as_bytes(), &token);
}

#[tokio::test]
async fn the_text_log_written_to_a_pipe_carries_no_terminal_colour_codes() {
    let broker = Broker::start_with(
        None,
        &[
            ("CAF_BROKER__TELEMETRY__LOG_FORMAT", "\"text\""),
            ("CAF_BROKER__TELEMETRY__LOG_LEVEL", "\"info\""),
        ],
    )
    .await;
    let (token, logs) = broker.read_one_dossier_and_stop().await;
    let line = logs
        .lines()
        .find(|line| line.contains("request_id="))
        .unwrap_or_else(|| panic!("no request line in the text logs:\n{logs}"));
    assert!(line.contains(" INFO "), "{line}");
    assert_no_personal_data("the text logs", logs.as_bytes(), &token);
    assert!(
        !logs.contains('\u{1b}'),
        "escape codes in the logs:\n{logs}"
    );
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
        let res = broker
            .get(&client, &format!("/v1/allocataires/{numero}"), &token)
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
