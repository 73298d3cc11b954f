"""etcd v3's gRPC API as protobuf messages (kv.proto, rpc.proto, v3lock.proto,
v3election.proto here; generated *_pb2 modules checked in — regenerate them with
`python -m actors.etcdpb.generate`). The messages live in POOL, a descriptor pool
of their own, so they never clash with another etcd client's copy of the same
names in one process."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
