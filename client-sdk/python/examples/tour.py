#!/usr/bin/env python3
"""A tour of OCX through the Python SDK, checking what every step gets back.

Against a running server (the demo: ``cargo run -p ocx-server -- --demo``), as the demo
carrier and, when its key is given, as the platform:

1. numbers: every number, page after page (small pages on purpose), and one by ``GetNumber``;
2. number events: the first N of ``WatchNumberEvents``, then resumed after the last one;
3. call records: one page, one record by id, and the first records of the live feed;
4. durations: reports built from call records the carrier has not reported yet, uploaded over
   the ``UploadCallDurations`` stream batch by batch (``upload_durations``), then uploaded
   again with the resumable uploader (``upload_call_durations``: all must come back
   unchanged);
5. reconciliation: the summary's buckets add up, the upload moved exactly its calls from
   "missing on the carrier" to "matched", a wider tolerance only moves mismatches to matches,
   the discrepancies listed are the summary's, the platform sees the same summary, and the
   live feed (follow_reconciliation) starts with keyed entries in increasing sequence;
6. quality: the figures per trunk over the whole period (``quality_summary``) count every call
   once, add up (answered and failed, good, poor and unclassified), and their rates and
   percentiles are in range; by day they add up to the same.

Prints one line per step; exits 1 with the failed check's message if anything is off, so it
doubles as a smoke test (``scripts/python-check.sh`` runs it against a fresh demo server).

Usage: tour.py [--endpoint URL] [--carrier-key-file F] [--platform-key-file F] [--ca PEM]
               [--events N] [--step-timeout S]
(defaults from OCX_ENDPOINT, OCX_CARRIER_KEY_FILE, OCX_PLATFORM_KEY_FILE; without a platform
key the platform's checks are skipped).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import grpc

from ocx_client import Client, Follower, ReconciliationView, batches, paginate, pb, to_timestamp

T = TypeVar("T")

#: Longest any one step may take (--step-timeout): a stream that stops delivering must not
#: hang the tour.
STEP_TIMEOUT_SECONDS = 60
#: Record ids of the tour's own reports: rerunning the tour sends the same ones (unchanged).
RECORD_ID_PREFIX = "py-tour-"
#: How many reports the tour uploads, and how many go in one batch.
REPORTS = 6
BATCH_SIZE = 3
#: The state a number is in after each kind of event (UPDATED keeps the state it had).
EVENT_STATES = {
    pb.NUMBER_EVENT_TYPE_PROVISIONED: pb.NUMBER_STATE_PROVISIONED,
    pb.NUMBER_EVENT_TYPE_ASSIGNED: pb.NUMBER_STATE_ASSIGNED,
    pb.NUMBER_EVENT_TYPE_UNASSIGNED: pb.NUMBER_STATE_PROVISIONED,
    pb.NUMBER_EVENT_TYPE_RELEASED: pb.NUMBER_STATE_RELEASED,
}
#: The kinds of discrepancy, in the summary's order of buckets.
DISCREPANCY_KINDS = (
    pb.DISCREPANCY_KIND_MISMATCHED,
    pb.DISCREPANCY_KIND_MISSING_ON_CARRIER,
    pb.DISCREPANCY_KIND_MISSING_ON_PLATFORM,
)


class CheckFailed(Exception):
    """A step got something other than what the contract promises."""


def check(condition: bool, message: str) -> None:
    """Raises ``CheckFailed(message)`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


def step(name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Runs a step under a time limit and names it in any failure."""

    def wrap(function: Callable[..., T]) -> Callable[..., T]:
        def run(*args: Any, **kwargs: Any) -> T:
            def expired(_signum: int, _frame: FrameType | None) -> None:
                raise CheckFailed(f"took longer than {STEP_TIMEOUT_SECONDS} s")

            previous = signal.signal(signal.SIGALRM, expired)
            signal.alarm(STEP_TIMEOUT_SECONDS)
            try:
                return function(*args, **kwargs)
            except CheckFailed as failure:
                raise CheckFailed(f"{name}: {failure}") from None
            except grpc.RpcError as error:
                raise CheckFailed(f"{name}: {error.code().name}: {error.details()}") from None
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)

        return run

    return wrap


def take(follower: Follower[T], count: int) -> list[T]:
    """The first ``count`` items of a follower, then stops it (which cancels its stream)."""
    with follower:
        return list(itertools.islice(follower, count))


def read_key(path: str | None, what: str) -> str:
    """The key in the file at ``path`` (``what`` names it in messages)."""
    check(
        bool(path), f"no {what} key file: pass --{what}-key-file or set OCX_{what.upper()}_KEY_FILE"
    )
    try:
        return Path(path).read_text().strip()  # type: ignore[arg-type]
    except OSError as error:
        raise CheckFailed(f"cannot read the {what} key file: {error}") from None


@step("numbers")
def tour_numbers(carrier: Client) -> str:
    """Lists every number in pages of 7 and reads one; returns the carrier's id."""
    pages = 0
    list_numbers = carrier.number_service.ListNumbers

    def counted(request: pb.ListNumbersRequest) -> pb.ListNumbersResponse:
        nonlocal pages
        pages += 1
        return list_numbers(request)

    numbers = list(paginate(counted, pb.ListNumbersRequest(page_size=7), "phone_numbers"))
    check(len(numbers) > 0, "no numbers came back")
    names = [n.number for n in numbers]
    check(names == sorted(names), "numbers are not ordered by number")
    check(len(set(names)) == len(names), "a number came back twice across pages")
    carrier_ids = {n.carrier_id for n in numbers}
    check(len(carrier_ids) == 1, f"numbers of several carriers: {sorted(carrier_ids)}")
    assigned = [n for n in numbers if n.state == pb.NUMBER_STATE_ASSIGNED]
    for n in numbers:
        check(
            bool(n.sip_uri) == (n.state == pb.NUMBER_STATE_ASSIGNED),
            f"{n.number}: sip_uri {'set' if n.sip_uri else 'missing'} "
            f"while {pb.NumberState.Name(n.state)}",
        )
    filtered = list(carrier.list_numbers(state=pb.NUMBER_STATE_ASSIGNED))
    check(
        [n.number for n in filtered] == [n.number for n in assigned],
        "the ASSIGNED filter does not give the assigned numbers",
    )
    one = carrier.number_service.GetNumber(pb.GetNumberRequest(number=numbers[0].number))
    check(one.phone_number == numbers[0], f"GetNumber({numbers[0].number}) differs from the list")
    print(
        f"numbers: {len(numbers)} over {pages} pages of 7, {len(assigned)} assigned; "
        f"GetNumber {numbers[0].number} matches"
    )
    return carrier_ids.pop()


@step("number events")
def tour_events(carrier: Client, carrier_id: str, count: int) -> None:
    """Reads the first ``count`` number events, then resumes after the last one."""
    check(count >= 1, "--events must be at least 1")
    first = take(carrier.follow_number_events(after_sequence=0), count)
    check(len(first) == count, f"the stream ended after {len(first)} events")
    sequences = [e.sequence for e in first]
    check(sequences[0] >= 1, f"the first sequence is {sequences[0]}, not at least 1")
    for a, b in zip(sequences, sequences[1:], strict=False):
        check(b > a, f"sequence {b} after {a} does not increase")
    for event in first:
        check(event.type != pb.NUMBER_EVENT_TYPE_UNSPECIFIED, f"event {event.sequence} has no type")
        check(
            event.phone_number.carrier_id == carrier_id,
            f"event {event.sequence} is for carrier {event.phone_number.carrier_id!r}",
        )
        state = EVENT_STATES.get(event.type)
        check(
            state is None or event.phone_number.state == state,
            f"event {event.sequence} ({pb.NumberEventType.Name(event.type)}) left the number "
            f"{pb.NumberState.Name(event.phone_number.state)}",
        )
        check(
            bool(event.phone_number.sip_uri)
            == (event.phone_number.state == pb.NUMBER_STATE_ASSIGNED),
            f"event {event.sequence}: sip_uri does not match the number's state",
        )
    # Resume where we stopped, as a consumer restarting from its saved position would.
    resumed = take(carrier.follow_number_events(after_sequence=sequences[-1]), 1)
    check(len(resumed) == 1, "resuming the stream gave no event")
    check(
        resumed[0].sequence > sequences[-1],
        f"resumed after {sequences[-1]} but got {resumed[0].sequence}",
    )
    kinds = sorted(
        {pb.NumberEventType.Name(e.type).removeprefix("NUMBER_EVENT_TYPE_") for e in first}
    )
    print(
        f"number events: {count} in increasing order ({sequences[0]}..{sequences[-1]}, "
        f"{'/'.join(kinds)}); resumed after {sequences[-1]} at {resumed[0].sequence}"
    )


@step("call records")
def tour_call_records(carrier: Client, start: dt.datetime, end: dt.datetime) -> None:
    """Reads a page of call records, the last of them by id, and the start of the feed."""
    page = carrier.call_record_service.ListCallRecords(
        pb.ListCallRecordsRequest(start_time_from=start, start_time_to=end, page_size=25)
    )
    records = list(page.call_records)
    check(
        len(records) > 0, f"no call records between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M}"
    )
    times = [r.start_time.ToDatetime() for r in records]
    check(times == sorted(times), "the page is not ordered by start time")
    for r in records:
        check(bool(r.call_id), "a record without call_id")
        check(r.quality != pb.QUALITY_VERDICT_UNSPECIFIED, f"{r.call_id}: no quality verdict")
        check(r.feed_sequence > 0, f"{r.call_id}: no feed_sequence")
    one = carrier.call_record_service.GetCallRecord(
        pb.GetCallRecordRequest(call_id=records[-1].call_id)
    ).call_record
    check(
        one == records[-1], f"GetCallRecord({records[-1].call_id}) differs from the listed record"
    )
    feed = take(carrier.follow_call_records(after_sequence=0), 5)
    check(len(feed) == 5, f"the feed ended after {len(feed)} records")
    sequences = [r.feed_sequence for r in feed]
    for a, b in zip(sequences, sequences[1:], strict=False):
        check(b > a, f"feed_sequence {b} after {a} does not increase")
    poor = sum(r.quality == pb.QUALITY_VERDICT_POOR for r in records)
    print(
        f"call records: a page of {len(records)} ({poor} poor, next page "
        f"{'yes' if page.next_page_token else 'no'}); GetCallRecord {one.call_id} matches; "
        f"feed {sequences[0]}..{sequences[-1]}"
    )


def unreported_records(
    carrier: Client, start: dt.datetime, end: dt.datetime
) -> list[pb.CallRecord]:
    """Call records of the period that no report (other than the tour's own) matches."""
    call_ids: set[str] = set()
    correlation_ids: set[str] = set()
    # Reports are matched to records across the period's edges: read a margin around it.
    margin = dt.timedelta(days=1)
    for report in carrier.list_call_durations(
        start_time_from=start - margin, start_time_to=end + margin, page_size=1000
    ):
        if report.record_id.startswith(RECORD_ID_PREFIX):
            continue
        call_ids.add(report.call_id)
        correlation_ids.add(report.correlation_id)
    return [
        r
        for r in carrier.list_call_records(start_time_from=start, start_time_to=end, page_size=1000)
        if r.call_id not in call_ids and r.correlation_id not in correlation_ids
    ]


def report_for(record: pb.CallRecord) -> pb.CallDurationReport:
    """The report a carrier that measured exactly the platform's duration would send."""
    duration = record.duration
    if not record.HasField("duration"):
        duration.FromTimedelta(record.end_time.ToDatetime() - record.start_time.ToDatetime())
    return pb.CallDurationReport(
        record_id=f"{RECORD_ID_PREFIX}{record.call_id}"[:128],
        call_id=record.call_id,
        correlation_id=record.correlation_id,
        caller_number=record.caller_number,
        callee_number=record.callee_number,
        start_time=record.start_time,
        duration=duration,
    )


def check_buckets(summary: pb.ReconciliationSummary, label: str) -> None:
    """Checks that the summary's buckets add up to both sides' counts, and its rate."""
    s = summary
    check(
        s.matched_count + s.mismatched_count + s.missing_on_carrier_count == s.platform_count,
        f"{label}: matched {s.matched_count} + mismatched {s.mismatched_count} + missing on "
        f"carrier {s.missing_on_carrier_count} != platform_count {s.platform_count}",
    )
    check(
        s.matched_count + s.mismatched_count + s.missing_on_platform_count == s.carrier_count,
        f"{label}: matched {s.matched_count} + mismatched {s.mismatched_count} + missing on "
        f"platform {s.missing_on_platform_count} != carrier_count {s.carrier_count}",
    )
    total = (
        s.matched_count
        + s.mismatched_count
        + s.missing_on_carrier_count
        + s.missing_on_platform_count
    )
    expected_rate = s.matched_count / total if total else 1.0
    check(
        abs(s.agreement_rate - expected_rate) < 1e-9,
        f"{label}: agreement_rate {s.agreement_rate} != matched / all = {expected_rate}",
    )


@step("durations")
def tour_durations(
    carrier: Client, start: dt.datetime, end: dt.datetime
) -> tuple[int, pb.ReconciliationSummary]:
    """Uploads the reports; returns how many were created and the summary from before."""
    before = carrier.reconciliation_summary(start, end)
    candidates = unreported_records(carrier, start, end)
    check(len(candidates) > 0, "every call record of the period already has a report")
    reports = [report_for(r) for r in candidates[:REPORTS]]
    acks = list(carrier.upload_durations(batches(reports, BATCH_SIZE)))
    expected_batches = -(-len(reports) // BATCH_SIZE)
    check(
        len(acks) == expected_batches,
        f"{len(acks)} acknowledgements for {expected_batches} batches",
    )
    created = 0
    for number, ack in enumerate(acks, start=1):
        check(ack.batch_id == number, f"acknowledgement {number} is for batch {ack.batch_id}")
        for result in ack.results:
            check(
                result.status in (pb.ITEM_STATUS_CREATED, pb.ITEM_STATUS_UNCHANGED),
                f"batch {ack.batch_id}: {result.record_id} is {pb.ItemStatus.Name(result.status)}"
                f" ({result.reason or 'no reason'}), not CREATED or UNCHANGED",
            )
        check(
            ack.created_count + ack.unchanged_count == len(ack.results) and ack.rejected_count == 0,
            f"batch {ack.batch_id}: counts do not match its {len(ack.results)} results",
        )
        created += ack.created_count
    # The same reports again: the stream is idempotent by record_id.
    again = carrier.upload_call_durations(reports, batch_size=BATCH_SIZE)
    unchanged = again.unchanged
    check(
        again.items == len(reports) and unchanged == len(reports) and not again.rejections,
        f"resending {len(reports)} reports left only {unchanged} UNCHANGED",
    )
    print(
        f"durations: {len(reports)} reports built from unreported calls, {len(acks)} batches "
        f"acknowledged in order ({created} created, {len(reports) - created} unchanged); "
        f"resent: all {unchanged} unchanged"
    )
    return created, before


@step("reconciliation")
def tour_reconciliation(
    carrier: Client,
    platform: Client | None,
    carrier_id: str,
    start: dt.datetime,
    end: dt.datetime,
    created: int,
    before: pb.ReconciliationSummary,
) -> None:
    """Reads the summary (default and 5 s tolerance), the discrepancies, and the platform's
    view of the same period."""
    s = carrier.reconciliation_summary(start, end)
    check(s.platform_count > 0, "the summary counts no platform calls")
    check(
        s.tolerance.ToTimedelta() == dt.timedelta(seconds=1),
        f"default tolerance {s.tolerance.ToTimedelta()}, not 1 s",
    )
    check_buckets(before, "before the upload")
    check_buckets(s, "after the upload")
    # The uploaded reports carry the platform's own durations for calls nobody had reported.
    check(
        s.matched_count - before.matched_count == created
        and before.missing_on_carrier_count - s.missing_on_carrier_count == created
        and s.carrier_count - before.carrier_count == created,
        f"{created} new exact reports moved matched {before.matched_count}->{s.matched_count}, "
        f"missing on carrier {before.missing_on_carrier_count}->{s.missing_on_carrier_count}",
    )
    wide = carrier.reconciliation_summary(start, end, tolerance=dt.timedelta(seconds=5))
    check_buckets(wide, "tolerance 5 s")
    check(
        wide.tolerance.ToTimedelta() == dt.timedelta(seconds=5), "the 5 s tolerance was not applied"
    )
    check(
        wide.matched_count + wide.mismatched_count == s.matched_count + s.mismatched_count
        and wide.mismatched_count <= s.mismatched_count
        and wide.platform_count == s.platform_count,
        "a wider tolerance did more than move mismatches to matches",
    )
    discrepancies = list(carrier.list_discrepancies(start, end, page_size=50))
    listed = [sum(d.kind == kind for d in discrepancies) for kind in DISCREPANCY_KINDS]
    expected = [s.mismatched_count, s.missing_on_carrier_count, s.missing_on_platform_count]
    check(
        listed == expected,
        f"discrepancies listed (mismatched, missing on carrier, missing on platform) {listed}, "
        f"the summary says {expected}",
    )
    # The contract (reconciliation.proto): ordered by start time, then kind.
    order = [(d.start_time.ToDatetime(), d.kind) for d in discrepancies]
    check(order == sorted(order), "discrepancies are not ordered by start time, then kind")
    seen_by_platform = ""
    if platform is not None:
        other = platform.reconciliation_summary(start, end, carrier_id=carrier_id)
        check(other == s, "the platform's summary of the carrier differs from the carrier's")
        carriers = [c.carrier_id for c in platform.list_carriers()]
        check(carrier_id in carriers, f"the platform does not list carrier {carrier_id}")
        try:
            next(carrier.list_carriers(), None)
        except grpc.RpcError as error:
            check(
                error.code() == grpc.StatusCode.PERMISSION_DENIED,
                f"a carrier key on AdminService got {error.code().name}, not PERMISSION_DENIED",
            )
        else:
            raise CheckFailed("a carrier key could list carriers")
        seen_by_platform = (
            "; the platform sees the same; a carrier key on AdminService is PERMISSION_DENIED"
        )
    # The live feed: from 0, entries as they stand, in increasing sequence, each keyed.
    changes = take(carrier.follow_reconciliation(after_sequence=0), 5)
    check(len(changes) == 5, f"the reconciliation feed ended after {len(changes)} changes")
    sequences = [c.sequence for c in changes]
    check(sequences == sorted(set(sequences)), f"feed sequences {sequences} do not increase")
    view = ReconciliationView()
    for change in changes:
        keyed = change.call_id if change.entry == pb.RECONCILIATION_ENTRY_PLATFORM_RECORD else (
            change.record_id
        )
        check(bool(keyed), f"change {change.sequence} has no key")
        view.apply(change)
    print(
        f"reconciliation: {s.platform_count} platform calls, {s.carrier_count} reports: "
        f"{s.matched_count} matched + {s.mismatched_count} mismatched + "
        f"{s.missing_on_carrier_count}/{s.missing_on_platform_count} missing on carrier/platform "
        f"(agreement {s.agreement_rate:.1%}); at 5 s {wide.mismatched_count} mismatched; "
        f"{len(discrepancies)} discrepancies listed{seen_by_platform}"
    )


@step("quality")
def tour_quality(carrier: Client, start: dt.datetime, end: dt.datetime) -> None:
    listed = sum(1 for _ in carrier.list_call_records(start_time_from=to_timestamp(start)))
    rows = carrier.quality_summary(start, end, bucket="none", group_by=["trunk"])
    trunks = [r.trunk_fqdn for r in rows]
    check(trunks == sorted(trunks), f"the rows are not in trunk order: {trunks}")
    calls = sum(r.calls for r in rows)
    check(calls == listed, f"the summary counts {calls} calls, the listing {listed}")
    for r in rows:
        label = r.trunk_fqdn or "(no trunk)"
        check(r.answered_calls + r.failed_calls == r.calls, f"{label}: answered + failed")
        check(
            r.good_calls + r.poor_calls + r.unclassified_calls == r.calls,
            f"{label}: good + poor + unclassified",
        )
        check(0.0 <= r.asr <= r.ner <= 1.0, f"{label}: ASR {r.asr} and NER {r.ner}")
        jitter = r.jitter_ms
        check(
            jitter.streams == 0 or jitter.p50 <= jitter.p90 <= jitter.p99,
            f"{label}: jitter percentiles out of order",
        )
    daily = carrier.quality_summary(start, end, bucket="day")
    check(sum(r.calls for r in daily) == calls, "by day the calls add up to a different total")
    worst = max(rows, key=lambda r: r.poor_call_rate)
    print(
        f"quality: {calls} calls on {len(rows)} trunks over {len(daily)} days; the worst trunk "
        f"{worst.trunk_fqdn} has a poor-call rate of {worst.poor_call_rate:.1%}"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the tour; 0 if every check passed, 1 otherwise."""
    global STEP_TIMEOUT_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--endpoint", default=os.environ.get("OCX_ENDPOINT", "http://127.0.0.1:50051")
    )
    parser.add_argument("--carrier-key-file", default=os.environ.get("OCX_CARRIER_KEY_FILE"))
    parser.add_argument("--platform-key-file", default=os.environ.get("OCX_PLATFORM_KEY_FILE"))
    parser.add_argument(
        "--ca", help="PEM file of the CA that signed the server's certificate (TLS)"
    )
    parser.add_argument(
        "--events",
        type=int,
        default=22,
        help="number events to read before resuming after the last (default 22; the demo has 31)",
    )
    parser.add_argument(
        "--step-timeout",
        type=int,
        default=STEP_TIMEOUT_SECONDS,
        help="seconds per step (default 60)",
    )
    args = parser.parse_args(argv)
    STEP_TIMEOUT_SECONDS = args.step_timeout
    try:
        root = Path(args.ca).read_bytes() if args.ca else None
        carrier = Client(
            args.endpoint, read_key(args.carrier_key_file, "carrier"), root_certificates=root
        )
        platform = (
            Client(
                args.endpoint, read_key(args.platform_key_file, "platform"), root_certificates=root
            )
            if args.platform_key_file
            else None
        )
        # The demo's calls are in the two days before the server first started.
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        start, end = now - dt.timedelta(days=3), now + dt.timedelta(hours=1)
        carrier_id = tour_numbers(carrier)
        tour_events(carrier, carrier_id, args.events)
        tour_call_records(carrier, start, end)
        created, before = tour_durations(carrier, start, end)
        tour_reconciliation(carrier, platform, carrier_id, start, end, created, before)
        tour_quality(carrier, start, end)
    except (CheckFailed, ValueError) as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("tour: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
