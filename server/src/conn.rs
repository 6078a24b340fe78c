//! Connections: accepting them, capping how many are open, closing those that never start a
//! call or sit idle, and what a call's request knows of its connection.
//!
//! - [`Incoming`]: the stream of accepted connections handed to tonic (which adds TLS itself
//!   when configured). It never yields an error: a failed accept is logged (at most once a
//!   second), counted, and followed by a pause that doubles from 5 ms to 1 s, so the server
//!   does not spin at the open-file limit. A connection accepted while `--max-connections` are
//!   open is closed at once.
//! - [`Conn`]: one accepted connection. It holds a permit of the cap until dropped, and its
//!   `poll_read` enforces the handshake deadline and the idle timeout.
//! - [`CallTracking`]: the layer that tells a connection when its calls start and end.
//! - [`ConnInfo`]: what tonic puts in each request's extensions (wrapped in `TlsConnectInfo`
//!   under TLS); [`peer_ip`] reads the client's address from it for the per-address rate limit
//!   and the refusal summaries.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::limits::Limits;
use crate::metrics::{CLOSED_HANDSHAKE, CLOSED_IDLE, Metrics};

/// Descriptors kept back from the connection cap for everything else the process opens: the
/// database and its write-ahead log, the readers' connections, the metrics listener and its
/// scrapes, log files. The cap is at most the soft open-file limit minus this.
pub const RESERVED_FILES: u64 = 64;

/// The first pause after a failed accept; doubled after each next failure.
const FIRST_PAUSE: Duration = Duration::from_millis(5);

/// The longest pause between failed accepts.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// At most one log line per this interval for failed accepts, and one for refused connections:
/// a client flood must not become a log flood.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Connections refused in one `poll_next` before it yields to the runtime: a flood of
/// connections while the cap is full must not hold the accept task (and its worker thread).
const REFUSE_BATCH: usize = 64;

/// The longest handshake or idle timeout honoured; longer is this (a year is "never" for a
/// connection, and keeps `Instant` arithmetic far from overflow).
const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What a call's request knows of its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The server's address the client reached.
    pub local_addr: Option<SocketAddr>,
    /// The connection's call accounting, shared with its [`Conn`]; `None` for a `ConnInfo`
    /// made by hand (tests), whose calls then go uncounted.
    calls: Option<Arc<ConnState>>,
}

impl ConnInfo {
    /// A `ConnInfo` for these addresses, not tied to a served connection.
    pub fn new(remote_addr: Option<SocketAddr>, local_addr: Option<SocketAddr>) -> ConnInfo {
        ConnInfo {
            remote_addr,
            local_addr,
            calls: None,
        }
    }
}

/// The client address of a request, if the transport knows it.
pub fn peer_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let ext = request.extensions();
    conn_info(ext)
        .and_then(|c| c.remote_addr)
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(|c| c.remote_addr()))
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|c| c.get_ref().remote_addr())
        })
        .map(|addr| addr.ip().to_canonical())
}

/// The request's [`ConnInfo`], plain or under TLS (tonic 0.14 inserts it beside the
/// `TlsConnectInfo` too; the wrapped one is looked at in case a later version does not).
fn conn_info(ext: &http::Extensions) -> Option<&ConnInfo> {
    ext.get::<ConnInfo>()
        .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|c| c.get_ref()))
}

/// The highest number of connections to allow: `configured`, but at most the soft open-file
/// limit `soft_nofile` minus [`RESERVED_FILES`] (at least 1), so that the connections alone
/// cannot exhaust the descriptors the database needs. `None`: the limit is unknown.
pub fn connection_cap(configured: usize, soft_nofile: Option<u64>) -> usize {
    let room = soft_nofile.map_or(usize::MAX, |soft| {
        usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX)
    });
    configured.min(room).clamp(1, Semaphore::MAX_PERMITS)
}

