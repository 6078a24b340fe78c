//! OpenTelemetry traces: the real binary with `--otlp-endpoint` at an OTLP receiver in this
//! process. Calls made through the SDK inside a caller's span (a W3C `traceparent` sent by the
//! SDK) get one server span each, a child of the caller's, with the method, status code,
//! carrier and item count; the store's transactions and commits are under it; a call made
//! outside any span starts a trace of its own; and nothing exported carries a phone number, a
//! SIP URI, a tenant id or a key. The spans are read after SIGTERM, which the server answers
//! by sending every span before it exits: no waiting for an export.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::process::{key, sigterm_and_wait};
use ocx_testkit::sample::{CallRecordGenerator, Line};
use ocx_testkit::seed_carrier;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::OCX_SERVER;

const TENANT: &str = "1b2c3d4e-0000-4000-8000-0000000000aa";
const CARRIER: &str = "trace-tel";
/// The caller's trace and span, as a platform's own tracing would have them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What the receiver was sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .expect("collector lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// An OTLP receiver on a loopback port; its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }

    fn spans(&self) -> Vec<Span> {
        let requests = self.0.lock().expect("collector lock");
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.iter().cloned())
            .collect()
    }

    fn dump(&self) -> String {
        format!("{:?}", self.0.lock().expect("collector lock"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attribute, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

/// The server span of each call, by method: every span whose kind is SERVER.
fn calls(spans: &[Span]) -> BTreeMap<String, Vec<&Span>> {
    let mut by_method: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
    for span in spans.iter().filter(|s| s.kind == 2) {
        by_method.entry(span.name.clone()).or_default().push(span);
    }
    by_method
}

/// The spans under `root` (any depth), by name.
fn under<'a>(spans: &'a [Span], root: &Span) -> Vec<&'a Span> {
    let mut ids = vec![root.span_id.clone()];
    let mut found = Vec::new();
    while let Some(id) = ids.pop() {
        for child in spans.iter().filter(|s| s.parent_span_id == id) {
            ids.push(child.span_id.clone());
            found.push(child);
        }
    }
    found
}

/// The tree under `root`, one line per span, indented by depth.
fn tree(spans: &[Span], root: &Span, depth: usize, out: &mut String) {
    let code =
        attribute(root, "rpc.grpc.status_code").map_or(String::new(), |c| format!(" code={c}"));
    out.push_str(&format!("{}{}{code}\n", "  ".repeat(depth), root.name));
    for child in spans.iter().filter(|s| s.parent_span_id == root.span_id) {
        tree(spans, child, depth + 1, out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_a_span_in_the_callers_trace_with_the_store_under_it_and_no_personal_data() {
    let collector = Collector::default();
    let url = collector.start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (server, endpoint, _log) =
        OCX_SERVER.start_configured(dir.path(), &["--otlp-endpoint", &url], &[]);
    let platform_key = key(&dir.path().join("platform.key"));
    let platform = Client::connect(endpoint, &platform_key)
        .await
        .expect("connect");

    // The caller's span: what the platform's own instrumentation would be in.
    let caller = SpanContext::new(
        TraceId::from_hex(TRACE_ID).expect("trace id"),
        SpanId::from_hex(CALLER_SPAN).expect("span id"),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(caller);

    // In the caller's span: CreateCarrier, GrantConsent, UploadNumbers (seed_carrier), an
    // assignment with a SIP URI, an ingest of call records, and a GetNumber that finds nothing.
    let (carrier_key, numbers) = seed_carrier(&platform, CARRIER, TENANT, "+4420796", 4)
        .with_context(cx.clone())
        .await;
    let carrier = platform.with_key(&carrier_key).expect("client");
    let sip_uri = "sip:alice.trace@carrier.example";
    platform
        .assign_number(pb::AssignNumberRequest {
            number: numbers[0].clone(),
            tenant_id: TENANT.into(),
            assignment_type: pb::AssignmentType::User.into(),
            sip_uri: sip_uri.into(),
            ..Default::default()
        })
        .with_context(cx.clone())
        .await
        .expect("assign");
    let mut generator = CallRecordGenerator::new(7, Line::all(TENANT, &numbers), 1_790_000_000);
    let records: Vec<pb::CallRecord> = (0..5).map(|_| generator.next_record()).collect();
    let acks = async {
        let acks = platform
            .ingest_call_records(stream::iter(vec![records.clone()]))
            .await
            .expect("ingest");
        Box::pin(acks).next().await.expect("an ack").expect("ok")
    }
    .with_context(cx.clone())
    .await;
    assert_eq!(acks.created_count, 5);
    let missing = carrier
        .get_number(CARRIER, "+442079699999")
        .with_context(cx.clone())
        .await;
    assert!(missing.is_err());
    // Outside any span: a trace of its own.
    carrier
        .get_number(CARRIER, &numbers[1])
        .await
        .expect("a number");
    // Refused before a key is accepted: summed in the audit trail, not traced.
    let stranger = platform
        .with_key("ocx_0123456789abcdef_not-a-key")
        .expect("client");
    let refused = stranger
        .get_number(CARRIER, &numbers[1])
        .with_context(cx.clone())
        .await;
    assert!(refused.is_err());

    // SIGTERM: the server sends every span before it exits.
    let (status, _) = sigterm_and_wait(server, Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
    let spans = collector.spans();
    let calls = calls(&spans);
    let one = |method: &str| -> &Span {
        let found = calls
            .get(method)
            .unwrap_or_else(|| panic!("no span for {method}: {:?}", calls.keys()));
        assert_eq!(found.len(), 1, "one span per call of {method}");
        found[0]
    };
    let (trace_id, caller_span) = (TRACE_ID.to_owned(), CALLER_SPAN.to_owned());

    // Each call in the caller's span is a child of it, with what the call was.
    let mut printed = String::new();
    for (method, code, who, items) in [
        ("ocx.v1.AdminService/CreateCarrier", "0", "platform", None),
        ("ocx.v1.PlatformService/GrantConsent", "0", "platform", None),
        ("ocx.v1.AdminService/CreateApiKey", "0", "platform", None),
        (
            "ocx.v1.NumberService/UploadNumbers",
            "0",
            "platform",
            Some("4"),
        ),
        ("ocx.v1.PlatformService/AssignNumber", "0", "platform", None),
        (
            "ocx.v1.PlatformService/IngestCallRecords",
            "0",
            "platform",
            Some("5"),
        ),
        ("ocx.v1.NumberService/GetNumber", "5", "carrier", None),
    ] {
        let span = calls
            .get(method)
            .and_then(|s| s.iter().find(|s| hex(&s.trace_id) == trace_id).copied())
            .unwrap_or_else(|| {
                let seen: Vec<(String, String, String)> = spans
                    .iter()
                    .map(|s| (s.name.clone(), hex(&s.trace_id), hex(&s.parent_span_id)))
                    .collect();
                panic!("no span for {method} in the caller's trace: {seen:#?}")
            });
        assert_eq!(hex(&span.parent_span_id), caller_span, "{method}'s parent");
        assert_eq!(attribute(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attribute(span, "rpc.grpc.status_code").as_deref(),
            Some(code),
            "{method}"
        );
        assert_eq!(
            attribute(span, "ocx.role").as_deref(),
            Some(who),
            "{method}"
        );
        if who == "carrier" {
            assert_eq!(attribute(span, "carrier").as_deref(), Some(CARRIER));
        }
        if let Some(items) = items {
            assert_eq!(
                attribute(span, "ocx.item_count").as_deref(),
                Some(items),
                "{method}"
            );
        }
        tree(&spans, span, 0, &mut printed);
    }
    eprintln!("the spans of the calls made in the caller's span:\n{printed}");

    // The writes' store work is under their call: a transaction and a commit each.
    for method in [
        "ocx.v1.NumberService/UploadNumbers",
        "ocx.v1.PlatformService/AssignNumber",
        "ocx.v1.PlatformService/IngestCallRecords",
    ] {
        let call = one(method);
        let store: Vec<&str> = under(&spans, call)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        for name in ["store.transaction", "store.commit"] {
            assert!(
                store.contains(&name),
                "{method}: {name} under it, in {store:?}"
            );
        }
        for s in under(&spans, call) {
            assert_eq!(s.trace_id, call.trace_id, "{method}: one trace");
            assert!(
                s.start_time_unix_nano >= call.start_time_unix_nano
                    && s.end_time_unix_nano <= call.end_time_unix_nano,
                "{method}: {} within its call",
                s.name
            );
        }
    }
    // The read's, too.
    let get = calls["ocx.v1.NumberService/GetNumber"]
        .iter()
        .find(|s| hex(&s.trace_id) == trace_id)
        .expect("the GetNumber in the caller's trace");
    assert!(
        under(&spans, get).iter().any(|s| s.name == "store.read"),
        "GetNumber's read under it"
    );

    // Outside any span: its own trace, a root.
    let untraced = calls["ocx.v1.NumberService/GetNumber"]
        .iter()
        .find(|s| hex(&s.trace_id) != trace_id)
        .expect("the GetNumber outside the caller's span");
    assert!(untraced.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        attribute(untraced, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    assert!(
        spans
            .iter()
            .all(|s| attribute(s, "rpc.grpc.status_code").as_deref() != Some("16")),
        "a call refused for its key is not traced"
    );

    // Nothing exported is personal data or a secret: no number, SIP URI, tenant id, key.
    let dump = collector.dump();
    let mut personal: Vec<String> = numbers.clone();
    personal.extend(
        records
            .iter()
            .flat_map(|r| [r.caller_number.clone(), r.callee_number.clone()]),
    );
    personal.extend([
        "sip:".to_owned(),
        sip_uri.to_owned(),
        TENANT.to_owned(),
        platform_key.clone(),
        carrier_key.clone(),
        "+442079699999".to_owned(),
    ]);
    for secret in personal {
        assert!(!dump.contains(&secret), "the traces carry {secret:?}");
    }
}
