"""Unit tests of the helpers, against fakes and an in-process grpc server (no OCX server).

Run against the installed package: ``python -m unittest discover -s client-sdk/python/tests``.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import logging
import pickle
import socket
import threading
import time
import unittest
import uuid
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from ocx_client import (
    Client,
    Follower,
    ReconciliationView,
    UploadInterrupted,
    batches,
    follow,
    paginate,
    pb,
    to_duration,
    to_timestamp,
    whole_hours,
)
from ocx_client.retry import backoff_delays

#: Longest any test waits for a thread or a call that should end promptly.
PROMPT = 10.0


class FakeRpcError(grpc.RpcError):
    """What grpc raises from a failed call: an RpcError with code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeCall:
    """A server-stream call: yields messages, then raises ``error`` if given."""

    def __init__(self, messages: list[Any], error: Exception | None = None) -> None:
        self.messages, self.error, self.cancelled = messages, error, False

    def __iter__(self) -> Iterator[Any]:
        yield from self.messages
        if self.error is not None:
            raise self.error

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def event(sequence: int) -> pb.WatchNumberEventsResponse:
    return pb.WatchNumberEventsResponse(event=pb.NumberEvent(sequence=sequence))


class PaginateTest(unittest.TestCase):
    def test_follows_tokens_with_the_same_filters_and_leaves_the_request_alone(self) -> None:
        pages = {
            "": pb.ListNumbersResponse(
                phone_numbers=[pb.PhoneNumber(number="+1")], next_page_token="t1"
            ),
            "t1": pb.ListNumbersResponse(
                phone_numbers=[pb.PhoneNumber(number="+2"), pb.PhoneNumber(number="+3")],
                next_page_token="t2",
            ),
            "t2": pb.ListNumbersResponse(),
        }
        seen: list[pb.ListNumbersRequest] = []

        def rpc(request: pb.ListNumbersRequest) -> pb.ListNumbersResponse:
            copy = pb.ListNumbersRequest()
            copy.CopyFrom(request)
            seen.append(copy)
            return pages[request.page_token]

        request = pb.ListNumbersRequest(state=pb.NUMBER_STATE_ASSIGNED, page_size=2)
        numbers = [n.number for n in paginate(rpc, request, "phone_numbers")]
        self.assertEqual(numbers, ["+1", "+2", "+3"])
        self.assertEqual([r.page_token for r in seen], ["", "t1", "t2"])
        self.assertTrue(all(r.state == pb.NUMBER_STATE_ASSIGNED and r.page_size == 2 for r in seen))
        self.assertEqual(request.page_token, "")

    def test_is_lazy(self) -> None:
        calls = []

        def rpc(request: pb.ListNumbersRequest) -> pb.ListNumbersResponse:
            calls.append(request.page_token)
            return pb.ListNumbersResponse(phone_numbers=[pb.PhoneNumber()], next_page_token="more")

        items = paginate(rpc, pb.ListNumbersRequest(), "phone_numbers")
        self.assertEqual(calls, [])
        next(items)
        self.assertEqual(calls, [""])


