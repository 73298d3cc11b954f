"""cairn: a distributed, strongly consistent, multi-version key-value store with etcd v3 semantics."""

from cairn.client import Client
from cairn.requests import Compare, Op, prefix_range_end

__version__ = "0.1.0"
__all__ = ["Client", "Compare", "Op", "prefix_range_end", "__version__"]
