"""The gRPC door (actors/grpc_gateway.py) on a real 3-member cluster, through
grpcio stubs built from etcd's .proto (actors/etcdpb): every service and method
served, the response header, etcd's gRPC errors for bad input (and the door
still serving after them), hasleader, watch ids chosen by the client or the
door, progress, fragments, and the door's life under the supervisor (SIGTERM
ends its streams with UNAVAILABLE within a couple of seconds; it is restarted).
etcd's own clients run in test_grpc_clients.py.

The cluster's max_request_bytes is 64 KiB, so that fragments and oversized
requests need little data."""

from __future__ import annotations

import concurrent.futures
import os
import queue
import signal
import threading
import time

import grpc
import pytest

from actors import grpc_wire as gw
from actors.etcdpb import rpc_pb2 as pb
from actors.etcdpb import v3election_pb2 as epb
from actors.etcdpb import v3lock_pb2 as lpb
from tests.harness import cluster_fixture, wait_for

MAX_REQUEST = 64 * 1024
SERVICES = gw.services({}, "")
FACTORIES = {gw.UNARY: "unary_unary", gw.STREAM_STREAM: "stream_stream", gw.UNARY_STREAM: "unary_stream"}


cluster = cluster_fixture("grpc", members=3, grpc=True, limits={"max_request_bytes": MAX_REQUEST})


class Stub:
    """Every method of the door as grpcio callables: stub.KV.Range(request)."""

    def __init__(self, target: str):
        self.channel = grpc.insecure_channel(target)
        for (service, method), (kind, request, response, _, _) in SERVICES.items():
            short = service.split(".")[1]
            holder = getattr(self, short, None) or type(short, (), {})()
            setattr(self, short, holder)
            call = getattr(self.channel, FACTORIES[kind])(f"/{service}/{method}", request_serializer=request.SerializeToString,
                                                         response_deserializer=response.FromString)
            setattr(holder, method, call)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def stubs(cluster):
    made = [Stub(member.grpc_target) for member in cluster.members.values()]
    yield made
    for stub in made:
        stub.close()


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


class Requests:
    """A request iterator a test feeds while the stream runs."""

    def __init__(self, *first):
        self.queue: queue.Queue = queue.Queue()
        for item in first:
            self.queue.put(item)

    def put(self, item) -> None:
        self.queue.put(item)

    def close(self) -> None:
        self.queue.put(None)

    def __iter__(self):
        while (item := self.queue.get()) is not None:
            yield item


class Responses:
    """A response stream read on a thread, each response waited for with a deadline."""

    def __init__(self, call):
        self.call = call
        self.items: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for item in self.call:
                self.items.put(item)
            self.items.put(None)
        except grpc.RpcError as error:
            self.items.put(error)

    def next(self, timeout: float = 10.0):
        item = self.items.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item


def create(key: bytes, **options) -> pb.WatchRequest:
    return pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, **options))


# ------------------------------------------------------------------ unary calls


