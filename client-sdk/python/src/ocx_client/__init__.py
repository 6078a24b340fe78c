"""Python client for OCX (Operator Connect Exchange).

Layout:

- ``ocx_client.pb``: every message and enum of the ``ocx.v1`` contract (generated at build
  time from ``proto/ocx/v1``; see ``setup.py``).
- ``ocx_client.client``: ``Client`` (channel, key, stubs, helpers) and the generic pieces it
  is built from: ``paginate``, ``follow``, ``batches``, ``to_timestamp``, ``to_duration``.

Example::

    from ocx_client import Client, pb

    with Client("127.0.0.1:50051", open("ocx-data/demo-carrier.key").read()) as client:
        for number in client.list_numbers(state=pb.NUMBER_STATE_ASSIGNED):
            print(number.number, number.sip_uri)
        for event in client.follow_number_events(after_sequence=0):
            print(event.sequence, pb.NumberEventType.Name(event.type))
"""

try:
    from ocx_client import pb
except ImportError as error:  # pragma: no cover - only from an unbuilt source tree
    raise ImportError(
        "ocx_client's generated modules are missing: install the package "
        "(pip install ./client-sdk/python) rather than importing it from src/"
    ) from error

from ocx_client.client import (
    AUTHORIZATION,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    MAX_BATCH,
    RETRYABLE_CODES,
    Client,
    UploadInterrupted,
    batches,
    follow,
    paginate,
    to_duration,
    to_timestamp,
)

__all__ = [
    "AUTHORIZATION",
    "INITIAL_BACKOFF",
    "MAX_BACKOFF",
    "MAX_BATCH",
    "RETRYABLE_CODES",
    "Client",
    "UploadInterrupted",
    "batches",
    "follow",
    "paginate",
    "pb",
    "to_duration",
    "to_timestamp",
]
__version__ = "0.1.0"
