//! The gate every call to an OCX service passes (a tower layer around all of them; health and
//! reflection go straight through): the client address's rate, authentication, the per-key
//! rate limit, the caller's role, its share of the long reads, the stream limits, the default
//! deadline, and the call's audit event.
//!
//! Order (paths outside package `ocx.v1` pass to the router, which answers UNIMPLEMENTED for
//! unknown ones):
//! 1. the client address's rate, before anything else is looked at (RESOURCE_EXHAUSTED with
//!    `google.rpc.RetryInfo`);
//! 2. a method that is not in [`rpcs::RPCS`] is UNIMPLEMENTED;
//! 3. the key (UNAUTHENTICATED);
//! 4. the key's rate (RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`);
//! 5. its role against the method's [`rpcs::Access`] (PERMISSION_DENIED), so handlers never
//!    check it;
//! 6. for a [`Lane::Long`] read, its carrier's (or the platform's) share of the long reads
//!    (RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`);
//! 7. for streams, the streams open on the key, on its carrier and on the server
//!    (RESOURCE_EXHAUSTED; with `google.rpc.RetryInfo` for the server's).
//!
//! Every outcome is audited: steps 1–3 refuse before a key is accepted, and those refusals are
//! summed per client address and minute ([`AuditLog::refused`]) rather than written one row
//! each, so that a flood of junk costs no disk; from step 4 on each call is an event.
//!
//! The caller's own deadline (`grpc-timeout`) is enforced by tonic around this layer; a unary
//! call without one gets [`Limits::default_deadline`]. Either way the handler's future is
//! dropped when time is up, which interrupts its database query (see `Readers::read`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use std::net::IpAddr;

use governor::clock::DefaultClock;

use crate::audit::{self, AuditLog, ItemCount};
use crate::auth::{KeyCache, Principal};
use crate::domain::{AuditEvent, now_micros};
use crate::limits::{Limits, RateLimiter, Slot, Slots};
use crate::metrics::Metrics;
use crate::rpcs::{self, Lane, Rpc};

/// What a client over a share that frees itself (the server's streams, a carrier's long reads)
/// is told to wait before trying again.
const RETRY_SHARE: Duration = Duration::from_secs(1);

/// What the gate needs, shared by every call.
#[derive(Clone)]
pub struct Gate {
    /// Active keys.
    keys: Arc<KeyCache>,
    /// Where audit events go.
    audit: AuditLog,
    /// Per-key request rate.
    limiter: RateLimiter,
    /// Per-address request rate, before authentication.
    addresses: RateLimiter<DefaultClock, IpAddr>,
    /// Open streams per key.
    key_streams: Slots,
    /// Open streams per carrier (carrier keys only).
    carrier_streams: Slots,
    /// Open streams on the server (one key: "").
    server_streams: Slots,
    /// Long reads running per carrier (and for the platform's keys together).
    long_reads: Slots,
    /// The limits, for the words of refusals.
    limits: Limits,
    /// Deadline for unary calls that set none.
    default_deadline: Duration,
    /// Request counts, latencies, open streams.
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A gate enforcing `limits`.
    pub fn new(
        keys: Arc<KeyCache>,
        audit: AuditLog,
        limits: &Limits,
        metrics: Arc<Metrics>,
    ) -> Gate {
        Gate {
            keys,
            audit,
            metrics,
            limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
            addresses: RateLimiter::new(limits.address_rate_per_second, limits.address_rate_burst),
            key_streams: Slots::new(limits.max_streams_per_key),
            carrier_streams: Slots::new(limits.max_streams_per_carrier),
            server_streams: Slots::new(limits.max_streams),
            long_reads: Slots::new(limits.long_reads_per_carrier),
            limits: *limits,
            default_deadline: limits.default_deadline,
        }
    }
}

impl<S> tower::Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.clone(),
        }
    }
}

