"""Every message and enum of the ``ocx.v1`` contract, in one namespace.

``from ocx_client import pb`` then ``pb.ListNumbersRequest(page_size=50)``,
``pb.NUMBER_STATE_ASSIGNED``, ``pb.ItemStatus.Name(result.status)``. The modules behind it
are generated at build time from ``proto/ocx/v1/*.proto`` (see ``setup.py``); the per-file
modules stay importable as ``ocx_client._gen.ocx.v1.<file>_pb2``.
"""

# ruff: noqa: F401, F403, F821, I001
from ocx_client._gen.ocx.v1.common_pb2 import *
from ocx_client._gen.ocx.v1.admin_pb2 import *
from ocx_client._gen.ocx.v1.consent_pb2 import *
from ocx_client._gen.ocx.v1.numbers_pb2 import *
from ocx_client._gen.ocx.v1.call_records_pb2 import *
from ocx_client._gen.ocx.v1.call_durations_pb2 import *
from ocx_client._gen.ocx.v1.reconciliation_pb2 import *
from ocx_client._gen.ocx.v1.platform_pb2 import *

# Each file's descriptor; meaningless once the files are merged into one namespace.
del DESCRIPTOR
