"""The raft actor's own bounds and periods (the shell's: actor.py, peers.py,
snapshots.py), each with its reason. The member's configurable Raft limits
(entries and bytes per message, in-flight messages, uncommitted bytes, ticks)
are cairn/config.py's; the pure core takes those from the config."""

from __future__ import annotations

from transport.limits import holds, limit, limits, positive


@limits(
    positive("apply_chunk_entries", "peer_hwm", "snapshot_chunk_bytes", "snapshot_window_chunks",
             "auto_compaction_check_s", "starved_ticks", "commit_notice_ms"),
    holds(lambda l: l.snapshot_resend_after_s < l.snapshot_stall_s,
          "a transfer is resent from its last ack several times before it is given up"),
    holds(lambda l: l.snapshot_window_chunks < l.peer_hwm, "a window of chunks fits a peer's queue"),
)
class RaftLimits:
    """Every bound of the raft actor's shell; tests may shrink them."""

    apply_chunk_entries: int = limit(
        1024,
        "Entries per CommittedEntries message: bounds one message's size and apply's batch.")
    peer_hwm: int = limit(
        1000,
        "Frames queued to (and from) one peer: a peer that is down costs at most this much memory; a frame dropped at "
        "the mark is a message Raft resends anyway (heartbeats, the next append).")
    snapshot_chunk_bytes: int = limit(
        1024 * 1024,
        "A snapshot is streamed in pieces of this size, each one peer frame.")
    snapshot_window_chunks: int = limit(
        4,
        "Chunks sent and not yet acknowledged per transfer: memory is bounded by the window times the chunk size per "
        "follower, and the file streams without waiting for each ack.")
    snapshot_stall_s: float = limit(
        30.0,
        "A transfer with no progress for this long is abandoned and reported failed, so the leader's core can try "
        "again.")
    snapshot_resend_after_s: float = limit(
        2.0,
        "No ack for this long: resend from the last acknowledged offset (a chunk was lost).")
    auto_compaction_check_s: float = limit(
        1.0,
        "How often the leader asks the auto-compactor whether a compaction is due: cheap, and coarse enough.")
    starved_ticks: int = limit(
        10,
        "A loop turn this many ticks late (the process was starved of CPU) does not replay the missed ticks in a "
        "burst, which would start an election at once; it resumes ticking from now.")
    commit_notice_ms: int = limit(
        5,
        "A leader tells a follower nobody waits on that an entry committed with its next append or heartbeat, or this "
        "much later at most (RaftConfig.defer_commit_notice): under a stream of writes the next append comes first and "
        "the follower handles one message per write, not two; a lone write reaches the followers' keyspaces (their "
        "serializable reads and watches) at most this much later.")