/// The gated service.
#[derive(Clone)]
pub struct Gated<S> {
    /// The router of every service.
    inner: S,
    /// Shared state.
    gate: Gate,
}

/// The boxed future of a gated call.
type GatedFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Gated<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = GatedFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> GatedFuture {
        // The clone that was made ready is the one to call (the tower idiom).
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let gate = self.gate.clone();
        Box::pin(async move { Ok(gate.pass(inner, request).await) })
    }
}

/// An audit event that is recorded when dropped (with `outcome` and `count` as they stand
/// then), so a call whose future is abandoned (its deadline passed, or the client went away) is
/// audited too, and a stream is audited when it ends.
struct Pending {
    /// The event so far; `None` once recorded.
    event: Option<AuditEvent>,
    /// Where it goes.
    audit: AuditLog,
    /// The outcome to record if dropped: CANCELLED until something better is known.
    outcome: Code,
    /// The item count to record if dropped.
    count: i64,
    /// When the call arrived.
    started: Instant,
    /// The latency to report, if not the time until the event is recorded (a stream's: the
    /// time to open it).
    latency: Option<Duration>,
    /// Where the call is counted.
    metrics: Arc<Metrics>,
    /// The call's span: it ends when the event is recorded and the call's future is done (a
    /// stream's when the stream ends).
    span: tracing::Span,
}

impl Pending {
    /// Records the event with its outcome now.
    async fn finish(mut self, outcome: Code, count: i64) {
        if let Some(mut event) = self.event.take() {
            event.outcome = code_name(outcome).to_owned();
            event.item_count = count;
            self.count_call(&event);
            crate::telemetry::record_outcome(&self.span, outcome, count);
            self.audit.record(event).await;
        }
    }

    /// Counts the call in the metrics.
    fn count_call(&self, event: &AuditEvent) {
        let latency = self.latency.unwrap_or_else(|| self.started.elapsed());
        self.metrics.call(&event.rpc, &event.outcome, latency);
    }
}

impl Pending {
    /// Records the event now with `outcome` and `count` as they stand (once).
    fn record_now(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.outcome = code_name(self.outcome).to_owned();
            event.item_count = self.count;
            self.count_call(&event);
            crate::telemetry::record_outcome(&self.span, self.outcome, self.count);
            self.audit.record_now(event);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.record_now();
    }
}