/// The two deadlines of a connection, as configured.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// From accept to the start of the first call.
    handshake: Duration,
    /// From the end of the last call (with none open) to the close.
    idle: Duration,
}

/// A log line at most once per [`LOG_EVERY`], counting what was left out.
#[derive(Debug, Default)]
struct LogEvery {
    /// When a line was last let through.
    last: Option<Instant>,
    /// Events since then that were not logged.
    suppressed: u64,
}

impl LogEvery {
    /// `Some(events left out since the last line)` if a line is due now, else `None` (and the
    /// event is counted as left out).
    fn due(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The accepted connections of a listener, each a [`Conn`] holding a permit of the cap.
///
/// tonic's own `TcpIncoming` hands every accept error to a loop that tries again at once: at
/// the open-file limit (`EMFILE`) the kernel keeps the pending connection in the backlog, so
/// that loop spins a core and starves the connections being served. This stream pauses instead.
pub struct Incoming {
    /// Where connections come from.
    listener: TcpListener,
    /// One permit per connection allowed open at once.
    permits: Arc<Semaphore>,
    /// Each new connection's deadlines.
    timeouts: Timeouts,
    /// Where connections are counted.
    metrics: Arc<Metrics>,
    /// The pause after a failed accept (reset for each failure).
    pause: Pin<Box<Sleep>>,
    /// Whether `pause` is running: no accept until it ends.
    pausing: bool,
    /// The length of the next pause: [`FIRST_PAUSE`], doubled per failure up to [`MAX_PAUSE`],
    /// back to the first after an accept succeeds.
    next_pause: Duration,
    /// Rate limit of the failed-accept warnings.
    error_log: LogEvery,
    /// Rate limit of the refused-connection warnings.
    refused_log: LogEvery,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// Connections accepted from `listener` under `limits` (the cap, the handshake and idle
    /// timeouts), counted in `metrics`. The cap is [`connection_cap`] of `max_connections` and
    /// the process's soft open-file limit now (the server raises it first); a lowered cap is
    /// logged.
    pub fn new(listener: TcpListener, limits: &Limits, metrics: Arc<Metrics>) -> Incoming {
        let soft = rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft);
        let cap = connection_cap(limits.max_connections, soft);
        if cap < limits.max_connections {
            tracing::warn!(
                configured = limits.max_connections,
                cap,
                open_file_limit = soft,
                reserved = RESERVED_FILES,
                "connection cap lowered to fit the open-file limit"
            );
        }
        Incoming {
            listener,
            permits: Arc::new(Semaphore::new(cap)),
            timeouts: Timeouts {
                handshake: limits.handshake_timeout.min(LONGEST_TIMEOUT),
                idle: limits.idle_timeout.min(LONGEST_TIMEOUT),
            },
            metrics,
            pause: Box::pin(tokio::time::sleep(Duration::ZERO)),
            pausing: false,
            next_pause: FIRST_PAUSE,
            error_log: LogEvery::default(),
            refused_log: LogEvery::default(),
        }
    }

    /// Closes a connection accepted while the cap is full.
    ///
    /// Closed at once rather than left unaccepted in the kernel's backlog: the client learns
    /// at once (EOF or reset instead of a connect that hangs until its own timeout) and can
    /// retry later or go to another replica, and the backlog stays free for the connections
    /// that will fit once others close.
    fn refuse(&mut self, stream: TcpStream, remote: SocketAddr) {
        // Counted before the close, so that a client that sees the close finds it counted.
        self.metrics.connection_refused();
        drop(stream);
        if let Some(suppressed) = self.refused_log.due(Instant::now()) {
            tracing::warn!(
                peer = %remote,
                suppressed,
                "connection refused: the connection cap (--max-connections) is reached"
            );
        }
    }

    /// Counts and logs a failed accept; pauses before the next unless it was the peer's doing.
    fn failed(&mut self, error: &io::Error) {
        self.metrics.accept_error();
        if is_connection_error(error) {
            // This connection is gone, not the server's descriptors: accept the next at once.
            tracing::debug!(%error, "a connection was lost before it was accepted");
            return;
        }
        let pause = self.next_pause;
        if let Some(suppressed) = self.error_log.due(Instant::now()) {
            tracing::warn!(
                %error,
                suppressed,
                ?pause,
                "could not accept a connection; pausing before the next accept"
            );
        }
        self.pause.as_mut().reset(Instant::now() + pause);
        self.pausing = true;
        self.next_pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Accept errors that concern one connection only (hyper's `is_connection_error`): no reason
/// to pause.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Conn>>> {
        let this = self.get_mut();
        let mut refused = 0;
        loop {
            if this.pausing {
                ready!(this.pause.as_mut().poll(cx));
                this.pausing = false;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, remote)) => {
                    this.next_pause = FIRST_PAUSE;
                    match Arc::clone(&this.permits).try_acquire_owned() {
                        Ok(permit) => {
                            let conn = Conn::new(
                                stream,
                                remote,
                                permit,
                                this.timeouts,
                                Arc::clone(&this.metrics),
                            );
                            return Poll::Ready(Some(Ok(conn)));
                        }
                        Err(_) => {
                            this.refuse(stream, remote);
                            refused += 1;
                            if refused >= REFUSE_BATCH {
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        }
                    }
                }
                Err(error) => this.failed(&error),
            }
        }
    }
}

/// When a connection's calls started and ended, shared by the [`Conn`] (which reads it when
/// its deadline passes, or when its last open call ends) and the [`CallGuard`]s of its calls
/// (which write it). Atomics, not a lock: written twice per call from the call's task, read
/// once per deadline.
#[derive(Debug)]
pub struct ConnState {
    /// When the connection was accepted.
    accepted: Instant,
    /// Whether a call has started: until then the handshake deadline applies.
    started: AtomicBool,
    /// Calls open now.
    open: AtomicUsize,
    /// When the last call ended, nanoseconds after `accepted`.
    last_ended: AtomicU64,
    /// Set when the last open call ends: the connection's deadline is to be worked out again
    /// (it may be far off: the handshake deadline, or a look again one idle timeout after a
    /// call was seen open).
    changed: AtomicBool,
    /// The task reading the connection, woken when `changed` is set: the call's end happens
    /// in another task, and hyper reads again only when bytes come.
    reader: AtomicWaker,
}

/// What a connection's deadline decides.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not yet: look again at this instant.
    Until(Instant),
    /// Close it, for this reason (a metric label).
    Close(&'static str),
}

impl ConnState {
    /// A connection accepted at `accepted`, with no call yet.
    fn new(accepted: Instant) -> ConnState {
        ConnState {
            accepted,
            started: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            last_ended: AtomicU64::new(0),
            changed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        }
    }

