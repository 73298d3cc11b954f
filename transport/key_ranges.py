"""etcd's key-range helpers shared by every layer: the client library builds
ranges with them, and the doors and the state machine read them.

A range is (key, range_end) as etcd writes it: range_end b"" is the key alone,
b"\\0" every key from key on, otherwise [key, range_end).
"""

from __future__ import annotations


def prefix_range_end(prefix: bytes) -> bytes:
    """The range end covering every key with this prefix (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every byte was 0xff: no upper bound