impl Gate {
    /// Runs one call through the gate.
    async fn pass<S>(&self, mut inner: S, mut request: http::Request<Body>) -> http::Response<Body>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    {
        let rpc = request.uri().path().trim_start_matches('/').to_owned();
        if !rpcs::in_package(&rpc) {
            // Health and reflection: open to all, not audited.
            return match inner.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        let source = crate::conn::peer_ip(&request);
        // Owned, so that a refusal can take the request (to read the rest of its body).
        let header: Option<String> = request
            .headers()
            .get(ocx_api::metadata::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let header = header.as_deref();
        let method = rpcs::find(&rpc);
        let mut pending = Pending {
            event: Some(AuditEvent {
                id: 0,
                time: now_micros(),
                key_id: claimed_key_id(header),
                carrier_id: String::new(),
                role: String::new(),
                // A method the server does not have is not named (its path is the caller's).
                rpc: method.map(Rpc::path).unwrap_or_default(),
                resource_kind: String::new(),
                item_count: 0,
                outcome: String::new(),
                source: source.map(|ip| ip.to_string()).unwrap_or_default(),
            }),
            audit: self.audit.clone(),
            outcome: Code::Cancelled,
            count: 0,
            started: Instant::now(),
            latency: None,
            metrics: Arc::clone(&self.metrics),
            // Made once the key is accepted: a call refused before is summed per address,
            // not traced, so a flood of them cannot crowd out the calls' spans.
            span: tracing::Span::none(),
        };
        // Before anything else is looked at: a flood from one address is turned away for the
        // price of a counter.
        if let Some(ip) = source
            && let Err(wait) = self.addresses.check(&rate_key(ip))
        {
            let status = retry_later(
                format!(
                    "this client address is over its request rate; retry in {} ms",
                    wait.as_millis().max(1)
                ),
                wait,
            );
            return summarise(pending, status, source, method, request).await;
        }
        let Some(method) = method else {
            let status = Status::unimplemented(format!("{rpc} is not a method of this server"));
            return summarise(pending, status, source, None, request).await;
        };
        let streaming = method.streaming();
        let principal = match self.keys.authenticate(header) {
            Ok(principal) => principal,
            Err(status) => return summarise(pending, status, source, Some(method), request).await,
        };
        let carrier = match &principal {
            Principal::Platform { .. } => None,
            Principal::Carrier { carrier_id, .. } => Some(carrier_id.clone()),
        };
        // The call's span (see `telemetry`): the handler and the store run inside it.
        let path = pending.event.as_ref().map_or("", |e| e.rpc.as_str());
        pending.span = crate::telemetry::rpc_span(method, path, request.headers());
        crate::telemetry::record_caller(&pending.span, carrier.as_deref());
        if let Some(event) = pending.event.as_mut() {
            event.resource_kind = method.resource_kind.to_owned();
            event.key_id = principal.key_id().to_owned();
            event.role = if carrier.is_some() {
                "carrier"
            } else {
                "platform"
            }
            .to_owned();
            event.carrier_id = carrier.clone().unwrap_or_default();
        }
        let key_id = principal.key_id().to_owned();
        if let Err(wait) = self.limiter.check(&key_id) {
            let status = retry_later(
                format!(
                    "this key is over its request rate; retry in {} ms",
                    wait.as_millis().max(1)
                ),
                wait,
            );
            return refuse(pending, status, Some(request)).await;
        }
        // After the rate, so refused calls count against it; before the stream slot, which a
        // refused call does not need.
        if !method.access.admits(&principal) {
            let status = Status::permission_denied(
                "this method needs a platform key; a carrier key may not call it",
            );
            return refuse(pending, status, Some(request)).await;
        }
        // The platform's keys share one share of the long reads, as a carrier's keys do.
        let share = carrier.as_deref().unwrap_or("");
        let _long_read = if method.lane == Lane::Long {
            match self.long_reads.acquire(share) {
                Some(slot) => Some(slot),
                None => {
                    let status = retry_later(
                        format!(
                            "{} {} long reads (reconciliation, usage, listings) running, its \
                             share; retry when one has finished",
                            if carrier.is_some() {
                                "this carrier has"
                            } else {
                                "the platform has"
                            },
                            self.limits.long_reads_per_carrier
                        ),
                        RETRY_SHARE,
                    );
                    return refuse(pending, status, Some(request)).await;
                }
            }
        } else {
            None
        };
        let slots = if streaming {
            match self.stream_slots(&key_id, carrier.as_deref()) {
                Ok(slots) => Some(slots),
                Err(status) => return refuse(pending, status, Some(request)).await,
            }
        } else {
            None
        };
        request.extensions_mut().insert(principal);
        let items = audit::StreamItems::default();
        if streaming {
            request.extensions_mut().insert(items.clone());
        }
        let has_deadline = request.headers().contains_key("grpc-timeout");
        let call = tracing::Instrument::instrument(inner.call(request), pending.span.clone());
        let response = if streaming || has_deadline {
            call.await
        } else {
            match tokio::time::timeout(self.default_deadline, call).await {
                Ok(response) => response,
                Err(_) => {
                    let status = Status::deadline_exceeded(format!(
                        "the call ran past the server's {} s limit for calls without a deadline",
                        self.default_deadline.as_secs()
                    ));
                    return refuse(pending, status, None).await;
                }
            }
        };
        let response = match response {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let code = response_code(&response);
        match slots {
            // An opened stream is audited when it ends, with the items it carried.
            Some(slots) if code == Code::Ok => {
                let mut pending = pending;
                pending.latency = Some(pending.started.elapsed());
                self.metrics.stream(&rpc, 1);
                let metrics = Arc::clone(&self.metrics);
                response.map(|body| {
                    Body::new(Slotted {
                        body,
                        _slots: slots,
                        pending,
                        items,
                        metrics,
                        rpc,
                    })
                })
            }
            _ => {
                let count = match response.extensions().get::<ItemCount>() {
                    Some(ItemCount(n)) => *n,
                    None if code == Code::Ok && !streaming => 1,
                    None => 0,
                };
                pending.finish(code, count).await;
                response
            }
        }
    }

    /// A stream's slots: one of its key's, one of its carrier's (carrier keys), one of the
    /// server's; or the refusal of the first that is full.
    fn stream_slots(&self, key_id: &str, carrier: Option<&str>) -> Result<StreamSlots, Status> {
        let limits = &self.limits;
        let key = self.key_streams.acquire(key_id).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "this key has {} streams open, the most a key may have; close one first",
                limits.max_streams_per_key
            ))
        })?;
        let carrier = match carrier {
            Some(carrier) => Some(self.carrier_streams.acquire(carrier).ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "this carrier's keys have {} streams open, the most a carrier may have; \
                     close one first",
                    limits.max_streams_per_carrier
                ))
            })?),
            None => None,
        };
        let server = self.server_streams.acquire("").ok_or_else(|| {
            retry_later(
                format!(
                    "the server has {} streams open, the most it serves; retry later or at \
                     another replica",
                    limits.max_streams
                ),
                RETRY_SHARE,
            )
        })?;
        Ok(StreamSlots {
            _key: key,
            _carrier: carrier,
            _server: server,
        })
    }
}

