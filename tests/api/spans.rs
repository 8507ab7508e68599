//! The span tree of real requests through the broker, caught by an in-memory
//! exporter: one server span named by the route template, a child per stage,
//! the caller's trace continued, and no personal datum in any attribute; and
//! the same stages timed in `caf_broker_stage_duration_seconds`.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use caf_broker::telemetry::{TelemetrySettings, layer, simple_tracer_provider};
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

use crate::helpers::spawn_app;

/// The process-wide subscriber of this test binary: spans of every test go to
/// one exporter, and each test picks its own by trace id.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let settings = TelemetrySettings {
                sampling_ratio: 1.0,
                ..TelemetrySettings::default()
            };
            let provider = simple_tracer_provider(&settings, exporter.clone());
            let subscriber = tracing_subscriber::registry().with(layer(&provider));
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber");
            (exporter, provider)
        })
        .0
}

/// The spans of one trace, once its server span has ended (bounded wait).
async fn spans_of(trace_id: &str) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spans: Vec<SpanData> = exporter()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == trace_id)
            .collect();
        if spans.iter().any(|s| s.span_kind == SpanKind::Server) || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn a_nir_search_leaves_one_server_span_with_a_child_per_stage_and_no_personal_data() {
    exporter();
    let app = spawn_app().await;
    let token = app.token("agent_consulaire");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .client
        .post(format!("{}/v1/allocataires/recherche", app.address))
        .bearer_auth(&token)
        .header("X-Purpose", "controle_fraude")
        .header("X-Case-Reference", "TN-2026/0042")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"nir": "295109912611193"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let spans = spans_of(trace_id).await;
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .expect("a server span");
    assert_eq!(server.name, "POST /v1/allocataires/recherche");
    assert!(server.parent_span_is_remote);
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/v1/allocataires/recherche")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(server, "post").as_deref(), Some("TN-TUNIS"));
    assert_eq!(
        attribute(server, "purpose").as_deref(),
        Some("controle_fraude")
    );
    assert_eq!(attribute(server, "cache").as_deref(), Some("miss"));
    assert_eq!(attribute(server, "outcome").as_deref(), Some("released"));

    let names: HashSet<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    for stage in [
        "authenticate",
        "authorize",
        "quota",
        "cache",
        "upstream",
        "filter",
        "audit",
    ] {
        assert!(names.contains(stage), "no `{stage}` span in {names:?}");
    }
    let upstream = spans.iter().find(|s| s.name == "upstream").unwrap();
    assert_eq!(upstream.span_kind, SpanKind::Client);
    let ids: HashSet<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    for span in spans.iter().filter(|s| s.span_kind != SpanKind::Server) {
        assert!(
            ids.contains(&span.parent_span_id),
            "`{}` hangs off the request's tree",
            span.name
        );
    }

    let everything = format!("{spans:?}");
    for secret in ["295109912611193", "1000002", "MARTIN", token.as_str()] {
        assert!(
            !everything.contains(secret),
            "a span holds personal data or the token"
        );
    }
}

#[tokio::test]
async fn a_defined_purpose_labels_the_server_span_even_when_the_case_reference_is_refused() {
    exporter();
    let app = spawn_app().await;
    let token = app.token("agent_consulaire");
    let mut labels = Vec::new();
    for (purpose, trace_id) in [
        ("verification_radiation", "5bf92f3577b34da6a3ce929d0e0e4736"),
        ("curiosite", "6bf92f3577b34da6a3ce929d0e0e4736"),
    ] {
        let response = app
            .client
            .get(format!("{}/v1/allocataires/1000002", app.address))
            .bearer_auth(&token)
            .header("X-Purpose", purpose)
            .header("X-Case-Reference", "has space")
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let spans = spans_of(trace_id).await;
        let server = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Server)
            .expect("a server span");
        assert_eq!(attribute(server, "post").as_deref(), Some("TN-TUNIS"));
        labels.push(attribute(server, "purpose"));
    }
    // The purpose the policy defines, as the audit records it; free text, none.
    assert_eq!(labels, [Some("verification_radiation".to_owned()), None]);
}

/// The `_count` of each stage's series in `/metrics`, by stage.
fn stage_counts(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("caf_broker_stage_duration_seconds_count{stage=\""))
        .filter_map(|rest| {
            let (stage, value) = rest.split_once("\"} ")?;
            Some((stage.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn a_released_dossier_times_each_stage_once_in_the_stage_histogram() {
    let app = spawn_app().await;
    let before = stage_counts(&app.metrics().await);
    let response = app
        .get_dossier(
            "1000002",
            &app.token("agent_consulaire"),
            "verification_radiation",
        )
        .await;
    assert_eq!(response.status(), 200);
    let metrics = app.metrics().await;
    let after = stage_counts(&metrics);
    // The stages are a fixed set, whatever the traffic of the other tests.
    assert_eq!(
        after.keys().map(String::as_str).collect::<Vec<_>>(),
        ["audit", "authenticate", "cache", "filter", "quota"],
        "{metrics}"
    );
    for (stage, count) in &after {
        let was = before.get(stage).copied().unwrap_or(0.0);
        assert!(
            *count > was,
            "{stage} not timed: {was} then {count}\n{metrics}"
        );
    }
    assert!(
        metrics.contains(r#"caf_broker_stage_duration_seconds_bucket{stage="cache",le="30"}"#),
        "{metrics}"
    );
}
