"""Config validation: every problem is one line naming the file and the field."""

import subprocess
import sys

import pytest

from cairn import config

GOOD = """
cluster:
  name: test
  security: {mode: plaintext}
  members:
    - {name: a, peer: "tcp://127.0.0.1:3380", client: "tcp://127.0.0.1:3379"}
    - {name: b, peer: "tcp://127.0.0.1:3381", client: "tcp://127.0.0.1:3378"}
member:
  data_dir: d/{name}
  election_ticks: 12
  limits: {max_txn_ops: 64}
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_good_config_loads_with_defaults_and_overrides(tmp_path):
    loaded = config.load(write(tmp_path, GOOD))
    assert [m.name for m in loaded.members] == ["a", "b"]
    assert loaded.settings.election_ticks == 12
    assert loaded.settings.limits.max_txn_ops == 64
    assert loaded.settings.limits.max_request_bytes == 1536 * 1024
    assert loaded.data_dir("a") == str(tmp_path / "d" / "a")
    assert len({m.id for m in loaded.members}) == 2 and loaded.id not in {m.id for m in loaded.members}


def test_member_ids_are_stable():
    assert config.member_id_for("x", "n1") == config.member_id_for("x", "n1")
    assert config.member_id_for("x", "n1") != config.member_id_for("y", "n1")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("cluster: [unclosed", "invalid YAML"),
        ("- just a list", "top level"),
        ("cluster: {name: t}", "cluster.members: missing"),
        ("cluster: {name: t, members: []}", "at least one member"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}]}\nextra: 1", "extra: unknown key"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1'}]}", "cluster.members[0].client: missing"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'http://x:2'}]}", "cluster.members[0].client: 'http://x:2' is not tcp://HOST:PORT"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:99999', client: 'tcp://127.0.0.1:2'}]}", "cluster.members[0].peer"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}, {name: a, peer: 'tcp://127.0.0.1:3', client: 'tcp://127.0.0.1:4'}]}", "cluster.members[1].name: duplicate member name 'a'"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}, {name: b, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:4'}]}", "cluster.members[1].peer: address tcp://127.0.0.1:1 already used"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2', color: red}]}", "cluster.members[0].color: unknown key"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}]}\nmember: {tick_ms: fast}", "member.tick_ms: expected an integer"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}]}\nmember: {election_ticks: 2}", "member.election_ticks: must be more than 2 * heartbeat_ticks"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}]}\nmember: {limits: {bogus: 1}}", "member.limits.bogus: unknown key"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}]}\nmember: {log_level: loud}", "member.log_level"),
        ("cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'tcp://127.0.0.1:2'}]}\nmember: {keyspace_sync_ms: -1}", "member.keyspace_sync_ms: must not be negative"),
    ],
)
def test_bad_configs_name_file_and_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert message.startswith(path + ": ")
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(str(tmp_path / "nope.yaml"))


def test_cairn_node_exits_2_on_bad_config_and_starts_nothing(tmp_path):
    path = write(tmp_path, "cluster: {name: t, members: [{name: a, peer: 'tcp://127.0.0.1:1', client: 'nonsense'}]}")
    result = subprocess.run([sys.executable, "-m", "cairn.node", "node", "--config", path, "--name", "a"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cluster.members[0].client" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_cairn_node_exits_2_on_unknown_member(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cairn.node", "node", "--config", write(tmp_path, GOOD), "--name", "zz"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no member named 'zz'" in result.stderr


@pytest.mark.parametrize("name", ["configs/local-1node.yaml", "configs/local-3node.yaml", "configs/multi-host.yaml"])
def test_shipped_configs_are_valid(name):
    loaded = config.load(name)
    assert loaded.members
