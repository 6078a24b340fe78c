"""The OCX client: one channel, the API key on every call, the service stubs, and the helpers
that every caller would otherwise write: pages followed to the end, followers that resume and
can be stopped, uploads over the acknowledged streams that resume across restarts, and the
reconciliation summary.

Calls raise ``grpc.RpcError`` (``error.code()``, ``error.details()``); the status codes are
those of ``proto/ocx/v1/PROTOCOL.md``. Unary calls retry ``UNAVAILABLE`` with backoff for up to
the client's ``retry_budget`` seconds. The module logs its retries and reconnects through
``logging`` (logger ``ocx_client.client``; the package attaches a ``NullHandler``).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from ocx_client import pb

try:  # optional (pip install "ocx-client[otel]"): the caller's span goes with each call
    from opentelemetry import propagate as _propagate
except ImportError:  # pragma: no cover - exercised where opentelemetry is not installed
    _propagate = None
from ocx_client._gen.ocx.v1 import (
    admin_pb2_grpc,
    call_durations_pb2_grpc,
    call_records_pb2_grpc,
    consent_pb2_grpc,
    numbers_pb2_grpc,
    platform_pb2_grpc,
    reconciliation_pb2_grpc,
)
from ocx_client.retry import (
    DEFAULT_RETRY_BUDGET,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    RETRYABLE_CODES,
    backoff_delays,
    status_code,
    status_details,
)
from ocx_client.uploads import (
    DEFAULT_IN_FLIGHT,
    BatchUploader,
    UploadInterrupted,
    UploadSummary,
)

log = logging.getLogger(__name__)

#: The metadata key that carries ``Bearer <key>`` (PROTOCOL.md, "Authentication and scope").
AUTHORIZATION = "authorization"
#: The server's default ``--max-message-bytes``; grpc's own default (4 MiB) is smaller.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: The most items a batch may carry (``--max-batch``), and the most a page may hold.
MAX_BATCH = 1000

# What this module defines for the package (``ocx_client`` re-exports it with the rest).
__all__ = [
    "AUTHORIZATION",
    "MAX_BATCH",
    "MAX_MESSAGE_BYTES",
    "Client",
    "Follower",
    "ReconciliationView",
    "batches",
    "follow",
    "paginate",
    "to_duration",
    "to_timestamp",
]

T = TypeVar("T")
M = TypeVar("M")

#: What the time helpers accept: an aware ``datetime`` (a naive one is taken as UTC) or a
#: ``Timestamp``.
TimeLike: TypeAlias = dt.datetime | timestamp_pb2.Timestamp
#: A ``timedelta``, seconds as a number, or a ``Duration``.
DurationLike: TypeAlias = dt.timedelta | float | int | duration_pb2.Duration


def to_timestamp(value: TimeLike) -> timestamp_pb2.Timestamp:
    """A ``Timestamp`` for ``value``; a naive ``datetime`` is taken as UTC."""
    if isinstance(value, timestamp_pb2.Timestamp):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_duration(value: DurationLike) -> duration_pb2.Duration:
    """A ``Duration`` for ``value`` (a ``timedelta`` or seconds)."""
    if isinstance(value, duration_pb2.Duration):
        return value
    if not isinstance(value, dt.timedelta):
        value = dt.timedelta(seconds=value)
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def whole_hours(
    start: TimeLike, end: TimeLike
) -> tuple[timestamp_pb2.Timestamp, timestamp_pb2.Timestamp]:
    """The smallest period of whole UTC hours that holds ``[start, end)``, as
    ``GetQualitySummary`` wants it: ``start`` down to its hour, ``end`` up to the next (an
    ``end`` on a whole hour stays)."""
    first, last = to_timestamp(start), to_timestamp(end)
    down = first.seconds - first.seconds % 3600
    up = last.seconds if last.seconds % 3600 == 0 and last.nanos == 0 else (
        last.seconds - last.seconds % 3600 + 3600
    )
    return timestamp_pb2.Timestamp(seconds=down), timestamp_pb2.Timestamp(seconds=up)


#: ``quality_summary``'s names for the time buckets.
QUALITY_BUCKETS = {
    "none": pb.TIME_BUCKET_UNSPECIFIED,
    "hour": pb.TIME_BUCKET_HOUR,
    "day": pb.TIME_BUCKET_DAY,
}
#: ``quality_summary``'s names for the dimensions (as ``ocx quality summary --group-by``).
QUALITY_DIMENSIONS = {
    "trunk": pb.QUALITY_DIMENSION_TRUNK_FQDN,
    "country": pb.QUALITY_DIMENSION_USAGE_COUNTRY_CODE,
    "destination": pb.QUALITY_DIMENSION_DESTINATION_CONTEXT,
    "type": pb.QUALITY_DIMENSION_CALL_TYPE,
    "direction": pb.QUALITY_DIMENSION_DIRECTION,
    "codec": pb.QUALITY_DIMENSION_CODEC,
}


def paginate(rpc: Callable[[Any], Any], request: Any, items_field: str) -> Iterator[Any]:
    """Yields every item of a list RPC, following ``next_page_token`` to the last page.

    ``rpc`` is a stub method (``client.number_service.ListNumbers``), ``request`` its first
    request (not modified: each page is asked with a copy), ``items_field`` the repeated field
    of the response (``"phone_numbers"``). Pages are fetched lazily, one when the previous is
    used up; the filters stay those of ``request``, as the page token requires.
    """
    page = type(request)()
    page.CopyFrom(request)
    while True:
        response = rpc(page)
        yield from getattr(response, items_field)
        if not response.next_page_token:
            return
        page.page_token = response.next_page_token


class Follower(Generic[T]):
    """A running follow of a resumable server stream: iterate it for the items.

    Each item comes once, in sequence order. After a retryable failure (``RETRYABLE_CODES``) or
    a stream the server ended, it waits (``initial_backoff``, doubling to ``max_backoff``, reset
    by any message) and reopens after the last sequence yielded; items at or below it are
    replays and are dropped. Any other error is raised by the iteration.

    ``stop()``, from any thread, ends the iteration promptly: it cancels the open call (a
    ``next()`` blocked on it returns ``StopIteration``) and cuts a reconnect wait short. Used as
    a context manager, it stops on exit. ``last_sequence`` is where to resume later.
    """

    def __init__(
        self,
        open_stream: Callable[[int], Iterable[M]],
        unpack: Callable[[M], Iterable[T]],
        sequence: Callable[[T], int],
        after_sequence: int = 0,
        *,
        name: str = "stream",
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        self._open_stream = open_stream
        self._unpack = unpack
        self._sequence = sequence
        self._name = name
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._stopped = threading.Event()
        # Waits between reconnects end early on stop() unless the caller gave its own sleep.
        self._sleep: Callable[[float], Any] = sleep if sleep is not None else self._stopped.wait
        self._lock = threading.Lock()
        self._call: Any = None
        #: The sequence of the last item yielded (the starting point before any): resume there.
        self.last_sequence = after_sequence
        self._items = self._run()

    def __iter__(self) -> Follower[T]:
        return self

    def __next__(self) -> T:
        return next(self._items)

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stopped.is_set()

    def stop(self) -> None:
        """Ends the follow: the iteration stops (at once if it is waiting for the server).
        Safe from any thread, and more than once."""
        self._stopped.set()
        with self._lock:
            call = self._call
        if call is not None:
            _cancel(call)

    def close(self) -> None:
        """Stops, and finishes the iteration here (from the iterating thread, or after it)."""
        self.stop()
        try:
            self._items.close()
        except ValueError:
            pass  # iterating in another thread right now: stop() ends it there

    def __enter__(self) -> Follower[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self, after: int) -> Any:
        call = self._open_stream(after)
        with self._lock:
            self._call = call
        if self._stopped.is_set():
            _cancel(call)
        return call

    def _run(self) -> Generator[T, None, None]:
        backoff = self._initial_backoff
        while not self._stopped.is_set():
            call = self._open(self.last_sequence)
            try:
                for message in call:
                    backoff = self._initial_backoff
                    for item in self._unpack(message):
                        position = self._sequence(item)
                        if position <= self.last_sequence:
                            continue  # a replay of what was already yielded
                        self.last_sequence = position
                        yield item
                        if self._stopped.is_set():
                            return
                reason = "the server ended the stream"
            except grpc.RpcError as error:
                if self._stopped.is_set():
                    return
                code = status_code(error)
                if code is None or code not in RETRYABLE_CODES:
                    raise
                reason = f"{code.name}: {status_details(error)}"
            finally:
                with self._lock:
                    self._call = None
                _cancel(call)
            if self._stopped.is_set():
                return
            log.warning(
                "%s: %s; reconnecting after sequence %d in %.1f s",
                self._name,
                reason,
                self.last_sequence,
                backoff,
            )
            self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)


class ReconciliationView:
    """A follower's view of a carrier's reconciliation, built by applying the changes of
    ``Client.follow_reconciliation`` in order: every entry as it last stood, keyed by whose it
    is (a platform record's ``call_id``, or a lone report's ``record_id``); a REMOVED change
    drops its entry."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], pb.ReconciliationChange] = {}
        self.last_sequence = 0

    def apply(self, change: pb.ReconciliationChange) -> None:
        """Applies one change (in feed order)."""
        self.last_sequence = max(self.last_sequence, change.sequence)
        carrier_report = change.entry == pb.RECONCILIATION_ENTRY_CARRIER_REPORT
        key = (change.entry, change.record_id if carrier_report else change.call_id)
        if change.state == pb.RECONCILIATION_STATE_REMOVED:
            self._entries.pop(key, None)
        else:
            self._entries[key] = change

    def entries(self) -> list[pb.ReconciliationChange]:
        """Every entry as it stands."""
        return list(self._entries.values())

    def discrepancies(self) -> list[pb.ReconciliationChange]:
        """The entries that are not MATCHED: what ``list_discrepancies`` lists (for every
        period, at the follow's tolerance)."""
        return [c for c in self._entries.values() if c.state != pb.RECONCILIATION_STATE_MATCHED]


