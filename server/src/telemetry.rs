//! OpenTelemetry traces, off unless `--otlp-endpoint` names a collector (OTLP over gRPC).
//!
//! One span per call of package `ocx.v1` ([`rpc_span`], made by the gate), joined to the
//! caller's trace when the request carries W3C `traceparent` metadata, with the method, the
//! gRPC status code, the carrier (or `platform`) and the item count. The store's work for the
//! call are its children: `store.transaction` and `store.commit` on both backends (on SQLite,
//! the writer thread's group transaction and commit, one span per job of the group), and
//! `store.read`.
//!
//! What a span carries is chosen, never a request's content: no phone number, SIP URI, tenant
//! id, key or key id, client address, or status message (one may quote a number). Only spans
//! are exported, and only this crate's ([`layer`]): log events, which may carry more, stay in
//! the log.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceState, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use crate::rpcs::Rpc;

/// The exporter, kept to flush it at exit.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends every span not yet exported, and stops the exporter (blocks: call it from a
    /// blocking thread, or after the runtime's work is done).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The tracing layer exporting this crate's spans to the OTLP collector at `endpoint`
/// (`http://host:4317`), and the exporter to flush at exit. Must be called inside the tokio
/// runtime (the exporter's channel is created on it).
pub fn layer<S>(endpoint: &str) -> anyhow::Result<(impl Layer<S>, Traces)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ocx-server")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ocx-server"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Spans only, and only this crate's: events would become span events with every
        // field they log, and other crates' spans (the exporter's own tonic calls among them)
        // are not the call's.
        .with_filter(filter_fn(|meta| {
            meta.is_span() && meta.target().starts_with("ocx_server")
        }));
    EXPORTING.store(true, Ordering::Relaxed);
    Ok((layer, Traces { provider }))
}

/// Reads `traceparent` (and `tracestate`) from a request's headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Whether [`layer`] was installed: traces are exported.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The span of one call of `method` (`path`: [`Rpc::path`]), a child of the caller's span if
/// `headers` carry a valid `traceparent`. The gate fills in the carrier, the status code and
/// the item count ([`record_caller`], [`record_outcome`]).
///
/// With traces off it is the log's span only (the method and the carrier, which each of the
/// call's log lines carries): no attribute for a collector, no header read, on every call.
pub fn rpc_span(method: &Rpc, path: &str, headers: &http::HeaderMap) -> Span {
    if !EXPORTING.load(Ordering::Relaxed) {
        return tracing::info_span!("rpc", rpc = path, carrier = Empty);
    }
    let span = tracing::info_span!(
        "rpc",
        otel.name = path,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = %format_args!("{}.{}", crate::rpcs::PACKAGE, method.service),
        rpc.method = method.method,
        rpc.grpc.status_code = Empty,
        rpc = path,
        carrier = Empty,
        ocx.role = Empty,
        ocx.item_count = Empty,
    );
    let extracted = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &Headers(headers));
    // The caller's trace and span, without its `tracestate`: that is the caller's free text,
    // and every span of the call would carry it on to the collector.
    let caller = extracted.span().span_context().clone();
    let parent = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        caller.trace_id(),
        caller.span_id(),
        caller.trace_flags(),
        caller.is_remote(),
        TraceState::default(),
    ));
    if caller.is_valid() {
        // The layer is installed (`EXPORTING`): this cannot fail.
        let _ = span.set_parent(parent);
    }
    span
}

/// Records who called: `carrier` for a carrier key, nothing for the platform's.
pub fn record_caller(span: &Span, carrier: Option<&str>) {
    match carrier {
        Some(carrier) => {
            span.record("carrier", carrier);
            span.record("ocx.role", "carrier");
        }
        None => {
            span.record("ocx.role", "platform");
        }
    }
}

/// Records how the call ended: its gRPC status code and item count; the codes OpenTelemetry's
/// conventions count as a server's error mark the span as one.
pub fn record_outcome(span: &Span, code: tonic::Code, count: i64) {
    span.record("rpc.grpc.status_code", code as i64);
    span.record("ocx.item_count", count);
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}
