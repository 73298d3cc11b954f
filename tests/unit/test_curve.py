"""CURVE key files and the security section of the config (transport/curve.py, cairn/config.py)."""

import os
import stat
import subprocess
import sys

import pytest
import yaml

from cairn import config
from transport import curve


def test_keygen_writes_an_owner_only_secret_and_a_public_file(tmp_path):
    path = str(tmp_path / "keys" / "n1.key")
    result = subprocess.run([sys.executable, "-m", "cairn.node", "keygen", path], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    keys = curve.read_secret_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert curve.read_public_key(path + ".pub") == keys.public
    assert result.stdout.strip().splitlines()[-1] == keys.public.decode()
    assert keys.secret.decode() not in result.stdout + result.stderr
    again = subprocess.run([sys.executable, "-m", "cairn.node", "keygen", path], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "not overwriting" in again.stderr
    assert curve.read_secret_key(path) == keys


def test_a_secret_never_shows(tmp_path):
    keys = curve.write_key_pair(str(tmp_path / "k"))
    assert keys.secret.decode() not in repr(keys) and keys.public.decode() in repr(keys)
    os.chmod(tmp_path / "k", 0o640)
    with pytest.raises(curve.KeyFileError, match="accessible by other users") as caught:
        curve.read_secret_key(str(tmp_path / "k"))
    assert keys.secret.decode() not in str(caught.value)
    (tmp_path / "bad").write_text("secret-key = not a key\n")
    os.chmod(tmp_path / "bad", 0o600)
    with pytest.raises(curve.KeyFileError, match="not a cairn secret key file") as caught:
        curve.read_secret_key(str(tmp_path / "bad"))
    assert "not a key" not in str(caught.value)


def secure_document(tmp_path):
    members = []
    for i, name in enumerate(("a", "b")):
        keys = curve.write_key_pair(str(tmp_path / "keys" / f"{name}.key"), force=True)
        members.append({"name": name, "peer": f"tcp://127.0.0.1:{3380 + i}", "client": f"tcp://127.0.0.1:{3390 + i}",
                        "public_key": keys.public.decode()})
    return {"cluster": {"name": "t", "members": members}, "member": {}}


def load(tmp_path, document):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(document))
    return config.load(str(path))


def test_curve_is_the_default_and_reads_the_members_keys(tmp_path):
    loaded = load(tmp_path, secure_document(tmp_path))
    assert loaded.security.curve and loaded.security.client_keys == ()
    keys = loaded.member_keys("a")
    assert keys.public.decode() == loaded.member("a").public_key
    assert loaded.secret_key_file("a") == str(tmp_path / "keys" / "a.key")


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["cluster"]["members"][1].pop("public_key"), "cluster.members[1].public_key: missing: cluster.security.mode is curve"),
    (lambda d: d["cluster"]["members"][1].update(public_key="short"), "short' is neither a public key"),
    (lambda d: d["cluster"]["members"][1].update(public_key=d["cluster"]["members"][0]["public_key"]), "the same key as member a"),
    (lambda d: d["cluster"].update(security={"mode": "tls"}), "cluster.security.mode: must be curve or plaintext"),
    (lambda d: d["cluster"].update(security={"mode": "curve", "client_keys": ["x"]}), "cluster.security.client_keys[0]"),
    (lambda d: d["cluster"]["members"][0].update(http="http://127.0.0.1:3400"), "cluster.members[0].http: http://127.0.0.1:3400 is plaintext"),
    (lambda d: d["cluster"]["members"][0].update(grpc="https://127.0.0.1:3400"), "https:// needs member.tls.cert_file"),
    (lambda d: d["member"].update(tls={"cert_file": "c.pem"}), "member.tls: cert_file and key_file go together"),
])
def test_bad_security_configs(tmp_path, change, expected):
    document = secure_document(tmp_path)
    change(document)
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, document)
    assert expected in str(caught.value)


def test_public_keys_may_be_pub_files(tmp_path):
    document = secure_document(tmp_path)
    document["cluster"]["members"][0]["public_key"] = "keys/a.key.pub"
    document["cluster"]["security"] = {"client_keys": [str(tmp_path / "keys" / "b.key.pub")]}
    loaded = load(tmp_path, document)
    assert loaded.member("a").public_key == curve.read_public_key(str(tmp_path / "keys" / "a.key.pub")).decode()
    assert loaded.security.client_keys == (loaded.member("b").public_key.encode(),)
    loaded.member_keys("a")


def test_a_plaintext_config_says_so_and_needs_no_keys(tmp_path):
    document = secure_document(tmp_path)
    document["cluster"]["security"] = {"mode": "plaintext"}
    for member in document["cluster"]["members"]:
        member.pop("public_key")
    loaded = load(tmp_path, document)
    assert not loaded.security.curve and loaded.member_keys("a") is None


def test_a_wrong_or_missing_secret_key_file_is_a_config_error(tmp_path):
    document = secure_document(tmp_path)
    loaded = load(tmp_path, document)
    curve.write_key_pair(str(tmp_path / "keys" / "a.key"), force=True)
    with pytest.raises(config.ConfigError, match="is not the key of member a"):
        loaded.member_keys("a")
    os.unlink(tmp_path / "keys" / "b.key")
    with pytest.raises(config.ConfigError, match="not found .*cairn keygen"):
        loaded.member_keys("b")


def test_client_curve_takes_one_key_or_one_per_endpoint(tmp_path):
    member = curve.write_key_pair(str(tmp_path / "m.key"))
    one = curve.ClientCurve(["tcp://127.0.0.1:1"], member.public.decode())
    assert one.server_key("tcp://127.0.0.1:1") == member.public and one.server_key("tcp://127.0.0.1:2") is None
    from_file = curve.ClientCurve(["tcp://127.0.0.1:1"], str(tmp_path / "m.key.pub"), str(tmp_path / "m.key"))
    assert from_file.keys == member
    several = curve.ClientCurve([], {"tcp://127.0.0.1:2": member.public})
    assert several.server_key("tcp://127.0.0.1:2") == member.public
    with pytest.raises(curve.KeyFileError):
        curve.ClientCurve(["tcp://127.0.0.1:1"], "nonsense")
