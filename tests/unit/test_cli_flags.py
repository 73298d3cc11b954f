"""cairnctl's and `cairn bench`'s parsers take a key or password that begins
with '-' as the flag's value (a Z85 public key does, 1 time in 85)."""

import pytest

from cairn import bench, cli

KEY = "-" + "a" * 39  # the shape of a Z85 public key


@pytest.mark.parametrize("build", [cli.build_parser, bench.build_parser])
def test_a_key_beginning_with_a_dash_is_the_flags_value(build):
    command = ["get", "k"] if build is cli.build_parser else ["put"]
    args = build().parse_args(["--server-keys", KEY, "--client-key", "-secret.key", *command])
    assert args.server_keys == KEY
    assert args.client_key == "-secret.key"


def test_passwords_and_member_keys_beginning_with_a_dash():
    args = cli.build_parser().parse_args(["--user", "root", "--password", "-pw", "member", "add", "n4",
                                          "--peer-urls", "tcp://127.0.0.1:1", "--curve-key", KEY])
    assert (args.user, args.password, args.curve_key) == ("root", "-pw", KEY)


def test_after_a_double_dash_words_are_left_alone():
    args = cli.build_parser().parse_args(["put", "--", "--password", "-v"])
    assert (args.key, args.value) == ("--password", "-v")


def test_a_flag_without_its_value_is_still_a_usage_error():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["get", "k", "--server-keys"])


def test_a_new_users_password_beginning_with_a_dash():
    args = cli.build_parser().parse_args(["user", "add", "alice", "--new-user-password", "-secret"])
    assert args.new_user_password == "-secret"
