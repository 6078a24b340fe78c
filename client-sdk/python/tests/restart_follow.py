#!/usr/bin/env python3
"""The follower against a real server that restarts: the two halves ``scripts/python-check.sh``
runs around stopping and starting ocx-server.

``follow --after A --until U``: follows number events after A, printing ``<sequence> <type>``
per event, and exits 0 at sequence U; exits 1 if a sequence repeats or one is skipped (the
stream is gapless: a reconnect must neither replay nor lose an event). Reconnects are logged
on stderr by ``ocx_client`` (``... reconnecting after sequence N``).

``assign --number N``: as the platform, assigns the demo number N (to its own tenant), which
appends one number event.

Both read OCX_ENDPOINT, OCX_CARRIER_KEY_FILE and OCX_PLATFORM_KEY_FILE.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

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


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    follow_parser = commands.add_parser("follow")
    follow_parser.add_argument("--after", type=int, required=True)
    follow_parser.add_argument("--until", type=int, required=True)
    assign_parser = commands.add_parser("assign")
    assign_parser.add_argument("--number", required=True)
    args = parser.parse_args()
    if args.command == "follow":
        return follow(args.after, args.until)
    return assign(args.number)


if __name__ == "__main__":
    sys.exit(main())
