"""The asyncio client: cairn.Client's methods as coroutines.

    from cairn.aio import Client
    async with Client(["tcp://127.0.0.1:2379"]) as c:
        await c.put("k", "v")
        response = await c.get("k")
        async for keepalive in c.lease_keepalive(lease_id): ...
        async for response in c.watch("k", prefix=True): ...

Every request method of cairn.Client ends in `return self._call(...)`; here
`_call` is a coroutine, so those methods return awaitables with no second copy
of their argument handling. The failover rules are cairn.retry's, the same as the
blocking client's. The I/O still runs on the client's transport thread; awaiting
a reply wraps its concurrent Future, so no event-loop thread ever blocks.
"""

from __future__ import annotations

import asyncio

from cairn import client as blocking
from cairn import retry
from transport import messages as m
from transport.errors import CairnError, LeaseNotFoundError


class Client(blocking.Client):
    async def _call(self, request, write: bool, timeout=None, endpoint: str | None = None):
        call = self._start_call(request, write, timeout, endpoint)
        while True:
            index, address, remaining = self._next_attempt(call)
            future = self._transport.submit(index, call.frame, call.request_id)
            try:
                reply = await asyncio.wait_for(asyncio.wrap_future(future), remaining)
                step = retry.after_reply(reply, write, address, call.fixed is None)
            except asyncio.TimeoutError:
                step = retry.after_timeout(write, self._transport.forget(call.request_id), address)
            except CairnError as error:
                step = retry.after_error(error, call.fixed is None, write)
            if step.action == retry.RETURN:
                return step.value
            if step.action == retry.RAISE:
                raise step.value
            await asyncio.sleep(self._prepare_retry(call, step, index))

    # Methods that do more than one call, or look at the reply, need their own versions.

    async def lease_keepalive_once(self, id: int, timeout=None) -> m.LeaseKeepAliveResponse:
        response = await self._call(m.LeaseKeepAliveRequest(id), write=False, timeout=timeout)
        if response.ttl <= 0:
            raise LeaseNotFoundError()
        return response

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

    async def alarm_disarm(self, member_id: int = 0, alarm: int = m.ALARM_NOSPACE, timeout=None) -> m.AlarmResponse:
        listed = await self.alarm_list(timeout)
        targets = [(member_id, alarm)] if member_id else [(a.member_id, a.alarm) for a in listed.alarms]
        header, disarmed = listed.header, []
        for target_member, target_alarm in targets:
            response = await self._call(m.AlarmRequest(m.ALARM_DEACTIVATE, target_member, target_alarm), write=True, timeout=timeout)
            header = response.header
            disarmed.extend(response.alarms)
        return m.AlarmResponse(header, tuple(disarmed))

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
