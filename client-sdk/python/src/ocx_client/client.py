"""The OCX client: one channel, the API key on every call, the service stubs, and the helpers
that every caller would otherwise write: pages followed to the end, resumable streams,
duration uploads over the acknowledged stream, and the reconciliation summary.

Calls raise ``grpc.RpcError`` (``error.code()``, ``error.details()``); the status codes are
those of ``proto/ocx/v1/PROTOCOL.md``.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from ocx_client import pb
from ocx_client._gen.ocx.v1 import (
    admin_pb2_grpc,
    call_durations_pb2_grpc,
    call_records_pb2_grpc,
    consent_pb2_grpc,
    numbers_pb2_grpc,
    platform_pb2_grpc,
    reconciliation_pb2_grpc,
)

log = logging.getLogger("ocx_client")

#: The metadata key that carries ``Bearer <key>`` (PROTOCOL.md, "Authentication and scope").
AUTHORIZATION = "authorization"
#: The server's default ``--max-message-bytes``; grpc's own default (4 MiB) is smaller.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: The most items a batch may carry (``--max-batch``), and the most a page may hold.
MAX_BATCH = 1000
#: Attempts of a unary write (it carries a request id) when the server answers UNAVAILABLE.
WRITE_ATTEMPTS = 5
#: Seconds before the first retry of such a write; doubled for each next one.
WRITE_BACKOFF = 0.1
#: First reconnect delay of a follower, and the delay again after any message arrives.
INITIAL_BACKOFF = 0.1
#: Longest reconnect delay: short enough that a restarted server is picked up promptly.
MAX_BACKOFF = 5.0
#: Codes after which a follower reopens its stream: the server is shutting down or
#: unreachable (UNAVAILABLE), or the key holds its most streams for now (RESOURCE_EXHAUSTED).
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)

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


def follow(
    open_stream: Callable[[int], Iterable[M]],
    unpack: Callable[[M], Iterable[T]],
    sequence: Callable[[T], int],
    after_sequence: int = 0,
    *,
    name: str = "stream",
    initial_backoff: float = INITIAL_BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[T, None, None]:
    """Follows a resumable server stream for ever, yielding each item once, in order.

    ``open_stream(after)`` opens the stream for items after a sequence; ``unpack`` turns one
    message into its items; ``sequence`` is an item's position. After a retryable failure
    (``RETRYABLE_CODES``) or a stream the server ended, it waits (``initial_backoff``, doubling
    to ``max_backoff``, reset by any message) and reopens after the last sequence yielded;
    items at or below it are replays and are dropped. Any other error is raised. Closing the
    generator (``break``, ``close()``) cancels the open call.
    """
    last = after_sequence
    backoff = initial_backoff
    while True:
        call = open_stream(last)
        try:
            for message in call:
                backoff = initial_backoff
                for item in unpack(message):
                    position = sequence(item)
                    if position <= last:
                        continue  # a replay of what was already yielded
                    last = position
                    yield item
            reason = "the server ended the stream"
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            if code not in RETRYABLE_CODES:
                raise
            reason = f"{code.name}: {error.details()}"  # type: ignore[union-attr]
        finally:
            cancel = getattr(call, "cancel", None)
            if cancel is not None:
                cancel()
        log.warning("%s: %s; reconnecting after sequence %d in %.1f s", name, reason, last, backoff)
        sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


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


class UploadInterrupted(Exception):
    """An upload stream failed before every batch sent was acknowledged.

    Batches acknowledged before the failure are committed. ``unacknowledged`` holds the ones
    sent (or about to be) without an acknowledgement: they may or may not be stored, and
    sending them again is safe (reports are keyed by ``record_id``; a stored one comes back
    ``UNCHANGED``).
    """

    def __init__(
        self, error: grpc.RpcError, unacknowledged: list[pb.UploadCallDurationsRequest]
    ) -> None:
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else str(error)
        super().__init__(
            f"upload interrupted ({getattr(code, 'name', code)}: {details}); "
            f"{len(unacknowledged)} batch(es) unacknowledged"
        )
        #: The gRPC error that ended the stream.
        self.error = error
        #: The batches sent without an acknowledgement, in order.
        self.unacknowledged = unacknowledged


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """``grpc.ClientCallDetails`` with the metadata replaced."""


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

    def __init__(self, key: str) -> None:
        self._header = (AUTHORIZATION, f"Bearer {key}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        details = self._details(client_call_details)
        if "request_id" not in request.DESCRIPTOR.fields_by_name:
            return continuation(details, request)
        # A write: give it a request id (AIP-155) unless the caller did, so that the server
        # answers a retry with its first answer and does nothing again; then retry UNAVAILABLE
        # under that id. Not CreateApiKey: its answer (the secret) cannot be given twice.
        if not request.request_id:
            with_id = type(request)()
            with_id.CopyFrom(request)
            with_id.request_id = str(uuid.uuid4())
            request = with_id
        if details.method.endswith("/CreateApiKey"):
            return continuation(details, request)
        backoff = WRITE_BACKOFF
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            call = continuation(details, request)
            if attempt == WRITE_ATTEMPTS or call.code() != grpc.StatusCode.UNAVAILABLE:
                return call
            log.warning("%s: UNAVAILABLE; retrying in %.1f s", details.method, backoff)
            time.sleep(backoff)
            backoff *= 2
        return call

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
    ) -> None:
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
        #: The channel every stub uses, with the key added to each call.
        self.channel: grpc.Channel = grpc.intercept_channel(
            self._raw_channel, _BearerAuth(_check_key(key))
        )
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
    ) -> Generator[pb.NumberEvent, None, None]:
        """Every number event after ``after_sequence``, then new ones as they happen, for ever.

        Reconnects with backoff when the server goes away (``UNAVAILABLE``) and resumes after
        the last event yielded, dropping replays: each event comes once, in sequence order.
        Each (re)open waits for the channel to connect (``wait_for_ready``), so a server that
        is down is picked up as soon as it is back, without a warning per attempt.
        ``backoff`` passes ``initial_backoff`` / ``max_backoff`` (seconds) to ``follow``.
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
    ) -> Generator[pb.CallRecord, None, None]:
        """Every record of the call-record feed after ``after_sequence`` (a ``feed_sequence``),
        then new and revised ones as they are committed, for ever; resumes like
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

    def upload_durations(
        self,
        batches: Iterable[Sequence[pb.CallDurationReport] | pb.UploadCallDurationsRequest],
        *,
        carrier_id: str = "",
    ) -> Generator[pb.UploadCallDurationsResponse, None, None]:
        """Sends ``batches`` over one ``UploadCallDurations`` stream; yields each batch's
        acknowledgement, in order, once the server has committed it.

        A batch is a sequence of 1 to 1,000 ``CallDurationReport`` (given ``batch_id`` 1, 2,
        ... and ``carrier_id``) or a ready ``UploadCallDurationsRequest``. ``batches`` is read
        lazily, as grpc's flow control lets batches out (the server holds at most 8 awaiting
        their commit), so a generator keeps memory flat. Raises ``UploadInterrupted`` with the
        unacknowledged batches if the stream fails; a reply that does not match the batch it
        should acknowledge raises ``RuntimeError``.
        """
        pending: deque[pb.UploadCallDurationsRequest] = deque()

        def requests() -> Iterator[pb.UploadCallDurationsRequest]:
            for number, batch in enumerate(batches, start=1):
                if isinstance(batch, pb.UploadCallDurationsRequest):
                    request = batch
                else:
                    request = pb.UploadCallDurationsRequest(
                        carrier_id=carrier_id, batch_id=number, durations=batch
                    )
                # Appended before grpc sends it, so its acknowledgement finds it here.
                pending.append(request)
                yield request

        call = self.call_duration_service.UploadCallDurations(requests())
        try:
            for ack in call:
                if not pending:
                    raise RuntimeError(f"acknowledgement of batch {ack.batch_id}, none pending")
                sent = pending[0]
                if ack.batch_id != sent.batch_id or len(ack.results) != len(sent.durations):
                    raise RuntimeError(
                        f"acknowledgement of batch {ack.batch_id} with {len(ack.results)} "
                        f"results; expected batch {sent.batch_id} with {len(sent.durations)}"
                    )
                pending.popleft()
                yield ack
        except grpc.RpcError as error:
            raise UploadInterrupted(error, list(pending)) from error
        finally:
            call.cancel()

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
