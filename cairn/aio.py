"""The asyncio client: cairn.Client's methods as coroutines.

    from cairn.aio import Client
    async with Client(["tcp://127.0.0.1:2379"]) as c:
        await c.put("k", "v")
        response = await c.get("k")
        async for keepalive in c.lease_keepalive(lease_id): ...
        async for response in c.watch("k", prefix=True): ...

Every request method of cairn.Client hands a plan (cairn/calls.py) to
`self._run`; here `_run` is cairn.calls.run_async, so those methods return
awaitables with no second copy of their argument handling, their failover rules
(cairn.retry's) or their endpoint discovery: `await c.sync_endpoints()` works,
and so does auto_sync_interval (its thread runs the same plan). The I/O still
runs on the client's transport thread; awaiting a reply wraps its concurrent
Future, so no event-loop thread ever blocks.
"""

from __future__ import annotations

import asyncio

from cairn import client as blocking
from cairn.calls import run_async
from transport import messages as m


class Client(blocking.Client):
    # Every request method's plan (cairn/calls.py) becomes a coroutine to await.
    _run = staticmethod(run_async)

    # Lease keep-alives and watches, whose blocking versions wait on threads,
    # as async iterators.

    async def lease_keepalive(self, id: int):
        """An async iterator of keep-alive responses, renewing every ttl/3 seconds
        until the lease is gone (LeaseNotFoundError) or the iteration stops."""
        while True:
            response = await self.lease_keepalive_once(id)
            yield response
            await asyncio.sleep(max(response.ttl / 3, 0.5))

    async def open_watch(self, key, **options) -> "AsyncWatch":
        """Create a watch (Client.watch's options) and return it once the member
        has created it: an AsyncWatch to await responses from."""
        watch = await asyncio.to_thread(blocking.Client.watch, self, key, **options)
        return AsyncWatch(watch, asyncio.get_running_loop())

    async def watch(self, key, **options):
        """An async iterator of WatchResponses (the same watch as Client.watch,
        resumed across member failures); leaving the iteration cancels it."""
        watch = await self.open_watch(key, **options)
        try:
            while (response := await watch.next()) is not None:
                yield response
        finally:
            await watch.cancel()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.aclose()


class AsyncWatch:
    """A cairn.watch.Watch for an event loop. No thread waits for responses: the
    watch wakes the loop when it queues one."""

    def __init__(self, watch, loop: asyncio.AbstractEventLoop):
        self.watch = watch
        self._loop = loop
        self._ready = asyncio.Event()
        watch.set_listener(self._wake)

    def _wake(self) -> None:
        """Called on the client's I/O thread."""
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    async def next(self) -> m.WatchResponse | None:
        """The next response; None once the stream has ended (an error ends it by raising)."""
        while True:
            self._ready.clear()
            response = self.watch.get(timeout=0)
            if response is not None:
                return response
            if self.watch.ended:
                return None
            await self._ready.wait()

    def request_progress(self) -> None:
        self.watch.request_progress()

    async def cancel(self) -> m.WatchResponse | None:
        self.watch.set_listener(None)
        return await asyncio.to_thread(self.watch.cancel)


__all__ = ["Client", "AsyncWatch"]
