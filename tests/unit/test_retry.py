"""The client's failover decisions (cairn/retry.py) for the cases this change adds."""

from cairn import retry
from transport.errors import ConnectionLostError, IndeterminateError, NoLeaderError, Unavailable


def test_a_read_lost_with_its_connection_is_sent_again_under_a_new_id():
    step = retry.after_error(ConnectionLostError("connection to tcp://a lost", endpoint="tcp://a"), True, write=False)
    assert step.action == retry.RETRY and step.new_request_id and step.backoff


def test_a_write_lost_with_its_connection_is_indeterminate_never_retried():
    for may_fail_over in (True, False):
        step = retry.after_error(ConnectionLostError("connection to tcp://a lost", endpoint="tcp://a"), may_fail_over, write=True)
        assert step.action == retry.RAISE
        assert isinstance(step.value, IndeterminateError) and step.value.endpoint == "tcp://a"


def test_errors_that_prove_nothing_was_sent_are_retried_only_where_failover_is_allowed():
    assert retry.after_error(Unavailable("down"), True, write=True).action == retry.RETRY
    assert retry.after_error(Unavailable("down"), False, write=True).action == retry.RAISE
    assert retry.after_error(NoLeaderError(), True).action == retry.RETRY
