"""Cluster membership for the Raft core: single-server changes (thesis §4.1), learners,
and the checks an actor makes before proposing a change.

Theory of operation
-------------------
A configuration (``ConfState``) is who votes and who only receives the log
(learners: they replicate, never count towards a quorum, never campaign). It changes
one server at a time through the log: an entry of kind ENTRY_CONF_CHANGE carries the
change and the configuration it results in (transport/raft_messages.py).

Thesis §4.1: "a server always uses the latest configuration in its log, regardless of
whether that entry is committed". So the configuration is a function of the log:
the snapshot's configuration (or, for a log that starts at index 1, the bootstrap
configuration from RaftConfig), then each conf-change entry in order. ``ConfigHistory``
keeps exactly that: the base configuration and the conf-change entries still in the
log, so that when a follower's uncommitted tail is replaced (§5.3) the configuration
goes back with it, and ``at(index)`` gives the configuration a snapshot at `index`
must record.

Why single-server changes are safe (thesis §4.1, figure 4.3): adding or removing one
voter makes every majority of the old configuration overlap every majority of the
new one, so two leaders of one term cannot be elected from the two. That needs:

* at most one change in flight: a leader appends a change only once the previous one
  is committed (``ConfigHistory.pending``), so no log ever holds two uncommitted
  changes from one leader;
* a leader appends a change only after it committed an entry of its own term
  (Ongaro, raft-dev 2015, "bug in single-server membership changes": otherwise a
  change of an earlier term, uncommitted and later overwritten, can coexist with a
  change of the new leader and the overlap argument fails).

``change_problem`` says whether a change makes sense in a configuration;
``reconfig_problem`` is etcd's --strict-reconfig-check (would the change leave fewer
started voters than a quorum?); ``learner_in_sync`` is etcd's promote check. The
error strings the actor returns to clients are etcd's own.
"""

from __future__ import annotations

from typing import Callable, Iterable

from transport.raft_messages import (
    CONF_ADD_LEARNER,
    CONF_ADD_VOTER,
    CONF_PROMOTE,
    CONF_REMOVE,
    CONF_UPDATE,
    ConfChange,
    ConfState,
)

# etcd's texts (etcdserver/errors.go), for the actor to answer with.
ERR_NOT_ENOUGH_STARTED_MEMBERS = "etcdserver: re-configuration failed due to not enough started members"
ERR_LEARNER_NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"
# etcd's readyPercent: a learner may be promoted once its match index is within 90%
# of the leader's (server.go isLearnerReady).
LEARNER_READY_FRACTION = 0.9


def members(conf: ConfState) -> tuple[int, ...]:
    return (*conf.voters, *conf.learners)


def change_problem(conf: ConfState, change: ConfChange) -> str | None:
    """Why `change` cannot be applied to `conf` (None if it can)."""
    node = change.node_id
    if node <= 0:
        return "invalid_node_id"
    t = change.type
    if t == CONF_ADD_VOTER or t == CONF_ADD_LEARNER:
        if node in conf.voters or node in conf.learners:
            return "already_member"
    elif t == CONF_PROMOTE:
        if node in conf.voters:
            return "already_voter"
        if node not in conf.learners:
            return "not_a_member"
    elif t == CONF_REMOVE:
        if node not in conf.voters and node not in conf.learners:
            return "not_a_member"
        if conf.voters == (node,):
            # A configuration without voters can never elect a leader again.
            return "removing_last_voter"
    elif t == CONF_UPDATE:
        if node not in conf.voters and node not in conf.learners:
            return "not_a_member"
    else:
        return "unknown_change_type"
    return None


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after `change` (which must be valid for `conf`)."""
    problem = change_problem(conf, change)
    assert problem is None, (problem, conf, change)
    node = change.node_id
    t = change.type
    if t == CONF_ADD_VOTER:
        return ConfState((*conf.voters, node), conf.learners)
    if t == CONF_ADD_LEARNER:
        return ConfState(conf.voters, (*conf.learners, node))
    if t == CONF_PROMOTE:
        return ConfState((*conf.voters, node), tuple(v for v in conf.learners if v != node))
    if t == CONF_REMOVE:
        return ConfState(tuple(v for v in conf.voters if v != node), tuple(v for v in conf.learners if v != node))
    return conf  # CONF_UPDATE


def is_single_server_change(before: ConfState, after: ConfState) -> bool:
    """At most one voter joins or leaves (thesis §4.1); learners may come and go
    freely because they never count. Used by the simulator's invariant check."""
    old, new = set(before.voters), set(after.voters)
    return len(old ^ new) <= 1 and bool(new)


