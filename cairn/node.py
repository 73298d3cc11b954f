"""`cairn`: run a member (node), a whole local cluster (cluster), or read logs (logs).

    cairn node    --config configs/local-3node.yaml --name n1
    cairn cluster --config configs/local-3node.yaml
    cairn snapshot restore FILE --config NEW.yaml --name n1 [--bump-revision N | --no-bump]
    cairn logs    data/n1 data/n2 [--actor raft] [--level warning] [--request ID] [--json] [--follow]
    cairn bench   put|range|txn-put|lease-keepalive|standard ...   (see cairn/bench.py)
    cairn keygen  keys/n1.key [--force]   (a CURVE key pair: the secret key 0600, the public key in .pub)

Exit status 2 means the configuration (or the command line) is wrong and nothing
was started.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

from cairn import config as config_module
from cairn.config import EXIT_CONFIG_ERROR, ConfigError


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from cairn.bench import main as bench_main

        return bench_main(argv[1:])
    # Here, not at the top: every actor runs this module again as multiprocessing's
    # __mp_main__, and should import nothing it does not use (actors/forkserver.py).
    import argparse

    parser = argparse.ArgumentParser(prog="cairn", description="cairn: an etcd-v3-compatible key-value store")
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser("node", help="run one member in the foreground")
    node.add_argument("--config", required=True, help="cluster YAML file")
    node.add_argument("--name", required=True, help="this member's name in the config")
    node.add_argument("--rejoin", action="store_true",
                      help="this member lost its data dir: take no part in elections until caught up")
    node.add_argument("--join", action="store_true",
                      help="join a running cluster that added this member (cairnctl member add), as etcd's "
                           "--initial-cluster-state existing; the same as cluster.state: existing in the config")

    cluster = commands.add_parser("cluster", help="run every member of a local config in the foreground")
    cluster.add_argument("--config", required=True)

    commands.add_parser("bench", help="load generator: cairn bench --help")

    snapshot = commands.add_parser("snapshot", help="restore a snapshot file into a new member's data dir (offline)")
    snapshot_commands = snapshot.add_subparsers(dest="snapshot_command", required=True)
    restore = snapshot_commands.add_parser(
        "restore", help="create one member's data dir of a NEW cluster from a snapshot (run once per member)")
    restore.add_argument("file", help="a file written by `cairnctl snapshot save`")
    restore.add_argument("--config", required=True, help="the new cluster's YAML file")
    restore.add_argument("--name", required=True, help="the member to create, by its name in the config")
    restore.add_argument("--bump-revision", type=int, default=None,
                         help="add this to the snapshot's revision (default 1000000), so revisions never go back")
    restore.add_argument("--no-bump", action="store_true",
                         help="keep the snapshot's revision and history (etcd's behaviour before --bump-revision)")
    restore.add_argument("--no-mark-compacted", action="store_true",
                         help="do not mark the history before the bumped revision compacted")

    keygen = commands.add_parser("keygen", help="write a CURVE key pair for a member or a client")
    keygen.add_argument("path", help="the secret key file to create (mode 0600); the public key goes to PATH.pub")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing secret key file")

    logs = commands.add_parser("logs", help="merge the actor logs of data dirs in time order")
    logs.add_argument("data_dirs", nargs="+", help="member data dirs (or a config file with --config)")
    logs.add_argument("--actor", action="append", help="only these actors (repeatable)")
    logs.add_argument("--level", default="debug", choices=["debug", "info", "warning", "error"], help="minimum level")
    logs.add_argument("--request", type=int, help="only lines about this request id")
    logs.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")

    args = parser.parse_args(argv)
    if args.command == "keygen":
        return run_keygen(args.path, args.force)
    if args.command == "logs":
        from cairn.logview import run_logs

        return run_logs(args)
    if args.command == "snapshot":
        return run_restore(args)
    try:
        cluster_config = config_module.load(args.config)
        if args.command == "node":
            cluster_config.member(args.name)
        # a missing, unreadable or mismatched key stops the member here, before anything starts
        for name in [args.name] if args.command == "node" else [m.name for m in cluster_config.members]:
            cluster_config.member_keys(name)
    except ConfigError as error:
        print(f"cairn: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command == "node":
        if args.join:
            cluster_config = dataclasses.replace(cluster_config, state="existing")
        return run_node(cluster_config, args.name, args.rejoin)
    return run_cluster(cluster_config)


def run_keygen(path: str, force: bool) -> int:
    from transport.curve import KeyFileError, write_key_pair

    try:
        keys = write_key_pair(path, force)
    except (KeyFileError, OSError) as error:
        print(f"cairn: {error}", file=sys.stderr)
        return 1
    print(f"secret key: {path} (mode 0600; keep it private)")
    print(f"public key: {path}.pub")
    print(keys.public.decode())
    return 0


# Set by test harnesses: the member then dies with the process that started it,
# however that process dies (a killed test run must not leave members behind).
DIE_WITH_PARENT_ENV = "CAIRN_DIE_WITH_PARENT"


def run_node(cluster_config, name: str, rejoin: bool = False) -> int:
    from actors.process import die_with_parent
    from actors.raft.markers import REJOIN_MARKER, REMOVED_EXIT_CODE, REMOVED_MARKER

    if os.environ.get(DIE_WITH_PARENT_ENV):
        die_with_parent(os.getppid())
    member = cluster_config.member(name)
    removed = os.path.join(cluster_config.data_dir(name), REMOVED_MARKER)
    if os.path.exists(removed):
        with open(removed) as marker:
            print(f"cairn: {marker.read().strip()}; refusing to start (to add it again: cairnctl member add, "
                  f"then start it with --join and an empty data dir)", file=sys.stderr)
        return REMOVED_EXIT_CODE
    if cluster_config.state == "existing":
        problem = _join_problem(cluster_config, member)
        if problem:
            print(f"cairn: {problem}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
    from actors.forkserver import start_forkserver

    start_forkserver()  # its imports, most of a member's start, run while the supervisor starts
    from actors.supervisor import DataDirLocked, Supervisor

    try:
        supervisor = Supervisor(cluster_config, name)
    except DataDirLocked as error:
        print(f"cairn: {error}", file=sys.stderr)
        return 1
    if rejoin:
        with open(os.path.join(supervisor.data_dir, REJOIN_MARKER), "w") as marker:
            marker.write("rejoining after the loss of this data dir\n")
    http = f" and {member.http} (etcd's JSON gateway)" if member.http else ""
    http += f" and {member.grpc} (etcd's gRPC API)" if member.grpc else ""
    print(f"cairn member {name} ({member.id:x}) serving clients on {member.client}{http}, data in {supervisor.data_dir}", flush=True)
    status = supervisor.run()
    if supervisor.refusal:
        print(f"cairn: member {name} ({member.id:x}): {supervisor.refusal}", file=sys.stderr, flush=True)
    if status == REMOVED_EXIT_CODE:
        print(f"cairn: member {name} ({member.id:x}) was removed from the cluster; stopped", file=sys.stderr, flush=True)
    return status


def _join_problem(cluster_config, member) -> str:
    """Joining (--join): ask the running members whether this member was added
    (etcd checks the same against its peers); "" if it was."""
    from cairn.client import Client

    others = [m.client for m in cluster_config.members if m.id != member.id]
    if not others:
        return f"{cluster_config.path}: --join needs the running members in cluster.members"
    security = {}
    if cluster_config.security.curve:  # asked as this member, of members whose keys the YAML gives
        security = {"server_public_keys": {m.client: m.public_key for m in cluster_config.members if m.id != member.id},
                    "client_key": cluster_config.member_keys(member.name)}
    try:
        with Client(others, timeout=5, **security) as client:
            members = client.member_list().members
    except Exception as error:  # whatever stops us from asking: say so, start nothing
        return f"cannot ask the cluster ({', '.join(others)}) whether member {member.name} was added: {error}"
    if not any(m.id == member.id for m in members):
        return (f"member {member.name} ({member.id:x}) is not a member of the cluster: add it first with "
                f"cairnctl member add {member.name} --peer-urls={member.peer} (or it was removed)")
    return ""


def run_restore(args) -> int:
    from transport.snapshot_file import SnapshotFileError
    from store.maintenance import DEFAULT_BUMP_REVISION, RestoreError, restore_member

    if args.no_bump and args.bump_revision:
        print("cairn: --no-bump and --bump-revision exclude each other", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    bump = 0 if args.no_bump else (DEFAULT_BUMP_REVISION if args.bump_revision is None else args.bump_revision)
    try:
        cluster_config = config_module.load(args.config)
        cluster_config.member(args.name)
    except ConfigError as error:
        print(f"cairn: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        restored = restore_member(args.file, cluster_config, args.name, bump_revision=bump,
                                  mark_compacted=not args.no_mark_compacted)
    except (SnapshotFileError, RestoreError) as error:
        print(f"cairn: {error}", file=sys.stderr)
        return 1
    print(f"restored snapshot {args.file} into {restored['data_dir']}: member {args.name} ({restored['member_id']:x}) "
          f"of cluster {restored['cluster_id']:x}, revision {restored['snapshot_revision']} -> {restored['revision']}"
          + (f" (compacted at {restored['compact_revision']})" if restored["compact_revision"] else "")
          + f", raft log from index {restored['index']}", flush=True)
    return 0


def run_cluster(cluster_config) -> int:
    """Every member as its own `cairn node` process; Ctrl-C or SIGTERM stops them all."""
    children = []
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for member in cluster_config.members:
        command = [sys.executable, "-m", "cairn.node", "node", "--config", cluster_config.path, "--name", member.name]
        children.append(subprocess.Popen(command, start_new_session=True))
    print("cairn cluster '%s' is up. Client endpoints:" % cluster_config.name, flush=True)
    print("  " + ",".join(cluster_config.client_endpoints()), flush=True)
    gateways = [member.http for member in cluster_config.members if member.http]
    if gateways:
        print("HTTP (etcd's JSON gateway, for curl):", flush=True)
        print("  " + ",".join(gateways), flush=True)
    doors = [member.grpc.split("://", 1)[-1] for member in cluster_config.members if member.grpc]
    if doors:
        print("gRPC (etcd's API, for etcdctl --endpoints and etcd's client libraries):", flush=True)
        print("  " + ",".join(doors), flush=True)
    if cluster_config.security.curve:
        client_key = " --client-key YOUR_CLIENT.key" if cluster_config.security.client_keys else ""
        print(f"Try: cairnctl --cluster-config {cluster_config.path}{client_key} put foo bar   (Ctrl-C stops the cluster)",
              flush=True)
    else:
        print("Try: cairnctl --endpoints=%s put foo bar   (Ctrl-C stops the cluster)" % cluster_config.client_endpoints()[0], flush=True)
    status = 0
    reported = set()
    try:
        # A member that dies is reported, and the others keep serving (that is
        # what a failover looks like); restart it with `cairn node --name ...`.
        while not stopping and len(reported) < len(children):
            for member, child in zip(cluster_config.members, children):
                if child.pid not in reported and child.poll() is not None:
                    reported.add(child.pid)
                    status = 1
                    print(f"cairn: member {member.name} (pid {child.pid}) exited with {child.returncode}; "
                          f"restart it with: cairn node --config {cluster_config.path} --name {member.name}",
                          file=sys.stderr, flush=True)
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    print("cairn cluster stopped.", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
