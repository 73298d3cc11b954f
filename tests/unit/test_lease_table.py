"""The leader's lease deadlines (pure logic, time passed in)."""

from actors.lease_table import LeaseTable


def leading(leases=None, now=0.0, extend=1.0):
    table = LeaseTable(retry_s=5.0)
    table.load(leases or {})
    table.promote(now, extend)
    return table


def test_a_granted_lease_expires_at_its_ttl_not_before():
    table = leading()
    table.granted(7, 10, now=100.0)
    assert table.expired(109.9, limit=10) == []
    assert table.expired(110.0, limit=10) == [7]
    assert table.expired(111.0, limit=10) == []  # being revoked: not offered twice


def test_a_revocation_that_got_lost_is_offered_again_after_retry():
    table = leading()
    table.granted(7, 10, now=0.0)
    assert table.expired(10.0, limit=10) == [7]
    assert table.expired(14.9, limit=10) == []
    assert table.expired(15.0, limit=10) == [7]
    table.revoked(7)
    assert table.expired(30.0, limit=10) == []


def test_keepalive_pushes_the_deadline_and_unknown_leases_get_zero():
    table = leading()
    table.granted(7, 10, now=0.0)
    assert table.renew(7, now=8.0) == 10
    assert table.expired(17.9, limit=10) == []
    assert table.expired(18.0, limit=10) == [7]
    assert table.renew(7, now=18.5) == 0  # expired: its revocation is on its way
    assert table.renew(99, now=0.0) == 0


def test_a_new_leader_resumes_from_the_checkpoint_plus_one_election_timeout():
    # lease 1 was checkpointed with 3 s left of 10; lease 2 never checkpointed
    table = leading({1: (10, 3), 2: (10, 0)}, now=50.0, extend=1.0)
    assert table.expired(53.9, limit=10) == []
    assert table.expired(54.0, limit=10) == [1]  # 50 + 3 + 1: not a fresh 10 s
    table.revoked(1)
    assert table.expired(60.9, limit=10) == []
    assert table.expired(61.0, limit=10) == [2]


def test_followers_keep_no_deadlines_and_renew_nothing():
    table = LeaseTable()
    table.load({1: (10, 0)})
    table.granted(2, 5, now=0.0)
    assert table.renew(2, now=1.0) == 0
    assert table.expired(100.0, limit=10) == []
    assert table.remaining(2, now=1.0) == 5
    table.promote(10.0, 1.0)
    table.demote()
    assert table.expired(100.0, limit=10) == []


def test_limit_bounds_one_round_of_expiries():
    table = leading()
    for lease in range(1, 101):
        table.granted(lease, 5, now=0.0)
    first = table.expired(10.0, limit=40)
    second = table.expired(10.0, limit=40)
    third = table.expired(10.0, limit=40)
    assert len(first) == 40 and len(second) == 40 and len(third) == 20
    assert set(first + second + third) == set(range(1, 101))


def test_checkpoints_carry_remaining_time_and_a_renewal_clears_a_stale_one():
    table = leading()
    table.granted(7, 10, now=0.0)
    assert table.checkpoints(now=4.0) == [(7, 6)]
    table.checkpoint_persisted(7, 6)
    table.renew(7, now=5.0)  # the persisted 6 is now stale: a new leader would expire it early
    assert table.dirty_checkpoints(now=5.0) == [(7, 10)]


def test_remaining_rounds_up_and_unknown_is_minus_one():
    table = leading()
    table.granted(7, 10, now=0.0)
    assert table.remaining(7, now=2.5) == 8
    assert table.remaining(8, now=2.5) == -1
