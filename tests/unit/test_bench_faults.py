"""The fault mix's schedule and linearizability checker (cairn/bench_faults.py):
pure, so every history here is written out by hand, and those that break a
rule must be caught."""

from cairn import bench_faults as bf
from cairn.bench_faults import CAS, READ, WRITE, Operation


def read(worker, key, invoked, returned, value, ok=True):
    return Operation(worker, READ, key, invoked, returned, ok, value)


def write(worker, key, invoked, returned, value, succeeded=True, observed=None, retried=False, ok=True):
    return Operation(worker, WRITE, key, invoked, returned, ok, value, None, succeeded if ok else None,
                     observed, retried)


def cas(worker, key, invoked, returned, expected, value, succeeded=True, observed=None, retried=False, ok=True):
    return Operation(worker, CAS, key, invoked, returned, ok, value, expected, succeeded if ok else None,
                     observed, retried)


def final(key, value, at=100.0):
    return read(-1, key, at, at + 1, value)


# ---------------------------------------------------------------------------- histories that are fine


def test_a_sequential_history_is_linearizable():
    ops = [write(0, 0, 1, 2, 1), read(1, 0, 3, 4, 1), cas(0, 0, 5, 6, 1, 2), read(1, 0, 7, 8, 2)]
    verdict = bf.check_history(ops, [final(0, 2)])
    assert verdict.linearizable, verdict
    assert verdict.acknowledged == 4 and verdict.values_checked == 4  # 2 reads, the cas's expected, the final read


def test_a_read_concurrent_with_a_write_may_see_either_value():
    ops = [write(0, 0, 1, 5, 1), read(1, 0, 2, 3, 0), read(2, 0, 2, 3, 1)]
    assert bf.check_history(ops, [final(0, 1)]).linearizable


def test_a_write_that_timed_out_may_apply_later_or_never():
    late = [write(0, 0, 1, 2, 1, ok=False), read(1, 0, 10, 11, 0), read(1, 0, 12, 13, 1)]
    assert bf.check_history(late, [final(0, 1)]).linearizable
    never = [write(0, 0, 1, 2, 1, ok=False), write(0, 0, 3, 4, 2)]
    assert bf.check_history(never, [final(0, 2)]).linearizable


def test_a_repeated_write_that_finds_its_own_value_was_applied_by_an_earlier_attempt():
    ops = [write(0, 0, 1, 4, 1, succeeded=False, observed=1, retried=True), read(1, 0, 5, 6, 1)]
    verdict = bf.check_history(ops, [final(0, 1)])
    assert verdict.linearizable
    # ... and so it counts as acknowledged: a later read of the old value is a lost write
    assert not bf.check_history(ops + [read(1, 0, 7, 8, 0)], []).linearizable


def test_a_failed_cas_that_saw_a_newer_value_is_fine():
    ops = [write(0, 0, 1, 2, 1, ok=False), cas(0, 0, 3, 4, 0, 2, succeeded=False, observed=1)]
    assert bf.check_history(ops, [final(0, 1)]).linearizable


# ---------------------------------------------------------------------------- histories that must fail


def test_a_read_below_an_acknowledged_write_is_caught():
    verdict = bf.check_history([write(0, 0, 1, 2, 1), read(1, 0, 3, 4, 0)], [])
    assert not verdict.linearizable
    assert "below 1" in verdict.violations[0]


def test_a_read_of_a_value_never_written_yet_is_caught():
    verdict = bf.check_history([read(1, 0, 1, 2, 1), write(0, 0, 3, 4, 1)], [])
    assert "above 0" in verdict.violations[0]


def test_a_read_going_back_after_another_read_saw_newer_is_caught():
    # the write is still in flight: each read alone is within bounds, but the key cannot go back
    ops = [write(0, 0, 1, 10, 1), read(1, 0, 2, 3, 1), read(2, 0, 4, 5, 0)]
    verdict = bf.check_history(ops, [])
    assert len(verdict.violations) == 1 and "worker 2" in verdict.violations[0]