/// The slots an open stream holds, released together when its body is dropped.
struct StreamSlots {
    /// Its key's.
    _key: Slot,
    /// Its carrier's, for a carrier key.
    _carrier: Option<Slot>,
    /// The server's.
    _server: Slot,
}

/// What the per-address rate counts a client address under: an IPv4 address itself; an IPv6
/// address by its /64, the block a single site is given, so that a client cannot step past its
/// rate (or grow the limiter's table) by using another address of its own block.
fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// RESOURCE_EXHAUSTED saying `message`, with `google.rpc.RetryInfo` of `wait`.
fn retry_later(message: String, wait: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(wait)),
    )
}

/// Most of a refused call's request body read before it is answered ([`read_rest`]).
const READ_REST_BYTES: usize = 64 * 1024;
/// Longest a refusal waits for the rest of its request body ([`read_rest`]).
const READ_REST_WAIT: Duration = Duration::from_millis(100);

/// Reads what is left of a refused call's request (at most [`READ_REST_BYTES`], for at most
/// [`READ_REST_WAIT`]; a unary request's few bytes have usually arrived with its headers).
///
/// Answered before its request has ended, an HTTP/2 call is reset by the server (RST_STREAM
/// NO_ERROR, RFC 9113 8.1), and an HTTP/2 client counts those resets: hyper's client gives up
/// on its connection after 1,024 of them (GOAWAY ENHANCE_YOUR_CALM), failing every call on it
/// with UNKNOWN. A client refused that often (over its rate for a few seconds, say) would break
/// its own connection, feeds included. Read to its end, the request needs no reset.
async fn read_rest(request: http::Request<Body>) {
    use http_body_util::BodyExt;
    let mut body = request.into_body();
    let mut left = READ_REST_BYTES;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, bytes::Bytes::len);
            left = left.saturating_sub(n);
            if left == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(READ_REST_WAIT, read).await;
}

