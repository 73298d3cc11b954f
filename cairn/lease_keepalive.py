"""A background keep-alive for one lease (etcd clientv3's KeepAlive).

A thread renews the lease every ttl/3 seconds (as etcd's client does) through
Client.lease_keepalive_once, which fails over between members like any request.
Responses are queued for whoever iterates; the thread stops when the lease is
gone (TTL 0: expired or revoked), on close(), or when the Client closes.
"""

from __future__ import annotations

import queue
import threading

from transport.errors import CairnError, LeaseNotFoundError

# A response queue longer than this drops the oldest: an application that never
# reads the stream must not grow memory without bound.
MAX_QUEUED_RESPONSES = 16


class KeepAlive:
    def __init__(self, client, lease_id: int):
        self.client = client
        self.lease_id = lease_id
        self.responses: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_RESPONSES)
        self.stopped = threading.Event()
        self.error: CairnError | None = None
        self.thread = threading.Thread(target=self._run, name=f"cairn-keepalive-{lease_id:x}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                response = self.client.lease_keepalive_once(self.lease_id)
            except LeaseNotFoundError as error:
                self.error = error
                break
            except CairnError as error:  # a member failed: try again soon, through another
                self.error = error
                if self.stopped.wait(0.5):
                    break
                continue
            self.error = None
            self._offer(response)
            if self.stopped.wait(max(response.ttl / 3, 0.5)):
                break
        self.stopped.set()
        self._offer(None)  # the end of the stream

    def _offer(self, item) -> None:
        while True:
            try:
                self.responses.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.responses.get_nowait()
                except queue.Empty:
                    pass

    def __iter__(self):
        while True:
            item = self.responses.get()
            if item is None:
                if isinstance(self.error, LeaseNotFoundError):
                    raise self.error
                return
            yield item

    @property
    def alive(self) -> bool:
        return not self.stopped.is_set()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
