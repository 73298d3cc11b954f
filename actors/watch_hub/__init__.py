"""The watch hub: etcd's watch guarantees as a pure state machine (see hub.py)."""

from actors.watch_hub.hub import INVALID_WATCH_ID, REASON_COMPACTED, REASON_UNKNOWN, Hub
from actors.watch_hub.limits import HubLimits
from actors.watch_hub.output import Outgoing
from actors.watch_hub.watchers import REASON_DUPLICATE_ID, REASON_EMPTY_RANGE, REASON_INVALID_ID, REASON_TOO_MANY

__all__ = [
    "INVALID_WATCH_ID", "REASON_COMPACTED", "REASON_DUPLICATE_ID", "REASON_EMPTY_RANGE", "REASON_INVALID_ID",
    "REASON_TOO_MANY", "REASON_UNKNOWN", "Hub", "HubLimits", "Outgoing",
]