    /// Whether the connection is to be closed at `now`, or when to look again.
    fn verdict(&self, now: Instant, timeouts: Timeouts) -> Verdict {
        if !self.started.load(Ordering::Acquire) {
            let at = self.accepted + timeouts.handshake;
            return if now >= at {
                Verdict::Close(CLOSED_HANDSHAKE)
            } else {
                Verdict::Until(at)
            };
        }
        if self.open.load(Ordering::Acquire) > 0 {
            // Busy: the idle clock starts when the last call ends; look again later rather
            // than have every call's end wake the connection.
            return Verdict::Until(now + timeouts.idle);
        }
        let ended = self.accepted + Duration::from_nanos(self.last_ended.load(Ordering::Acquire));
        let at = ended + timeouts.idle;
        if now >= at {
            Verdict::Close(CLOSED_IDLE)
        } else {
            Verdict::Until(at)
        }
    }
}

/// One open call on a connection: counted from the request's arrival until the response body
/// ends or is dropped.
#[derive(Debug)]
pub struct CallGuard {
    /// The connection's state.
    state: Arc<ConnState>,
}

impl CallGuard {
    /// A call starts on the connection of `state`.
    fn start(state: Arc<ConnState>) -> CallGuard {
        state.open.fetch_add(1, Ordering::AcqRel);
        state.started.store(true, Ordering::Release);
        CallGuard { state }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let state = &*self.state;
        let ended = u64::try_from(state.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // `max`: calls ending together stamp in any order.
        state.last_ended.fetch_max(ended, Ordering::AcqRel);
        if state.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The idle clock starts now: the reader works out its deadline again.
            state.changed.store(true, Ordering::Release);
            state.reader.wake();
        }
    }
}

/// An accepted TCP connection: holds a permit of the connection cap until dropped, and closes
/// itself (an error from `poll_read`, on which hyper drops the connection) when it has started
/// no call within the handshake timeout, or has had no call open for the idle timeout.
///
/// The deadline is checked in `poll_read` because hyper keeps a read pending on every live
/// connection (HTTP/2 always; HTTP/1.1 between requests), and so does the TLS handshake:
/// the timer's wakeup, or the end of the last open call ([`ConnState`]'s waker), reaches the
/// task that owns the connection, which then reads.
///
/// A request that arrives just as the deadline passes may be lost with the connection (its
/// guard starts when the service is first polled, in the call's own task): the same race as
/// any idle close, which clients meet by retrying on a new connection.
pub struct Conn {
    /// The socket.
    stream: TcpStream,
    /// What its requests are told.
    info: ConnInfo,
    /// Its calls, shared with their guards.
    state: Arc<ConnState>,
    /// Fires at the next deadline to look at.
    deadline: Pin<Box<Sleep>>,
    /// The configured deadlines.
    timeouts: Timeouts,
    /// Why the server closed it, once it has: every later read fails the same way.
    closed: Option<&'static str>,
    /// Where it is counted.
    metrics: Arc<Metrics>,
    /// Its place under the cap, given back on drop.
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("info", &self.info)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// An accepted connection: TCP_NODELAY (a small response, an acknowledgement or a
    /// stream's first message, goes out at once instead of waiting for the peer's delayed ACK,
    /// ~40 ms per round trip) and a 60 s TCP keepalive (finds peers that vanished without a
    /// FIN), as tonic's `TcpIncoming` set them.
    fn new(
        stream: TcpStream,
        remote: SocketAddr,
        permit: OwnedSemaphorePermit,
        timeouts: Timeouts,
        metrics: Arc<Metrics>,
    ) -> Conn {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, "could not set TCP keepalive");
        }
        let accepted = Instant::now();
        let state = Arc::new(ConnState::new(accepted));
        metrics.connection_opened();
        Conn {
            info: ConnInfo {
                remote_addr: Some(remote),
                local_addr: stream.local_addr().ok(),
                calls: Some(Arc::clone(&state)),
            },
            stream,
            state,
            deadline: Box::pin(tokio::time::sleep_until(accepted + timeouts.handshake)),
            timeouts,
            closed: None,
            metrics,
            _permit: permit,
        }
    }

    /// Checks the deadline (registering for its wakeup): `Err` once the connection is to be
    /// closed.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(reason) = self.closed {
            return Err(closed_error(reason));
        }
        self.state.reader.register(cx.waker());
        // A load first: the common case (nothing changed) writes nothing shared.
        let changed = self.state.changed.load(Ordering::Acquire)
            && self.state.changed.swap(false, Ordering::AcqRel);
        if !changed && self.deadline.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        match self.state.verdict(Instant::now(), self.timeouts) {
            Verdict::Until(at) => {
                self.deadline.as_mut().reset(at);
                // Registers the wakeup for the new deadline; one that is somehow due already
                // is looked at on the next read, which this wakeup brings.
                if self.deadline.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
                Ok(())
            }
            Verdict::Close(reason) => {
                self.closed = Some(reason);
                self.metrics.connection_closed(reason);
                tracing::debug!(
                    peer = ?self.info.remote_addr,
                    reason,
                    "connection closed by the server"
                );
                Err(closed_error(reason))
            }
        }
    }
}