def test_kv_through_different_doors_with_etcds_header(cluster, stubs):
    one, two, three = stubs
    members = list(cluster.members.values())
    put = one.KV.Put(pb.PutRequest(key=b"g/a", value=b"1"))
    got = two.KV.Range(pb.RangeRequest(key=b"g/a"))
    assert [(kv.key, kv.value, kv.version) for kv in got.kvs] == [(b"g/a", b"1", 1)] and got.count == 1
    with cluster.client() as native:
        status = native.status()
    for response, member in ((put, members[0]), (got, members[1])):
        assert response.header.cluster_id == status.header.cluster_id
        assert response.header.member_id == member.spec.id
        assert response.header.raft_term == status.raft_term
    assert got.header.revision == put.header.revision
    again = three.KV.Put(pb.PutRequest(key=b"g/a", value=b"2", prev_kv=True))
    assert again.prev_kv.value == b"1"
    txn = three.KV.Txn(pb.TxnRequest(
        compare=[pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VALUE, key=b"g/a", value=b"2")],
        success=[pb.RequestOp(request_put=pb.PutRequest(key=b"g/b", value=b"3")),
                 pb.RequestOp(request_range=pb.RangeRequest(key=b"g/", range_end=b"g0"))],
        failure=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"g/a"))]))
    assert txn.succeeded and txn.header.member_id == members[2].spec.id
    assert [kv.key for kv in txn.responses[1].response_range.kvs] == [b"g/a", b"g/b"]
    # responses inside a txn carry only their revision, as etcd's
    assert txn.responses[0].response_put.header == pb.ResponseHeader(revision=txn.header.revision)
    deleted = one.KV.DeleteRange(pb.DeleteRangeRequest(key=b"g/", range_end=b"g0", prev_kv=True))
    assert deleted.deleted == 2 and sorted(kv.value for kv in deleted.prev_kvs) == [b"2", b"3"]
    one.KV.Compact(pb.CompactionRequest(revision=deleted.header.revision))
    assert status_of(lambda: two.KV.Range(pb.RangeRequest(key=b"g/a", revision=put.header.revision))) == (
        grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")


def test_lease_cluster_and_maintenance(cluster, stubs):
    one, two, _ = stubs
    grant = one.Lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
    assert grant.TTL == 30 and grant.ID
    one.KV.Put(pb.PutRequest(key=b"gl/k", value=b"v", lease=grant.ID))
    # (lease reads are served from the member's own state: ask the member that wrote)
    # The leader's lease actor answers from its own member's store, which may
    # apply the put a moment after the member that acknowledged it (as etcd's
    # lessor): within a bound.
    ttl = wait_for(lambda: (lambda r: r if list(r.keys) else None)(
        one.Lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=grant.ID, keys=True))), "the lease's key in TimeToLive", 5)
    assert ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30 and list(ttl.keys) == [b"gl/k"]
    assert grant.ID in [lease.ID for lease in one.Lease.LeaseLeases(pb.LeaseLeasesRequest()).leases]
    requests = Requests(*[pb.LeaseKeepAliveRequest(ID=grant.ID)] * 3)
    requests.close()
    assert [(r.ID, r.TTL) for r in two.Lease.LeaseKeepAlive(iter(requests))] == [(grant.ID, 30)] * 3
    two.Lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=grant.ID))
    assert one.KV.Range(pb.RangeRequest(key=b"gl/k")).kvs == []
    assert status_of(lambda: one.Lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=grant.ID))) == (
        grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    assert status_of(lambda: one.KV.Put(pb.PutRequest(key=b"gl/k", lease=grant.ID))) == (
        grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")

    members = one.Cluster.MemberList(pb.MemberListRequest())
    assert {(m.ID, m.name, tuple(m.clientURLs)) for m in members.members} == {
        (m.spec.id, m.name, (m.spec.grpc,)) for m in cluster.members.values()}
    leader = cluster.leader()
    status = two.Maintenance.Status(pb.StatusRequest())
    assert status.leader == leader.spec.id and status.version == "3.4.0" and status.raftIndex >= status.raftAppliedIndex > 0
    assert list(one.Maintenance.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET)).alarms) == []
    target = next(m for m in cluster.members.values() if m is not leader)
    one.Maintenance.MoveLeader(pb.MoveLeaderRequest(targetID=target.spec.id))
    assert cluster.leader() is target
    assert status_of(lambda: one.Auth.Authenticate(pb.AuthenticateRequest(name="root", password="secret"))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
    first = next(iter(cluster.members.values()))  # stubs are in the members' order
    assert one.Maintenance.Defragment(pb.DefragmentRequest()).header.member_id == first.spec.id
    downgrade = one.channel.unary_unary("/etcdserverpb.Maintenance/Downgrade")
    assert status_of(lambda: downgrade(b""))[0] == grpc.StatusCode.UNIMPLEMENTED


def test_lock_and_election_services(cluster, stubs):
    one, two, three = stubs
    lease_a = one.Lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    lease_b = two.Lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    held = one.Lock.Lock(lpb.LockRequest(name=b"glock", lease=lease_a))
    assert held.key.startswith(b"glock/")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(two.Lock.Lock, lpb.LockRequest(name=b"glock", lease=lease_b))
        with pytest.raises(concurrent.futures.TimeoutError):
            waiting.result(timeout=0.3)  # it waits for its turn
        three.Lock.Unlock(lpb.UnlockRequest(key=held.key))
        assert waiting.result(timeout=10).key.startswith(b"glock/")

    won = one.Election.Campaign(epb.CampaignRequest(name=b"gelect", lease=lease_a, value=b"first"))
    assert won.leader.name == b"gelect" and won.leader.lease == lease_a
    observed = Responses(three.Election.Observe(epb.LeaderRequest(name=b"gelect")))
    assert observed.next().kv.value == b"first"
    two.Election.Proclaim(epb.ProclaimRequest(leader=won.leader, value=b"second"))
    assert observed.next().kv.value == b"second"
    assert two.Election.Leader(epb.LeaderRequest(name=b"gelect")).kv.value == b"second"
    one.Election.Resign(epb.ResignRequest(leader=won.leader))
    assert status_of(lambda: two.Election.Leader(epb.LeaderRequest(name=b"gelect"))) == (
        grpc.StatusCode.UNKNOWN, "election: no leader")
    assert status_of(lambda: two.Election.Proclaim(epb.ProclaimRequest(leader=won.leader, value=b"x")))[0] == \
        grpc.StatusCode.FAILED_PRECONDITION
    observed.call.cancel()


# ------------------------------------------------------------------ watch streams


def test_watch_ids_progress_cancel_and_fragments(cluster, stubs):
    one, two, _ = stubs
    start = one.KV.Put(pb.PutRequest(key=b"gw/0", value=b"x")).header.revision
    requests = Requests(create(b"gw/", range_end=b"gw0", start_revision=start + 1))
    responses = Responses(two.Watch.Watch(iter(requests)))
    try:
        created = responses.next()
        assert created.created and created.watch_id == 0 and created.header.member_id
        requests.put(create(b"gw/a", watch_id=7, prev_kv=True))
        assert (responses.next().created, 7) == (True, 7)
        requests.put(create(b"gw/b"))  # the door's own next id
        auto = responses.next()
        assert auto.created and auto.watch_id == 8
        requests.put(create(b"gw/c", watch_id=7))
        duplicate = responses.next()
        assert duplicate.created and duplicate.canceled and duplicate.watch_id == 7 and "duplicate" in duplicate.cancel_reason
        one.KV.Put(pb.PutRequest(key=b"gw/a", value=b"1"))
        got = {}
        while len(got) < 2:
            response = responses.next()
            got[response.watch_id] = response
        assert [(e.type, e.kv.key, e.kv.value) for e in got[0].events] == [(0, b"gw/a", b"1")]
        assert got[7].events[0].kv.value == b"1" and not got[7].events[0].HasField("prev_kv")
        requests.put(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
        progress = [responses.next() for _ in range(3)]  # one per watch
        assert {(p.watch_id, len(p.events)) for p in progress} == {(-1, 0)}
        assert all(p.header.revision >= got[0].header.revision for p in progress)
        requests.put(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=8)))
        canceled = responses.next()
        assert canceled.canceled and canceled.watch_id == 8
        # fragments: one revision whose events are larger than max_request_bytes
        requests.put(create(b"gf/", range_end=b"gf0", watch_id=20, prev_kv=True, fragment=True))
        assert responses.next().watch_id == 20
        value = b"v" * (MAX_REQUEST // 5)
        ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"gf/%d" % i, value=value)) for i in range(3)]
        one.KV.Txn(pb.TxnRequest(success=ops))
        first = responses.next()
        one.KV.Txn(pb.TxnRequest(success=ops))  # again: now each event has a prev_kv too
        parts = [responses.next()]
        while parts[-1].fragment:
            parts.append(responses.next())
        assert len(first.events) == 3 and not first.fragment
        assert len(parts) > 1 and sum(len(p.events) for p in parts) == 3
        assert all(p.ByteSize() <= MAX_REQUEST + 1024 for p in parts)
        assert [e.kv.key for p in parts for e in p.events] == [b"gf/0", b"gf/1", b"gf/2"]
    finally:
        requests.close()
    assert responses.next() is None  # the client closed its side: the stream ends


