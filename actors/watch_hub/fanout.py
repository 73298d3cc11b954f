"""Fan-out: a live batch's events to every synced watcher that wants them.

Sharing the work. Fan-out costs per watcher, so whatever can be done once
for many watchers is. Watchers with the same key range, filters, prev_kv and
fragment flag form a Selector: a live event is matched once per selector
(through the registry's index, watchers.py), and a batch's units are built
once per selector; the very same units, shared and never changed (units.py),
go into the buffer of each synced watcher that takes the whole batch (a
watcher whose next revision falls inside the batch gets units of its own).
Frames are shared too, when output is taken: see output.py.
"""

from __future__ import annotations

from actors.watch_hub.credit import Credit
from actors.watch_hub.limits import HubLimits
from actors.watch_hub.units import Unit, build_units
from actors.watch_hub.watchers import Registry, Selector
from transport.messages import Event
from transport.watch_wire import EncodedEvent


class FanOut:
    def __init__(self, limits: HubLimits, registry: Registry, credit: Credit):
        self.limits = limits
        self.registry = registry
        self.credit = credit

    def deliver(self, events: tuple[Event, ...] | list[Event], previous: int, revision: int) -> None:
        """A live batch that takes the hub from `previous` to `revision`; its
        events of `previous` or older were had already and are skipped."""
        for selector, encoded_events in self._match(events, previous).items():
            self._deliver(selector, encoded_events, previous, revision)

    def _match(self, events, previous: int) -> dict[Selector, list[EncodedEvent]]:
        """Each selector's events, every event encoded once for all of them."""
        matched: dict[Selector, list[EncodedEvent]] = {}
        for event in events:
            if event.kv.mod_revision <= previous:
                continue
            encoded = None
            for selector in self.registry.matching(event.kv.key):
                if not selector.wants(event):
                    continue
                if encoded is None:
                    encoded = EncodedEvent(event)
                found = matched.get(selector)
                if found is None:
                    matched[selector] = [encoded]
                else:
                    found.append(encoded)
        return matched

    def _deliver(self, selector: Selector, events: list[EncodedEvent], previous: int, revision: int) -> None:
        """A live batch's events of one selector to each of its synced watchers,
        from the watcher's next revision on; the units are built once for all
        that take the whole batch."""
        template: list[Unit] | None = None
        first_revision = events[0].revision
        for watcher in list(selector.watchers):
            if not watcher.synced:
                continue
            if watcher.next_revision > first_revision:
                taken = [event for event in events if event.revision >= watcher.next_revision]
                if not taken:
                    continue
                units = build_units(selector, taken, 0, revision, self.limits.max_response_bytes)
            else:
                if template is None:
                    template = build_units(selector, events, previous + 1, revision, self.limits.max_response_bytes)
                    for unit in template:
                        unit.shared = True
                first = max(watcher.queued_revision, previous) + 1
                units = template if first == template[0].first else [template[0].starting_at(first), *template[1:]]
                self.credit.append(watcher, units, live=True)
                continue
            units[0].first = max(watcher.queued_revision, previous) + 1
            self.credit.append(watcher, units, live=True)
