"""Python client for OCX (Operator Connect Exchange).

Layout:

- ``ocx_client.pb``: every message and enum of the ``ocx.v1`` contract (generated at build
  time from ``proto/ocx/v1``; see ``setup.py``).
- ``ocx_client.client``: ``Client`` (channel, key, stubs, helpers) and the generic pieces it
  is built from: ``paginate``, ``follow`` / ``Follower``, ``batches``, ``to_timestamp``,
  ``to_duration``.
- ``ocx_client.uploads``: the resumable batch uploader behind ``Client.ingest_call_records``,
  ``Client.upload_call_durations`` and ``Client.upload_durations``, with ``UploadSummary`` and
  ``UploadInterrupted``.
- ``ocx_client.retry``: backoff, ``DEFAULT_RETRY_BUDGET`` and ``RETRYABLE_CODES``.

The package logs retries and reconnects through ``logging`` under the ``ocx_client`` logger,
which has a ``NullHandler``: configure logging (e.g. ``logging.basicConfig()``) to see them.

Example::

    from ocx_client import Client, pb

    with Client("127.0.0.1:50051", open("ocx-data/demo-carrier.key").read()) as client:
        for number in client.list_numbers(state=pb.NUMBER_STATE_ASSIGNED):
            print(number.number, number.sip_uri)
        with client.follow_number_events(after_sequence=0) as events:
            for event in events:  # events.stop() from another thread ends this loop
                print(event.sequence, pb.NumberEventType.Name(event.type))
"""

import logging

try:
    from ocx_client import pb
except ImportError as error:  # pragma: no cover - only from an unbuilt source tree
    raise ImportError(
        "ocx_client's generated modules are missing: install the package "
        "(pip install ./client-sdk/python) rather than importing it from src/"
    ) from error

from ocx_client.client import (
    AUTHORIZATION,
    MAX_BATCH,
    Client,
    Follower,
    ReconciliationView,
    batches,
    follow,
    paginate,
    to_duration,
    to_timestamp,
    whole_hours,
)
from ocx_client.retry import (
    DEFAULT_RETRY_BUDGET,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    RETRYABLE_CODES,
)
from ocx_client.uploads import (
    DEFAULT_IN_FLIGHT,
    IngestSummary,
    Rejection,
    UploadInterrupted,
    UploadSummary,
)

# A library does not decide where its logs go: without configuration, nothing is printed.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AUTHORIZATION",
    "DEFAULT_IN_FLIGHT",
    "DEFAULT_RETRY_BUDGET",
    "INITIAL_BACKOFF",
    "MAX_BACKOFF",
    "MAX_BATCH",
    "RETRYABLE_CODES",
    "Client",
    "Follower",
    "IngestSummary",
    "ReconciliationView",
    "Rejection",
    "UploadInterrupted",
    "UploadSummary",
    "batches",
    "follow",
    "paginate",
    "pb",
    "to_duration",
    "to_timestamp",
    "whole_hours",
]
__version__ = "0.2.0"