/// Answers with `status` and audits the refusal; reads the rest of `request` first, if given
/// ([`read_rest`]).
async fn refuse(
    pending: Pending,
    status: Status,
    request: Option<http::Request<Body>>,
) -> http::Response<Body> {
    if let Some(request) = request {
        read_rest(request).await;
    }
    pending.finish(status.code(), 0).await;
    status.into_http()
}

/// Answers with `status` a call refused before a key was accepted: counted in the metrics and
/// summed into the audit trail's per-minute summary of its client address, not recorded as an
/// event of its own.
async fn summarise(
    mut pending: Pending,
    status: Status,
    source: Option<IpAddr>,
    method: Option<&'static Rpc>,
    request: http::Request<Body>,
) -> http::Response<Body> {
    read_rest(request).await;
    if let Some(mut event) = pending.event.take() {
        let outcome = code_name(status.code());
        // The metric's labels name a method of the server, never a path the caller made up.
        event.rpc = method.map_or_else(|| UNKNOWN_METHOD.to_owned(), Rpc::path);
        event.outcome = outcome.to_owned();
        pending.count_call(&event);
        let key_id = std::mem::take(&mut event.key_id);
        pending.audit.refused(source, key_id, method, outcome);
    }
    status.into_http()
}

/// How the metrics name a method of the package that the server does not have.
const UNKNOWN_METHOD: &str = "ocx.v1.(unknown)/(unknown)";