def quorum(voter_count: int) -> int:
    return voter_count // 2 + 1


def reconfig_problem(conf: ConfState, change: ConfChange, active: Iterable[int]) -> str | None:
    """etcd's --strict-reconfig-check: ERR_NOT_ENOUGH_STARTED_MEMBERS if, after the
    change, fewer voters than a quorum would be started/active (recently heard by
    the leader; the leader counts itself), else None. Learner changes never matter.

    Follows etcd's RaftCluster.IsReadyTo{Add,Remove,Promote}VotingMember: a voter
    being added is not started yet; a learner being promoted counts as started; the
    one exception is growing a single-voter cluster to two (etcd allows it, to
    restore a cluster from one member's data)."""
    active_set = set(active)
    node = change.node_id
    t = change.type
    if t == CONF_ADD_VOTER:
        started = sum(1 for v in conf.voters if v in active_set)
        total = len(conf.voters) + 1
        if started == 1 and total == 2:
            return None
    elif t == CONF_PROMOTE:
        started = 1 + sum(1 for v in conf.voters if v in active_set)
        total = len(conf.voters) + 1
    elif t == CONF_REMOVE and node in conf.voters:
        remaining = [v for v in conf.voters if v != node]
        started = sum(1 for v in remaining if v in active_set)
        total = len(remaining)
    else:
        return None
    if started < quorum(total):
        return ERR_NOT_ENOUGH_STARTED_MEMBERS
    return None


def learner_in_sync(learner_match: int, leader_match: int) -> bool:
    """etcd's isLearnerReady: the learner's log is within 90% of the leader's."""
    return learner_match >= leader_match * LEARNER_READY_FRACTION


class ConfigHistory:
    """The configuration a log starts with and the conf-change entries in it."""

    __slots__ = ("base", "_records")

    def __init__(self, base: ConfState) -> None:
        self.base = base
        self._records: list[tuple[int, int, ConfState]] = []  # (index, term, conf after it)

    def latest(self) -> ConfState:
        return self._records[-1][2] if self._records else self.base

    def latest_index(self) -> int:
        """Index of the last conf-change entry in the log (0 if none after the snapshot:
        a snapshot only ever covers committed entries)."""
        return self._records[-1][0] if self._records else 0

    def pending(self, committed: int) -> bool:
        return self.latest_index() > committed

    def at(self, index: int) -> ConfState:
        conf = self.base
        for record_index, _, record_conf in self._records:
            if record_index > index:
                break
            conf = record_conf
        return conf

    def add(self, index: int, term: int, conf: ConfState) -> None:
        assert not self._records or self._records[-1][0] < index, (self._records[-1], index)
        self._records.append((index, term, conf))

    def retain(self, term_at: Callable[[int], int | None]) -> None:
        """Forget conf-change entries no longer in the log (a conflicting append
        replaced them); they form a suffix because the log is replaced from an index on."""
        while self._records and term_at(self._records[-1][0]) != self._records[-1][1]:
            self._records.pop()

    def compact(self, index: int) -> None:
        """The log now starts after `index`: fold the entries up to it into the base."""
        self.base = self.at(index)
        self._records = [r for r in self._records if r[0] > index]

    def reset(self, base: ConfState) -> None:
        """A snapshot replaced the whole log."""
        self.base = base
        self._records = []