def test_a_write_whose_guard_failed_at_once_is_caught():
    verdict = bf.check_history([write(0, 0, 1, 2, 1, succeeded=False, observed=1)], [])
    assert "before any attempt of it could apply" in verdict.violations[0]


def test_a_cas_that_failed_while_the_key_held_its_expected_value_is_caught():
    verdict = bf.check_history([cas(0, 0, 1, 2, 0, 1, succeeded=False, observed=0)], [])
    assert "failed though the key held 0" in verdict.violations[0]


def test_a_successful_cas_on_a_value_already_overwritten_is_caught():
    ops = [write(0, 0, 1, 2, 1), cas(0, 0, 3, 4, 0, 2)]
    verdict = bf.check_history(ops, [])
    assert "below 1" in verdict.violations[0]


def test_a_missing_key_is_caught():
    assert "missing" in bf.check_history([read(1, 0, 1, 2, None)], []).violations[0]


def test_an_acknowledged_write_missing_at_the_end_is_lost():
    verdict = bf.check_history([write(0, 0, 1, 2, 1), write(0, 1, 1, 2, 5)], [final(0, 1), final(1, 4)])
    assert verdict.violations == [] and len(verdict.lost) == 1 and "key 1 at 4" in verdict.lost[0]


def test_keys_are_checked_apart():
    ops = [write(0, 0, 1, 2, 3), read(1, 1, 3, 4, 0)]
    assert bf.check_history(ops, []).linearizable


def test_values_round_trip_and_foreign_values_are_not_ours():
    assert bf.decode_value(bf.encode_value(42)) == 42
    assert bf.encode_value(2) < bf.encode_value(10)  # byte order is number order: the guard relies on it
    assert bf.decode_value(b"x") == -1 and bf.decode_value(None) is None
    assert "below" in bf.check_history([read(1, 0, 1, 2, -1)], []).violations[0]


# ---------------------------------------------------------------------------- the schedule and the windows


def test_the_schedule_is_the_same_for_a_seed_and_has_every_kind():
    schedule = bf.fault_schedule(7, 60.0)
    assert schedule == bf.fault_schedule(7, 60.0) and schedule != bf.fault_schedule(8, 60.0)
    assert {fault.kind for fault in schedule} == set(bf.FAULT_KINDS)
    for fault, after in zip(schedule, schedule[1:]):
        assert after.at_s >= fault.at_s + fault.hold_s + bf.GAP_S_MIN
    assert all(fault.at_s + fault.hold_s < 60.0 and 0 <= fault.member < 3 for fault in schedule)


def test_a_short_run_still_gets_a_fault():
    assert bf.fault_schedule(1, 5.0)
    assert bf.fault_schedule(1, 0.5) == []


def test_fault_windows_measure_the_outage_and_the_stalls():
    events = [bf.FaultEvent(bf.KILL_LEADER, (0,), 10.0, 11.0), bf.FaultEvent(bf.STOP, (1,), 20.0, 21.0)]
    ops = [read(0, 0, 9.0, 10.5, 0), write(1, 1, 10.5, 13.0, 1), read(0, 0, 13.0, 13.5, 1),
           read(0, 0, 20.0, 20.2, 1), read(1, 0, 20.0, 25.0, 1, ok=False)]
    first, second = bf.fault_windows(events, ops, 30.0, workers=2)
    assert first["no_ack_s"] == 6.5  # 13.5 -> 20.0, the end of its window
    assert first["to_first_write_s"] == 3.0 and first["acknowledged"] == 3
    assert first["worker_stall_s"] == 6.5 + 7.0
    assert second["no_ack_s"] == 9.8 and second["to_first_write_s"] is None and second["failed"] == 1
    summary = bf.summarize_windows([first, second])
    assert summary[bf.KILL_LEADER]["count"] == 1 and bf.KILL not in summary
