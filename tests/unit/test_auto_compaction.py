from actors.raft.auto_compaction import AutoCompactor


def test_off_never_compacts():
    assert AutoCompactor("off", 10).next_target(100.0, 10_000) is None


def test_revision_mode_keeps_retention_and_steps_by_a_tenth():
    compactor = AutoCompactor("revision", 1000)
    assert compactor.next_target(0, 500) is None  # not enough history yet
    assert compactor.next_target(0, 1200) == 200
    assert compactor.next_target(0, 1250) is None  # moved by less than 100
    assert compactor.next_target(0, 1300) == 300


def test_periodic_mode_compacts_to_the_revision_of_one_period_ago():
    compactor = AutoCompactor("periodic", 60)
    assert compactor.next_target(0.0, 10) is None
    for second in range(6, 60, 6):
        assert compactor.next_target(float(second), 10 + second) is None
    assert compactor.next_target(60.0, 70) == 10
    assert compactor.next_target(61.0, 71) is None  # no new sample a period old yet
    assert compactor.next_target(66.0, 76) == 16
