"""The asyncio client against a real member: same methods, as coroutines."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from cairn import Compare, Op
from cairn.aio import Client
from tests.harness import cluster_fixture, free_ports
from transport.errors import IndeterminateError, LeaseNotFoundError, Unavailable


# Three members, so that endpoint discovery has members to find.
cluster = cluster_fixture("aio", members=3)


def test_kv_txn_and_many_concurrent_requests(cluster):
    async def scenario():
        async with Client(cluster.endpoints) as c:
            put = await c.put("aio/a", "1")
            assert (await c.get("aio/a")).kvs[0].value == b"1"
            # 200 requests in flight at once over one connection
            responses = await asyncio.gather(*(c.put(f"aio/many/{i}", str(i)) for i in range(200)))
            revisions = sorted(r.header.revision for r in responses)
            assert len(set(revisions)) == 200 and revisions[0] > put.header.revision
            assert (await c.get("aio/many/", prefix=True, count_only=True)).count == 200
            txn = await c.txn(compare=[Compare.value("aio/a") == "1"], success=[Op.put("aio/a", "2")], failure=[])
            assert txn.succeeded
            assert (await c.delete("aio/", prefix=True)).deleted == 201

    asyncio.run(scenario())


def test_leases_and_keepalive_async_iterator(cluster):
    async def scenario():
        async with Client(cluster.endpoints) as c:
            lease = (await c.lease_grant(2)).id
            await c.put("aio/leased", "v", lease=lease)
            seen = 0
            async for response in c.lease_keepalive(lease):
                assert response.ttl == 2
                seen += 1
                if seen == 4:  # about 2 s of keep-alives: longer than the TTL
                    break
            assert (await c.get("aio/leased")).count == 1
            await c.lease_revoke(lease)
            # The revoke was answered by the member that applied it; keep-alives
            # are answered by the leader's lease actor, which may apply it a
            # moment later (etcd's lessor has the same window): within a bound.
            deadline = asyncio.get_running_loop().time() + 3.0
            while True:
                try:
                    await c.lease_keepalive_once(lease)
                except LeaseNotFoundError:
                    break
                assert asyncio.get_running_loop().time() < deadline, "a revoked lease was still renewed after 3 s"
                await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_unreachable_endpoint_is_unavailable_not_indeterminate():
    async def scenario():
        async with Client([f"tcp://127.0.0.1:{free_ports(1)[0]}"], timeout=1.0, dial_timeout=0.2) as c:
            with pytest.raises(Unavailable):
                await c.put("k", "v")

    asyncio.run(scenario())
    assert not issubclass(Unavailable, IndeterminateError)


def test_watch_as_an_async_iterator(cluster):
    async def scenario():
        async with Client(cluster.endpoints) as c:
            start = (await c.put("aiow/0", "a")).header.revision
            events = []
            async for response in c.watch("aiow/", prefix=True, start_revision=start):
                events.extend((e.kv.key, e.kv.value) for e in response.events)
                if len(events) == 1:
                    await c.put("aiow/1", "b")
                if len(events) == 2:
                    break
            assert events == [(b"aiow/0", b"a"), (b"aiow/1", b"b")]

    asyncio.run(scenario())


# ---------------------------------------------------------------------- endpoint discovery


def test_sync_endpoints_discovers_every_member_and_prefers_the_leader(cluster):
    first = next(iter(cluster.members.values()))
    leader = cluster.leader()

    async def scenario():
        async with Client([first.endpoint]) as c:
            endpoints = await c.sync_endpoints()
            assert sorted(endpoints) == sorted(cluster.endpoints) == sorted(c.endpoints)
            assert (await c.put("aiosync/put", "v")).header.member_id == leader.spec.id

    asyncio.run(scenario())


def test_auto_sync_picks_up_every_member(cluster):
    first = next(iter(cluster.members.values()))
    leader = cluster.leader()

    async def scenario():
        async with Client([first.endpoint], auto_sync_interval=0.1) as c:
            deadline = time.monotonic() + 10
            while sorted(c.endpoints) != sorted(cluster.endpoints):
                assert time.monotonic() < deadline, f"endpoints never discovered: {c.endpoints}"
                await asyncio.sleep(0.05)  # polls the condition; the loop stays free meanwhile
            while (await c.put("aiosync/auto", "v")).header.member_id != leader.spec.id:
                assert time.monotonic() < deadline, "the leader's endpoint never preferred"
                await asyncio.sleep(0.05)
            assert c.sync_error is None

    asyncio.run(scenario())


def test_a_failed_auto_sync_is_logged_kept_and_tried_again(caplog):
    caplog.set_level(logging.WARNING, logger="cairn.client")

    async def scenario():
        nowhere = f"tcp://127.0.0.1:{free_ports(1)[0]}"
        async with Client([nowhere], timeout=0.3, dial_timeout=0.1, auto_sync_interval=0.05) as c:
            deadline = time.monotonic() + 10
            while len([r for r in caplog.records if r.name == "cairn.client"]) < 2:
                assert time.monotonic() < deadline, "no second sync after a failed one"
                await asyncio.sleep(0.05)
            assert isinstance(c.sync_error, Unavailable)

    asyncio.run(scenario())
    failures = [r for r in caplog.records if r.name == "cairn.client"]
    assert all("endpoint sync failed" in r.getMessage() and r.levelno == logging.WARNING for r in failures)