def _cancel(call: Any) -> None:
    cancel = getattr(call, "cancel", None)
    if cancel is not None:
        cancel()


#: Follows a resumable server stream for ever, yielding each item once, in order: the
#: ``Follower`` itself (iterate it; ``stop()`` it from any thread, or use it with ``with``).
follow = Follower


def batches(items: Iterable[T], size: int = MAX_BATCH) -> Iterator[list[T]]:
    """Splits ``items`` into lists of at most ``size`` (for ``Client.upload_durations``)."""
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1 to {MAX_BATCH}, not {size}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """``grpc.ClientCallDetails`` with the metadata replaced."""


def _trace_metadata() -> list[tuple[str, str]]:
    """The W3C ``traceparent`` (and ``tracestate``) of the current OpenTelemetry span, when
    ``opentelemetry-api`` is installed and the call is made inside a span: the server's spans
    for the call then join the caller's trace. Nothing otherwise."""
    if _propagate is None:
        return []
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return [(k, v) for k, v in carrier.items() if k in ("traceparent", "tracestate")]


class _BearerAuth(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <key>`` to every call of every kind.

    An interceptor rather than call credentials: grpc sends call credentials only over TLS,
    and the local demo is plaintext.
    """

    def __init__(self, key: str, retry_budget: float = DEFAULT_RETRY_BUDGET) -> None:
        self._header = (AUTHORIZATION, f"Bearer {key}")
        self.retry_budget = retry_budget

    def _details(
        self, details: grpc.ClientCallDetails, timeout: float | None = None
    ) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._header, *_trace_metadata()]
        return _CallDetails(
            details.method,
            details.timeout if timeout is None else timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        if "request_id" in request.DESCRIPTOR.fields_by_name and not request.request_id:
            # A write: give it a request id (AIP-155) unless the caller did, so that the server
            # answers a retry with its first answer and does nothing again.
            with_id = type(request)()
            with_id.CopyFrom(request)
            with_id.request_id = str(uuid.uuid4())
            request = with_id
        if client_call_details.method.endswith("/CreateApiKey"):
            # Not retried: its answer (the secret) cannot be given twice.
            return continuation(self._details(client_call_details), request)
        return self._retrying(continuation, client_call_details, request)

    def _retrying(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        """Retries UNAVAILABLE with jittered backoff (from 100 ms, doubling to 5 s) until the
        retry budget, or the call's own timeout, would be passed. Every unary call can be
        retried: the reads change nothing, and every write carries its request id."""
        started = time.monotonic()
        timeout = client_call_details.timeout
        budget = self.retry_budget if timeout is None else min(self.retry_budget, timeout)
        delays = backoff_delays()
        attempt = 1
        while True:
            remaining = (
                None if timeout is None else max(timeout - (time.monotonic() - started), 0.0)
            )
            call = continuation(self._details(client_call_details, remaining), request)
            if call.code() != grpc.StatusCode.UNAVAILABLE:
                return call
            delay = next(delays)
            elapsed = time.monotonic() - started
            if elapsed + delay > budget:
                if attempt > 1:
                    log.warning(
                        "%s: UNAVAILABLE after %d attempts in %.1f s (retry budget %g s); "
                        "giving up",
                        client_call_details.method,
                        attempt,
                        elapsed,
                        self.retry_budget,
                    )
                return call
            log.warning(
                "%s: UNAVAILABLE (%s); retrying in %.2f s",
                client_call_details.method,
                call.details(),
                delay,
            )
            time.sleep(delay)
            attempt += 1

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def _parse_target(target: str) -> tuple[str, bool]:
    """``host:port`` for grpc, and whether the target asked for TLS (``https://``)."""
    for scheme, tls in (("https://", True), ("http://", False)):
        if target.startswith(scheme):
            return target[len(scheme) :].rstrip("/"), tls
    return target, False


def _check_key(key: str) -> str:
    key = key.strip()
    if not key or any(c.isspace() or not c.isprintable() or not c.isascii() for c in key):
        raise ValueError("the API key must be one non-empty line of printable ASCII")
    return key


class Client:
    """A connection to an OCX server acting with one API key.

    ``target`` is ``host:port``, ``http://host:port`` or ``https://host:port``. TLS is used
    for ``https://`` or when any of the PEM arguments is given: ``root_certificates`` (the CA
    that signed the server's certificate; the system roots when omitted) and, for mutual TLS,
    ``private_key`` with ``certificate_chain``. ``key`` is sent as ``authorization: Bearer
    <key>`` on every call.

    ``retry_budget`` (seconds, default 30) is how long a unary call retries ``UNAVAILABLE``
    (with jittered backoff from 100 ms, doubling to 5 s), and how long an upload may spend
    reconnecting and waiting for the server to answer without an acknowledgement, before
    either gives up; set the ``retry_budget`` attribute to change it later. 0 retries nothing.

    The stubs are attributes (``number_service``, ``call_record_service``, ...): call any RPC
    of the contract with a ``pb`` request. The helpers cover what needs more than one call.
    Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        target: str,
        key: str,
        *,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        options: Sequence[tuple[str, Any]] = (),
        retry_budget: float = DEFAULT_RETRY_BUDGET,
    ) -> None:
        if retry_budget < 0:
            raise ValueError(f"retry_budget must not be negative, not {retry_budget}")
        address, tls = _parse_target(target)
        channel_options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # grpc's own reconnect backoff grows to 120 s while a server is down; cap it at
            # the followers' so that a restarted server is found as promptly as they look.
            ("grpc.initial_reconnect_backoff_ms", int(INITIAL_BACKOFF * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF * 1000)),
            *options,
        ]
        if tls or any(x is not None for x in (root_certificates, private_key, certificate_chain)):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            self._raw_channel = grpc.secure_channel(address, credentials, options=channel_options)
        else:
            self._raw_channel = grpc.insecure_channel(address, options=channel_options)
        self._auth = _BearerAuth(_check_key(key), retry_budget)
        #: The channel every stub uses, with the key added to each call.
        self.channel: grpc.Channel = grpc.intercept_channel(self._raw_channel, self._auth)
        #: Carriers, keys, retention, erasure, audit (platform key).
        self.admin_service = admin_pb2_grpc.AdminServiceStub(self.channel)
        #: The tenants' consents.
        self.consent_service = consent_pb2_grpc.ConsentServiceStub(self.channel)
        #: Numbers and their event stream.
        self.number_service = numbers_pb2_grpc.NumberServiceStub(self.channel)
        #: Call records and their feed.
        self.call_record_service = call_records_pb2_grpc.CallRecordServiceStub(self.channel)
        #: The carrier's duration reports.
        self.call_duration_service = call_durations_pb2_grpc.CallDurationServiceStub(self.channel)
        #: Reconciliation of records and reports.
        self.reconciliation_service = reconciliation_pb2_grpc.ReconciliationServiceStub(
            self.channel
        )
        #: Consents, assignments, call-record ingest, usage (platform key).
        self.platform_service = platform_pb2_grpc.PlatformServiceStub(self.channel)

    @property
    def retry_budget(self) -> float:
        """Seconds a unary call retries ``UNAVAILABLE``, and an upload waits on the server
        without an acknowledgement, before giving up."""
        return self._auth.retry_budget

    @retry_budget.setter
    def retry_budget(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"retry_budget must not be negative, not {seconds}")
        self._auth.retry_budget = seconds

    def close(self) -> None:
        """Closes the channel; open streams end with ``CANCELLED``."""
        self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Lists: every item, page after page. Keyword arguments are the request's fields
    # (filters, `page_size`, `carrier_id` for a platform key).

    def list_numbers(self, **fields: Any) -> Iterator[pb.PhoneNumber]:
        """Every number matching ``fields`` (``ListNumbersRequest``), ordered by number."""
        return paginate(
            self.number_service.ListNumbers, pb.ListNumbersRequest(**fields), "phone_numbers"
        )

    def list_consents(self, **fields: Any) -> Iterator[pb.Consent]:
        """Every consent (``ListConsentsRequest``), ordered by tenant."""
        return paginate(
            self.consent_service.ListConsents, pb.ListConsentsRequest(**fields), "consents"
        )

    def list_call_records(self, **fields: Any) -> Iterator[pb.CallRecord]:
        """Every call record matching ``fields`` (``ListCallRecordsRequest``; times may be
        ``datetime``), ordered by start time."""
        return paginate(
            self.call_record_service.ListCallRecords,
            pb.ListCallRecordsRequest(**fields),
            "call_records",
        )

    def list_call_durations(self, **fields: Any) -> Iterator[pb.CallDuration]:
        """Every duration report matching ``fields`` (``ListCallDurationsRequest``)."""
        return paginate(
            self.call_duration_service.ListCallDurations,
            pb.ListCallDurationsRequest(**fields),
            "call_durations",
        )

    def list_discrepancies(
        self,
        start: TimeLike,
        end: TimeLike,
        tolerance: DurationLike | None = None,
        **fields: Any,
    ) -> Iterator[pb.Discrepancy]:
        """Every discrepancy of ``[start, end)``: mismatched, then missing on the carrier,
        then missing on the platform (``kind=`` filters; ``ListDiscrepanciesRequest``)."""
        request = pb.ListDiscrepanciesRequest(
            start_time=to_timestamp(start), end_time=to_timestamp(end), **fields
        )
        if tolerance is not None:
            request.tolerance.CopyFrom(to_duration(tolerance))
        return paginate(self.reconciliation_service.ListDiscrepancies, request, "discrepancies")

    def list_carriers(self, **fields: Any) -> Iterator[pb.Carrier]:
        """Every carrier (platform key)."""
        return paginate(
            self.admin_service.ListCarriers, pb.ListCarriersRequest(**fields), "carriers"
        )

    def list_api_keys(self, **fields: Any) -> Iterator[pb.ApiKey]:
        """Every API key matching ``fields`` (platform key; never the secrets)."""
        return paginate(self.admin_service.ListApiKeys, pb.ListApiKeysRequest(**fields), "api_keys")

    def list_audit_events(self, **fields: Any) -> Iterator[pb.AuditEvent]:
        """Every audit event matching ``fields``, newest first (platform key)."""
        return paginate(
            self.admin_service.ListAuditEvents,
            pb.ListAuditEventsRequest(**fields),
            "audit_events",
        )

    # Streams.

    def follow_number_events(
        self, after_sequence: int = 0, *, carrier_id: str = "", **backoff: Any
    ) -> Follower[pb.NumberEvent]:
        """Every number event after ``after_sequence``, then new ones as they happen, until
        stopped.

        Reconnects with backoff when the server goes away (``UNAVAILABLE``) and resumes after
        the last event yielded, dropping replays: each event comes once, in sequence order.
        Each (re)open waits for the channel to connect (``wait_for_ready``), so a server that
        is down is picked up as soon as it is back, without a warning per attempt.
        Returns a ``Follower``: iterate it; ``stop()`` it from any thread, or use it in a
        ``with`` block. ``backoff`` passes ``initial_backoff`` / ``max_backoff`` (seconds).
        """

        def open_stream(after: int) -> Iterable[pb.WatchNumberEventsResponse]:
            request = pb.WatchNumberEventsRequest(carrier_id=carrier_id, after_sequence=after)
            return self.number_service.WatchNumberEvents(  # type: ignore[no-any-return]
                request, wait_for_ready=True
            )

        return follow(
            open_stream,
            lambda message: (message.event,),
            lambda event: event.sequence,
            after_sequence,
            name="number events",
            **backoff,
        )

    def follow_call_records(
        self, after_sequence: int = 0, *, carrier_id: str = "", **backoff: Any
    ) -> Follower[pb.CallRecord]:
        """Every record of the call-record feed after ``after_sequence`` (a ``feed_sequence``),
        then new and revised ones as they are committed, until stopped; resumes and stops like
        ``follow_number_events``."""

        def open_stream(after: int) -> Iterable[pb.StreamCallRecordsResponse]:
            request = pb.StreamCallRecordsRequest(carrier_id=carrier_id, after_sequence=after)
            return self.call_record_service.StreamCallRecords(  # type: ignore[no-any-return]
                request, wait_for_ready=True
            )

        return follow(
            open_stream,
            lambda message: message.call_records,
            lambda record: record.feed_sequence,
            after_sequence,
            name="call records",
            **backoff,
        )

    def follow_reconciliation(
        self,
        after_sequence: int = 0,
        *,
        tolerance: DurationLike | None = None,
        carrier_id: str = "",
        **backoff: Any,
    ) -> Follower[pb.ReconciliationChange]:
        """The carrier's reconciliation live (``WatchReconciliation``): from 0, every entry as
        it now stands, then each change as it is committed, until stopped; resumes and stops
        like ``follow_number_events``. ``tolerance`` decides MATCHED against MISMATCHED (the
        server's default is 1 s). Apply the changes in order to a ``ReconciliationView`` to
        hold the carrier's calls as they stand. ``OUT_OF_RANGE`` (a position so old that
        removals after it were forgotten) ends the follow: follow from 0 again."""

        def open_stream(after: int) -> Iterable[pb.WatchReconciliationResponse]:
            request = pb.WatchReconciliationRequest(carrier_id=carrier_id, after_sequence=after)
            if tolerance is not None:
                request.tolerance.CopyFrom(to_duration(tolerance))
            return self.reconciliation_service.WatchReconciliation(  # type: ignore[no-any-return]
                request, wait_for_ready=True
            )

        return follow(
            open_stream,
            lambda message: message.changes,
            lambda change: change.sequence,
            after_sequence,
            name="reconciliation",
            **backoff,
        )

    # Uploads over the acknowledged streams, resuming across broken streams and restarts.

    def ingest_call_records(
        self,
        records: Iterable[pb.CallRecord],
        *,
        batch_size: int = MAX_BATCH,
        in_flight: int = DEFAULT_IN_FLIGHT,
        on_ack: Callable[[pb.IngestCallRecordsResponse, list[pb.CallRecord]], None] | None = None,
        retry_budget: float | None = None,
    ) -> UploadSummary[pb.CallRecord]:
        """Ingests every record of ``records`` (platform key) over ``IngestCallRecords`` and
        returns the totals once all are durably committed.

        ``records`` is read lazily, ``batch_size`` (1 to 1,000) at a time, keeping up to
        ``in_flight`` batches unacknowledged, so a generator keeps memory flat. Batch ids are
        1, 2, 3... in the order of the batches, and a batch keeps its id when sent again.
        ``on_ack(ack, batch)`` is called once per batch, in order, after its commit (e.g. to
        checkpoint a source).

        When the stream breaks (``UNAVAILABLE``: a server restarting; a dropped connection),
        it reconnects (waiting for the channel), sends again every unacknowledged batch, in
        order, then carries on with ``records`` where it stopped: each record is stored once
        (a batch whose acknowledgement was lost comes back ``UNCHANGED``). It gives up once it
        has spent ``retry_budget`` seconds (default: the client's) without an acknowledgement
        in backoff and waiting for the server to answer a stream (not while a server that
        answered is committing), and at once on any other status (``INVALID_ARGUMENT``,
        ``PERMISSION_DENIED``, ``UNAUTHENTICATED``...), raising ``UploadInterrupted`` with the
        unacknowledged batches, their records, and the summary so far.

        The summary counts created / revised / unchanged / rejected records; ``rejections``
        holds each rejected record with its reason and field violations.
        """
        uploader = self._uploader(
            "call records upload",
            lambda requests, wait: self.platform_service.IngestCallRecords(
                requests, wait_for_ready=wait
            ),
            lambda batch_id, items: pb.IngestCallRecordsRequest(
                batch_id=batch_id, call_records=items
            ),
            pb.IngestCallRecordsRequest,
            lambda request: request.call_records,
            in_flight,
            retry_budget,
        )
        return uploader.run(batches(records, batch_size), on_ack)

    def upload_call_durations(
        self,
        reports: Iterable[pb.CallDurationReport],
        *,
        carrier_id: str = "",
        batch_size: int = MAX_BATCH,
        in_flight: int = DEFAULT_IN_FLIGHT,
        on_ack: Callable[[pb.UploadCallDurationsResponse, list[pb.CallDurationReport]], None]
        | None = None,
        retry_budget: float | None = None,
    ) -> UploadSummary[pb.CallDurationReport]:
        """Uploads every report of ``reports`` over ``UploadCallDurations`` and returns the
        totals (created / unchanged / corrected / rejected) once all are durably committed.

        ``carrier_id``: empty for a carrier key, the carrier's id for a platform key. Batching,
        ``on_ack``, resuming across broken streams and restarts, and failures are those of
        ``ingest_call_records`` (reports are keyed by ``record_id``, so a batch sent again is
        answered ``UNCHANGED``).
        """
        uploader = self._duration_uploader(carrier_id, in_flight, retry_budget)
        return uploader.run(batches(reports, batch_size), on_ack)

    def upload_durations(
        self,
        batches: Iterable[Sequence[pb.CallDurationReport] | pb.UploadCallDurationsRequest],
        *,
        carrier_id: str = "",
        in_flight: int = DEFAULT_IN_FLIGHT,
        retry_budget: float | None = None,
    ) -> Generator[pb.UploadCallDurationsResponse, None, None]:
        """Uploads ``batches`` over ``UploadCallDurations``; yields each batch's
        acknowledgement, in order, once the server has committed it. The lower-level form of
        ``upload_call_durations``: you make the batches and see every acknowledgement.

        A batch is a sequence of 1 to 1,000 ``CallDurationReport`` (given ``batch_id`` 1, 2,
        ... by position, and ``carrier_id``) or a ready ``UploadCallDurationsRequest`` (sent
        as it is). ``batches`` is read lazily, keeping up to ``in_flight`` batches
        unacknowledged. A broken stream is resumed as ``ingest_call_records`` says (each batch
        is still acknowledged once); ``UploadInterrupted`` carries the unacknowledged batches
        if the upload fails. A reply that does not match the batch it should acknowledge
        raises ``RuntimeError``. Closing the generator ends the stream.
        """
        uploader = self._duration_uploader(carrier_id, in_flight, retry_budget)
        for _batch, ack in uploader.acknowledgements(batches):
            yield ack

    def _duration_uploader(
        self, carrier_id: str, in_flight: int, retry_budget: float | None
    ) -> BatchUploader[
        pb.CallDurationReport, pb.UploadCallDurationsRequest, pb.UploadCallDurationsResponse
    ]:
        return self._uploader(
            "call durations upload",
            lambda requests, wait: self.call_duration_service.UploadCallDurations(
                requests, wait_for_ready=wait
            ),
            lambda batch_id, items: pb.UploadCallDurationsRequest(
                carrier_id=carrier_id, batch_id=batch_id, durations=items
            ),
            pb.UploadCallDurationsRequest,
            lambda request: request.durations,
            in_flight,
            retry_budget,
        )

    def _uploader(
        self,
        name: str,
        open_call: Callable[[Iterator[Any], bool], Any],
        make_request: Callable[[int, list[Any]], Any],
        request_type: type,
        items_of: Callable[[Any], Sequence[Any]],
        in_flight: int,
        retry_budget: float | None,
    ) -> BatchUploader[Any, Any, Any]:
        return BatchUploader(
            name=name,
            open_call=open_call,
            make_request=make_request,
            request_type=request_type,
            items_of=items_of,
            in_flight=in_flight,
            retry_budget=self.retry_budget if retry_budget is None else retry_budget,
        )

    # Quality.

    def quality_summary(
        self,
        start: TimeLike,
        end: TimeLike,
        *,
        bucket: str = "day",
        group_by: Iterable[str | int] = (),
        carrier_id: str = "",
        **filters: Any,
    ) -> list[pb.QualitySummaryRow]:
        """Call quality and traffic figures (``GetQualitySummary``) of ``[start, end)``,
        widened to whole UTC hours: one row per time bucket (``"none"``, ``"hour"`` or
        ``"day"``) and group, in order. ``group_by`` names dimensions (``"trunk"``,
        ``"country"``, ``"destination"``, ``"type"``, ``"direction"``, ``"codec"``) or gives
        ``QualityDimension`` values; ``filters`` are ``QualityFilter`` fields, e.g.
        ``trunk_fqdns=["sbc1.example"]``. A platform key may leave ``carrier_id`` empty for
        every carrier together."""
        first, last = whole_hours(start, end)
        request = pb.GetQualitySummaryRequest(
            carrier_id=carrier_id,
            start_time=first,
            end_time=last,
            bucket=QUALITY_BUCKETS[bucket],
            group_by=[QUALITY_DIMENSIONS[d] if isinstance(d, str) else d for d in group_by],
            filter=pb.QualityFilter(**filters),
        )
        response = self.call_record_service.GetQualitySummary(request)
        return list(response.rows)

    # Reconciliation.

    def reconciliation_summary(
        self,
        start: TimeLike,
        end: TimeLike,
        tolerance: DurationLike | None = None,
        *,
        carrier_id: str = "",
    ) -> pb.ReconciliationSummary:
        """The reconciliation of ``[start, end)``: counts and summed durations on both sides,
        matched, mismatched (beyond ``tolerance``; the server's default is 1 s), missing on
        either side, and the agreement rate."""
        request = pb.GetReconciliationSummaryRequest(
            carrier_id=carrier_id, start_time=to_timestamp(start), end_time=to_timestamp(end)
        )
        if tolerance is not None:
            request.tolerance.CopyFrom(to_duration(tolerance))
        response = self.reconciliation_service.GetReconciliationSummary(request)
        return response.summary  # type: ignore[no-any-return]
