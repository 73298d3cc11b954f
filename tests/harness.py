"""Start real cairn members for tests: free loopback ports, a temporary directory,
and a guaranteed stop (each member runs in its own process group, which is
killed by its id; nothing else is ever signalled)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from cairn import Client
from cairn import config as config_module
from cairn.bench_compare import free_ports
from cairn.procfs import process_tree
from transport import curve
from transport.errors import CairnError, PermissionDeniedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT_S = 30.0


def write_config(directory, members: int = 1, http: bool = False, grpc: bool = False, secure: bool = False,
                 client_keys: tuple = (), **member_settings) -> str:
    """A config of `members` members on free loopback ports; with http=True each
    member also serves etcd's JSON gateway (actors/gateway.py), with grpc=True
    etcd's gRPC API (actors/grpc_gateway.py). secure=True: security mode curve,
    with a key pair per member in <directory>/keys (`cairn keygen`'s files) and
    security.client_keys = client_keys; otherwise mode plaintext."""
    ports = free_ports(4 * members)
    entries = []
    for i in range(members):
        entry = {"name": f"n{i + 1}", "peer": f"tcp://127.0.0.1:{ports[4 * i]}", "client": f"tcp://127.0.0.1:{ports[4 * i + 1]}"}
        scheme = "https" if secure else "http"
        if http:
            entry["http"] = f"{scheme}://127.0.0.1:{ports[4 * i + 2]}"
        if grpc:
            entry["grpc"] = f"{scheme}://127.0.0.1:{ports[4 * i + 3]}"
        if secure:
            entry["public_key"] = curve.write_key_pair(os.path.join(str(directory), "keys", f"{entry['name']}.key"),
                                                       force=True).public.decode()
        entries.append(entry)
    security = {"mode": "curve", "client_keys": [k.decode() if isinstance(k, bytes) else k for k in client_keys]} \
        if secure else {"mode": "plaintext"}
    if secure:
        member_settings.setdefault("secret_key_file", "keys/{name}.key")
    if secure and (http or grpc):
        write_tls_files(directory)
        member_settings.setdefault("tls", {"cert_file": "tls/server.crt", "key_file": "tls/server.key",
                                           "client_ca_file": "tls/client.crt"})
    document = {
        "cluster": {"name": "test", "security": security, "members": entries},
        "member": {"data_dir": "data/{name}", "log_level": "info", **member_settings},
    }
    path = os.path.join(str(directory), "cluster.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(document, handle)
    return path


def write_tls_files(directory) -> None:
    """<directory>/tls: a self-signed server certificate for 127.0.0.1 and a
    self-signed client certificate (the gateways' client CA), made with openssl."""
    tls = os.path.join(str(directory), "tls")
    os.makedirs(tls, mode=0o700, exist_ok=True)
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=cairn-test-client")):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", os.path.join(tls, f"{name}.key"), "-out", os.path.join(tls, f"{name}.crt"),
                        "-days", "2", "-subj", subject, "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)


def tls_client_context(directory, client_certificate: bool = True):
    """An ssl context that trusts the test server certificate (and presents the test client's)."""
    import ssl

    tls = os.path.join(str(directory), "tls")
    context = ssl.create_default_context(cafile=os.path.join(tls, "server.crt"))
    if client_certificate:
        context.load_cert_chain(os.path.join(tls, "client.crt"), os.path.join(tls, "client.key"))
    return context


class Stream:
    """A streaming POST (watch, keep-alive) read line by line on a thread, so a
    test waits for each JSON object with a deadline instead of sleeping."""

    def __init__(self, url: str, path: str, body: bytes, headers: dict | None = None):
        parsed = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        self.connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        self.response = self.connection.getresponse()
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.strip():
                    self.lines.put(json.loads(line))
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed by the test (http.client's chunked reader may trip over its own close)
        self.lines.put(None)

    def next(self, timeout: float = 10.0):
        return self.lines.get(timeout=timeout)

    def close(self) -> None:
        self.connection.sock.shutdown(2)
        self.connection.close()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            found.append(int(entry))
    return found


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line holds `text` (a run's temporary directory, say)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


# Every member process a test started, so the session can stop leftovers.
STARTED: list["Member"] = []


class Member:
    def __init__(self, cluster: "Cluster", name: str):
        self.cluster = cluster
        self.name = name
        self.spec = cluster.config.member(name)
        self.data_dir = cluster.config.data_dir(name)
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return self.spec.client

    @property
    def http_url(self) -> str:
        """The member's JSON gateway, e.g. http://127.0.0.1:PORT ("" if none)."""
        return self.spec.http

    @property
    def grpc_target(self) -> str:
        """The member's gRPC address as gRPC clients take it, e.g. 127.0.0.1:PORT ("" if none)."""
        return self.spec.grpc.split("://", 1)[-1]

    def wait_grpc(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the member's gRPC door accepts connections."""
        host, port = config_module.parse_http_address(self.spec.grpc)

        def accepts() -> bool:
            socket.create_connection((host, port), timeout=1.0).close()
            return True

        self._wait_door(accepts, f"gRPC door of {self.name} did not accept connections", timeout)

    def wait_http(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the member's gateway answers GET /version."""
        context = tls_client_context(self.cluster.directory) if self.http_url.startswith("https://") else None

        def answers() -> bool:
            with urllib.request.urlopen(self.http_url + "/version", timeout=2.0, context=context) as response:
                return response.status == 200

        self._wait_door(answers, f"gateway of {self.name} did not answer", timeout)

    def _wait_door(self, ready, failure: str, timeout: float) -> None:
        """Until ready() is true (an OSError counts as not yet), within timeout;
        a member that died meanwhile fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{failure} in {timeout}s")
            Cluster._check_alive(self)
            time.sleep(0.05)

    def start(self, rejoin: bool = False, join: bool = False) -> None:
        assert self.process is None or self.process.poll() is not None
        log = open(os.path.join(self.cluster.directory, f"{self.name}.out"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cairn.node", "node", "--config", self.cluster.config_path, "--name", self.name]
            + (["--rejoin"] if rejoin else []) + (["--join"] if join else []),
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, CAIRN_DIE_WITH_PARENT="1"),
        )
        STARTED.append(self)

    def actor_pids(self) -> dict[str, int]:
        """{actor name: pid} of the running actors, from their process titles
        (they are the children of the member's forkserver, below the supervisor)."""
        pids = {}
        for pid, comm in process_tree(self.process.pid).items():
            prefix = f"cairn[{self.name}] "
            if comm.startswith(prefix):
                short = comm[len(prefix):]
                for actor in ("raft", "apply", "lease", "watch", "frontend", "gateway", "grpc"):
                    if actor.startswith(short):
                        pids[actor] = pid
        return pids

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reap_group()
        return self.process.returncode

    def kill9(self) -> None:
        """kill -9 the whole member: supervisor and every actor at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        """Wait until no live process of the member's group is left (zombies
        waiting for init to reap them hold nothing and are ignored)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not group_members(self.process.pid):
                return
            time.sleep(0.05)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def failpoint(self, drop_peers=(), delay_peers=(), delay_ms: int = 0) -> None:
        """Partition this member's raft actor from drop_peers (both directions as
        seen from here), or heal it with no arguments."""
        import zmq

        from transport import codec
        from transport.messages import Failpoint
        from transport.sockets import ipc_endpoint

        context = zmq.Context()
        try:
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, 2000)
            socket.connect(ipc_endpoint(self.data_dir, "raft"))
            socket.send(codec.encode(Failpoint(tuple(drop_peers), tuple(delay_peers), delay_ms)))
            socket.close()
        finally:
            context.term()

    def status(self, timeout: float = 2.0):
        with Client([self.endpoint], timeout=timeout, dial_timeout=1.0, **self.cluster.client_options()) as client:
            return client.status()

    def log_records(self, actor: str) -> list[dict]:
        path = os.path.join(self.data_dir, "logs", f"{actor}.log")
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]


class Cluster:
    def __init__(self, directory, members: int = 1, http: bool = False, grpc: bool = False, secure: bool = False,
                 restrict_clients: bool = False, **member_settings):
        """secure: CURVE on every door (see write_config); restrict_clients: only
        the client key the harness writes (<directory>/keys/client.key, used by
        every client it makes) may connect."""
        self.directory = str(directory)
        client_keys = ()
        self.client_key = None
        if restrict_clients:
            self.client_key = os.path.join(self.directory, "keys", "client.key")
            client_keys = (curve.write_key_pair(self.client_key, force=True).public,)
        self.config_path = write_config(directory, members, http=http, grpc=grpc, secure=secure, client_keys=client_keys,
                                        **member_settings)
        self.config = config_module.load(self.config_path)
        self.members = {m.name: Member(self, m.name) for m in self.config.members}

    @classmethod
    def from_config(cls, directory, config_path: str) -> "Cluster":
        """The members of an existing config file (e.g. members restored from a
        snapshot into data dirs made beforehand)."""
        cluster = cls.__new__(cls)
        cluster.directory = str(directory)
        cluster.config_path = config_path
        cluster.config = config_module.load(config_path)
        cluster.members = {m.name: Member(cluster, m.name) for m in cluster.config.members}
        cluster.client_key = None
        return cluster

    def client_options(self) -> dict:
        """Client keyword arguments for this cluster's security (none in plaintext)."""
        if not self.config.security.curve:
            return {}
        return {"server_public_keys": {m.client: m.public_key for m in self.config.members}, "client_key": self.client_key}

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members.values()]

    def add_member_to_config(self, name: str) -> Member:
        """Rewrite the config with one more member on free ports (the YAML a
        member added with cairnctl member add starts with; the cluster keeps its
        id; in security mode curve, with a new key pair), and return it, not started."""
        with open(self.config_path) as handle:
            document = yaml.safe_load(handle)
        peer, client = free_ports(2)
        entry = {"name": name, "peer": f"tcp://127.0.0.1:{peer}", "client": f"tcp://127.0.0.1:{client}"}
        if self.config.security.curve:  # its own key pair, in keys/NAME.key as secret_key_file says
            entry["public_key"] = curve.write_key_pair(os.path.join(self.directory, "keys", f"{name}.key"),
                                                       force=True).public.decode()
        document["cluster"]["members"].append(entry)
        document["cluster"]["id"] = f"{self.config.id:x}"
        with open(self.config_path, "w") as handle:
            yaml.safe_dump(document, handle)
        self.config = config_module.load(self.config_path)
        self.members[name] = Member(self, name)
        return self.members[name]

    def start(self) -> "Cluster":
        """Start every member and wait until each serves; if that fails, stop
        what was started before raising, so no test leaves members behind."""
        try:
            for member in self.members.values():
                member.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, endpoints=None, timeout: float = 10.0) -> Client:
        return Client(endpoints or self.endpoints, timeout=timeout, **self.client_options())

    def wait_ready(self, members=None, timeout: float = START_TIMEOUT_S) -> None:
        """Until every given member serves a linearizable read (so it has a leader)."""
        deadline = time.monotonic() + timeout
        for member in members or self.members.values():
            with Client([member.endpoint], timeout=2.0, dial_timeout=1.0, **self.client_options()) as client:
                while True:
                    try:
                        client.get(b"__ready__")
                        break
                    except PermissionDeniedError:
                        break  # auth is enabled: refused, but served (etcd's /health counts it so)
                    except CairnError:
                        if time.monotonic() > deadline:
                            raise AssertionError(f"member {member.name} did not become ready in {timeout}s")
                        self._check_alive(member)
            if member.http_url:
                member.wait_http(max(1.0, deadline - time.monotonic()))
            if member.spec.grpc:
                member.wait_grpc(max(1.0, deadline - time.monotonic()))

    @staticmethod
    def _check_alive(member: Member) -> None:
        if member.process.poll() is not None:
            out = open(os.path.join(member.cluster.directory, f"{member.name}.out")).read()
            raise AssertionError(f"member {member.name} exited with {member.process.returncode}:\n{out}")

    def leader(self, among=None, timeout: float = START_TIMEOUT_S) -> Member:
        """The member every live member of `among` agrees leads, waiting for one."""
        among = list(among or self.running())
        by_id = {m.spec.id: m for m in self.members.values()}
        deadline = time.monotonic() + timeout
        while True:
            leaders = set()
            for member in among:
                try:
                    leaders.add(member.status().leader)
                except CairnError:
                    leaders.add(None)
            if len(leaders) == 1 and (leader := leaders.pop()) in by_id and by_id[leader] in among:
                return by_id[leader]
            if time.monotonic() > deadline:
                raise AssertionError(f"no agreed leader among {[m.name for m in among]}")
            time.sleep(0.1)

    def running(self) -> list[Member]:
        return [m for m in self.members.values() if m.process is not None and m.process.poll() is None]

    def stop(self) -> None:
        """Signal every member at once, then wait for each."""
        for member in self.members.values():
            if member.process is not None and member.process.poll() is None:
                os.killpg(member.process.pid, signal.SIGTERM)
        for member in self.members.values():
            member.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def cluster_fixture(name: str, **options):
    """A module-scoped pytest fixture: a Cluster started under a temporary dir
    named `name` (options as Cluster's), stopped after the module's tests."""

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        with Cluster(tmp_path_factory.mktemp(name), **options) as started:
            yield started

    return cluster


def election_timeout_s(cluster: Cluster) -> float:
    """The members' election timeout (ticks times the tick), in seconds."""
    settings = cluster.config.settings
    return settings.election_ticks * settings.tick_ms / 1000


def value_or_none(call, *tolerated):
    """call()'s value, or None if it raised a retryable CairnError or one of
    `tolerated` (for wait_for's conditions)."""
    try:
        return call()
    except CairnError as error:
        if error.retryable or isinstance(error, tolerated):
            return None
        raise


def wait_for(condition, what: str, timeout_s: float = 10.0):
    """condition()'s first true value, polled every 50 ms; fails naming `what`
    after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Writer:
    """A client writing keys under `prefix` continuously, counting the acknowledged
    ones and noting when each was acknowledged."""

    def __init__(self, endpoints, prefix: bytes):
        self.acked: list[bytes] = []
        self.acked_at: list[float] = []  # time.monotonic() of each acknowledgement
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(endpoints, prefix), daemon=True)
        self.thread.start()

    def run(self, endpoints, prefix: bytes) -> None:
        with Client(endpoints, timeout=10) as c:
            i = 0
            while not self.stop.is_set():
                key = prefix + b"%06d" % i
                try:
                    c.put(key, b"v")
                    self.acked.append(key)
                    self.acked_at.append(time.monotonic())
                except CairnError:
                    pass  # a write whose outcome is unknown is not counted
                i += 1

    def finish(self) -> list[bytes]:
        self.stop.set()
        self.thread.join(30)
        return self.acked

    def longest_gap_s(self) -> float:
        """The longest time between two consecutive acknowledgements."""
        return max(b - a for a, b in zip(self.acked_at, self.acked_at[1:]))
