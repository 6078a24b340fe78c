"""The resumable batch uploader behind ``Client.ingest_call_records``,
``Client.upload_call_durations`` and ``Client.upload_durations``, written once.

Both upload streams of the contract (``PlatformService.IngestCallRecords`` and
``CallDurationService.UploadCallDurations``) work the same way: the client sends batches, the
server answers each with one acknowledgement, in batch order, with the same ``batch_id``, only
after the batch is durably committed; a batch not acknowledged may or may not be stored and
is safe to send again (the items are keyed: a stored one comes back ``UNCHANGED``); on
shutdown the server ends the stream with ``UNAVAILABLE``.

``BatchUploader`` keeps up to ``in_flight`` batches unacknowledged on one stream. When the
stream breaks with a transient status (``RETRYABLE_CODES``) or ends early, it opens a new one
(waiting for the channel: ``wait_for_ready``), sends again every unacknowledged batch, in order
and under its own ``batch_id``, and then carries on with the caller's iterator where it
stopped: every item taken from the iterator is acknowledged exactly once or handed back in
``UploadInterrupted``. It gives up once it has spent ``retry_budget`` seconds without an
acknowledgement in backoff and waiting for the server to answer a stream (waiting on a server
that has answered and is committing does not count), and at once on any other status. With a
budget of 0 it neither reconnects nor waits for the channel. An exception raised by the
caller's iterator comes out as it is (the open stream is cancelled).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

from ocx_client import pb
from ocx_client.retry import (
    DEFAULT_RETRY_BUDGET,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    RETRYABLE_CODES,
    LocalRpcError,
    backoff_delays,
    describe,
    status_code,
    status_details,
)

log = logging.getLogger(__name__)

#: The batches the server reads ahead of its commits (its ``STREAM_IN_FLIGHT``): more in flight
#: would only wait in transport buffers.
DEFAULT_IN_FLIGHT = 8

Item = TypeVar("Item")
Request = TypeVar("Request")
Ack = TypeVar("Ack")


@dataclass
class Rejection(Generic[Item]):
    """One item the server did not store, and why."""

    #: The item as sent (a ``CallRecord`` or a ``CallDurationReport``).
    item: Item
    #: The batch it was in, and its 0-based position there.
    batch_id: int
    index: int
    #: Why, for a person (``field: description; ...``).
    reason: str
    #: The invalid fields, e.g. ``call_records[3].caller_number``.
    violations: list[Any] = field(default_factory=list)


@dataclass
class UploadSummary(Generic[Item]):
    """What an upload did, in total: one acknowledgement counted per batch.

    A batch sent again after a lost acknowledgement counts once, as its last acknowledgement
    says: what its first sending committed comes back ``UNCHANGED``. So ``created + revised +
    corrected + unchanged + rejected == items`` always.
    """

    #: Batches acknowledged.
    batches: int = 0
    #: Items acknowledged (every result, whatever its status).
    items: int = 0
    #: Items stored for the first time.
    created: int = 0
    #: Items already stored with the same content (a duplicate, or a batch sent again).
    unchanged: int = 0
    #: Call records that replaced a lower version (ingest only).
    revised: int = 0
    #: Reports that replaced a stored report with other content (durations only).
    corrected: int = 0
    #: Items not stored; each is in ``rejections`` with its reason.
    rejected: int = 0
    #: Times a broken stream was opened again.
    reconnects: int = 0
    #: The rejected items, in upload order.
    rejections: list[Rejection[Item]] = field(default_factory=list)

    def add(self, batch_id: int, items: Sequence[Item], ack: Any) -> None:
        """Counts one acknowledgement of the batch ``batch_id`` that carried ``items``."""
        self.batches += 1
        self.items += len(ack.results)
        self.created += ack.created_count
        self.unchanged += ack.unchanged_count
        self.revised += getattr(ack, "revised_count", 0)
        self.corrected += getattr(ack, "corrected_count", 0)
        self.rejected += ack.rejected_count
        for result in ack.results:
            if result.status == pb.ITEM_STATUS_REJECTED:
                self.rejections.append(
                    Rejection(
                        item=items[result.index] if 0 <= result.index < len(items) else None,  # type: ignore[arg-type]
                        batch_id=batch_id,
                        index=result.index,
                        reason=result.reason,
                        violations=list(result.violations),
                    )
                )


#: The summary of ``Client.ingest_call_records``.
IngestSummary = UploadSummary


@dataclass
class Batch(Generic[Item, Request]):
    """A batch taken from the caller: its id, its items and the request that carries them."""

    batch_id: int
    items: list[Item]
    request: Request


class UploadInterrupted(grpc.RpcError):
    """An upload stream failed before every batch sent was acknowledged.

    Raised at once for a status that is not transient (``INVALID_ARGUMENT``,
    ``PERMISSION_DENIED``, ``UNAUTHENTICATED``...), or once the retry budget is spent. It is a
    ``grpc.RpcError``: ``code()`` and ``details()`` are those of the failure (``error``).

    Batches acknowledged before the failure are committed (``summary`` counts them).
    ``unacknowledged`` holds the requests taken from the caller and not acknowledged, in order,
    and ``unacknowledged_items`` their items: they may or may not be stored, and sending them
    again is safe. Nothing else was taken from the caller's iterator, so
    ``itertools.chain(error.unacknowledged_items, rest)`` resumes without losing or repeating
    an item.
    """

    def __init__(
        self,
        error: BaseException,
        unacknowledged: list[Any],
        *,
        unacknowledged_items: list[Any] | None = None,
        summary: UploadSummary[Any] | None = None,
    ) -> None:
        super().__init__(
            f"upload interrupted ({describe(error)}); "
            f"{len(unacknowledged)} batch(es) unacknowledged"
        )
        #: The error that ended the upload (a ``grpc.RpcError``).
        self.error = error
        #: The requests sent (or about to be) without an acknowledgement, in order.
        self.unacknowledged = unacknowledged
        #: Their items, in order.
        self.unacknowledged_items: list[Any] = (
            unacknowledged_items if unacknowledged_items is not None else []
        )
        #: What was acknowledged before the failure.
        self.summary: UploadSummary[Any] = summary if summary is not None else UploadSummary()

    def code(self) -> grpc.StatusCode | None:
        """The status code of the failure."""
        return status_code(self.error)

    def details(self) -> str:
        """The details of the failure."""
        return status_details(self.error)


class _End:
    """Marks the end of the requests (a half-close)."""


_END = _End()
_OPEN, _ACK, _ERROR, _DONE = "open", "ack", "error", "done"


class _Stream:
    """One upload call: the requests go through a queue that grpc's sending thread reads; a
    thread of its own reads the server's answer into ``events`` (``_OPEN`` once the server
    has answered the call with its headers, then each acknowledgement, then the end or the
    error), so that the uploader can wait on them and on the caller's iterator in turn."""

    def __init__(
        self, open_call: Callable[[Iterator[Any], bool], Any], wait_for_ready: bool, name: str
    ) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._call = open_call(self._request_iterator(), wait_for_ready)
        self._reader = threading.Thread(target=self._read, name=f"ocx {name} acks", daemon=True)
        self._reader.start()

    def _request_iterator(self) -> Iterator[Any]:
        while True:
            request = self._requests.get()
            if request is _END:
                return
            yield request

    def _read(self) -> None:
        try:
            # Returns once the server has answered the call (or the call has ended).
            initial_metadata = getattr(self._call, "initial_metadata", None)
            if initial_metadata is not None:
                initial_metadata()
            self.events.put((_OPEN, None))
            for ack in self._call:
                self.events.put((_ACK, ack))
        except grpc.RpcError as error:
            self.events.put((_ERROR, error))
        except Exception as error:  # noqa: BLE001 - handed to the uploader's thread
            self.events.put((_ERROR, error))
        else:
            self.events.put((_DONE, None))

    def send(self, request: Any) -> None:
        if not self._closed:
            self._requests.put(request)

    def close_requests(self) -> None:
        """Half-closes: the server ends the call once it has acknowledged everything."""
        if not self._closed:
            self._closed = True
            self._requests.put(_END)

    def abandon(self) -> None:
        """Ends the call from this side (nothing happens to a call already over)."""
        self.close_requests()
        cancel = getattr(self._call, "cancel", None)
        if cancel is not None:
            cancel()


