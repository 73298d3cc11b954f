"""Regenerate the checked-in protobuf modules of etcd's gRPC API from the .proto
files beside this one:

    .venv/bin/pip install grpcio-tools && .venv/bin/python -m actors.etcdpb.generate

Two edits follow protoc, so the modules work with any protobuf runtime from 4.21
on and beside other etcd clients in one process:

* the message types go into a descriptor pool of their own (actors/etcdpb/__init__.py
  POOL), not protobuf's default one, where a client library's copy of etcd's
  messages (python-etcd3, etcd-sdk-python, ...) would clash with the same names;
* protoc's check that the runtime is at least as new as protoc is removed: these
  modules use nothing a 4.21 runtime lacks.

No service stubs are generated: actors/grpc_wire.py declares the services as a
table (grpcio's generated stubs pin grpcio to the generating version)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTOS = ("kv.proto", "auth.proto", "rpc.proto", "v3lock.proto", "v3election.proto")


def main() -> int:
    files = [os.path.join("actors", "etcdpb", name) for name in PROTOS]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", *files], cwd=REPO, check=True)
    for name in PROTOS:
        path = os.path.join(HERE, name.replace(".proto", "_pb2.py"))
        with open(path) as handle:
            text = handle.read()
        text = re.sub(r"from google\.protobuf import runtime_version as _runtime_version\n", "", text)
        text = re.sub(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)\n", "", text)
        text = text.replace("_descriptor_pool.Default().AddSerializedFile", "_POOL.AddSerializedFile")
        text = text.replace("# @@protoc_insertion_point(imports)",
                            "from actors.etcdpb import POOL as _POOL\n# @@protoc_insertion_point(imports)")
        assert "_runtime_version" not in text and "_POOL.AddSerializedFile" in text, path
        with open(path, "w") as handle:
            handle.write(text)
        print("wrote", os.path.relpath(path, REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
