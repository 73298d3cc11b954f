"""The snapshot file `cairnctl snapshot save` writes, as etcd's: the bytes of a
consistent, compacted LMDB copy of a member's keyspace environment (its
data.mdb), followed by the 32-byte SHA-256 digest of those bytes.

Pure file handling (hashlib only), so the client library needs no LMDB; opening
the copy and restoring it is store/maintenance.py's.
"""

from __future__ import annotations

import hashlib
import os
import struct

DIGEST_BYTES = 32
# LMDB's meta page: a 16-byte page header, then MDB_meta whose first field is
# mm_magic (0xBEEFC0DE, native byte order; little-endian on every platform we run).
_LMDB_MAGIC = 0xBEEFC0DE
_MAGIC_AT = struct.Struct("<I")
_READ_BYTES = 1024 * 1024


class SnapshotFileError(Exception):
    """A snapshot file that is missing, truncated, corrupt or not a snapshot."""


def sha256_of(path: str, length: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        left = length
        while left > 0:
            data = handle.read(min(_READ_BYTES, left))
            if not data:
                break
            digest.update(data)
            left -= len(data)
    return digest.digest()


def verify(path: str) -> int:
    """Check a snapshot file; returns the length of its LMDB payload (the file
    without its digest). Raises SnapshotFileError saying what is wrong."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise SnapshotFileError(f"snapshot file {path} not found") from None
    except OSError as error:
        raise SnapshotFileError(f"cannot read snapshot file {path}: {error.strerror}") from None
    if os.path.isdir(path):
        raise SnapshotFileError(f"{path} is a directory, not a snapshot file")
    if size < DIGEST_BYTES + 4096:
        raise SnapshotFileError(f"{path} is not a cairn snapshot: {size} bytes is too short")
    payload = size - DIGEST_BYTES
    with open(path, "rb") as handle:
        head = handle.read(20)
        handle.seek(payload)
        stored = handle.read(DIGEST_BYTES)
    if _MAGIC_AT.unpack_from(head, 16)[0] != _LMDB_MAGIC:
        raise SnapshotFileError(f"{path} is not a cairn snapshot (no LMDB environment in it)")
    if sha256_of(path, payload) != stored:
        raise SnapshotFileError(f"{path}: snapshot checksum mismatch (sha256): the file is corrupt or truncated")
    return payload


def copy_payload(path: str, payload: int, directory: str) -> str:
    """Write the LMDB payload of a verified snapshot file as directory/data.mdb
    (so LMDB can open directory as an environment); returns directory."""
    os.makedirs(directory, exist_ok=True)
    with open(path, "rb") as source, open(os.path.join(directory, "data.mdb"), "wb") as target:
        left = payload
        while left > 0:
            data = source.read(min(_READ_BYTES, left))
            if not data:
                raise SnapshotFileError(f"{path} changed while being read")
            target.write(data)
            left -= len(data)
    return directory
