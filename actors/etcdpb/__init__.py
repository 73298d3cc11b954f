"""etcd v3's gRPC API as protobuf messages, built at import from etcd.desc.

etcd.desc is the FileDescriptorSet of kv.proto, auth.proto, rpc.proto, v3lock.proto
and v3election.proto here (regenerate it with `python -m actors.etcdpb.generate`,
whose docstring says why there are no generated *_pb2 modules). Each .proto
becomes a module-like namespace named as protoc would name it (`rpc_pb2`,
`kv_pb2`, ...) holding its message classes (nested ones as attributes) and its
top-level enums and their values, so `from actors.etcdpb import rpc_pb2` and
`rpc_pb2.RangeRequest` read as with generated code.

The messages live in POOL, a descriptor pool of their own, so they never clash
with another etcd client's copy of the same names in one process."""

from __future__ import annotations

import os
import sys
import types

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import enum_type_wrapper

POOL = descriptor_pool.DescriptorPool()
DESCRIPTOR_SET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "etcd.desc")


def _module_for(file_descriptor) -> types.ModuleType:
    """The namespace protoc's <name>_pb2 module would be: message classes and
    top-level enums (with their values as attributes, as generated code has)."""
    stem = os.path.splitext(os.path.basename(file_descriptor.name))[0]
    module = types.ModuleType(f"{__name__}.{stem}_pb2", f"etcd's {file_descriptor.name}, from etcd.desc")
    module.DESCRIPTOR = file_descriptor
    for name, message in file_descriptor.message_types_by_name.items():
        setattr(module, name, message_factory.GetMessageClass(message))
    for name, enum in file_descriptor.enum_types_by_name.items():
        setattr(module, name, enum_type_wrapper.EnumTypeWrapper(enum))
        for value in enum.values:
            setattr(module, value.name, value.number)
    return module


def _load(path: str) -> dict[str, types.ModuleType]:
    with open(path, "rb") as handle:
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(handle.read())
    modules = {}
    for proto in descriptor_set.file:  # dependency order (generate.py --include_imports)
        module = _module_for(POOL.AddSerializedFile(proto.SerializeToString()))
        modules[module.__name__.rsplit(".", 1)[1]] = module
        sys.modules[module.__name__] = module  # `import actors.etcdpb.rpc_pb2` works too
    return modules


globals().update(_load(DESCRIPTOR_SET))
