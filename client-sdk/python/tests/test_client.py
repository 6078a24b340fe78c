"""Unit tests of the helpers, against fakes and an in-process grpc server (no OCX server).

Run against the installed package: ``python -m unittest discover -s client-sdk/python/tests``.
"""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import unittest
import uuid
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from ocx_client import (
    Client,
    UploadInterrupted,
    batches,
    follow,
    paginate,
    pb,
    to_duration,
    to_timestamp,
)


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

    def test_messages_live_in_the_package_and_pickle(self) -> None:
        summary = pb.ReconciliationSummary(matched_count=3, agreement_rate=0.5)
        self.assertTrue(type(summary).__module__.startswith("ocx_client._gen.ocx.v1."))
        self.assertEqual(pickle.loads(pickle.dumps(summary)), summary)

    def test_keys_must_be_one_line(self) -> None:
        for key in ("", "  ", "two words", "é"):
            with self.assertRaises(ValueError):
                Client("127.0.0.1:1", key)
        Client("127.0.0.1:1", "ocx_id_secret\n").close()


class InProcessServer:
    """A grpc server on a loopback port that plays parts of OCX and records metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.watch_calls: list[int] = []
        self.fail_upload_after: int | None = None
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
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
        self.report_ids: list[str] = []
        uploads = {
            "ReportCallDurations": grpc.unary_unary_rpc_method_handler(
                self.report,
                request_deserializer=pb.ReportCallDurationsRequest.FromString,
                response_serializer=pb.ReportCallDurationsResponse.SerializeToString,
            ),
            "UploadCallDurations": grpc.stream_stream_rpc_method_handler(
                self.upload,
                request_deserializer=pb.UploadCallDurationsRequest.FromString,
                response_serializer=pb.UploadCallDurationsResponse.SerializeToString,
            )
        }
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("ocx.v1.NumberService", handlers),
                grpc.method_handlers_generic_handler("ocx.v1.CallDurationService", uploads),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def record(self, context: grpc.ServicerContext) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def get_number(self, request: pb.GetNumberRequest, context: grpc.ServicerContext) -> Any:
        self.record(context)
        return pb.GetNumberResponse(phone_number=pb.PhoneNumber(number=request.number))

    def watch(self, request: pb.WatchNumberEventsRequest, context: grpc.ServicerContext) -> Any:
        """Replays from the start (ignoring the position half the time, as a careless server
        might), then fails UNAVAILABLE on the first call, as a server shutting down does."""
        self.record(context)
        self.watch_calls.append(request.after_sequence)
        first = len(self.watch_calls) == 1
        for sequence in range(1, 4) if first else range(2, 6):
            yield event(sequence)
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        threading.Event().wait(0.5)  # stays open, like a live stream

    def upload(
        self, requests: Iterator[pb.UploadCallDurationsRequest], context: grpc.ServicerContext
    ) -> Any:
        self.record(context)
        for count, request in enumerate(requests, start=1):
            if self.fail_upload_after is not None and count > self.fail_upload_after:
                context.abort(grpc.StatusCode.UNAVAILABLE, "storage cannot write now")
            results = [
                pb.CallDurationResult(index=i, record_id=d.record_id, status=pb.ITEM_STATUS_CREATED)
                for i, d in enumerate(request.durations)
            ]
            yield pb.UploadCallDurationsResponse(
                batch_id=request.batch_id, results=results, created_count=len(results)
            )

    def report(self, request: pb.ReportCallDurationsRequest, context: grpc.ServicerContext) -> Any:
        """UNAVAILABLE for the first two calls, as a restarting server; records request ids."""
        self.report_ids.append(request.request_id)
        if len(self.report_ids) <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return pb.ReportCallDurationsResponse(created_count=len(request.durations))

    def stop(self) -> None:
        self.server.stop(None)


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
        self.assertEqual(len(self.fake.metadata), 3)
        for metadata in self.fake.metadata:
            self.assertEqual(metadata.get("authorization"), "Bearer ocx_k1_secret")

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

    def test_follow_resumes_over_a_real_unavailable(self) -> None:
        events = self.client.follow_number_events(initial_backoff=0.01)
        with self.assertLogs("ocx_client", "WARNING"):
            sequences = [next(events).sequence for _ in range(5)]
        events.close()
        self.assertEqual(sequences, [1, 2, 3, 4, 5])
        self.assertEqual(self.fake.watch_calls, [0, 3])

    def test_upload_yields_acknowledgements_in_order(self) -> None:
        reports = [pb.CallDurationReport(record_id=f"r{i}") for i in range(5)]
        acks = list(self.client.upload_durations(batches(reports, 2)))
        self.assertEqual([a.batch_id for a in acks], [1, 2, 3])
        self.assertEqual([a.created_count for a in acks], [2, 2, 1])

    def test_an_interrupted_upload_hands_back_the_unacknowledged_batches(self) -> None:
        self.fake.fail_upload_after = 1
        reports = [[pb.CallDurationReport(record_id=f"r{i}")] for i in range(2)]
        acks = []
        with self.assertRaises(UploadInterrupted) as raised:
            for ack in self.client.upload_durations(reports):
                acks.append(ack)
        self.assertEqual([a.batch_id for a in acks], [1])
        self.assertEqual(raised.exception.error.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual([b.batch_id for b in raised.exception.unacknowledged], [2])


if __name__ == "__main__":
    unittest.main()
