"""cairn: a distributed, strongly consistent, multi-version key-value store with etcd v3 semantics."""

__version__ = "0.1.0"
__all__ = ["Client", "Compare", "Op", "prefix_range_end", "__version__"]

# Imported on first use (PEP 562): `cairn node` imports cairn.config, and a
# member's start should not pay for the client library it does not use.
_LAZY = {"Client": "cairn.client", "Compare": "cairn.requests", "Op": "cairn.requests",
         "prefix_range_end": "cairn.requests"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cairn' has no attribute {name!r}")
