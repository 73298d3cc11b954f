"""Regenerate etcd.desc, the serialized descriptors of etcd's gRPC API, from the
.proto files beside this one:

    .venv/bin/pip install grpcio-tools && .venv/bin/python -m actors.etcdpb.generate

protoc's Python output is boilerplate around one serialized FileDescriptorProto per
.proto, so only the descriptors are checked in (a FileDescriptorSet, package data in
setup.cfg) and actors/etcdpb/__init__.py builds the message classes from them at
import. That way:

* the message types go into a descriptor pool of their own (actors/etcdpb POOL),
  not protobuf's default one, where a client library's copy of etcd's messages
  (python-etcd3, etcd-sdk-python, ...) would clash with the same names;
* nothing depends on the protoc that wrote the file: no generated code pins a
  runtime version, and the loader uses only what a protobuf runtime from 4.21 on
  has (DescriptorPool.AddSerializedFile, message_factory.GetMessageClass).

No service stubs are generated: actors/grpc_wire.py declares the services as a
table (grpcio's generated stubs pin grpcio to the generating version)."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTOS = ("kv.proto", "auth.proto", "rpc.proto", "v3lock.proto", "v3election.proto")
DESCRIPTOR_SET = "etcd.desc"


def main() -> int:
    files = [os.path.join("actors", "etcdpb", name) for name in PROTOS]
    out = os.path.join(HERE, DESCRIPTOR_SET)
    # --include_imports writes the files in dependency order, which the loader relies on.
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--include_imports",
                    f"--descriptor_set_out={out}", *files], cwd=REPO, check=True)
    print("wrote", os.path.relpath(out, REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