class BatchUploader(Generic[Item, Request, Ack]):
    """Uploads batches over one of the contract's acknowledged upload streams, resuming across
    broken streams (see the module's documentation).

    ``open_call(requests, wait_for_ready)`` opens the stream (a stub method);
    ``make_request(batch_id, items)`` builds a batch's request; ``request_type`` and
    ``items_of`` let callers hand in ready requests (kept as they are, ``batch_id`` included).
    ``name`` names the stream in logs.
    """

    def __init__(
        self,
        *,
        name: str,
        open_call: Callable[[Iterator[Request], bool], Iterable[Ack]],
        make_request: Callable[[int, list[Item]], Request],
        request_type: type | None = None,
        items_of: Callable[[Request], Sequence[Item]] | None = None,
        in_flight: int = DEFAULT_IN_FLIGHT,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        if retry_budget < 0:
            raise ValueError(f"retry_budget must not be negative, not {retry_budget}")
        self.name = name
        self._open_call = open_call
        self._make_request = make_request
        self._request_type = request_type
        self._items_of = items_of
        self.in_flight = in_flight
        self.retry_budget = retry_budget
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._clock = clock

    def run(
        self,
        batches: Iterable[Sequence[Item] | Request],
        on_ack: Callable[[Ack, list[Item]], None] | None = None,
    ) -> UploadSummary[Item]:
        """Uploads every batch; calls ``on_ack(ack, items)`` once per batch, in order, after its
        commit; returns the totals once every batch is acknowledged. Raises
        ``UploadInterrupted`` (with ``summary`` so far) if the upload fails."""
        summary: UploadSummary[Item] = UploadSummary()
        for batch, ack in self.acknowledgements(batches, summary):
            if on_ack is not None:
                on_ack(ack, batch.items)
        return summary

    def acknowledgements(
        self,
        batches: Iterable[Sequence[Item] | Request],
        summary: UploadSummary[Item] | None = None,
    ) -> Generator[tuple[Batch[Item, Request], Ack], None, None]:
        """Uploads every batch and yields ``(batch, ack)`` for each, in order, once committed
        (``summary``, if given, counts them and the reconnects). Closing the generator ends the
        stream."""
        summary = summary if summary is not None else UploadSummary()
        source = iter(batches)
        pending: deque[Batch[Item, Request]] = deque()
        position = 0  # batches taken from the caller: the next generated batch_id - 1
        input_done = False
        # Seconds spent since the last acknowledgement in backoff and waiting for a stream to
        # be answered (the server away): what the retry budget bounds. Waiting for the
        # acknowledgements of a stream the server has answered is the server at work, and is
        # not counted.
        stalled = 0.0
        # With no budget, no waiting for the channel either: a call fails at once without it.
        wait_for_ready = self.retry_budget > 0
        delays = backoff_delays(self._initial_backoff, self._max_backoff)
        last_error: BaseException | None = None

        def interrupted(error: BaseException) -> UploadInterrupted:
            return UploadInterrupted(
                error,
                [b.request for b in pending],
                unacknowledged_items=[item for b in pending for item in b.items],
                summary=summary,
            )

        while True:
            if not pending and not input_done:
                # Take the caller's next batch before opening a stream: no call is left open
                # while the caller's iterator makes us wait.
                taken = next(source, _END)
                if isinstance(taken, _End):
                    input_done = True
                else:
                    position += 1
                    pending.append(self._batch(position, taken))
            if input_done and not pending:
                return
            stream = _Stream(self._open_call, wait_for_ready, self.name)
            answered = False
            failure: BaseException
            try:
                for batch in pending:
                    stream.send(batch.request)
                if input_done:
                    stream.close_requests()
                while True:
                    if input_done and not pending:
                        # Every batch is acknowledged; the server ends the call after the
                        # half-close. How it ends changes nothing, so do not wait long.
                        stream.close_requests()
                        try:
                            stream.events.get(timeout=1.0)
                        except queue.Empty:
                            pass
                        return
                    try:
                        event = stream.events.get_nowait()
                    except queue.Empty:
                        event = None
                    if event is None and not input_done and len(pending) < self.in_flight:
                        # Room in the window: the caller's next batch (this may block, and
                        # that is not time spent waiting on the server).
                        taken = next(source, _END)
                        if isinstance(taken, _End):
                            input_done = True
                            stream.close_requests()
                            continue
                        position += 1
                        batch = self._batch(position, taken)
                        pending.append(batch)
                        stream.send(batch.request)
                        log.debug(
                            "%s: batch %d sent (%d items, %d unacknowledged)",
                            self.name,
                            batch.batch_id,
                            len(batch.items),
                            len(pending),
                        )
                        continue
                    if event is None and (answered or not wait_for_ready):
                        # Nothing to send: wait for the server at work.
                        event = stream.events.get()
                    elif event is None:
                        # Nothing to send: wait for the server to answer, within the budget.
                        remaining = self.retry_budget - stalled
                        started = self._clock()
                        try:
                            event = stream.events.get(timeout=max(remaining, 0.0))
                        except queue.Empty:
                            reason = (
                                f"no acknowledgement within the retry budget "
                                f"({self.retry_budget:g} s)"
                            )
                            if last_error is not None:
                                reason += f"; last failure: {describe(last_error)}"
                            raise interrupted(
                                LocalRpcError(grpc.StatusCode.UNAVAILABLE, reason)
                            ) from last_error
                        finally:
                            stalled += self._clock() - started
                    kind, value = event
                    if kind == _OPEN:
                        answered = True
                        continue
                    if kind == _ACK:
                        if not pending:
                            raise RuntimeError(
                                f"{self.name}: acknowledgement of batch {value.batch_id}, "
                                "none pending"
                            )
                        sent = pending[0]
                        if value.batch_id != sent.batch_id or len(value.results) != len(sent.items):
                            raise RuntimeError(
                                f"{self.name}: acknowledgement of batch {value.batch_id} with "
                                f"{len(value.results)} results; expected batch {sent.batch_id} "
                                f"with {len(sent.items)}"
                            )
                        pending.popleft()
                        stalled = 0.0
                        last_error = None
                        delays = backoff_delays(self._initial_backoff, self._max_backoff)
                        summary.add(sent.batch_id, sent.items, value)
                        yield sent, value
                        continue
                    if kind == _DONE:
                        failure = LocalRpcError(
                            grpc.StatusCode.UNAVAILABLE,
                            "the server ended the upload before acknowledging every batch",
                        )
                    else:
                        failure = value
                    if status_code(failure) not in RETRYABLE_CODES:
                        raise interrupted(failure) from failure
                    break
            finally:
                stream.abandon()
            # A transient failure: open a new stream after a backoff, within the budget.
            last_error = failure
            delay = next(delays)
            if stalled + delay > self.retry_budget:
                raise interrupted(failure) from failure
            log.warning(
                "%s: %s; reconnecting in %.2f s to send %d unacknowledged batch(es) again",
                self.name,
                describe(failure),
                delay,
                len(pending),
            )
            started = self._clock()
            self._sleep(delay)
            stalled += self._clock() - started
            summary.reconnects += 1

    def _batch(self, position: int, taken: Sequence[Item] | Request) -> Batch[Item, Request]:
        """The caller's ``position``-th batch: a ready request, or items to wrap."""
        if self._request_type is not None and isinstance(taken, self._request_type):
            assert self._items_of is not None
            request: Request = taken  # type: ignore[assignment]
            return Batch(request.batch_id, list(self._items_of(request)), request)  # type: ignore[attr-defined]
        items = list(taken)  # type: ignore[arg-type]
        return Batch(position, items, self._make_request(position, items))