def test_watch_of_a_compacted_revision_is_canceled_with_compact_revision(cluster, stubs):
    one, two, _ = stubs
    first = one.KV.Put(pb.PutRequest(key=b"gc/k", value=b"1")).header.revision
    one.KV.Put(pb.PutRequest(key=b"gc/k", value=b"2"))
    two.KV.Compact(pb.CompactionRequest(revision=first + 1))  # answered once applied on the watch's member
    requests = Requests(create(b"gc/k", start_revision=first))
    responses = Responses(two.Watch.Watch(iter(requests)))
    try:
        assert responses.next().created
        notice = responses.next()
        assert notice.canceled and notice.compact_revision == first + 1 and notice.cancel_reason == ""
    finally:
        requests.close()


# ------------------------------------------------------------------ bad input


def test_bad_input_gets_etcds_errors_and_the_door_keeps_serving(cluster, stubs):
    one = stubs[0]
    member = list(cluster.members.values())[0]
    pid = member.actor_pids()["grpc"]
    assert status_of(lambda: one.KV.Range(pb.RangeRequest(key=b""))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    raw_put = one.channel.unary_unary("/etcdserverpb.KV/Put")
    code, message = status_of(lambda: raw_put(b"\x0a\xff\xff\xff"))  # a length past the end: not protobuf
    assert code == grpc.StatusCode.INTERNAL and message.startswith("grpc: error unmarshalling request")
    wrong_type = pb.Compare(result=pb.Compare.EQUAL, target=9, key=b"k", version=1)
    assert status_of(lambda: one.KV.Txn(pb.TxnRequest(compare=[wrong_type])))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(lambda: one.KV.Put(pb.PutRequest(key=b"big", value=b"x" * (MAX_REQUEST + 1)))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
    code, _ = status_of(lambda: one.KV.Put(pb.PutRequest(key=b"big", value=b"x" * (MAX_REQUEST + 600 * 1024))))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # past etcd's gRPC limit, refused by grpcio itself
    assert one.Lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=12345)).TTL == -1  # etcd's answer, not an error
    requests = Requests(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k", filters=[5])))
    code, message = status_of(lambda: list(one.Watch.Watch(iter(requests))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "filter" in message
    assert one.KV.Put(pb.PutRequest(key=b"still", value=b"serving")).header.revision
    assert member.actor_pids()["grpc"] == pid


def test_hasleader_fails_fast_without_a_leader(cluster, stubs):
    metadata = (("hasleader", "true"),)
    members = list(cluster.members.values())
    leader = cluster.leader()
    index = next(i for i, m in enumerate(members) if m is not leader)
    alone, stub = members[index], stubs[index]
    assert stub.KV.Range(pb.RangeRequest(key=b"h"), metadata=metadata).header.member_id == alone.spec.id
    others = [m.spec.id for m in members if m is not alone]
    alone.failpoint(drop_peers=others)
    try:
        deadline = time.monotonic() + 15
        while alone.status().leader != 0:  # until it notices it has no leader
            assert time.monotonic() < deadline
            time.sleep(0.05)
        began = time.monotonic()
        assert status_of(lambda: stub.KV.Range(pb.RangeRequest(key=b"h"), metadata=metadata)) == (
            grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        requests = Requests(create(b"h"))
        assert status_of(lambda: list(stub.Watch.Watch(iter(requests), metadata=metadata))) == (
            grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        assert time.monotonic() - began < 2.0
    finally:
        alone.failpoint()
    cluster.wait_ready([alone])
    cluster.leader()


# ------------------------------------------------------------------ the actor's life


def test_sigterm_ends_open_streams_and_the_supervisor_restarts_the_door(cluster, stubs):
    member = list(cluster.members.values())[2]
    stub = stubs[2]
    pid = member.actor_pids()["grpc"]
    requests = Requests(create(b"gs/"))
    watch = Responses(stub.Watch.Watch(iter(requests)))
    assert watch.next().created
    lease = stub.Lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    keepalives = Requests(pb.LeaseKeepAliveRequest(ID=lease))
    keepalive = Responses(stub.Lease.LeaseKeepAlive(iter(keepalives)))
    assert keepalive.next().TTL == 30
    began = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    for stream in (watch, keepalive):
        with pytest.raises(grpc.RpcError) as error:
            stream.next(timeout=3)
        assert (error.value.code(), error.value.details()) == (grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped")
    assert time.monotonic() - began < 5.0  # bounded: well below any client deadline, with room for a loaded 2-core machine
    requests.close()
    keepalives.close()
    deadline = time.monotonic() + 15
    while (new := member.actor_pids().get("grpc")) in (None, pid):
        assert time.monotonic() < deadline, "the supervisor did not restart the gRPC door"
        time.sleep(0.05)
    member.wait_grpc()
    fresh = Stub(member.grpc_target)
    try:
        assert fresh.KV.Put(pb.PutRequest(key=b"gs/after", value=b"1"), wait_for_ready=True, timeout=10).header.revision
    finally:
        fresh.close()
    stopped = [r for r in member.log_records("supervisor") if r.get("event") == "actor_died" and r.get("actor_name") == "grpc"]
    assert stopped and stopped[-1]["pid"] == pid
    assert any(r.get("event") == "grpc_stopped" for r in member.log_records("grpc"))  # it stopped cleanly