/// The read error of a connection the server closed.
fn closed_error(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, reason)
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.metrics.connection_ended();
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_deadline(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// The layer that holds a [`CallGuard`] on the request's connection for as long as each call
/// is open. Outermost, so that it sees every request (gRPC, gRPC-Web, CORS preflights): a
/// connection whose only requests are answered by an outer layer is still in use.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTracking;

impl<S> tower::Layer<S> for CallTracking {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner }
    }
}

/// A service whose calls are counted on their connections ([`CallTracking`]).
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    /// The service proper.
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Tracked<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let guard = conn_info(request.extensions())
            .and_then(|info| info.calls.clone())
            .map(CallGuard::start);
        TrackedFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

pin_project_lite::pin_project! {
    /// A tracked call's response future: holds the call's guard, then hands it to the body.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<CallGuard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // An error drops the guard with this future.
        let response = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody { body, guard })))
    }
}

pin_project_lite::pin_project! {
    /// A tracked call's response body: the call stays open until it ends or is dropped (a
    /// stream's body lasts as long as the stream).
    pub struct TrackedBody<B> {
        #[pin]
        body: B,
        guard: Option<CallGuard>,
    }
}

impl<B: HttpBody> HttpBody for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard.take();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Handshake 10 s, idle 60 s.
    const T: Timeouts = Timeouts {
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn the_cap_is_the_setting_within_the_open_file_limit() {
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(4096, Some(u64::MAX)), 4096);
        assert_eq!(connection_cap(4096, Some(1024)), 1024 - 64);
        assert_eq!(connection_cap(10, Some(1024)), 10);
        assert_eq!(connection_cap(4096, Some(10)), 1, "never 0");
        assert_eq!(connection_cap(usize::MAX, None), Semaphore::MAX_PERMITS);
    }

    #[test]
    fn a_connection_without_a_call_is_closed_at_the_handshake_deadline() {
        let t0 = Instant::now();
        let state = ConnState::new(t0);
        assert_eq!(state.verdict(t0, T), Verdict::Until(t0 + T.handshake));
        assert_eq!(
            state.verdict(t0 + T.handshake, T),
            Verdict::Close(CLOSED_HANDSHAKE)
        );
    }

    #[test]
    fn a_connection_is_idle_only_with_no_call_open_and_from_the_last_end() {
        let t0 = Instant::now();
        let state = Arc::new(ConnState::new(t0));
        let a = CallGuard::start(Arc::clone(&state));
        let b = CallGuard::start(Arc::clone(&state));
        let late = t0 + T.handshake + T.idle * 3;
        assert_eq!(
            state.verdict(late, T),
            Verdict::Until(late + T.idle),
            "busy"
        );
        drop(a);
        assert_eq!(
            state.verdict(late, T),
            Verdict::Until(late + T.idle),
            "one open"
        );
        drop(b);
        let ended = t0 + Duration::from_nanos(state.last_ended.load(Ordering::Acquire));
        assert!(ended >= t0);
        assert_eq!(state.verdict(ended, T), Verdict::Until(ended + T.idle));
        assert_eq!(
            state.verdict(ended + T.idle, T),
            Verdict::Close(CLOSED_IDLE)
        );
    }

    #[test]
    fn log_lines_are_let_through_once_a_second_with_the_count_left_out() {
        let mut log = LogEvery::default();
        let t0 = Instant::now();
        assert_eq!(log.due(t0), Some(0));
        assert_eq!(log.due(t0 + Duration::from_millis(10)), None);
        assert_eq!(log.due(t0 + Duration::from_millis(999)), None);
        assert_eq!(log.due(t0 + LOG_EVERY), Some(2));
        assert_eq!(log.due(t0 + LOG_EVERY), None);
    }
}
