"""The layer rules of the tree, checked by reading imports (nothing is imported).

docs/ARCHITECTURE.md states the same rules, with the reasons; a rule changes
here and there together. The Raft core's own, stricter allow-list of imports is
tests/raft/test_core_rules.py.

1. The pure cores -- the Raft core and its helpers, the watch hub package,
   store/apply.py's state machine -- do no process, socket or wire I/O and
   keep no clock: they are driven by their actor shells, which is what makes
   them testable without processes (and the Raft core simulable).
2. store/ does no process, socket or wire I/O either. It is the storage layer,
   so it may use lmdb (and cbor2 for the Raft log's records), and it reads the
   wire schema of what it stores (transport.messages, raft_messages, codec,
   entries, errors) -- never transport.sockets. It imports neither actors/ nor cairn/.
3. transport/ is the bottom layer: it imports neither actors/ nor store/ nor cairn/.
4. The public face (cairn/) never opens LMDB and never imports store/, but for
   the offline snapshot tools named in CAIRN_USE_OF_STORE (etcdutl's job in
   etcd). It imports actors/ only in cairn/node.py: `cairn node` is the
   member's entry point and starts the supervisor (actors/supervisor.py).
5. actors/ use cairn/ only through the modules named in ACTORS_USE_OF_CAIRN,
   each with its reason; cairn.config (the config's home) is open to every actor.
"""

from __future__ import annotations

import pytest

from tests.import_reader import ROOT, imported_modules, python_files, relative, within

# Modules that do process, socket or wire I/O, or log (logging lives in the shells).
IO_MODULES = (
    "zmq", "socket", "selectors", "ssl", "http", "urllib", "multiprocessing", "subprocess", "threading",
    "concurrent", "asyncio", "signal", "aiohttp", "grpc", "google.protobuf", "structlog", "logging",
    "transport.sockets",
)
# A pure core also keeps no clock and touches no files or environment.
CLOCK_AND_OS = ("time", "os", "shutil", "tempfile")

RAFT_CORE = ("actors/raft/core.py", "actors/raft/log.py", "actors/raft/progress.py", "actors/raft/read_only.py",
             "actors/raft/retention.py", "actors/raft/auto_compaction.py")
PURE_CORES = RAFT_CORE + tuple(relative(p) for p in python_files("actors/watch_hub")) + ("store/apply.py",)
# What actors count about themselves: plain counters on every hot path, so no
# I/O, no clock and no prometheus_client (only the gateway's exposition has it).
PURE_CORES += ("actors/metrics.py", "actors/raft/metrics.py")

# actors/ module -> {cairn/ module it may import: why}
_FRONTEND_CLIENT = "a client of its own member's frontend, so its requests take the library's path"
ACTORS_USE_OF_CAIRN = {
    "actors/etcd_api.py": {
        "cairn.aio": "the etcd doors' shell (Door) is " + _FRONTEND_CLIENT,
        "cairn.watch": "an etcd watch stream reads watch responses as the library does (is_progress_notify)",
    },
    "actors/gateway.py": {"cairn.aio": "the HTTP gateway is " + _FRONTEND_CLIENT},
    "actors/grpc_gateway.py": {
        "cairn.aio": "the gRPC door is " + _FRONTEND_CLIENT,
        "cairn.requests": "it builds requests (range ends) as the library does",
        "cairn.watch": "it reads watch responses as the library does",
    },
    "actors/corruption.py": {
        "cairn.client": "the corruption check asks each member's frontend for HashKV as a client would (as etcd's peers' /members/hashkv)",
    },
    "actors/lock_service.py": {
        "cairn.client": "the Lock and Election services are " + _FRONTEND_CLIENT + " (as etcd's v3lock is)",
        "cairn.concurrency": "they run the library's lock and election recipes",
    },
}
OPEN_TO_EVERY_ACTOR = {"cairn.config": "the cluster and member config (and its address syntax) lives in cairn/config.py"}
# cairn/ module -> {actors/ module it may import: why}
CAIRN_USE_OF_ACTORS = {
    "cairn/node.py": {
        "actors.supervisor": "`cairn node` starts the member's supervisor",
        "actors.forkserver": "`cairn node` starts the member's forkserver first thing, so its imports overlap the rest",
        "actors.raft.markers": "`--rejoin` leaves the raft actor's rejoin marker (REJOIN_MARKER)",
        "actors.process": "a member started by a test dies with its parent (die_with_parent)",
    },
}

# cairn/ module -> {store/ module it may import: why}
CAIRN_USE_OF_STORE = {
    "cairn/node.py": {"store.maintenance": "`cairn snapshot restore` builds a member's data dir offline, as etcdutl does"},
    "cairn/cli.py": {"store.maintenance": "`cairnctl snapshot status` reads a snapshot file offline, as etcdctl 3.4 does"},
}


def _violations(paths, forbidden, allowed=()):
    found = []
    for path in paths:
        for module in imported_modules(path):
            if within(module, forbidden) and not within(module, allowed):
                found.append(f"{relative(path)} imports {module}")
    return found


def test_the_rules_read_every_layer():
    assert len(python_files("actors")) > 30 and len(python_files("store")) > 10
    assert len(python_files("transport")) > 5 and len(python_files("cairn")) > 10
    for rel in PURE_CORES + tuple(ACTORS_USE_OF_CAIRN) + tuple(CAIRN_USE_OF_ACTORS) + tuple(CAIRN_USE_OF_STORE):
        assert (ROOT / rel).is_file(), rel


@pytest.mark.parametrize("rel", PURE_CORES)
def test_pure_cores_do_no_io_and_keep_no_clock(rel):
    assert not _violations([ROOT / rel], IO_MODULES + CLOCK_AND_OS + ("prometheus_client",))


def test_store_does_no_process_socket_or_wire_io():
    assert not _violations(python_files("store"), IO_MODULES)


def test_store_imports_neither_actors_nor_the_public_face():
    assert not _violations(python_files("store"), ("actors", "cairn"))


def test_transport_imports_neither_actors_store_nor_the_public_face():
    assert not _violations(python_files("transport"), ("actors", "store", "cairn"))


def test_the_public_face_never_opens_lmdb_or_imports_the_store():
    for path in python_files("cairn"):
        allowed = CAIRN_USE_OF_STORE.get(relative(path), {})
        assert not _violations([path], ("lmdb", "store"), tuple(allowed))


def test_the_public_face_imports_actors_only_where_named():
    for path in python_files("cairn"):
        allowed = CAIRN_USE_OF_ACTORS.get(relative(path), {})
        assert not _violations([path], ("actors",), tuple(allowed))


def test_actors_use_the_public_face_only_through_the_named_modules():
    for path in python_files("actors"):
        allowed = {**OPEN_TO_EVERY_ACTOR, **ACTORS_USE_OF_CAIRN.get(relative(path), {})}
        assert not _violations([path], ("cairn",), tuple(allowed))


def test_every_named_exception_is_still_used():
    """A named exception the code no longer needs is removed from the rules."""
    for rel, allowed in [*ACTORS_USE_OF_CAIRN.items(), *CAIRN_USE_OF_ACTORS.items(), *CAIRN_USE_OF_STORE.items()]:
        used = imported_modules(ROOT / rel)
        for module in allowed:
            assert module in used, f"{rel} no longer imports {module}: drop it from the rules"