class FollowTest(unittest.TestCase):
    def test_resumes_after_unavailable_and_drops_replays(self) -> None:
        calls = [
            FakeCall(
                [event(1), event(2)], FakeRpcError(grpc.StatusCode.UNAVAILABLE, "shutting down")
            ),
            FakeCall(
                [event(2), event(3)], FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "revoked")
            ),
        ]
        opened: list[int] = []
        sleeps: list[float] = []

        def open_stream(after: int) -> FakeCall:
            opened.append(after)
            return calls[len(opened) - 1]

        items = follow(open_stream, lambda m: (m.event,), lambda e: e.sequence, sleep=sleeps.append)
        with self.assertLogs("ocx_client", "WARNING") as logs:
            got = [next(items).sequence for _ in range(3)]
        self.assertIn("UNAVAILABLE: shutting down; reconnecting after sequence 2", logs.output[0])
        self.assertEqual(got, [1, 2, 3])
        with self.assertRaises(grpc.RpcError) as raised:
            next(items)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(opened, [0, 2])
        self.assertEqual(sleeps, [0.1])
        self.assertTrue(all(c.cancelled for c in calls))

    def test_backoff_doubles_to_the_cap_and_resets_after_a_message(self) -> None:
        unavailable = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
        script = [FakeCall([], unavailable)] * 5 + [
            FakeCall([event(7)], unavailable),
            FakeCall([], unavailable),
            FakeCall([event(8)]),
        ]
        opened: list[int] = []
        sleeps: list[float] = []

        def open_stream(after: int) -> FakeCall:
            opened.append(after)
            return script[len(opened) - 1]

        items = follow(
            open_stream,
            lambda m: (m.event,),
            lambda e: e.sequence,
            after_sequence=6,
            max_backoff=1.0,
            sleep=sleeps.append,
        )
        with self.assertLogs("ocx_client", "WARNING"):
            self.assertEqual([next(items).sequence, next(items).sequence], [7, 8])
        self.assertEqual(sleeps, [0.1, 0.2, 0.4, 0.8, 1.0, 0.1, 0.2])
        self.assertEqual(opened, [6] * 6 + [7, 7])

    def test_a_clean_end_reconnects_and_closing_cancels(self) -> None:
        calls = [FakeCall([event(1)]), FakeCall([event(2), event(3)])]
        opened: list[int] = []

        def open_stream(after: int) -> FakeCall:
            opened.append(after)
            return calls[len(opened) - 1]

        items = follow(
            open_stream, lambda m: (m.event,), lambda e: e.sequence, sleep=lambda _: None
        )
        with self.assertLogs("ocx_client", "WARNING") as logs:
            self.assertEqual([next(items).sequence, next(items).sequence], [1, 2])
        self.assertIn("the server ended the stream", logs.output[0])
        items.close()
        self.assertEqual(opened, [0, 1])
        self.assertTrue(calls[1].cancelled)

    def test_a_with_block_stops_and_cancels(self) -> None:
        call = FakeCall([event(1), event(2)])
        with follow(lambda _after: call, lambda m: (m.event,), lambda e: e.sequence) as items:
            self.assertIsInstance(items, Follower)
            self.assertEqual(next(items).sequence, 1)
        self.assertTrue(items.stopped)
        self.assertTrue(call.cancelled)
        with self.assertRaises(StopIteration):
            next(items)
        self.assertEqual(items.last_sequence, 1)

    def test_stop_cuts_a_reconnect_wait_short(self) -> None:
        opened = threading.Event()

        def open_stream(after: int) -> FakeCall:
            opened.set()
            return FakeCall([], FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down"))

        # A minute between attempts: only stop() can end the wait in time.
        items = follow(open_stream, lambda m: (m.event,), lambda e: e.sequence, initial_backoff=60)
        got: list[Any] = []
        consumer = threading.Thread(target=lambda: got.extend(items))
        with self.assertLogs("ocx_client", "WARNING"):
            consumer.start()
            self.assertTrue(opened.wait(PROMPT))
            items.stop()
            consumer.join(PROMPT)
        self.assertFalse(consumer.is_alive(), "stop() did not end the iteration")
        self.assertEqual(got, [])


class HelpersTest(unittest.TestCase):
    def test_batches(self) -> None:
        self.assertEqual(list(batches(range(7), 3)), [[0, 1, 2], [3, 4, 5], [6]])
        self.assertEqual(list(batches([], 3)), [])
        with self.assertRaises(ValueError):
            list(batches([1], 1001))

    def test_times(self) -> None:
        naive = dt.datetime(2026, 11, 22, 10, 0, 0)
        aware = naive.replace(tzinfo=dt.timezone.utc)
        self.assertEqual(to_timestamp(naive), to_timestamp(aware))
        self.assertEqual(to_timestamp(aware).seconds, int(aware.timestamp()))
        self.assertEqual(to_duration(1.5).ToTimedelta(), dt.timedelta(seconds=1.5))
        self.assertEqual(to_duration(dt.timedelta(minutes=2)).seconds, 120)

    def test_whole_hours_widens_a_period_to_whole_utc_hours(self) -> None:
        at = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)
        start, end = whole_hours(at + dt.timedelta(minutes=30), at + dt.timedelta(hours=2))
        self.assertEqual(start.ToDatetime(tzinfo=dt.timezone.utc), at)
        self.assertEqual(end.ToDatetime(tzinfo=dt.timezone.utc), at + dt.timedelta(hours=2))
        _, end = whole_hours(at, at + dt.timedelta(hours=2, seconds=1))
        self.assertEqual(end.ToDatetime(tzinfo=dt.timezone.utc), at + dt.timedelta(hours=3))

    def test_messages_live_in_the_package_and_pickle(self) -> None:
        summary = pb.ReconciliationSummary(matched_count=3, agreement_rate=0.5)
        self.assertTrue(type(summary).__module__.startswith("ocx_client._gen.ocx.v1."))
        self.assertEqual(pickle.loads(pickle.dumps(summary)), summary)

    def test_keys_must_be_one_line(self) -> None:
        for key in ("", "  ", "two words", "é"):
            with self.assertRaises(ValueError):
                Client("127.0.0.1:1", key)
        Client("127.0.0.1:1", "ocx_id_secret\n").close()

    def test_the_retry_budget_is_a_constructor_argument(self) -> None:
        with Client("127.0.0.1:1", "k") as client:
            self.assertEqual(client.retry_budget, 30.0)
            client.retry_budget = 2.5
            self.assertEqual(client.retry_budget, 2.5)
        with Client("127.0.0.1:1", "k", retry_budget=0) as client:
            self.assertEqual(client.retry_budget, 0)
        with self.assertRaises(ValueError):
            Client("127.0.0.1:1", "k", retry_budget=-1)

    def test_backoff_doubles_to_the_cap_with_jitter_in_the_upper_half(self) -> None:
        plain = backoff_delays(0.1, 1.0, jitter=False)
        self.assertEqual([next(plain) for _ in range(6)], [0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
        low = backoff_delays(0.1, 1.0, random_fraction=lambda: 0.0)
        self.assertEqual([round(next(low), 3) for _ in range(5)], [0.05, 0.1, 0.2, 0.4, 0.5])

    def test_the_package_logs_nowhere_unless_configured_and_ships_its_types(self) -> None:
        package = logging.getLogger("ocx_client")
        self.assertTrue(any(isinstance(h, logging.NullHandler) for h in package.handlers))
        self.assertEqual(logging.getLogger("ocx_client.client").parent, package)
        files = importlib.resources.files("ocx_client")
        self.assertTrue(files.joinpath("py.typed").is_file(), "py.typed is not installed")
        self.assertTrue(files.joinpath("_gen/ocx/v1/platform_pb2.pyi").is_file())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: What the fake does on one upload call (IngestCallRecords or UploadCallDurations).
ACK_ALL = ("ack_all", 0)
REJECT = ("reject", 0)  # INVALID_ARGUMENT on the first batch


def break_after(acks: int) -> tuple[str, int]:
    """Acknowledges ``acks`` batches, reads one more, then fails UNAVAILABLE (a restart)."""
    return ("break_after", acks)


def slow(milliseconds: int) -> tuple[str, int]:
    """Answers the call at once (its headers, as OCX does), then takes ``milliseconds`` over
    each acknowledgement: a server at work."""
    return ("slow", milliseconds)


def end_after(acks: int) -> tuple[str, int]:
    """Acknowledges ``acks`` batches, then ends the call cleanly without reading more."""
    return ("end_after", acks)


class InProcessServer:
    """A grpc server on a loopback port that plays parts of OCX and records what it gets."""

    def __init__(self, port: int = 0, start: bool = True) -> None:
        self.metadata: list[dict[str, str]] = []
        self.watch_calls: list[int] = []
        #: ``(after_sequence, tolerance seconds, tolerance nanos)`` of each reconciliation watch.
        self.reconciliation_calls: list[tuple[int, int, int]] = []
        #: Scripts of the upload calls, in call order (the last one for later calls).
        self.upload_scripts: list[tuple[str, int]] = [ACK_ALL]
        #: ``(call, batch_id, first item id)`` of each upload batch read.
        self.received: list[tuple[int, int, str]] = []
        self.upload_calls = 0
        #: The request id of each ReportCallDurations call, and how many fail UNAVAILABLE.
        self.report_ids: list[str] = []
        self.report_failures = 2
        self.number_gets = 0
        #: Each GetQualitySummary request.
        self.quality_requests: list[pb.GetQualitySummaryRequest] = []
        #: Set on stop(): streams that stay open end.
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        numbers = {
            "GetNumber": grpc.unary_unary_rpc_method_handler(
                self.get_number,
                request_deserializer=pb.GetNumberRequest.FromString,
                response_serializer=pb.GetNumberResponse.SerializeToString,
            ),
            "WatchNumberEvents": grpc.unary_stream_rpc_method_handler(
                self.watch,
                request_deserializer=pb.WatchNumberEventsRequest.FromString,
                response_serializer=pb.WatchNumberEventsResponse.SerializeToString,
            ),
        }
        durations = {
            "ReportCallDurations": grpc.unary_unary_rpc_method_handler(
                self.report,
                request_deserializer=pb.ReportCallDurationsRequest.FromString,
                response_serializer=pb.ReportCallDurationsResponse.SerializeToString,
            ),
            "UploadCallDurations": grpc.stream_stream_rpc_method_handler(
                self.upload_durations,
                request_deserializer=pb.UploadCallDurationsRequest.FromString,
                response_serializer=pb.UploadCallDurationsResponse.SerializeToString,
            ),
        }
        reconciliation = {
            "WatchReconciliation": grpc.unary_stream_rpc_method_handler(
                self.watch_reconciliation,
                request_deserializer=pb.WatchReconciliationRequest.FromString,
                response_serializer=pb.WatchReconciliationResponse.SerializeToString,
            ),
        }
        call_records = {
            "GetQualitySummary": grpc.unary_unary_rpc_method_handler(
                self.quality_summary,
                request_deserializer=pb.GetQualitySummaryRequest.FromString,
                response_serializer=pb.GetQualitySummaryResponse.SerializeToString,
            ),
        }
        platform = {
            "IngestCallRecords": grpc.stream_stream_rpc_method_handler(
                self.ingest,
                request_deserializer=pb.IngestCallRecordsRequest.FromString,
                response_serializer=pb.IngestCallRecordsResponse.SerializeToString,
            ),
        }
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("ocx.v1.NumberService", numbers),
                grpc.method_handlers_generic_handler("ocx.v1.CallDurationService", durations),
                grpc.method_handlers_generic_handler("ocx.v1.PlatformService", platform),
                grpc.method_handlers_generic_handler("ocx.v1.CallRecordService", call_records),
                grpc.method_handlers_generic_handler(
                    "ocx.v1.ReconciliationService", reconciliation
                ),
            )
        )
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        if start:
            self.server.start()

    def record(self, context: grpc.ServicerContext) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def quality_summary(
        self, request: pb.GetQualitySummaryRequest, context: grpc.ServicerContext
    ) -> Any:
        """Keeps the request; answers one row per grouped dimension, echoing the period."""
        self.record(context)
        self.quality_requests.append(request)
        return pb.GetQualitySummaryResponse(
            rows=[
                pb.QualitySummaryRow(bucket_start_time=request.start_time, calls=d)
                for d in request.group_by
            ]
        )

    def get_number(self, request: pb.GetNumberRequest, context: grpc.ServicerContext) -> Any:
        """UNAVAILABLE for the first two calls (a read is retried like a write)."""
        self.record(context)
        self.number_gets += 1
        if request.number == "+restarting" and self.number_gets <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return pb.GetNumberResponse(phone_number=pb.PhoneNumber(number=request.number))

    def watch(self, request: pb.WatchNumberEventsRequest, context: grpc.ServicerContext) -> Any:
        """Replays from the start (ignoring the position half the time, as a careless server
        might), then fails UNAVAILABLE on the first call, as a server shutting down does; later
        calls stay open until the server stops (or 30 s)."""
        self.record(context)
        self.watch_calls.append(request.after_sequence)
        first = len(self.watch_calls) == 1
        for sequence in range(1, 4) if first else range(2, 6):
            yield event(sequence)
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        self.closing.wait(30)  # stays open, like a live stream

    def watch_reconciliation(
        self, request: pb.WatchReconciliationRequest, context: grpc.ServicerContext
    ) -> Any:
        """The first call: an entry alone, a lone report, then UNAVAILABLE. Later calls replay
        from the start (as a careless server might): the report now pairs with the record (the
        lone report's entry REMOVED, the record's MISMATCHED), then stay open."""
        self.record(context)
        self.reconciliation_calls.append(
            (request.after_sequence, request.tolerance.seconds, request.tolerance.nanos)
        )
        record = pb.RECONCILIATION_ENTRY_PLATFORM_RECORD
        report = pb.RECONCILIATION_ENTRY_CARRIER_REPORT
        changes = [
            pb.ReconciliationChange(
                sequence=1, entry=record, state=pb.RECONCILIATION_STATE_MISSING_ON_CARRIER,
                call_id="c1",
            ),
            pb.ReconciliationChange(
                sequence=2, entry=report, state=pb.RECONCILIATION_STATE_MISSING_ON_PLATFORM,
                record_id="r1",
            ),
        ]
        if len(self.reconciliation_calls) == 1:
            yield pb.WatchReconciliationResponse(changes=changes)
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        changes += [
            pb.ReconciliationChange(
                sequence=3, entry=report, state=pb.RECONCILIATION_STATE_REMOVED, record_id="r1"
            ),
            pb.ReconciliationChange(
                sequence=4, entry=record, state=pb.RECONCILIATION_STATE_MISMATCHED,
                call_id="c1", record_id="r1",
            ),
        ]
        yield pb.WatchReconciliationResponse(changes=changes)
        self.closing.wait(30)

    def scripted_upload(
        self,
        requests: Iterator[Any],
        context: grpc.ServicerContext,
        items_of: Any,
        key_of: Any,
        respond: Any,
    ) -> Iterator[Any]:
        self.record(context)
        with self.lock:
            call = self.upload_calls
            self.upload_calls += 1
        kind, acks = self.upload_scripts[min(call, len(self.upload_scripts) - 1)]
        if kind == "end_after" and acks == 0:
            return
        if kind == "slow":
            context.send_initial_metadata(())
        for acked, request in enumerate(requests):
            items = items_of(request)
            self.received.append((call, request.batch_id, key_of(items[0]) if items else ""))
            if kind == "reject":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad batch")
            if kind == "break_after" and acked == acks:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            if kind == "slow":
                self.closing.wait(acks / 1000)
            rejected = [i for i, item in enumerate(items) if "bad" in key_of(item)]
            yield respond(request, items, rejected)
            if kind == "end_after" and acked + 1 == acks:
                return

    def upload_durations(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        def respond(request: Any, items: Any, rejected: list[int]) -> Any:
            results = [
                pb.CallDurationResult(
                    index=i,
                    record_id=d.record_id,
                    status=pb.ITEM_STATUS_REJECTED if i in rejected else pb.ITEM_STATUS_CREATED,
                    reason="duration: negative" if i in rejected else "",
                )
                for i, d in enumerate(items)
            ]
            return pb.UploadCallDurationsResponse(
                batch_id=request.batch_id,
                results=results,
                created_count=len(items) - len(rejected),
                rejected_count=len(rejected),
            )

        yield from self.scripted_upload(
            requests, context, lambda r: r.durations, lambda d: d.record_id, respond
        )

    def ingest(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        def respond(request: Any, items: Any, rejected: list[int]) -> Any:
            results = [
                pb.CallRecordResult(
                    index=i,
                    call_id=r.call_id,
                    status=pb.ITEM_STATUS_REJECTED if i in rejected else pb.ITEM_STATUS_CREATED,
                    reason="stale" if i in rejected else "",
                )
                for i, r in enumerate(items)
            ]
            return pb.IngestCallRecordsResponse(
                batch_id=request.batch_id,
                results=results,
                created_count=len(items) - len(rejected),
                rejected_count=len(rejected),
            )

        yield from self.scripted_upload(
            requests, context, lambda r: r.call_records, lambda c: c.call_id, respond
        )

    def report(self, request: pb.ReportCallDurationsRequest, context: grpc.ServicerContext) -> Any:
        """UNAVAILABLE for the first ``report_failures`` calls, as a restarting server; records
        request ids."""
        self.report_ids.append(request.request_id)
        if len(self.report_ids) <= self.report_failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return pb.ReportCallDurationsResponse(created_count=len(request.durations))

    def stop(self) -> None:
        self.closing.set()
        self.server.stop(None)


def reports(count: int, per_batch: int = 2) -> list[pb.CallDurationReport]:
    """``count`` reports ``r0a, r0b, r1a, r1b, ...`` (two per batch of ``per_batch``=2)."""
    return [
        pb.CallDurationReport(record_id=f"r{i // per_batch}{'ab'[i % per_batch]}")
        for i in range(count)
    ]


class InProcessTest(unittest.TestCase):
    def setUp(self) -> None:
        self.fake = InProcessServer()
        self.client = Client(f"http://127.0.0.1:{self.fake.port}", "ocx_k1_secret")

    def tearDown(self) -> None:
        self.client.close()
        self.fake.stop()

    def test_every_kind_of_call_carries_the_key(self) -> None:
        number = self.client.number_service.GetNumber(pb.GetNumberRequest(number="+442079000000"))
        self.assertEqual(number.phone_number.number, "+442079000000")
        next(iter(self.client.number_service.WatchNumberEvents(pb.WatchNumberEventsRequest())))
        list(self.client.upload_durations([[pb.CallDurationReport(record_id="r1")]]))
        self.client.ingest_call_records([pb.CallRecord(call_id="c1")])
        self.assertEqual(len(self.fake.metadata), 4)
        for metadata in self.fake.metadata:
            self.assertEqual(metadata.get("authorization"), "Bearer ocx_k1_secret")

    def test_a_call_in_an_opentelemetry_span_carries_its_traceparent(self) -> None:
        try:
            from opentelemetry import context, trace
        except ImportError:
            self.skipTest("opentelemetry-api is not installed (the otel extra)")
        caller = trace.SpanContext(
            trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
            span_id=0x00F067AA0BA902B7,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(caller)))
        try:
            self.client.number_service.GetNumber(pb.GetNumberRequest(number="+442079000000"))
        finally:
            context.detach(token)
        self.client.number_service.GetNumber(pb.GetNumberRequest(number="+442079000000"))
        inside, outside = self.fake.metadata
        self.assertEqual(
            inside.get("traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )
        self.assertNotIn("traceparent", outside)

    # Unary calls: retried within the budget.

    def test_a_write_gets_a_request_id_and_is_retried_under_it(self) -> None:
        request = pb.ReportCallDurationsRequest(durations=[pb.CallDurationReport(record_id="r1")])
        with self.assertLogs("ocx_client", "WARNING"):
            answer = self.client.call_duration_service.ReportCallDurations(request)
        self.assertEqual(answer.created_count, 1)
        ids = self.fake.report_ids
        self.assertEqual(len(ids), 3, "two UNAVAILABLE, then the answer")
        self.assertEqual(len(set(ids)), 1, "one request id for every attempt")
        self.assertEqual(uuid.UUID(ids[0]).version, 4)
        self.assertEqual(request.request_id, "", "the caller's message is left alone")

    def test_a_read_is_retried_too(self) -> None:
        with self.assertLogs("ocx_client", "WARNING"):
            answer = self.client.number_service.GetNumber(pb.GetNumberRequest(number="+restarting"))
        self.assertEqual(answer.phone_number.number, "+restarting")
        self.assertEqual(self.fake.number_gets, 3)

    def test_retries_stop_when_the_budget_is_spent(self) -> None:
        self.fake.report_failures = 10**6
        self.client.retry_budget = 0.5
        request = pb.ReportCallDurationsRequest(durations=[pb.CallDurationReport(record_id="r1")])
        started = time.monotonic()
        with (
            self.assertLogs("ocx_client", "WARNING") as logs,
            self.assertRaises(grpc.RpcError) as raised,
        ):
            self.client.call_duration_service.ReportCallDurations(request)
        elapsed = time.monotonic() - started
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertGreaterEqual(len(self.fake.report_ids), 3)
        self.assertLess(elapsed, 0.5 + PROMPT / 2)
        self.assertIn("giving up", logs.output[-1])
        self.assertEqual(len(set(self.fake.report_ids)), 1)

    def test_a_budget_of_zero_tries_once(self) -> None:
        self.client.retry_budget = 0
        request = pb.ReportCallDurationsRequest(durations=[pb.CallDurationReport(record_id="r1")])
        with self.assertRaises(grpc.RpcError):
            self.client.call_duration_service.ReportCallDurations(request)
        self.assertEqual(len(self.fake.report_ids), 1)

    # Followers.

    def test_quality_summary_asks_for_whole_hours_buckets_groups_and_filters(self) -> None:
        at = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)
        rows = self.client.quality_summary(
            at + dt.timedelta(minutes=5),
            at + dt.timedelta(days=1, minutes=5),
            bucket="hour",
            group_by=["trunk", pb.QUALITY_DIMENSION_CODEC],
            trunk_fqdns=["sbc1.example"],
        )
        request = self.fake.quality_requests[-1]
        self.assertEqual(request.start_time.ToDatetime(tzinfo=dt.timezone.utc), at)
        self.assertEqual(
            request.end_time.ToDatetime(tzinfo=dt.timezone.utc),
            at + dt.timedelta(days=1, hours=1),
        )
        self.assertEqual(request.bucket, pb.TIME_BUCKET_HOUR)
        self.assertEqual(
            list(request.group_by),
            [pb.QUALITY_DIMENSION_TRUNK_FQDN, pb.QUALITY_DIMENSION_CODEC],
        )
        self.assertEqual(list(request.filter.trunk_fqdns), ["sbc1.example"])
        self.assertEqual([r.calls for r in rows], [1, 6])
        with self.assertRaises(KeyError):
            self.client.quality_summary(at, at, bucket="week")

    def test_follow_resumes_over_a_real_unavailable(self) -> None:
        events = self.client.follow_number_events(initial_backoff=0.01)
        with self.assertLogs("ocx_client", "WARNING"):
            sequences = [next(events).sequence for _ in range(5)]
        events.close()
        self.assertEqual(sequences, [1, 2, 3, 4, 5])
        self.assertEqual(self.fake.watch_calls, [0, 3])

    def test_follow_reconciliation_resumes_and_a_view_applies_removals(self) -> None:
        view = ReconciliationView()
        with self.assertLogs("ocx_client", "WARNING"):
            changes = self.client.follow_reconciliation(tolerance=2.5, initial_backoff=0.01)
            for _ in range(4):
                view.apply(next(changes))
        changes.close()
        # Resumed after 2, its replay of 1 and 2 dropped; the tolerance sent each time.
        self.assertEqual(self.fake.reconciliation_calls, [(0, 2, 500_000_000), (2, 2, 500_000_000)])
        self.assertEqual(view.last_sequence, 4)
        self.assertEqual([(c.call_id, c.record_id) for c in view.entries()], [("c1", "r1")])
        self.assertEqual(
            [c.state for c in view.discrepancies()], [pb.RECONCILIATION_STATE_MISMATCHED]
        )

    def test_stop_ends_an_iteration_blocked_on_the_server(self) -> None:
        got: list[int] = []
        fifth = threading.Event()

        def consume(events: Follower[pb.NumberEvent]) -> None:
            for number_event in events:
                got.append(number_event.sequence)
                if number_event.sequence == 5:
                    fifth.set()

        with (
            self.assertLogs("ocx_client", "WARNING"),
            self.client.follow_number_events(initial_backoff=0.01) as events,
        ):
            consumer = threading.Thread(target=consume, args=(events,))
            consumer.start()
            # After 5 the server sends nothing: the consumer is blocked in the call.
            self.assertTrue(fifth.wait(PROMPT))
            started = time.monotonic()
            events.stop()
            consumer.join(PROMPT)
        self.assertFalse(consumer.is_alive(), "stop() did not end the iteration")
        self.assertLess(time.monotonic() - started, PROMPT / 2)
        self.assertEqual(got, [1, 2, 3, 4, 5])

    # Uploads: the resumable batch uploader.

    def test_upload_durations_yields_acknowledgements_in_order(self) -> None:
        acks = list(self.client.upload_durations(batches(reports(5), 2)))
        self.assertEqual([a.batch_id for a in acks], [1, 2, 3])
        self.assertEqual([a.created_count for a in acks], [2, 2, 1])

    def test_resends_unacknowledged_batches_after_a_broken_stream(self) -> None:
        self.fake.upload_scripts = [break_after(2), ACK_ALL]
        acked: list[tuple[int, list[str]]] = []
        with self.assertLogs("ocx_client", "WARNING") as logs:
            summary = self.client.upload_call_durations(
                reports(10),
                batch_size=2,
                in_flight=1,
                on_ack=lambda ack, items: acked.append(
                    (ack.batch_id, [d.record_id for d in items])
                ),
            )
        self.assertIn("UNAVAILABLE", logs.output[0])
        self.assertIn("1 unacknowledged batch(es)", logs.output[0])
        # Each batch acknowledged once, in order, under the id it was first sent with.
        self.assertEqual([a[0] for a in acked], [1, 2, 3, 4, 5])
        self.assertEqual([r for a in acked for r in a[1]], [r.record_id for r in reports(10)])
        self.assertEqual(
            (summary.batches, summary.items, summary.created, summary.reconnects), (5, 10, 10, 1)
        )
        self.assertEqual(
            self.fake.received,
            [
                (0, 1, "r0a"),
                (0, 2, "r1a"),
                (0, 3, "r2a"),
                (1, 3, "r2a"),
                (1, 4, "r3a"),
                (1, 5, "r4a"),
            ],
        )

    def test_keeps_several_batches_in_flight_and_resends_them_all(self) -> None:
        self.fake.upload_scripts = [break_after(1), ACK_ALL]
        taken: list[str] = []

        def source() -> Iterator[pb.CallDurationReport]:
            for report in reports(12):
                taken.append(report.record_id)
                yield report

        with self.assertLogs("ocx_client", "WARNING"):
            summary = self.client.upload_call_durations(source(), batch_size=2, in_flight=3)
        self.assertEqual((summary.batches, summary.items, summary.reconnects), (6, 12, 1))
        self.assertEqual(taken, [r.record_id for r in reports(12)], "each item taken once")
        # The second call starts with every batch the first left unacknowledged, in order.
        second = [first for call, _, first in self.fake.received if call == 1]
        self.assertEqual(second, ["r1a", "r2a", "r3a", "r4a", "r5a"])
        ids = [batch_id for call, batch_id, _ in self.fake.received if call == 1]
        self.assertEqual(ids, [2, 3, 4, 5, 6], "batch ids go on increasing across reconnects")

    def test_a_stream_that_ends_early_is_resumed(self) -> None:
        self.fake.upload_scripts = [end_after(1), ACK_ALL]
        with self.assertLogs("ocx_client", "WARNING") as logs:
            acks = list(self.client.upload_durations(batches(reports(6), 2), in_flight=1))
        self.assertIn("ended the upload before acknowledging every batch", logs.output[0])
        self.assertEqual([a.batch_id for a in acks], [1, 2, 3])

    def test_gives_up_when_the_budget_is_spent_without_progress(self) -> None:
        self.fake.upload_scripts = [break_after(0)]
        self.client.retry_budget = 0.5
        started = time.monotonic()
        with (
            self.assertLogs("ocx_client", "WARNING"),
            self.assertRaises(UploadInterrupted) as raised,
        ):
            self.client.upload_call_durations(reports(6), batch_size=2)
        self.assertLess(time.monotonic() - started, 0.5 + PROMPT / 2)
        error = raised.exception
        self.assertIsInstance(error, grpc.RpcError)
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual([b.batch_id for b in error.unacknowledged], [1, 2, 3])
        self.assertEqual(
            [r.record_id for r in error.unacknowledged_items], [r.record_id for r in reports(6)]
        )
        self.assertEqual(error.summary.batches, 0)
        self.assertGreater(self.fake.upload_calls, 1)

    def test_the_budget_does_not_count_a_server_at_work(self) -> None:
        self.fake.upload_scripts = [slow(300)]
        self.client.retry_budget = 0.1
        summary = self.client.upload_call_durations(reports(4), batch_size=2, in_flight=1)
        self.assertEqual((summary.batches, summary.reconnects), (2, 0))

    def test_a_budget_of_zero_does_not_reconnect(self) -> None:
        self.client.retry_budget = 0
        self.assertEqual(self.client.upload_call_durations(reports(4), batch_size=2).batches, 2)
        self.fake.upload_scripts = [break_after(1)]
        with self.assertRaises(UploadInterrupted) as raised:
            self.client.upload_call_durations(reports(4), batch_size=2, in_flight=1)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(raised.exception.summary.batches, 1)
        self.assertEqual([b.batch_id for b in raised.exception.unacknowledged], [2])
        self.assertEqual(self.fake.upload_calls, 2, "the first upload's call, then one")

    def test_does_not_retry_a_rejected_batch(self) -> None:
        self.fake.upload_scripts = [REJECT, ACK_ALL]
        with self.assertRaises(UploadInterrupted) as raised:
            list(self.client.upload_durations([[r] for r in reports(2)]))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIsInstance(raised.exception.error, grpc.RpcError)
        self.assertEqual([b.batch_id for b in raised.exception.unacknowledged][:1], [1])
        self.assertEqual(self.fake.upload_calls, 1, "no second call")

    def test_an_empty_input_uploads_nothing(self) -> None:
        summary = self.client.ingest_call_records(iter(()))
        self.assertEqual((summary.batches, summary.items, summary.reconnects), (0, 0, 0))
        self.assertEqual(self.fake.upload_calls, 0, "no call opened for nothing")

    def test_ingest_resumes_and_reports_rejections(self) -> None:
        self.fake.upload_scripts = [break_after(1), ACK_ALL]
        records = [pb.CallRecord(call_id=f"c{i}") for i in range(7)]
        records[4].call_id = "c4-bad"
        acks: list[pb.IngestCallRecordsResponse] = []
        with self.assertLogs("ocx_client", "WARNING"):
            summary = self.client.ingest_call_records(
                records, batch_size=3, on_ack=lambda ack, _: acks.append(ack)
            )
        self.assertEqual([a.batch_id for a in acks], [1, 2, 3])
        self.assertEqual(
            (summary.batches, summary.items, summary.created, summary.rejected), (3, 7, 6, 1)
        )
        self.assertEqual(summary.created + summary.rejected, len(records))
        [rejection] = summary.rejections
        self.assertEqual(
            (rejection.item.call_id, rejection.batch_id, rejection.index), ("c4-bad", 2, 1)
        )
        self.assertEqual(rejection.reason, "stale")
        first_ids = [(call, batch_id, first) for call, batch_id, first in self.fake.received]
        self.assertIn((1, 2, "c3"), first_ids, "the unacknowledged batch 2 was sent again")


class WaitForReadyTest(unittest.TestCase):
    def test_an_upload_waits_for_a_server_that_is_not_up_yet(self) -> None:
        port = free_port()
        client = Client(f"127.0.0.1:{port}", "k", retry_budget=PROMPT)
        second_batch = threading.Event()
        outcome: list[Any] = []

        def source() -> Iterator[list[pb.CallDurationReport]]:
            yield reports(2)
            # The stream is open (batch 1 is in it) while nothing listens on the port yet.
            second_batch.set()
            yield reports(4)[2:]

        def upload() -> None:
            try:
                outcome.append(list(client.upload_durations(source(), in_flight=2)))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                outcome.append(error)

        uploader = threading.Thread(target=upload)
        uploader.start()
        fake = None
        try:
            self.assertTrue(second_batch.wait(PROMPT))
            fake = InProcessServer(port=port)
            uploader.join(PROMPT)
            self.assertFalse(uploader.is_alive())
            [acks] = outcome
            self.assertEqual([a.batch_id for a in acks], [1, 2])
            self.assertEqual(fake.upload_calls, 1, "one call: it waited instead of failing")
        finally:
            client.close()
            if fake is not None:
                fake.stop()


if __name__ == "__main__":
    unittest.main()
