//! Telemetry tests: settings, context propagation, the exported span tree, metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;

use super::metrics::{local_recorder, path_label, safe_label};
use super::otel::traces_url;
use super::*;
use crate::domain::CacheOutcome;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn exporting(ratio: f64) -> TelemetrySettings {
    TelemetrySettings {
        otlp_endpoint: "http://127.0.0.1:4318".into(),
        sampling_ratio: ratio,
        ..TelemetrySettings::default()
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span named {name} in {spans:#?}"))
}

/// Runs `f` under a subscriber that has only the OpenTelemetry layer, and returns the spans.
fn traced(settings: &TelemetrySettings, f: impl FnOnce()) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = simple_tracer_provider(settings, exporter.clone());
    let subscriber = tracing_subscriber::registry().with(layer(&provider));
    tracing::subscriber::with_default(subscriber, f);
    exporter.get_finished_spans().unwrap()
}

/// A request as the edge and the pipeline will trace it.
fn request(headers: &[(&str, &str)]) -> (Option<String>, Vec<(&'static str, String)>) {
    let server = tracing::info_span!(
        "http.server.request",
        otel.name = "GET /v1/allocataires/{numero}",
        otel.kind = "server",
        http.request.method = "GET",
        http.route = "/v1/allocataires/{numero}",
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    set_parent(&server, extract_parent_context(headers.iter().copied()));
    let _entered = server.enter();
    let headers = {
        let upstream = tracing::info_span!("upstream", otel.kind = "client");
        let _entered = upstream.enter();
        tracing::info!(numero = "1000002", "an event, never exported");
        trace_headers(&upstream)
    };
    let trace_id = {
        let audit = tracing::info_span!("audit");
        let _entered = audit.enter();
        current_trace_id()
    };
    tracing::info_span!(target: "another_crate", "not exported").in_scope(|| {});
    tracing::debug_span!("too verbose").in_scope(|| {});
    server.record("http.response.status_code", 200);
    server.record("otel.status_code", "OK");
    (trace_id, headers)
}

#[test]
fn the_default_settings_are_valid_and_export_nothing() {
    let settings = TelemetrySettings::default();
    assert!(settings.validate().is_empty());
    assert!(settings.otlp_endpoint.is_empty());
    assert_eq!(settings.sampling_ratio, 0.1);
    assert_eq!(settings.service_name, "caf-broker");
    assert_eq!(settings.environment, "dev");
}

#[test]
fn an_otlp_endpoint_is_accepted_and_bad_values_are_all_reported() {
    assert!(exporting(1.0).validate().is_empty());
    let bad = TelemetrySettings {
        otlp_endpoint: "otel-collector:4318".into(),
        sampling_ratio: 1.5,
        service_name: String::new(),
        log_level: "info,,=".into(),
        otlp_timeout_ms: 0,
        ..TelemetrySettings::default()
    };
    let problems = bad.validate();
    for key in [
        "otlp_endpoint",
        "sampling_ratio",
        "service_name",
        "log_level",
        "otlp_timeout_ms",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(key)),
            "{key} not reported in {problems:?}"
        );
    }
}

#[test]
fn unknown_telemetry_keys_are_refused() {
    let parsed: Result<TelemetrySettings, _> = toml::from_str("sampling_rate = 0.5");
    assert!(parsed.is_err());
    let parsed: TelemetrySettings = toml::from_str("sampling_ratio = 1").unwrap();
    assert_eq!(parsed.sampling_ratio, 1.0);
    // The environment is the settings' top-level one, which config moves here.
    let parsed: Result<TelemetrySettings, _> = toml::from_str("environment = \"prod\"");
    assert!(parsed.is_err());
}

#[test]
fn the_collector_url_gets_the_traces_path_once() {
    assert_eq!(
        traces_url("http://collector:4318").as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    assert_eq!(
        traces_url("https://collector:4318/").as_deref(),
        Some("https://collector:4318/v1/traces")
    );
    assert_eq!(
        traces_url("http://collector:4318/v1/traces").as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    for bad in [
        "collector:4318",
        "http://",
        "ftp://c",
        "http://u:p@c",
        "http://c /x",
    ] {
        assert_eq!(traces_url(bad), None, "{bad}");
    }
}

#[test]
fn an_incoming_traceparent_is_read_and_a_repeated_one_is_ignored() {
    let cx = extract_parent_context([("TraceParent", PARENT), ("authorization", "Bearer x")]);
    let span = cx.span();
    assert!(span.span_context().is_remote());
    assert_eq!(span.span_context().trace_id().to_string(), TRACE_ID);

    let repeated = extract_parent_context([("traceparent", PARENT), ("traceparent", PARENT)]);
    assert!(!repeated.span().span_context().is_valid());
    let malformed = extract_parent_context([("traceparent", "00-zz-00-01")]);
    assert!(!malformed.span().span_context().is_valid());
}

#[test]
fn the_span_tree_continues_the_callers_trace_and_holds_only_declared_attributes() {
    let mut outcome = (None, Vec::new());
    let spans = traced(&exporting(0.0), || {
        outcome = request(&[("traceparent", PARENT)]);
    });
    let (trace_id, headers) = outcome;

    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let server = named(&spans, "GET /v1/allocataires/{numero}");
    let upstream = named(&spans, "upstream");
    let audit = named(&spans, "audit");

    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(upstream.span_kind, SpanKind::Client);
    assert_eq!(server.span_context.trace_id().to_string(), TRACE_ID);
    assert!(server.parent_span_is_remote);
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(upstream.parent_span_id, server.span_context.span_id());
    assert_eq!(audit.parent_span_id, server.span_context.span_id());
    assert_eq!(server.status, Status::Ok);
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/v1/allocataires/{numero}")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    // Log events stay in the logs.
    assert!(spans.iter().all(|s| s.events.is_empty()));

    // The caller sampled the trace, so it is recorded even at ratio 0, and
    // the CAF request continues it from the client span.
    assert_eq!(trace_id.as_deref(), Some(TRACE_ID));
    let traceparent = &headers
        .iter()
        .find(|(k, _)| *k == "traceparent")
        .expect("a traceparent for the CAF")
        .1;
    assert_eq!(
        traceparent,
        &format!("00-{TRACE_ID}-{}-01", upstream.span_context.span_id())
    );
}

#[test]
fn new_traces_follow_the_sampling_ratio_but_keep_a_trace_id() {
    let mut trace_id = None;
    let spans = traced(&exporting(0.0), || trace_id = request(&[]).0);
    assert!(spans.is_empty());
    let id = trace_id.expect("a trace id even when not sampled");
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let spans = traced(&exporting(1.0), || {
        request(&[]);
    });
    assert_eq!(spans.len(), 3);
}

#[test]
fn without_the_layer_there_is_no_trace_id_and_no_header() {
    let (trace_id, headers) = request(&[("traceparent", PARENT)]);
    assert_eq!(trace_id, None);
    assert!(headers.is_empty());
}

/// Keeps what it is given, also after shutdown.
#[derive(Debug, Clone, Default)]
struct Recording(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Recording {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[tokio::test]
async fn the_guard_flushes_queued_spans_on_shutdown_from_async_code() {
    let exporter = Recording::default();
    let provider = batch_tracer_provider(&exporting(1.0), exporter.clone());
    let subscriber = tracing_subscriber::registry().with(layer(&provider));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("audit").in_scope(|| {});
    });
    // The batch delay is 5 s: only the shutdown can have sent the span by now.
    let guard = TelemetryGuard {
        provider: Some(provider),
    };
    assert!(guard.is_exporting());
    guard.shutdown().unwrap();
    let spans = exporter.0.lock().unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "audit");
}

#[test]
fn metric_labels_never_take_identifiers_or_free_text() {
    assert_eq!(
        safe_label("/v1/allocataires/{numero}"),
        "/v1/allocataires/{numero}"
    );
    assert_eq!(safe_label("TN-TUNIS"), "TN-TUNIS");
    assert_eq!(
        safe_label("verification_radiation"),
        "verification_radiation"
    );
    assert_eq!(safe_label("1000002"), "other");
    assert_eq!(safe_label("295109912611193"), "other");
    assert_eq!(safe_label("JEANNE MARTIN"), "other");
    assert_eq!(safe_label(""), "other");
    assert_eq!(safe_label(&"a".repeat(65)), "other");
}

#[test]
fn field_path_labels_keep_paths_and_drop_identifiers() {
    assert_eq!(path_label("enfants[].ecole"), "enfants[].ecole");
    assert_eq!(path_label("adresse.<redacted>"), "adresse.<redacted>");
    assert_eq!(path_label("<other>"), "<other>");
    assert_eq!(path_label("enfants[].1000002"), "other");
    assert_eq!(path_label("JEANNE MARTIN"), "other");
    assert_eq!(path_label(""), "other");
    assert_eq!(path_label(&"a.".repeat(129)), "other");
}

#[test]
fn metrics_render_with_their_labels_and_buckets() {
    let recorder = local_recorder().unwrap();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || {
        record_http_request(&HttpObservation {
            route: "/v1/allocataires/{numero}",
            method: "GET",
            status: 200,
            purpose: Some("verification_radiation"),
            post: Some("TN-TUNIS"),
            elapsed: Duration::from_millis(12),
        });
        record_http_request(&HttpObservation {
            route: "unmatched",
            method: "BREW",
            status: 404,
            purpose: Some("295109912611193"),
            post: None,
            elapsed: Duration::from_millis(1),
        });
        // A status the broker does not answer is still its code in decimal.
        record_http_request(&HttpObservation {
            route: "/healthz",
            method: "GET",
            status: 418,
            purpose: None,
            post: None,
            elapsed: Duration::from_millis(1),
        });
        record_cache(CacheOutcome::Hit);
        record_cache(CacheOutcome::Miss);
        record_quota_refusal("TN-TUNIS", "burst");
        record_error_budget_refusal("TN-TUNIS");
        record_upstream(UpstreamResult::Timeout, Duration::from_secs(2));
        set_upstream_circuit_open(true);
        record_audit_write(Duration::from_micros(300));
        set_audit_writable(false);
        record_jwks_refresh_failure();
    });
    let text = handle.render();
    for expected in [
        r#"caf_broker_http_requests_total{route="/v1/allocataires/{numero}",method="GET",status="200",purpose="verification_radiation",post="TN-TUNIS"} 1"#,
        r#"caf_broker_http_requests_total{route="unmatched",method="_OTHER",status="404",purpose="other",post="none"} 1"#,
        r#"caf_broker_http_requests_total{route="/healthz",method="GET",status="418",purpose="none",post="none"} 1"#,
        r#"caf_broker_http_request_duration_seconds_bucket{route="/v1/allocataires/{numero}",method="GET",status="200",le="0.025"} 1"#,
        r#"caf_broker_cache_requests_total{result="hit"} 1"#,
        r#"caf_broker_cache_requests_total{result="miss"} 1"#,
        r#"caf_broker_quota_refusals_total{post="TN-TUNIS",window="burst"} 1"#,
        r#"caf_broker_error_budget_refusals_total{post="TN-TUNIS"} 1"#,
        r#"caf_broker_upstream_requests_total{result="timeout"} 1"#,
        r#"caf_broker_upstream_duration_seconds_bucket{result="timeout",le="2.5"} 1"#,
        "caf_broker_upstream_circuit_open 1",
        r#"caf_broker_audit_write_duration_seconds_bucket{le="0.0005"} 1"#,
        "caf_broker_audit_writable 0",
        "caf_broker_jwks_refresh_failures_total 1",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("295109912611193"));
}

#[test]
fn installing_metrics_twice_gives_the_same_recorder() {
    let first = Metrics::install().unwrap();
    let second = Metrics::install().unwrap();
    ::metrics::counter!("caf_broker_test_install_total").increment(1);
    assert!(first.render().contains("caf_broker_test_install_total 1"));
    assert!(second.render().contains("caf_broker_test_install_total 1"));
    assert!(
        first
            .render()
            .contains("caf_broker_upstream_circuit_open 0")
    );
    assert!(
        first
            .render()
            .contains("caf_broker_jwks_refresh_failures_total")
    );
}

#[test]
fn stage_latencies_quota_headroom_and_audit_batches_render_with_their_buckets() {
    let recorder = local_recorder().unwrap();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || {
        for stage in Stage::ALL {
            record_stage(stage, Duration::from_micros(200));
        }
        record_stage(Stage::Cache, Duration::from_secs(2));
        set_quota_daily_remaining("TN-TUNIS", 1998);
        set_quota_daily_remaining("TN-TUNIS", 1997);
        // A post code that is not a safe label never becomes one.
        set_quota_daily_remaining("JEANNE MARTIN", 5);
        record_audit_batch(1);
        record_audit_batch(3);
    });
    let text = handle.render();
    let mut expected = vec![
        r#"caf_broker_stage_duration_seconds_bucket{stage="cache",le="0.00025"} 1"#.to_owned(),
        r#"caf_broker_stage_duration_seconds_bucket{stage="cache",le="2.5"} 2"#.to_owned(),
        r#"caf_broker_stage_duration_seconds_count{stage="cache"} 2"#.to_owned(),
        r#"caf_broker_quota_daily_remaining{post="TN-TUNIS"} 1997"#.to_owned(),
        r#"caf_broker_quota_daily_remaining{post="other"} 5"#.to_owned(),
        r#"caf_broker_audit_batch_records_bucket{le="1"} 1"#.to_owned(),
        r#"caf_broker_audit_batch_records_bucket{le="4"} 2"#.to_owned(),
        "caf_broker_audit_batch_records_sum 4".to_owned(),
        "caf_broker_audit_batch_records_count 2".to_owned(),
    ];
    for stage in ["authenticate", "quota", "filter", "audit"] {
        expected.push(format!(
            r#"caf_broker_stage_duration_seconds_bucket{{stage="{stage}",le="0.00025"}} 1"#
        ));
    }
    for line in &expected {
        assert!(text.contains(line.as_str()), "missing {line} in\n{text}");
    }
    let stages: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("caf_broker_stage_duration_seconds_count{stage=\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(
        stages.into_iter().collect::<Vec<_>>(),
        ["audit", "authenticate", "cache", "filter", "quota"]
    );
    assert!(!text.contains("JEANNE"));
}
