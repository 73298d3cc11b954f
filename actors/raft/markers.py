"""The raft actor's files in a member's data dir and its exit status on removal,
apart from the actor so that `cairn node` and the supervisor read them without
importing the raft actor (and the whole Raft core) on a member's start."""

# `cairn node --rejoin` leaves this file in the data dir until the member has
# caught up, so a restart in between stays in rejoin mode.
REJOIN_MARKER = "rejoin"
# A member that learns it was removed leaves this file in its data dir and exits
# with REMOVED_EXIT_CODE; the supervisor then stops the member, and refuses to
# start it again with this data dir.
REMOVED_MARKER = "removed"
REMOVED_EXIT_CODE = 78
