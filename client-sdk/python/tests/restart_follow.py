#!/usr/bin/env python3
"""The follower against a real server that restarts: the two halves ``scripts/python-check.sh``
runs around stopping and starting ocx-server; and a follower stopped from another thread.

``follow --after A --until U``: follows number events after A, printing ``<sequence> <type>``
per event, and exits 0 at sequence U; exits 1 if a sequence repeats or one is skipped (the
stream is gapless: a reconnect must neither replay nor lose an event). Reconnects are logged
on stderr by ``ocx_client`` (``... reconnecting after sequence N``).

``assign --number N``: as the platform, assigns the demo number N (to its own tenant), which
appends one number event.

``stop``: as the carrier, follows the call-record feed in a thread until it has read the
feed's last record (so the thread is blocked waiting for more), calls the follower's ``stop()``
from the main thread, and exits 0 if the iteration ended within 5 s without an error.

All read OCX_ENDPOINT, OCX_CARRIER_KEY_FILE and OCX_PLATFORM_KEY_FILE.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ocx_client import Client, pb


def key(variable: str) -> str:
    return Path(os.environ[variable]).read_text().strip()


def follow(after: int, until: int) -> int:
    with Client(os.environ["OCX_ENDPOINT"], key("OCX_CARRIER_KEY_FILE")) as client:
        expected = after + 1
        for event in client.follow_number_events(after_sequence=after, initial_backoff=0.2):
            if event.sequence != expected:
                print(f"sequence {event.sequence}, expected {expected}", file=sys.stderr)
                return 1
            print(event.sequence, pb.NumberEventType.Name(event.type), flush=True)
            if event.sequence >= until:
                return 0
            expected += 1
    return 1


def assign(number: str) -> int:
    with Client(os.environ["OCX_ENDPOINT"], key("OCX_PLATFORM_KEY_FILE")) as platform:
        carrier_id = "demo-carrier"
        current = platform.number_service.GetNumber(
            pb.GetNumberRequest(carrier_id=carrier_id, number=number)
        ).phone_number
        platform.platform_service.AssignNumber(
            pb.AssignNumberRequest(
                number=number,
                tenant_id=current.tenant_id,
                assignment_type=pb.ASSIGNMENT_TYPE_USER,
                sip_uri="sip:python-check@contoso.example",
            )
        )
    return 0


def stop() -> int:
    with Client(os.environ["OCX_ENDPOINT"], key("OCX_CARRIER_KEY_FILE")) as client:
        last = max(r.feed_sequence for r in client.list_call_records(page_size=1000))
        reached = threading.Event()
        outcome: list[Any] = []
        records = client.follow_call_records(after_sequence=0)

        def consume() -> None:
            count = 0
            try:
                for record in records:
                    count += 1
                    if record.feed_sequence >= last:
                        reached.set()
                outcome.append(count)
            except BaseException as error:  # noqa: BLE001 - reported below
                outcome.append(error)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        if not reached.wait(30):
            print(f"the follower did not reach feed sequence {last} in 30 s", file=sys.stderr)
            return 1
        started = time.monotonic()
        records.stop()
        consumer.join(5)
        elapsed = time.monotonic() - started
        if consumer.is_alive():
            print("stop() did not end the follower's iteration within 5 s", file=sys.stderr)
            return 1
        if not outcome or not isinstance(outcome[0], int):
            print(f"the follower's iteration failed: {outcome!r}", file=sys.stderr)
            return 1
        print(
            f"follow_call_records: read the feed to sequence {last} ({outcome[0]} records), "
            f"then stop() from another thread ended the iteration in {elapsed:.2f} s"
        )
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    follow_parser = commands.add_parser("follow")
    follow_parser.add_argument("--after", type=int, required=True)
    follow_parser.add_argument("--until", type=int, required=True)
    assign_parser = commands.add_parser("assign")
    assign_parser.add_argument("--number", required=True)
    commands.add_parser("stop")
    args = parser.parse_args()
    if args.command == "follow":
        return follow(args.after, args.until)
    if args.command == "stop":
        return stop()
    return assign(args.number)


if __name__ == "__main__":
    sys.exit(main())