/// The key id a bearer value claims (`Bearer ocx_<id>_<secret>`), whether or not the key
/// exists; empty for anything else. Never the secret.
fn claimed_key_id(header: Option<&str>) -> String {
    header
        .and_then(ocx_api::metadata::bearer_token)
        .and_then(|t| t.strip_prefix("ocx_"))
        .and_then(|t| t.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default()
        .to_owned()
}

/// The status of a response whose status is in its headers (a refusal or a unary error); OK
/// otherwise (a unary success or an opened stream carry theirs in trailers).
fn response_code(response: &http::Response<Body>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// The canonical name of a code, as in `google.rpc.Code`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A stream's response body holding its stream slot and its audit event until the stream
/// ends: the event is recorded when the body is dropped, with the status from the trailers
/// (CANCELLED if the client left first) and the items the handler counted.
struct Slotted {
    /// The real body.
    body: Body,
    /// Released on drop.
    _slots: StreamSlots,
    /// Recorded on drop.
    pending: Pending,
    /// The handler's count of the stream's items.
    items: audit::StreamItems,
    /// Where the open stream is counted.
    metrics: Arc<Metrics>,
    /// The stream's method.
    rpc: String,
}

impl HttpBody for Slotted {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            // The stream's last frame: record its event before the client can hear the end,
            // so a listing made after the stream ended sees it.
            self.pending.outcome = trailers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from_i32);
            self.pending.count = self.items.get();
            self.pending.record_now();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Slotted {
    fn drop(&mut self) {
        self.pending.count = self.items.get();
        self.metrics.stream(&self.rpc, -1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;
    use crate::auth::issue_key;
    use crate::domain::Role;
    use crate::rpcs::{Access, RPCS};

    /// Stands in for the router: counts the calls that reach it and answers OK.
    #[derive(Clone, Default)]
    struct Handlers(Arc<AtomicUsize>);

    impl Handlers {
        fn reached(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl tower::Service<http::Request<Body>> for Handlers {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    /// A gate with a platform key and a carrier key (`c1`), and the audit events it records.
    struct Fixture {
        gate: Gate,
        handlers: Handlers,
        events: UnboundedReceiver<AuditEvent>,
        platform: String,
        carrier: String,
    }

    impl Fixture {
        fn new() -> Fixture {
            let keys = KeyCache::default();
            let platform = issue_key(Role::Platform, None, String::new());
            let carrier = issue_key(Role::Carrier, Some("c1".into()), String::new());
            keys.insert(&platform.record);
            keys.insert(&carrier.record);
            let (audit, events) = AuditLog::in_memory();
            let gate = Gate::new(
                Arc::new(keys),
                audit,
                &Limits::default(),
                Arc::new(Metrics::new()),
            );
            Fixture {
                gate,
                handlers: Handlers::default(),
                events,
                platform: platform.token,
                carrier: carrier.token,
            }
        }

        /// Calls `path` with `token`; the response's code and message, and whether the call
        /// reached a handler.
        async fn call(&mut self, path: &str, token: Option<&str>) -> (Code, String, bool) {
            let mut request = http::Request::builder().uri(format!("/{path}"));
            if let Some(token) = token {
                request =
                    request.header(ocx_api::metadata::AUTHORIZATION, format!("Bearer {token}"));
            }
            let Ok(request) = request.body(Body::empty()) else {
                panic!("a malformed test request for {path}");
            };
            let before = self.handlers.reached();
            let response = self.gate.pass(self.handlers.clone(), request).await;
            // A refusal's status is in its headers; a response without one is a handler's OK.
            let status = Status::from_header_map(response.headers());
            drop(response);
            let (code, message) = status.map_or((Code::Ok, String::new()), |s| {
                (s.code(), s.message().to_owned())
            });
            (code, message, self.handlers.reached() > before)
        }

        /// The next audit event.
        async fn event(&mut self) -> AuditEvent {
            match self.events.recv().await {
                Some(event) => event,
                None => panic!("the audit log closed"),
            }
        }
    }

    #[tokio::test]
    async fn a_carrier_key_reaches_no_platform_only_handler() {
        let mut fx = Fixture::new();
        let carrier = fx.carrier.clone();
        let platform = fx.platform.clone();
        for rpc in RPCS {
            let path = rpc.path();
            // A call let through: OK, or for a stream CANCELLED, as the test drops its body
            // unread (a client that left).
            let through = if rpc.streaming() { "CANCELLED" } else { "OK" };
            let (code, message, reached) = fx.call(&path, Some(&carrier)).await;
            let event = fx.event().await;
            assert_eq!(event.rpc, path);
            assert_eq!(event.role, "carrier", "{path}");
            assert_eq!(event.carrier_id, "c1", "{path}");
            assert_eq!(event.resource_kind, rpc.resource_kind, "{path}");
            match rpc.access {
                Access::PlatformOnly => {
                    assert_eq!(code, Code::PermissionDenied, "{path}");
                    assert_eq!(
                        message,
                        "this method needs a platform key; a carrier key may not call it"
                    );
                    assert!(!reached, "{path} reached its handler with a carrier key");
                    assert_eq!(event.outcome, "PERMISSION_DENIED", "{path}");
                    assert_eq!(event.item_count, 0, "{path}");
                }
                Access::CarrierAndPlatform => {
                    assert_eq!(code, Code::Ok, "{path}");
                    assert!(
                        reached,
                        "{path} did not reach its handler with a carrier key"
                    );
                    assert_eq!(event.outcome, through, "{path}");
                }
            }
            let (code, _, reached) = fx.call(&path, Some(&platform)).await;
            assert_eq!(code, Code::Ok, "{path}");
            assert!(
                reached,
                "{path} did not reach its handler with a platform key"
            );
            let event = fx.event().await;
            assert_eq!(
                (event.role.as_str(), event.outcome.as_str()),
                ("platform", through),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn a_method_missing_from_the_table_is_refused_not_let_through() {
        let mut fx = Fixture::new();
        let platform = fx.platform.clone();
        for path in [
            "ocx.v1.AdminService/DropEverything",
            "ocx.v1.NoSuchService/CreateCarrier",
        ] {
            for token in [Some(platform.as_str()), None] {
                let (code, message, reached) = fx.call(path, token).await;
                assert_eq!(code, Code::Unimplemented, "{path}");
                assert_eq!(message, format!("{path} is not a method of this server"));
                assert!(!reached, "{path} reached the router");
            }
        }
        // Refused before a key was looked at: summed, not recorded one by one; the summary
        // names neither the made-up methods nor more than the key id claimed.
        fx.gate.audit.flush().await;
        let mut sums = Vec::new();
        while let Ok(event) = fx.events.try_recv() {
            sums.push((event.key_id, event.rpc, event.outcome, event.item_count));
        }
        sums.sort();
        let claimed = claimed_key_id(Some(&format!("Bearer {platform}")));
        assert_eq!(
            sums,
            [
                (String::new(), String::new(), "UNIMPLEMENTED".to_owned(), 2),
                (claimed, String::new(), "UNIMPLEMENTED".to_owned(), 2),
            ]
        );
        // Outside the OCX package (health, reflection, anything else) the router answers, so
        // an unknown path there is its UNIMPLEMENTED; nothing is audited.
        let (code, _, reached) = fx.call("grpc.health.v1.Health/Check", None).await;
        assert_eq!(code, Code::Ok);
        assert!(reached);
        fx.gate.audit.flush().await;
        assert!(
            fx.events.try_recv().is_err(),
            "a call outside ocx.v1 was audited"
        );
    }

    #[tokio::test]
    async fn calls_without_a_usable_key_are_summed_per_minute_not_recorded_each() {
        let mut fx = Fixture::new();
        let path = "ocx.v1.NumberService/GetNumber";
        let junk = format!("ocx_00000000000000ab_{}", "0".repeat(64));
        for _ in 0..500 {
            let (code, _, reached) = fx.call(path, Some(&junk)).await;
            assert_eq!(code, Code::Unauthenticated);
            assert!(!reached);
        }
        for _ in 0..3 {
            assert_eq!(fx.call(path, None).await.0, Code::Unauthenticated);
        }
        // A call with a key is its own event, as before.
        let carrier = fx.carrier.clone();
        assert_eq!(fx.call(path, Some(&carrier)).await.0, Code::Ok);
        let own = fx.event().await;
        assert_eq!((own.role.as_str(), own.outcome.as_str()), ("carrier", "OK"));
        assert!(
            fx.events.try_recv().is_err(),
            "a refusal before authentication was recorded on its own"
        );
        fx.gate.audit.flush().await;
        let mut sums = Vec::new();
        while let Ok(event) = fx.events.try_recv() {
            assert_eq!(
                event.time % 60_000_000,
                0,
                "dated at the start of its minute"
            );
            assert_eq!(event.rpc, path);
            assert_eq!(event.role, "");
            sums.push((event.key_id, event.outcome, event.item_count));
        }
        sums.sort();
        // Summed per key id claimed; 503 calls, two events (a minute boundary in between
        // would split them further, never merge them).
        let total: i64 = sums.iter().map(|s| s.2).sum();
        assert_eq!(total, 503, "{sums:?}");
        assert!(sums.len() <= 4, "{sums:?}");
        assert!(sums.iter().any(|s| s.0 == "00000000000000ab"));
    }

    #[test]
    fn addresses_are_rated_by_ipv4_address_and_ipv6_block() {
        let v4: IpAddr = [192, 0, 2, 7].into();
        assert_eq!(rate_key(v4), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("v6");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(rate_key(a), rate_key(b), "one /64");
        assert_ne!(rate_key(a), rate_key(other));
        assert_eq!(rate_key(a), "2001:db8:1:2::".parse::<IpAddr>().expect("v6"));
    }

    #[test]
    fn claimed_key_ids_never_include_the_secret() {
        let secret = "a".repeat(64);
        let header = format!("Bearer ocx_0123456789abcdef_{secret}");
        assert_eq!(claimed_key_id(Some(&header)), "0123456789abcdef");
        assert_eq!(claimed_key_id(Some("Bearer nonsense")), "");
        assert_eq!(claimed_key_id(Some("Bearer ocx_short_x")), "");
        assert_eq!(claimed_key_id(None), "");
    }
}
