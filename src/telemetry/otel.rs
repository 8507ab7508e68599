//! OpenTelemetry: the tracer provider, the tracing layer, and W3C trace-context
//! propagation in and out.

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span, Subscriber};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::filter::{Filtered, LevelFilter};
use tracing_subscriber::layer::{self, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{TelemetryError, TelemetrySettings};

/// The instrumentation scope of the broker's spans.
const SCOPE: &str = "caf-broker";
/// The crate whose spans are exported.
const CRATE: &str = "caf_broker";

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The OpenTelemetry layer of the broker, limited to its own `INFO` spans.
pub type OtelLayer<S> = Filtered<OpenTelemetryLayer<S, SdkTracer>, CrateSpans, S>;

/// The layer that turns the crate's spans into OpenTelemetry spans of `provider`.
///
/// Log events are not exported (a log line never becomes a span event), nor
/// are spans of other crates or below `INFO`.
pub fn layer<S>(provider: &SdkTracerProvider) -> OtelLayer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_threads(false)
        .with_filter(CrateSpans)
}

/// Lets through the spans of this crate at `INFO` or above, and nothing else.
#[derive(Debug, Clone, Copy)]
pub struct CrateSpans;

impl CrateSpans {
    fn lets_through(meta: &Metadata<'_>) -> bool {
        let target = meta.target();
        meta.is_span()
            && *meta.level() <= Level::INFO
            && (target == CRATE
                || target
                    .strip_prefix(CRATE)
                    .is_some_and(|rest| rest.starts_with("::")))
    }
}

impl<S> Filter<S> for CrateSpans {
    fn enabled(&self, meta: &Metadata<'_>, _: &layer::Context<'_, S>) -> bool {
        Self::lets_through(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::lets_through(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// `service.name`, `service.version`, `deployment.environment`.
fn resource(settings: &TelemetrySettings) -> Resource {
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment", settings.environment.clone()),
            KeyValue::new("deployment.environment.name", settings.environment.clone()),
        ])
        .build()
}

/// Follows the caller's sampling decision; samples `ratio` of new traces.
fn sampler(settings: &TelemetrySettings) -> Sampler {
    let ratio = settings.sampling_ratio.clamp(0.0, 1.0);
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

/// A provider that exports in batches from a background thread, as in
/// production; `exporter` is any span exporter (OTLP, or a no-op in benches).
pub fn batch_tracer_provider<E>(settings: &TelemetrySettings, exporter: E) -> SdkTracerProvider
where
    E: SpanExporter + 'static,
{
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(settings))
        .with_resource(resource(settings))
        .build()
}

/// A provider that exports each span as it ends, on the thread that ends it:
/// for tests that read an in-memory exporter right after a request.
pub fn simple_tracer_provider<E>(settings: &TelemetrySettings, exporter: E) -> SdkTracerProvider
where
    E: SpanExporter + 'static,
{
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_sampler(sampler(settings))
        .with_resource(resource(settings))
        .build()
}

/// The batch OTLP/HTTP (protobuf) provider of `settings.otlp_endpoint`.
pub(super) fn otlp_tracer_provider(
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    Ok(batch_tracer_provider(settings, otlp_exporter(settings)?))
}

/// The OTLP/HTTP (protobuf) exporter of `settings.otlp_endpoint`; building it
/// sends nothing.
pub(super) fn otlp_exporter(
    settings: &TelemetrySettings,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let url = traces_url(&settings.otlp_endpoint)
        .ok_or_else(|| TelemetryError::InvalidEndpoint("not an http(s) URL".into()))?;
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(settings.otlp_timeout())
        .build()
        .map_err(TelemetryError::Exporter)
}

/// The traces URL of a collector endpoint: `/v1/traces` appended unless present.
pub(super) fn traces_url(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    let well_formed = !host.is_empty()
        && !host.starts_with(':')
        && !endpoint.contains(|c: char| c.is_whitespace() || c.is_control())
        && !endpoint.contains(['?', '#', '@']);
    if !well_formed {
        return None;
    }
    if endpoint.ends_with("/v1/traces") {
        Some(endpoint.to_owned())
    } else {
        Some(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
    }
}

/// The W3C TraceContext propagator, for libraries that use the global one.
pub(super) fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

pub(super) fn install_globals(provider: &SdkTracerProvider) {
    install_propagator();
    opentelemetry::global::set_tracer_provider(provider.clone());
}

/// The caller's trace context from its W3C `traceparent` (and `tracestate`)
/// request headers; an empty context when absent, malformed or repeated.
///
/// Only these two headers are read; pass every request header, e.g.
/// `req.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))`.
pub fn extract_parent_context<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
) -> opentelemetry::Context {
    let mut carrier = TraceHeaders::default();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(TRACEPARENT) {
            carrier.traceparents.push(value.to_owned());
        } else if name.eq_ignore_ascii_case(TRACESTATE) {
            // Repeated `tracestate` headers are one list (W3C Trace Context, 3.3).
            match &mut carrier.tracestate {
                Some(list) => {
                    list.push(',');
                    list.push_str(value);
                }
                None => carrier.tracestate = Some(value.to_owned()),
            }
        }
    }
    if carrier.traceparents.len() != 1 {
        // Absent, or ambiguous: the trace starts here.
        return opentelemetry::Context::new();
    }
    TraceContextPropagator::new().extract_with_context(&opentelemetry::Context::new(), &carrier)
}

/// Makes `parent` (from [`extract_parent_context`]) the OpenTelemetry parent of
/// `span`. Call it right after creating the span, before it is first entered;
/// without the OpenTelemetry layer (export off) it does nothing.
pub fn set_parent(span: &Span, parent: opentelemetry::Context) {
    // Errors mean "no OpenTelemetry layer" or "span already started": in both
    // cases the span keeps its local parent, which is the right fallback.
    let _ = span.set_parent(parent);
}

/// Writes the W3C headers of `span`'s context (`traceparent`, `tracestate` when
/// any) into `carrier`, e.g. a `HashMap<String, String>`; nothing when export is off.
pub fn inject_context(span: &Span, carrier: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(&span.context(), carrier);
}

/// The W3C headers of `span`'s context, to add to an outgoing request (the
/// upstream client span); empty when export is off.
pub fn trace_headers(span: &Span) -> Vec<(&'static str, String)> {
    let mut carrier = TraceHeaders::default();
    inject_context(span, &mut carrier);
    let parents = carrier.traceparents.into_iter().map(|v| (TRACEPARENT, v));
    let states = carrier
        .tracestate
        .filter(|v| !v.is_empty())
        .map(|v| (TRACESTATE, v));
    parents.chain(states).collect()
}

/// The trace id (32 lowercase hex digits) of the current span, for the audit
/// record; `None` when export is off or outside any exported span. Present
/// for unsampled traces too, so an audit record always names its trace.
pub fn current_trace_id() -> Option<String> {
    let cx = Span::current().context();
    let span = cx.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// A carrier of the two W3C headers only, in and out.
#[derive(Debug, Default)]
struct TraceHeaders {
    traceparents: Vec<String>,
    tracestate: Option<String>,
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.traceparents.first().map(String::as_str)
        } else if key.eq_ignore_ascii_case(TRACESTATE) {
            self.tracestate.as_deref()
        } else {
            None
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        if !self.traceparents.is_empty() {
            keys.push(TRACEPARENT);
        }
        if self.tracestate.is_some() {
            keys.push(TRACESTATE);
        }
        keys
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.traceparents = vec![value];
        } else if key.eq_ignore_ascii_case(TRACESTATE) {
            self.tracestate = Some(value);
        }
    }
}
