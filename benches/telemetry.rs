//! CPU per request with tracing off, and with OpenTelemetry at 1% and 100% sampling.
//!
//! A "request" is the span plan of one data request (a server span, seven stage
//! spans with their attributes, the trace id for the audit record, the
//! `traceparent` for the CAF) and the one log line per request, written to a sink.
//! Spans go through the batch processor to an exporter that discards them, so
//! the figures hold the tracing cost in the broker's threads and the batch
//! thread, not the OTLP encoding and network. Plain timing loops: the minimum
//! over rounds, with the median in brackets, of the process CPU time (all
//! threads) per request. Run: `cargo bench --bench telemetry`.

use std::time::{Duration, Instant};

use caf_broker::telemetry::{
    TelemetrySettings, batch_tracer_provider, current_trace_id, layer, trace_headers,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

const REQUESTS_PER_ROUND: u32 = 20_000;
const ROUNDS: usize = 7;

/// Discards every batch.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// One data request's spans, attributes and log line; the target is the
/// crate's, as the broker's own spans are.
fn request(i: u32) -> usize {
    let server = tracing::info_span!(
        target: "caf_broker::routes",
        "http.server.request",
        otel.name = "GET /v1/allocataires/{numero}",
        otel.kind = "server",
        http.request.method = "GET",
        http.route = "/v1/allocataires/{numero}",
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id = i,
        post = "TN-TUNIS",
        role = "agent_consulaire",
        purpose = "verification_radiation",
        outcome = tracing::field::Empty,
    );
    let _server = server.enter();
    let mut work = 0;
    tracing::info_span!(target: "caf_broker::broker", "authenticate").in_scope(|| work += 1);
    tracing::info_span!(target: "caf_broker::broker", "authorize").in_scope(|| work += 1);
    tracing::info_span!(target: "caf_broker::broker", "quota", outcome = "allowed")
        .in_scope(|| work += 1);
    tracing::info_span!(target: "caf_broker::broker", "cache", cache = "miss")
        .in_scope(|| work += 1);
    tracing::info_span!(target: "caf_broker::broker", "upstream", otel.kind = "client")
        .in_scope(|| work += trace_headers(&tracing::Span::current()).len());
    tracing::info_span!(target: "caf_broker::broker", "filter", released = 12)
        .in_scope(|| work += 1);
    tracing::info_span!(target: "caf_broker::broker", "audit")
        .in_scope(|| work += current_trace_id().map_or(0, |id| id.len()));
    server.record("http.response.status_code", 200);
    server.record("outcome", "released");
    tracing::info!(target: "caf_broker::routes", request_id = i, route = "/v1/allocataires/{numero}", status = 200, "request");
    work
}

/// The CPU time of the process so far: the sum over its live threads of the
/// nanoseconds on CPU (`/proc/self/task/*/schedstat`), the batch thread included.
fn process_cpu() -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten();
    let nanos = tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

struct Figures {
    cpu_ns: Vec<f64>,
    wall_ns: Vec<f64>,
}

fn min_median(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2])
}

fn run(dispatch: &Dispatch) -> Figures {
    let mut figures = Figures {
        cpu_ns: Vec::new(),
        wall_ns: Vec::new(),
    };
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..2_000 {
            std::hint::black_box(request(i));
        }
        for _ in 0..ROUNDS {
            let (cpu, wall) = (process_cpu(), Instant::now());
            for i in 0..REQUESTS_PER_ROUND {
                std::hint::black_box(request(i));
            }
            let wall = wall.elapsed();
            // Let the batch thread drain what this round queued, so its CPU is counted.
            std::thread::sleep(Duration::from_millis(50));
            let cpu = process_cpu().saturating_sub(cpu);
            figures
                .cpu_ns
                .push(cpu.as_nanos() as f64 / f64::from(REQUESTS_PER_ROUND));
            figures
                .wall_ns
                .push(wall.as_nanos() as f64 / f64::from(REQUESTS_PER_ROUND));
        }
    });
    figures
}

/// The log layer as `telemetry::init` builds it: events only, spans never formatted.
fn logs() -> impl tracing_subscriber::Layer<tracing_subscriber::Registry> {
    use tracing_subscriber::Layer;
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_event()
        }))
}

fn main() {
    let mut results = Vec::new();

    results.push(("no subscriber at all", run(&Dispatch::none())));
    let off = Dispatch::new(tracing_subscriber::registry().with(logs()));
    results.push(("tracing off (logs only)", run(&off)));

    for (label, ratio) in [
        ("OTel on, 1% sampled", 0.01),
        ("OTel on, 100% sampled", 1.0),
    ] {
        let settings = TelemetrySettings {
            otlp_endpoint: "http://127.0.0.1:4318".into(),
            sampling_ratio: ratio,
            ..TelemetrySettings::default()
        };
        let provider = batch_tracer_provider(&settings, Discard);
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(logs())
                .with(layer(&provider)),
        );
        results.push((label, run(&dispatch)));
        drop(dispatch);
        let _ = provider.shutdown();
    }

    let (base, _) = min_median(&mut results[1].1.cpu_ns.clone());
    println!(
        "telemetry: CPU per request, {REQUESTS_PER_ROUND} requests x {ROUNDS} rounds (min [median])"
    );
    for (label, figures) in &mut results {
        let (cpu_min, cpu_median) = min_median(&mut figures.cpu_ns);
        let (wall_min, wall_median) = min_median(&mut figures.wall_ns);
        println!(
            "  {label:<26} cpu {:>7.2} µs [{:>7.2}]  wall {:>7.2} µs [{:>7.2}]  x{:.2} of off",
            cpu_min / 1e3,
            cpu_median / 1e3,
            wall_min / 1e3,
            wall_median / 1e3,
            cpu_min / base
        );
    }
}
