#!/usr/bin/env python3
"""The upload helpers against a real server that restarts in the middle of their uploads: what
``scripts/python-check.sh`` runs around stopping and starting ocx-server.

``run --count N --batch-size B --pause-at K --go-file F`` runs, side by side, the ingest helper
(``Client.ingest_call_records``, platform key) over N call records and the duration uploader
(``Client.upload_call_durations``, the demo carrier's key) over N duration reports, B per batch.
Each one's input is a generator that, about to hand over item K + 1 (in the middle of a batch),
prints ``<helper>: paused after K items`` and waits until the file F exists: the check script
stops the server meanwhile, creates F, and starts the server again once both helpers have
logged their reconnect (``... reconnecting in ...``, on stderr through ``logging``). So a
restart always falls in the middle of both uploads, with the batch that was being filled
sent to a stream the server had closed.

Then it checks, exiting 1 on the first failure:

- each helper acknowledged every batch once, in order (ids 1, 2, ...), and the items
  acknowledged are exactly the input, in order: nothing lost, skipped or repeated;
- its summary adds up: N items, created + unchanged == N, nothing revised, corrected or
  rejected, at least one reconnect;
- listed back from the server (ListCallRecords / ListCallDurations over the run's window), the
  run's records and reports are exactly the N sent, each stored once.

Reads OCX_ENDPOINT, OCX_CARRIER_KEY_FILE and OCX_PLATFORM_KEY_FILE. Gives up after
--timeout seconds (default 120) rather than hang.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import grpc

from ocx_client import Client, UploadSummary, pb

T = TypeVar("T")

#: The demo carrier, one of its numbers and the tenant that number is provisioned to.
CARRIER_ID = "demo-carrier"
NUMBER = "+442079000001"
TENANT_ID = "0b6c4b3e-5a4e-4f4e-9d7c-2f1c3a9b8e11"
CALLER = "+14255550100"
#: How long the test waits for the go file before failing.
GO_WAIT_SECONDS = 60.0


#: One line at a time on stdout: the two helpers' threads print side by side.
_print_lock = threading.Lock()


def say(line: str) -> None:
    """Prints ``line`` whole, at once (the check script reads it while the test runs)."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class CheckFailed(Exception):
    """The helpers or the server did something the contract does not allow."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def key(variable: str) -> str:
    return Path(os.environ[variable]).read_text().strip()


def gated(items: list[T], pause_at: int, go_file: Path, name: str) -> Iterator[T]:
    """Yields ``items``, pausing before item ``pause_at`` + 1 until ``go_file`` exists."""
    for position, item in enumerate(items):
        if position == pause_at:
            say(f"{name}: paused after {pause_at} items")
            deadline = time.monotonic() + GO_WAIT_SECONDS
            while not go_file.exists():
                if time.monotonic() > deadline:
                    raise CheckFailed(f"{name}: {go_file} did not appear in {GO_WAIT_SECONDS} s")
                time.sleep(0.02)  # polling a file the check script creates
        yield item


class Run:
    """One helper's upload: its input, what it acknowledged, its summary or failure."""

    def __init__(self, name: str, items: list[Any], item_id: Callable[[Any], str]) -> None:
        self.name = name
        self.items = items
        self.item_id = item_id
        self.acked_batches: list[int] = []
        self.acked_ids: list[str] = []
        self.summary: UploadSummary[Any] | None = None
        self.failure: BaseException | None = None

    def on_ack(self, ack: Any, batch: list[Any]) -> None:
        self.acked_batches.append(ack.batch_id)
        self.acked_ids.extend(self.item_id(item) for item in batch)

    def verify(self, batch_size: int, stored_ids: list[str], unit: str) -> str:
        """Checks the acknowledgements, the summary and what the server holds; returns a line
        saying what was checked."""
        if self.failure is not None:
            raise CheckFailed(f"{self.name}: {type(self.failure).__name__}: {self.failure}")
        s = self.summary
        check(s is not None, f"{self.name}: no summary")
        assert s is not None
        count = len(self.items)
        expected_batches = -(-count // batch_size)
        check(
            self.acked_batches == list(range(1, expected_batches + 1)),
            f"{self.name}: batches acknowledged {self.acked_batches}, "
            f"expected 1..{expected_batches} once each, in order",
        )
        sent = [self.item_id(item) for item in self.items]
        check(
            self.acked_ids == sent,
            f"{self.name}: the acknowledged items are not the input in order "
            f"({len(self.acked_ids)} acknowledged of {count})",
        )
        check(
            s.batches == expected_batches and s.items == count,
            f"{self.name}: summary of {s.batches} batches / {s.items} items, expected "
            f"{expected_batches} / {count}",
        )
        check(
            s.created + s.unchanged == count
            and s.rejected == s.revised == s.corrected == 0
            and not s.rejections,
            f"{self.name}: created {s.created} + unchanged {s.unchanged} != {count}, or "
            f"revised {s.revised} / corrected {s.corrected} / rejected {s.rejected} "
            f"({[r.reason for r in s.rejections][:3]})",
        )
        check(s.reconnects >= 1, f"{self.name}: no reconnect: the restart was not in the upload")
        check(
            len(stored_ids) == len(set(stored_ids)),
            f"{self.name}: the server lists {len(stored_ids) - len(set(stored_ids))} {unit} twice",
        )
        check(
            sorted(stored_ids) == sorted(sent),
            f"{self.name}: the server holds {len(stored_ids)} of the run's {unit}, expected "
            f"exactly the {count} sent ({len(set(sent) - set(stored_ids))} missing)",
        )
        return (
            f"{self.name}: {count} {unit} in {s.batches} batches acknowledged once each, in "
            f"order, across {s.reconnects} reconnect(s): {s.created} created + {s.unchanged} "
            f"unchanged, 0 rejected; listed back: {len(stored_ids)}, each once"
        )


def upload(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:12]
    prefix = f"py-restart-{run_id}-"
    go_file = Path(args.go_file)
    # A window of the last hour: the server refuses calls that start in the future.
    end = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=1)
    start = end - dt.timedelta(hours=1)
    step = (end - start) / args.count
    times = [start + step * i for i in range(args.count)]
    records = [
        pb.CallRecord(
            call_id=f"{prefix}{i:05d}",
            correlation_id=f"{prefix}{i:05d}@sbc.python-check.example",
            version=1,
            tenant_id=TENANT_ID,
            call_type=pb.CALL_TYPE_USER_IN,
            direction=pb.CALL_DIRECTION_INBOUND,
            caller_number=CALLER,
            callee_number=NUMBER,
            start_time=t,
            end_time=t + dt.timedelta(seconds=61),
            duration=dt.timedelta(seconds=61),
            successful=True,
        )
        for i, t in enumerate(times)
    ]
    reports = [
        pb.CallDurationReport(
            record_id=r.call_id,
            call_id=r.call_id,
            correlation_id=r.correlation_id,
            caller_number=r.caller_number,
            callee_number=r.callee_number,
            start_time=r.start_time,
            duration=r.duration,
        )
        for r in records
    ]
    ingest = Run("ingest_call_records", records, lambda r: r.call_id)
    durations = Run("upload_call_durations", reports, lambda r: r.record_id)
    endpoint = os.environ["OCX_ENDPOINT"]
    with (
        Client(endpoint, key("OCX_PLATFORM_KEY_FILE")) as platform,
        Client(endpoint, key("OCX_CARRIER_KEY_FILE")) as carrier,
    ):
        # Both channels connected before the helpers start, so that each helper's first stream
        # reaches the server before the check script can kill it. A stream still waiting for
        # the channel (wait_for_ready) would wait for a server the script restarts only after
        # seeing the helpers' reconnects: neither would move.
        for client in (platform, carrier):
            grpc.channel_ready_future(client.channel).result(timeout=30)

        def run_ingest() -> None:
            try:
                ingest.summary = platform.ingest_call_records(
                    gated(records, args.pause_at, go_file, ingest.name),
                    batch_size=args.batch_size,
                    on_ack=ingest.on_ack,
                )
            except BaseException as error:  # noqa: BLE001 - reported by verify() too
                ingest.failure = error
                say(f"{ingest.name}: FAILED: {type(error).__name__}: {error}")

        def run_durations() -> None:
            try:
                durations.summary = carrier.upload_call_durations(
                    gated(reports, args.pause_at, go_file, durations.name),
                    batch_size=args.batch_size,
                    on_ack=durations.on_ack,
                )
            except BaseException as error:  # noqa: BLE001 - reported by verify() too
                durations.failure = error
                say(f"{durations.name}: FAILED: {type(error).__name__}: {error}")

        threads = [
            threading.Thread(target=run_ingest, name="ingest", daemon=True),
            threading.Thread(target=run_durations, name="durations", daemon=True),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        stored_records = [
            r.call_id
            for r in platform.list_call_records(
                carrier_id=CARRIER_ID,
                start_time_from=start,
                start_time_to=end,
                number=NUMBER,
                page_size=1000,
            )
            if r.call_id.startswith(prefix)
        ]
        stored_reports = [
            d.record_id
            for d in carrier.list_call_durations(
                start_time_from=start, start_time_to=end, page_size=1000
            )
            if d.record_id.startswith(prefix)
        ]
    say(ingest.verify(args.batch_size, stored_records, "records"))
    say(durations.verify(args.batch_size, stored_reports, "reports"))
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("--count", type=int, default=1200)
    run.add_argument("--batch-size", type=int, default=100)
    run.add_argument("--pause-at", type=int, default=450)
    run.add_argument("--go-file", required=True)
    run.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()
    if not 0 < args.pause_at < args.count or args.pause_at % args.batch_size == 0:
        parser.error("--pause-at must fall inside a batch of the upload, not on its edge")

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise CheckFailed(f"took longer than {args.timeout} s")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(args.timeout)
    try:
        return upload(args)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
