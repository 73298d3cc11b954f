"""`cairnctl`: the command-line client, modelled on etcdctl v3.

Global flags as etcdctl's: --endpoints, -w/--write-out (simple|json|fields|table),
--command-timeout, --dial-timeout; for a cluster with CURVE security (see
transport/curve.py) --server-keys (the members' public keys: KEY for one
endpoint, or ENDPOINT=KEY,...; or --cluster-config FILE, which gives the
endpoints and keys of a cluster config) and --client-key (this client's secret
key file, when the cluster admits listed client keys only), also from the
environment as CAIRNCTL_SERVER_KEYS, CAIRNCTL_CLIENT_KEY, CAIRNCTL_CLUSTER_CONFIG.
Output matches etcdctl's: simple prints keys
and values on their own lines, json prints etcdctl's JSON shape with keys and
values in base64. Errors print `Error: ...` on stderr and exit 1; a bad command
line exits 2.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import sys
import time

from cairn import check as check_module
from cairn.client import Client
from transport import messages as m
from transport.errors import CairnError, PermissionDeniedError

DEFAULT_ENDPOINTS = "tcp://127.0.0.1:2379"
EXIT_ERROR = 1
EXIT_USAGE = 2


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def header_json(header: m.ResponseHeader) -> dict:
    return {"cluster_id": header.cluster_id, "member_id": header.member_id, "revision": header.revision, "raft_term": header.raft_term}


def kv_json(kv: m.KeyValue) -> dict:
    out = {"key": _b64(kv.key), "create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version}
    if kv.value:
        out["value"] = _b64(kv.value)
    if kv.lease:
        out["lease"] = kv.lease
    return out


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def _print_kv(kv: m.KeyValue, keys_only=False, value_only=False) -> None:
    if not value_only:
        print(_text(kv.key))
    if not keys_only:
        print(_text(kv.value))


def _print_fields(header: m.ResponseHeader, **extra) -> None:
    print(f'"ClusterID" : {header.cluster_id}')
    print(f'"MemberID" : {header.member_id}')
    print(f'"Revision" : {header.revision}')
    print(f'"RaftTerm" : {header.raft_term}')
    for key, value in extra.items():
        print(f'"{key}" : {value}')


# ---------------------------------------------------------------------------- commands


def cmd_put(client: Client, args) -> None:
    value = args.value
    if value is None:
        if not args.ignore_value:
            value = sys.stdin.read() if not sys.stdin.isatty() else None
        if value is None and not args.ignore_value:
            raise UsageError("put command needs 1 argument and input from stdin or 2 arguments")
    lease = _lease_id(args.lease) if args.lease else 0
    response = client.put(args.key, value or b"", lease=lease, prev_kv=args.prev_kv,
                          ignore_value=args.ignore_value, ignore_lease=args.ignore_lease)
    if args.write_out == "json":
        out = {"header": header_json(response.header)}
        if response.prev_kv:
            out["prev_kv"] = kv_json(response.prev_kv)
        print(json.dumps(out))
    elif args.write_out == "fields":
        _print_fields(response.header)
    else:
        print("OK")
        if response.prev_kv:
            _print_kv(response.prev_kv)


SORT_TARGETS = {"KEY": "key", "VERSION": "version", "CREATE": "create", "MODIFY": "mod", "VALUE": "value"}


def cmd_get(client: Client, args) -> None:
    sort_target = SORT_TARGETS[args.sort_by.upper()] if args.sort_by else None
    sort_order = args.order.lower() if args.order else None
    if sort_target and not sort_order:
        sort_order = "ascend"
    response = client.get(
        args.key, range_end=args.range_end, prefix=args.prefix, from_key=args.from_key, revision=args.rev,
        limit=args.limit, keys_only=args.keys_only, count_only=args.count_only,
        serializable=args.consistency.lower() == "s", sort_order=sort_order, sort_target=sort_target,
    )
    if args.write_out == "json":
        out = {"header": header_json(response.header), "count": response.count}
        if response.kvs:
            out["kvs"] = [kv_json(kv) for kv in response.kvs]
        if response.more:
            out["more"] = True
        print(json.dumps(out))
    elif args.write_out == "fields":
        _print_fields(response.header, Count=response.count, More=str(response.more).lower())
        for kv in response.kvs:
            print(f'"Key" : {json.dumps(_text(kv.key))}')
            print(f'"CreateRevision" : {kv.create_revision}')
            print(f'"ModRevision" : {kv.mod_revision}')
            print(f'"Version" : {kv.version}')
            print(f'"Value" : {json.dumps(_text(kv.value))}')
            print(f'"Lease" : {kv.lease}')
    elif args.count_only:
        print(response.count)
    else:
        for kv in response.kvs:
            _print_kv(kv, keys_only=args.keys_only, value_only=args.print_value_only)


def cmd_del(client: Client, args) -> None:
    response = client.delete(args.key, range_end=args.range_end, prefix=args.prefix, from_key=args.from_key, prev_kv=args.prev_kv)
    if args.write_out == "json":
        out = {"header": header_json(response.header), "deleted": response.deleted}
        if response.prev_kvs:
            out["prev_kvs"] = [kv_json(kv) for kv in response.prev_kvs]
        print(json.dumps(out))
    elif args.write_out == "fields":
        _print_fields(response.header, Deleted=response.deleted)
    else:
        print(response.deleted)
        for kv in response.prev_kvs:
            _print_kv(kv)


def cmd_txn(client: Client, args) -> None:
    from cairn.txn_syntax import TxnSyntaxError, read_txn

    interactive = args.interactive and sys.stdin.isatty()

    def prompt(section):
        print(f"{section}:", flush=True)

    try:
        compares, success, failure = read_txn(sys.stdin, prompt if interactive else None)
    except TxnSyntaxError as error:
        raise UsageError(str(error)) from None
    response = client.txn(compares, success, failure)
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header), "succeeded": response.succeeded,
                          "responses": [_response_json(r) for r in response.responses]}))
        return
    print("SUCCESS" if response.succeeded else "FAILURE")
    for op_response in response.responses:
        print()
        _print_op_response(op_response)


def _response_json(response) -> dict:
    if isinstance(response, m.PutResponse):
        out = {"response_put": {"header": header_json(response.header)}}
        if response.prev_kv:
            out["response_put"]["prev_kv"] = kv_json(response.prev_kv)
        return out
    if isinstance(response, m.RangeResponse):
        return {"response_range": {"header": header_json(response.header), "kvs": [kv_json(kv) for kv in response.kvs],
                                   "count": response.count, "more": response.more}}
    if isinstance(response, m.DeleteRangeResponse):
        return {"response_delete_range": {"header": header_json(response.header), "deleted": response.deleted,
                                          "prev_kvs": [kv_json(kv) for kv in response.prev_kvs]}}
    return {"response_txn": {"header": header_json(response.header), "succeeded": response.succeeded,
                             "responses": [_response_json(r) for r in response.responses]}}


def _print_op_response(response) -> None:
    if isinstance(response, m.PutResponse):
        print("OK")
        if response.prev_kv:
            _print_kv(response.prev_kv)
    elif isinstance(response, m.RangeResponse):
        for kv in response.kvs:
            _print_kv(kv)
    elif isinstance(response, m.DeleteRangeResponse):
        print(response.deleted)
        for kv in response.prev_kvs:
            _print_kv(kv)
    else:
        print("SUCCESS" if response.succeeded else "FAILURE")
        for inner in response.responses:
            print()
            _print_op_response(inner)


def cmd_compaction(client: Client, args) -> None:
    response = client.compact(args.revision, physical=args.physical)
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header)}))
    else:
        print(f"compacted revision {args.revision}")


def _endpoints_to_query(client: Client, args) -> list[str]:
    if not args.cluster:
        return client.endpoints
    members = client.member_list().members
    return [url for member in members for url in member.client_urls]


def cmd_endpoint_status(client: Client, args) -> None:
    rows, failed = [], False
    for endpoint in _endpoints_to_query(client, args):
        try:
            with Client([endpoint], timeout=client.timeout, **args.security) as single:
                status = single.status()
        except CairnError as error:
            print(f"Failed to get the status of endpoint {endpoint} ({error})", file=sys.stderr)
            failed = True
            continue
        rows.append((endpoint, status))
    if args.write_out == "json":
        print(json.dumps([
            {"Endpoint": endpoint, "Status": {
                "header": header_json(s.header), "version": s.version, "dbSize": s.db_size, "dbSizeInUse": s.db_size_in_use, "leader": s.leader,
                "raftIndex": s.raft_index, "raftTerm": s.raft_term, "raftAppliedIndex": s.raft_applied_index,
                "errors": list(s.errors), "name": s.name, "isLearner": s.is_learner}}
            for endpoint, s in rows
        ]))
    else:
        columns = ("ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS")
        table = [
            (endpoint, f"{s.header.member_id:x}", s.version, _human_bytes(s.db_size), str(s.leader == s.header.member_id).lower(),
             str(s.is_learner).lower(), str(s.raft_term), str(s.raft_index), str(s.raft_applied_index), ", ".join(s.errors))
            for endpoint, s in rows
        ]
        if args.write_out == "table":
            _print_table(columns, table)
        else:
            for row in table:
                print(", ".join(row))
    if failed:
        raise SystemExit(EXIT_ERROR)


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (etcdctl's "took = 1.234567ms")."""
    nanos = max(0, round(seconds * 1e9))
    if nanos < 1000:
        return f"{nanos}ns"
    for unit, size in (("µs", 1000), ("ms", 1000_000), ("s", 1000_000_000)):
        if nanos < size * 1000 or unit == "s":
            whole, fraction = divmod(nanos, size)
            digits = len(str(size)) - 1
            text = f"{whole}.{fraction:0{digits}d}".rstrip("0").rstrip(".") if fraction else str(whole)
            if unit == "s" and whole >= 60:  # etcdctl's minutes: 1m2.5s
                minutes, rest = divmod(nanos, 60 * size)
                return f"{minutes}m{go_duration(rest / 1e9)}"
            return text + unit
    raise AssertionError("unreachable")


def _endpoint_health(endpoint: str, args, timeout: float) -> dict:
    """etcdctl's check: a linearizable read (it needs a leader and a quorum;
    refused by auth still went through raft, so healthy), then no alarm raised."""
    health = {"endpoint": endpoint, "health": False, "took": ""}
    with Client([endpoint], timeout=timeout, **args.security) as single:
        started = time.monotonic()
        try:
            single.get(b"health")
            error = None
        except PermissionDeniedError:
            error = None
        except CairnError as failure:
            error = str(failure)
        health["took"] = go_duration(time.monotonic() - started)
        if error is not None:
            health["error"] = error
            return health
        try:
            alarms = single.alarm_list().alarms
        except CairnError:
            health["error"] = "Unable to fetch the alarm list"
            return health
    if alarms:
        health["error"] = "Active Alarm(s): " + "".join(m.ALARM_NAMES.get(a.alarm, "UNKNOWN") + " " for a in alarms)
        return health
    health["health"] = True
    return health


def cmd_endpoint_health(client: Client, args) -> None:
    """etcdctl endpoint health [--cluster]: every endpoint at once; "is healthy"
    lines on stdout, "is unhealthy" ones on stderr, and exit 1 with
    "unhealthy cluster" if any is."""
    endpoints = _endpoints_to_query(client, args)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(endpoints), 16))) as pool:
        results = list(pool.map(lambda endpoint: _endpoint_health(endpoint, args, client.timeout), endpoints))
    if args.write_out == "json":
        print(json.dumps(results))
    elif args.write_out == "table":
        _print_table(("ENDPOINT", "HEALTH", "TOOK", "ERROR"),
                     [(r["endpoint"], str(r["health"]).lower(), r["took"], r.get("error", "")) for r in results])
    else:
        for r in results:
            if r["health"]:
                print(f"{r['endpoint']} is healthy: successfully committed proposal: took = {r['took']}")
            else:
                print(f"{r['endpoint']} is unhealthy: failed to commit proposal: {r['error']}", file=sys.stderr)
    if not all(r["health"] for r in results):
        print("Error: unhealthy cluster", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def cmd_check(client: Client, args) -> None:
    """etcdctl check perf / datascale (cairn/check.py): exit 1 on FAIL."""
    check, size = ((check_module.check_perf, args.duration) if args.check_command == "perf"
                   else (check_module.check_datascale, args.limit))
    try:
        passed = check(client, args.security, args.load, args.prefix, size, args.auto_compact, args.auto_defrag)
    except check_module.CheckFailed as error:
        raise UsageError(str(error)) from None
    if not passed:
        raise SystemExit(EXIT_ERROR)


DEFRAG_TIMEOUT_S = 60.0  # a large keyspace takes a while to copy


def cmd_defrag(client: Client, args) -> None:
    """etcdctl defrag [--cluster]: each member in turn, never two at once."""
    failed = False
    for endpoint in _endpoints_to_query(client, args):
        try:
            with Client([endpoint], timeout=max(client.timeout, DEFRAG_TIMEOUT_S), **args.security) as single:
                single.defragment()
        except CairnError as error:
            print(f"Failed to defragment etcd member[{endpoint}] ({error})", file=sys.stderr)
            failed = True
            continue
        print(f"Finished defragmenting etcd member[{endpoint}]")
    if failed:
        raise SystemExit(EXIT_ERROR)


def cmd_endpoint_hashkv(client: Client, args) -> None:
    """etcdctl endpoint hashkv: each member's HashKV at --rev (0 = its latest)."""
    rows, failed = [], False
    for endpoint in _endpoints_to_query(client, args):
        try:
            with Client([endpoint], timeout=client.timeout) as single:
                rows.append((endpoint, single.hash_kv(args.rev)))
        except CairnError as error:
            print(f"Failed to get the hash of endpoint {endpoint} ({error})", file=sys.stderr)
            failed = True
    if args.write_out == "json":
        print(json.dumps([{"Endpoint": endpoint, "HashKV": {
            "header": header_json(r.header), "hash": r.hash, "compact_revision": r.compact_revision,
            "hash_revision": r.hash_revision}} for endpoint, r in rows]))
    elif args.write_out == "table":
        _print_table(("ENDPOINT", "HASH", "HASH REVISION", "COMPACT REVISION"),
                     [(endpoint, r.hash, r.hash_revision, r.compact_revision) for endpoint, r in rows])
    else:
        for endpoint, r in rows:
            print(f"{endpoint}, {r.hash}, {r.hash_revision}")
    if failed:
        raise SystemExit(EXIT_ERROR)


def _show_download(done: int, total: int) -> None:
    print(f"\rDownloading {_human_bytes(done)} / {_human_bytes(total)}", end="", file=sys.stderr, flush=True)


def cmd_snapshot_save(client: Client, args) -> None:
    """etcdctl snapshot save: from exactly one endpoint, as etcdctl requires."""
    from transport.snapshot_file import SnapshotFileError

    if len(client.endpoints) != 1:
        raise UsageError(f"snapshot must be requested to one selected node, not multiple {client.endpoints}")
    progress = _show_download if sys.stderr.isatty() else None
    try:
        saved = client.snapshot_save(args.file, progress=progress, timeout=max(client.timeout, 60.0))
    except SnapshotFileError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    except OSError as error:
        print(f"Error: could not write {args.file}: {error.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    if progress is not None:
        print(file=sys.stderr)
    if args.write_out == "json":
        print(json.dumps({"path": saved.path, "revision": saved.revision, "size": saved.size, "sha256": saved.sha256,
                          "member_id": saved.member_id}))
    else:
        print(f"Snapshot saved at {saved.path}")


def cmd_snapshot_status(client: Client, args) -> None:
    """etcdutl snapshot status: offline, from the file alone."""
    from transport.snapshot_file import SnapshotFileError
    from store.maintenance import snapshot_status

    try:
        status = snapshot_status(args.file)
    except SnapshotFileError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    if args.write_out == "json":
        print(json.dumps({"hash": status["hash"], "revision": status["revision"], "totalKey": status["total_keys"],
                          "totalSize": status["total_size"]}))
        return
    row = (f"{status['hash']:x}", str(status["revision"]), str(status["total_keys"]), _human_bytes(status["total_size"]))
    if args.write_out == "table":
        _print_table(("HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"), [row])
    else:
        print(", ".join(row))


def cmd_member_list(client: Client, args) -> None:
    response = client.member_list()
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header), "members": [
            {"ID": mb.id, "name": mb.name, "peerURLs": list(mb.peer_urls), "clientURLs": list(mb.client_urls), "isLearner": mb.is_learner}
            for mb in response.members]}))
        return
    rows = [(f"{mb.id:x}", "started", mb.name, ",".join(mb.peer_urls), ",".join(mb.client_urls), str(mb.is_learner).lower())
            for mb in response.members]
    if args.write_out == "table":
        _print_table(("ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"), rows)
    else:
        for row in rows:
            print(", ".join(row))


def _lease_id(text: str) -> int:
    """A lease ID in hex, as `lease grant` prints it; etcd's ids are int64."""
    try:
        lease = int(text, 16)
    except ValueError:
        raise UsageError(f'bad lease ID arg (strconv.ParseInt: parsing "{text}": invalid syntax), expecting ID in Hex') from None
    if not -(1 << 63) <= lease < 1 << 63:
        raise UsageError(f'bad lease ID arg (strconv.ParseInt: parsing "{text}": value out of range), expecting ID in Hex')
    return lease


def cmd_lease_grant(client: Client, args) -> None:
    response = client.lease_grant(args.ttl)
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header), "ID": response.id, "TTL": response.ttl}))
    else:
        print(f"lease {response.id:x} granted with TTL({response.ttl}s)")


def cmd_lease_revoke(client: Client, args) -> None:
    lease = _lease_id(args.id)
    response = client.lease_revoke(lease)
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header)}))
    else:
        print(f"lease {lease:x} revoked")


def cmd_lease_timetolive(client: Client, args) -> None:
    lease = _lease_id(args.id)
    response = client.lease_time_to_live(lease, keys=args.keys)
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header), "ID": response.id, "TTL": response.ttl,
                          "granted-ttl": response.granted_ttl, "keys": [_b64(k) for k in response.keys]}))
    elif response.ttl < 0:
        print(f"lease {lease:x} already expired")
    else:
        text = f"lease {lease:x} granted with TTL({response.granted_ttl}s), remaining({response.ttl}s)"
        if args.keys:
            text += ", attached keys([" + " ".join(_text(k) for k in response.keys) + "])"
        print(text)


def cmd_lease_list(client: Client, args) -> None:
    response = client.leases()
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header), "leases": [{"ID": lease} for lease in response.leases]}))
        return
    print(f"found {len(response.leases)} leases")
    for lease in response.leases:
        print(f"{lease:x}")


def cmd_lease_keep_alive(client: Client, args) -> None:
    from transport.errors import LeaseNotFoundError

    lease = _lease_id(args.id)
    if args.once:
        try:
            response = client.lease_keepalive_once(lease)
        except LeaseNotFoundError:
            print(f"lease {lease:x} expired or revoked.")
            raise SystemExit(EXIT_ERROR)
        print(f"lease {lease:x} keepalived with TTL({response.ttl})")
        return
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    keepalive = client.lease_keepalive(lease)
    try:
        for response in keepalive:
            print(f"lease {lease:x} keepalived with TTL({response.ttl})", flush=True)
        print(f"lease {lease:x} expired or revoked.")
    except LeaseNotFoundError:
        print(f"lease {lease:x} expired or revoked.")
    except KeyboardInterrupt:
        pass
    finally:
        keepalive.close()


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a blocking command the way Ctrl-C does (clean release)."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_lock(client: Client, args) -> None:
    """etcdctl lock: hold NAME until Ctrl-C, or while COMMAND runs (with
    ETCD_LOCK_KEY and ETCD_LOCK_REV set, as etcdctl sets them)."""
    import os
    import subprocess

    from cairn.concurrency import Lock, Session

    _interrupt_on_sigterm()
    session = Session(client, ttl=args.ttl)
    try:
        lock = Lock(session, args.name).acquire()
        if args.command_args:
            environment = dict(os.environ, ETCD_LOCK_KEY=_text(lock.key), ETCD_LOCK_REV=str(lock.revision),
                               CAIRN_LOCK_KEY=_text(lock.key), CAIRN_LOCK_REV=str(lock.revision))
            status = subprocess.run(args.command_args, env=environment).returncode
            lock.release()
            if status:
                raise SystemExit(status)
            return
        print(_text(lock.key), flush=True)
        try:
            session.done.wait()
            print("session expired: lock lost", file=sys.stderr)
            raise SystemExit(EXIT_ERROR)
        except KeyboardInterrupt:
            lock.release()
    except KeyboardInterrupt:
        pass
    finally:
        session.close()


def cmd_elect(client: Client, args) -> None:
    """etcdctl elect: campaign with PROPOSAL and lead until Ctrl-C, or with
    --listen print each leader's proposal as leadership changes."""
    from cairn.concurrency import Election, Session

    _interrupt_on_sigterm()
    if args.listen:
        import threading

        stop = threading.Event()
        session = Session(client, ttl=args.ttl)
        try:
            for kv in Election(session, args.name).observe(stop):
                print(_text(kv.key))
                print(_text(kv.value), flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            session.close()
        return
    if args.proposal is None:
        raise UsageError("elect needs NAME PROPOSAL, or --listen NAME")
    session = Session(client, ttl=args.ttl)
    election = Election(session, args.name)
    try:
        election.campaign(args.proposal)
        print(_text(election.key))
        print(args.proposal, flush=True)
        session.done.wait()
        print("session expired: leadership lost", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)
    except KeyboardInterrupt:
        election.resign()
    finally:
        session.close()


def cmd_version(client: Client, args) -> None:
    from cairn import __version__

    print(f"cairnctl version: {__version__}")
    print("API version: 3 (etcd v3 semantics)")


def cmd_alarm_list(client: Client, args) -> None:
    _print_alarms(client.alarm_list(), args)


def cmd_alarm_disarm(client: Client, args) -> None:
    _print_alarms(client.alarm_disarm(), args)


def _print_alarms(response: m.AlarmResponse, args) -> None:
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header),
                          "alarms": [{"memberID": a.member_id, "alarm": m.ALARM_NAMES.get(a.alarm, a.alarm)} for a in response.alarms]}))
        return
    for alarm in response.alarms:
        print(f"memberID:{alarm.member_id:x} alarm:{m.ALARM_NAMES.get(alarm.alarm, alarm.alarm)}")


def _member_id(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise UsageError(f"bad member ID {text!r}: expected hex, as member list prints") from None


def _members_json(response) -> list:
    return [{"ID": mb.id, "name": mb.name, "peerURLs": list(mb.peer_urls), "clientURLs": list(mb.client_urls),
             "isLearner": mb.is_learner} for mb in response.members]


def cmd_member_add(client: Client, args) -> None:
    """etcdctl member add NAME --peer-urls=... [--learner]: etcdctl's lines for
    starting the new member (ETCD_NAME ... ETCD_INITIAL_CLUSTER_STATE), then
    cairn's equivalent, the new member's YAML and the command that starts it."""
    peer_urls = [u for u in args.peer_urls.split(",") if u]
    if not peer_urls:
        raise UsageError("member peer urls not provided (--peer-urls)")
    client_urls = [u for u in (args.client_urls or "").split(",") if u]
    public_key = ""
    if args.curve_key:
        from transport import curve

        try:
            public_key = curve.read_public_key(args.curve_key).decode()
        except curve.KeyFileError as error:
            raise UsageError(f"--curve-key: {error}") from None
    response = client.member_add(args.name, peer_urls, is_learner=args.learner, client_urls=client_urls,
                                 public_key=public_key)
    added = response.member
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header), "member": _members_json(
            m.MemberListResponse(response.header, (added,)))[0], "members": _members_json(response)}))
        return
    print(f"Member {added.id:x} added to cluster {response.header.cluster_id:x}")
    print()
    initial = ",".join(f"{mb.name}={url}" for mb in response.members for url in mb.peer_urls)
    print(f'ETCD_NAME="{added.name}"')
    print(f'ETCD_INITIAL_CLUSTER="{initial}"')
    print(f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{",".join(added.peer_urls)}"')
    print('ETCD_INITIAL_CLUSTER_STATE="existing"')
    print()
    print("# cairn's equivalent, the new member's YAML: the cluster's name and id, state existing,")
    print("# and its members, this one included (every member may list it):")
    print("cluster:")
    print(f"  name: {response.cluster_name or '...   # the cluster name of its members YAML'}")
    print(f"  id: \"{response.header.cluster_id:x}\"")
    print("  state: existing")
    if public_key:
        print("  security: {mode: curve}")
    print("  members:")
    for mb in response.members:
        print(f"    - name: {mb.name}")
        print(f"      peer: {mb.peer_urls[0] if mb.peer_urls else ''}")
        print(f"      client: {mb.client_urls[0] if mb.client_urls else 'tcp://HOST:PORT  # its client URL'}")
        if public_key:
            quoted = f'"{public_key}"'  # Z85 has '#', ':' and '!' in it
            print(f"      public_key: {quoted if mb.id == added.id else '...   # its key, as in its YAML'}")
    if public_key:
        print("member:")
        print(f"  secret_key_file: keys/{added.name}.key   # its secret key file, as `cairn keygen` wrote it")
    print()
    print("# then start it with an empty data dir:")
    print(f"cairn node --config NEW.yaml --name {added.name} --join")


def _print_member_change(args, what: str, member_id: int, response) -> None:
    """etcdctl's line for a member change, and its JSON with -w json."""
    print(f"Member {member_id:x} {what} cluster {response.header.cluster_id:x}")
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header), "members": _members_json(response)}))


def cmd_member_remove(client: Client, args) -> None:
    member_id = _member_id(args.member_id)
    _print_member_change(args, "removed from", member_id, client.member_remove(member_id))


def cmd_member_update(client: Client, args) -> None:
    member_id = _member_id(args.member_id)
    peer_urls = [u for u in (args.peer_urls or "").split(",") if u]
    if not peer_urls:
        raise UsageError("member peer urls not provided (--peer-urls)")
    _print_member_change(args, "updated in", member_id, client.member_update(member_id, peer_urls))


def cmd_member_promote(client: Client, args) -> None:
    member_id = _member_id(args.member_id)
    _print_member_change(args, "promoted in", member_id, client.member_promote(member_id))


def cmd_move_leader(client: Client, args) -> None:
    try:
        target = int(args.transferee, 16)
    except ValueError:
        raise UsageError(f"bad member ID {args.transferee!r}: expected hex, as member list prints") from None
    before = client.status().leader
    response = client.move_leader(target)
    print(f"Leadership transferred from {before:x} to {target:x}")
    if args.write_out == "json":
        print(json.dumps({"header": header_json(response.header)}))


def watch_json(response: m.WatchResponse) -> dict:
    """etcdctl's -w json for a watch: clientv3.WatchResponse as Go marshals it
    (event type PUT is 0, omitted; DELETE is 1)."""
    events = []
    for event in response.events:
        out = {"type": 1} if event.type == m.EVENT_DELETE else {}
        out["kv"] = kv_json(event.kv)
        if event.prev_kv:
            out["prev_kv"] = kv_json(event.prev_kv)
        events.append(out)
    return {"Header": header_json(response.header), "Events": events, "CompactRevision": response.compact_revision,
            "Canceled": response.canceled, "Created": response.created}


def _print_watch_response(response: m.WatchResponse, write_out: str) -> None:
    """etcdctl's printWatchCh: events as TYPE, then prev kv (--prev-kv), then kv."""
    from cairn.watch import is_progress_notify

    if write_out == "json":
        print(json.dumps(watch_json(response)), flush=True)
        return
    if is_progress_notify(response):
        print(f"progress notify: {response.header.revision}")
    for event in response.events:
        print("DELETE" if event.type == m.EVENT_DELETE else "PUT")
        if event.prev_kv:
            _print_kv(event.prev_kv)
        _print_kv(event.kv)
    sys.stdout.flush()


def _watch_canceled_message(response: m.WatchResponse) -> str:
    reason = response.cancel_reason or ("etcdserver: mvcc: required revision has been compacted" if response.compact_revision else "canceled")
    return f"watch was canceled ({reason})"


def _open_watch(client: Client, args):
    if args.key is None:
        raise UsageError("watch needs a key (or -i to read watch commands from stdin)")
    return client.watch(args.key, range_end=args.range_end, prefix=args.prefix, start_revision=args.rev,
                        prev_kv=args.prev_kv, progress_notify=args.progress_notify)


def _follow(watch, write_out: str, lock) -> bool:
    """Print the watch's responses until it ends; False if the member canceled it."""
    while True:
        response = watch.get(timeout=0.5)
        if response is None:
            if watch.ended:
                return True
            continue
        with lock:
            if response.canceled:
                print(_watch_canceled_message(response), file=sys.stderr, flush=True)
                return False
            _print_watch_response(response, write_out)


def cmd_watch(client: Client, args) -> None:
    """Watch until Ctrl-C or SIGTERM (exit 0) or until the member cancels the
    watch (exit 1). -i reads `watch KEY [RANGE_END] [flags]` and `progress`
    lines from stdin, as etcdctl's interactive mode, and keeps watching after
    the end of input."""
    import signal
    import threading

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    lock = threading.Lock()
    watches = []
    try:
        if not args.interactive:
            watch = _open_watch(client, args)
            watches.append(watch)
            if not _follow(watch, args.write_out, lock):
                raise SystemExit(EXIT_ERROR)
            return
        _watch_interactive(client, args, watches, lock)
    except KeyboardInterrupt:
        pass
    finally:
        for watch in watches:
            watch.cancel()


def _watch_interactive(client: Client, args, watches: list, lock) -> None:
    import shlex
    import threading

    parser = _interactive_watch_parser()
    followers = []
    for line in sys.stdin:
        line = line.strip()
        try:
            words = shlex.split(line)
        except ValueError:
            words = []
        if not words:
            print(f"Invalid command: {line} (watch and progress supported)", file=sys.stderr, flush=True)
            continue
        if words[0] == "progress":
            for watch in watches:
                watch.request_progress()
            continue
        if words[0] != "watch":
            print(f"Invalid command {line} (only support watch)", file=sys.stderr, flush=True)
            continue
        try:
            line_args = parser.parse_args(words[1:])
        except (UsageError, SystemExit) as error:
            print(f"Invalid command {line} ({error})", file=sys.stderr, flush=True)
            continue
        line_args.write_out = args.write_out
        try:
            watch = _open_watch(client, line_args)
        except CairnError as error:
            print(f"Error: {error}", file=sys.stderr, flush=True)
            continue
        watches.append(watch)
        follower = threading.Thread(target=_follow, args=(watch, args.write_out, lock), daemon=True)
        follower.start()
        followers.append(follower)
    for follower in followers:  # end of input: watch on until interrupted or canceled
        while follower.is_alive():
            follower.join(0.5)


class _LineParser(argparse.ArgumentParser):
    """An argparse parser for one interactive line: errors raise, never exit."""

    def error(self, message):
        raise UsageError(message)


def _interactive_watch_parser() -> argparse.ArgumentParser:
    parser = _LineParser(prog="watch", add_help=False)
    _watch_flags(parser)
    return parser


def _range_arguments(parser) -> None:
    """etcdctl's way of naming keys for get and del: KEY [RANGE_END], --prefix, --from-key."""
    parser.add_argument("key")
    parser.add_argument("range_end", nargs="?")
    parser.add_argument("--prefix", action="store_true")
    parser.add_argument("--from-key", action="store_true")


def _watch_flags(parser) -> None:
    parser.add_argument("key", nargs="?")
    parser.add_argument("range_end", nargs="?")
    parser.add_argument("--prefix", action="store_true", help="watch on a prefix")
    parser.add_argument("--rev", type=int, default=0, help="revision to start watching from")
    parser.add_argument("--prev-kv", action="store_true", help="get the previous key-value pair before the event happens")
    parser.add_argument("--progress-notify", action="store_true", help="get periodic watch progress notifications")


def _human_bytes(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def _print_table(columns, rows) -> None:
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(line)
    print("|" + "|".join(f" {c:^{w}} " for c, w in zip(columns, widths)) + "|")
    print(line)
    for row in rows:
        print("|" + "|".join(f" {str(v):>{w}} " for v, w in zip(row, widths)) + "|")
    print(line)


# ---------------------------------------------------------------------------- auth (etcdctl's output)


def auth_json(response) -> dict:
    """etcdctl's -w json for the auth commands: the response as Go's
    encoding/json writes etcd's struct (empty fields left out, permType as its
    number, keys in base64)."""
    out = {"header": header_json(response.header)}
    for field, name in (("enabled", "enabled"), ("auth_revision", "authRevision"), ("users", "users"), ("roles", "roles")):
        value = getattr(response, field, None)
        if value:
            out[name] = list(value) if isinstance(value, tuple) else value
    if getattr(response, "perm", None):
        out["perm"] = [{name: value for name, value in (("permType", perm.perm_type), ("key", _b64(perm.key)),
                                                         ("range_end", _b64(perm.range_end))) if value}
                       for perm in response.perm]
    return out


def print_auth(args, response, *lines: str) -> None:
    """etcdctl's lines, or with -w json the response's JSON."""
    if args.write_out == "json":
        print(json.dumps(auth_json(response)))
        return
    for line in lines:
        print(line)


def cmd_auth_enable(client: Client, args) -> None:
    print_auth(args, client.auth_enable(), "Authentication Enabled")


def cmd_auth_disable(client: Client, args) -> None:
    print_auth(args, client.auth_disable(), "Authentication Disabled")


def cmd_auth_status(client: Client, args) -> None:
    response = client.auth_status()
    print_auth(args, response, f"Authentication Status: {str(response.enabled).lower()}",
               f"AuthRevision: {response.auth_revision}")


def _read_password(name: str, interactive: bool) -> str:
    """etcdctl's: prompt twice on a terminal; with --interactive=false one line from stdin."""
    if interactive and sys.stdin.isatty():
        import getpass

        first = getpass.getpass(f"Password of {name}: ")
        if first != getpass.getpass(f"Type password of {name} again for confirmation: "):
            raise UsageError("given passwords are different")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _new_password(args) -> tuple[str, str]:
    """(user, password) from NAME[:PASSWORD], --new-user-password or stdin."""
    name, colon, password = args.user_name.partition(":")
    if getattr(args, "new_user_password", None):
        return name, args.new_user_password
    if colon:
        return name, password
    return name, _read_password(name, args.interactive == "true")


def cmd_user_add(client: Client, args) -> None:
    if args.no_password:
        name, password = args.user_name.partition(":")[0], ""
    else:
        name, password = _new_password(args)
    print_auth(args, client.user_add(name, password, no_password=args.no_password), f"User {name} created")


def cmd_user_get(client: Client, args) -> None:
    response = client.user_get(args.name)
    if not args.detail:
        print_auth(args, response, f"User: {args.name}", "Roles:" + "".join(f" {role}" for role in response.roles))
        return
    print(f"User: {args.name}")  # etcdctl's --detail: then each role as role get prints it
    if args.write_out != "json":
        print("Roles:" + "".join(f" {role}" for role in response.roles))
    for role in response.roles:
        _print_role(args, role, client.role_get(role))


def cmd_user_list(client: Client, args) -> None:
    response = client.user_list()
    print_auth(args, response, *response.users)


def cmd_user_delete(client: Client, args) -> None:
    print_auth(args, client.user_delete(args.name), f"User {args.name} deleted")


def cmd_user_passwd(client: Client, args) -> None:
    args.user_name = args.name
    name, password = _new_password(args)
    print_auth(args, client.user_change_password(name, password), "Password updated")


def cmd_user_grant_role(client: Client, args) -> None:
    print_auth(args, client.user_grant_role(args.name, args.role), f"Role {args.role} is granted to user {args.name}")


def cmd_user_revoke_role(client: Client, args) -> None:
    print_auth(args, client.user_revoke_role(args.name, args.role), f"Role {args.role} is revoked from user {args.name}")


def cmd_role_add(client: Client, args) -> None:
    print_auth(args, client.role_add(args.name), f"Role {args.name} created")


def _print_role(args, name: str, response: m.AuthRoleGetResponse) -> None:
    from cairn.requests import prefix_range_end

    if args.write_out == "json":
        print(json.dumps(auth_json(response)))
        return
    print(f"Role {name}")
    for title, types in (("KV Read:", (m.PERM_READ, m.PERM_READWRITE)), ("KV Write:", (m.PERM_WRITE, m.PERM_READWRITE))):
        print(title)
        for perm in response.perm:
            if perm.perm_type not in types:
                continue
            key, end = _text(perm.key), _text(perm.range_end)
            if not perm.range_end:
                print(f"\t{key}")
                continue
            line = f"\t[{key}, {end})" if perm.range_end != b"\0" else f"\t[{key}, <open ended>"
            if perm.key and prefix_range_end(perm.key) == perm.range_end:
                line += f" (prefix {key})"
            print(line)


def cmd_role_get(client: Client, args) -> None:
    _print_role(args, args.name, client.role_get(args.name))


def cmd_role_list(client: Client, args) -> None:
    response = client.role_list()
    print_auth(args, response, *response.roles)


def cmd_role_delete(client: Client, args) -> None:
    print_auth(args, client.role_delete(args.name), f"Role {args.name} deleted")


PERM_TYPES = {"read": m.PERM_READ, "write": m.PERM_WRITE, "readwrite": m.PERM_READWRITE}


def _permission_range(args) -> tuple[bytes, bytes]:
    if args.prefix and args.from_key:
        raise UsageError("--from-key and --prefix flags are mutually exclusive")
    key = args.key.encode()
    if args.prefix:
        from cairn.requests import prefix_range_end

        return key, prefix_range_end(key)
    if args.from_key:
        return key, b"\0"
    return key, (args.range_end or "").encode()


def cmd_role_grant_permission(client: Client, args) -> None:
    perm_type = PERM_TYPES.get(args.perm_type.lower())
    if perm_type is None:
        raise UsageError(f"invalid permission type {args.perm_type}")
    key, end = _permission_range(args)
    print_auth(args, client.role_grant_permission(args.name, perm_type, key, end), f"Role {args.name} updated")


def cmd_role_revoke_permission(client: Client, args) -> None:
    key, end = _permission_range(args)
    response = client.role_revoke_permission(args.name, key, end)
    if not end:
        print_auth(args, response, f"Permission of key {_text(key)} is revoked from role {args.name}")
    else:
        print_auth(args, response, f"Permission of range [{_text(key)}, {_text(end)}) is revoked from role {args.name}")


def _auth_commands(commands) -> None:
    auth = commands.add_parser("auth", help="auth enable / disable / status")
    auth_commands = commands.add_subparsers(auth, dest="auth_command", required=True)
    auth_commands.add_parser("enable").set_defaults(run=cmd_auth_enable)
    auth_commands.add_parser("disable").set_defaults(run=cmd_auth_disable)
    auth_commands.add_parser("status").set_defaults(run=cmd_auth_status)

    user = commands.add_parser("user", help="user add / get / list / delete / passwd / grant-role / revoke-role")
    user_commands = commands.add_subparsers(user, dest="user_command", required=True)
    add = user_commands.add_parser("add")
    add.add_argument("user_name", metavar="NAME[:PASSWORD]")
    add.add_argument("--new-user-password", default="")
    add.add_argument("--no-password", action="store_true")
    add.add_argument("--interactive", default="true", choices=["true", "false"])
    add.set_defaults(run=cmd_user_add)
    get = user_commands.add_parser("get")
    get.add_argument("name")
    get.add_argument("--detail", action="store_true")
    get.set_defaults(run=cmd_user_get)
    user_commands.add_parser("list").set_defaults(run=cmd_user_list)
    delete = user_commands.add_parser("delete")
    delete.add_argument("name")
    delete.set_defaults(run=cmd_user_delete)
    passwd = user_commands.add_parser("passwd")
    passwd.add_argument("name")
    passwd.add_argument("--interactive", default="true", choices=["true", "false"])
    passwd.set_defaults(run=cmd_user_passwd)
    for verb, run in (("grant-role", cmd_user_grant_role), ("revoke-role", cmd_user_revoke_role)):
        sub = user_commands.add_parser(verb)
        sub.add_argument("name")
        sub.add_argument("role")
        sub.set_defaults(run=run)

    role = commands.add_parser("role", help="role add / get / list / delete / grant-permission / revoke-permission")
    role_commands = commands.add_subparsers(role, dest="role_command", required=True)
    for verb, run in (("add", cmd_role_add), ("get", cmd_role_get), ("delete", cmd_role_delete)):
        sub = role_commands.add_parser(verb)
        sub.add_argument("name")
        sub.set_defaults(run=run)
    role_commands.add_parser("list").set_defaults(run=cmd_role_list)
    grant = role_commands.add_parser("grant-permission")
    grant.add_argument("name")
    grant.add_argument("perm_type", metavar="TYPE", help="read, write or readwrite")
    grant.add_argument("key")
    grant.add_argument("range_end", nargs="?", default="")
    revoke = role_commands.add_parser("revoke-permission")
    revoke.add_argument("name")
    revoke.add_argument("key")
    revoke.add_argument("range_end", nargs="?", default="")
    for sub, run in ((grant, cmd_role_grant_permission), (revoke, cmd_role_revoke_permission)):
        sub.add_argument("--prefix", action="store_true")
        sub.add_argument("--from-key", action="store_true")
        sub.set_defaults(run=run)


def _credentials(args) -> tuple[str | None, str | None]:
    """--user NAME[:PASSWORD] and --password, or ETCDCTL_USER / ETCDCTL_PASSWORD;
    a user without a password is asked for one (etcdctl's "Password: ")."""
    import os

    user = args.user or os.environ.get("ETCDCTL_USER") or None
    password = args.password or os.environ.get("ETCDCTL_PASSWORD") or None
    if user is None:
        if password is not None:
            raise UsageError("--password requires --user")
        return None, None
    name, colon, given = user.partition(":")
    if colon and password is not None:
        raise UsageError("--user NAME:PASSWORD and --password cannot be given together")
    if colon:
        return name, given
    if password is None:
        import getpass

        password = getpass.getpass("Password: ")
    return name, password


# ---------------------------------------------------------------------------- parser


class UsageError(Exception):
    pass


def _global_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """etcdctl's global flags. Every subcommand takes them too (as cobra's
    persistent flags), with defaults suppressed so they only override."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--endpoints", default=default(DEFAULT_ENDPOINTS), help="comma-separated client endpoints (tcp://host:port)")
    parser.add_argument("-w", "--write-out", default=default("simple"), choices=["simple", "json", "fields", "table"])
    parser.add_argument("--command-timeout", type=float, default=default(5.0), help="seconds")
    parser.add_argument("--dial-timeout", type=float, default=default(2.0), help="seconds")
    security_flags(parser, default)
    parser.add_argument("--user", default=default(""), help="NAME[:PASSWORD] (or ETCDCTL_USER)")
    parser.add_argument("--password", default=default(""), help="the user's password (or ETCDCTL_PASSWORD)")


class _Subcommands:
    """add_parser that gives every subcommand the global flags."""

    def __init__(self, action, common):
        self.action, self.common = action, common

    def add_parser(self, name, **options):
        return self.action.add_parser(name, parents=[self.common], **options)

    def add_subparsers(self, parser, **options):
        return _Subcommands(parser.add_subparsers(**options), self.common)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that the value after a key or password flag is always its
    value: a Z85 public key (or a password) may begin with '-', which argparse
    would otherwise take for an option ("expected one argument")."""

    VALUE_FLAGS = frozenset({"--server-keys", "--client-key", "--curve-key", "--user", "--password",
                             "--new-user-password"})

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        fused, index = [], 0
        while index < len(args):
            word = args[index]
            if word == "--":
                fused.extend(args[index:])
                break
            if word in self.VALUE_FLAGS and index + 1 < len(args):
                fused.append(f"{word}={args[index + 1]}")
                index += 2
                continue
            fused.append(word)
            index += 1
        return super().parse_known_args(fused, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="cairnctl", description="cairnctl: a command-line client for cairn (etcdctl v3 style)")
    _global_flags(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, suppress=True)
    commands = _Subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), common)

    put = commands.add_parser("put", help="put a key")
    put.add_argument("key")
    put.add_argument("value", nargs="?")
    put.add_argument("--prev-kv", action="store_true")
    put.add_argument("--lease", default="", help="lease ID in hex")
    put.add_argument("--ignore-value", action="store_true")
    put.add_argument("--ignore-lease", action="store_true")
    put.set_defaults(run=cmd_put)

    get = commands.add_parser("get", help="get a key or a range")
    _range_arguments(get)
    get.add_argument("--rev", type=int, default=0)
    get.add_argument("--limit", type=int, default=0)
    get.add_argument("--keys-only", action="store_true")
    get.add_argument("--count-only", action="store_true")
    get.add_argument("--print-value-only", action="store_true")
    get.add_argument("--sort-by", choices=["KEY", "VERSION", "CREATE", "MODIFY", "VALUE", "key", "version", "create", "modify", "value"])
    get.add_argument("--order", choices=["ASCEND", "DESCEND", "ascend", "descend"])
    get.add_argument("--consistency", default="l", choices=["l", "s", "L", "S"], help="l: linearizable, s: serializable")
    get.set_defaults(run=cmd_get)

    delete = commands.add_parser("del", help="delete a key or a range")
    _range_arguments(delete)
    delete.add_argument("--prev-kv", action="store_true")
    delete.set_defaults(run=cmd_del)

    txn = commands.add_parser("txn", help="a transaction, in etcdctl's syntax, from stdin")
    txn.add_argument("-i", "--interactive", action="store_true", help="prompt for each section")
    txn.set_defaults(run=cmd_txn)

    compaction = commands.add_parser("compaction", help="compact the key-value history")
    compaction.add_argument("revision", type=int)
    compaction.add_argument("--physical", action="store_true")
    compaction.set_defaults(run=cmd_compaction)

    endpoint = commands.add_parser("endpoint", help="endpoint status / health")
    endpoint_commands = commands.add_subparsers(endpoint, dest="endpoint_command", required=True)
    status = endpoint_commands.add_parser("status")
    status.add_argument("--cluster", action="store_true", help="all members, from member list")
    status.set_defaults(run=cmd_endpoint_status)
    health = endpoint_commands.add_parser("health")
    health.add_argument("--cluster", action="store_true")
    health.set_defaults(run=cmd_endpoint_health)
    hashkv = endpoint_commands.add_parser("hashkv")
    hashkv.add_argument("--cluster", action="store_true", help="all members, from member list")
    hashkv.add_argument("--rev", type=int, default=0, help="the revision to hash up to (0 = latest)")
    hashkv.set_defaults(run=cmd_endpoint_hashkv)

    defrag = commands.add_parser("defrag", help="defragment members' keyspace files, one at a time")
    defrag.add_argument("--cluster", action="store_true", help="all members, from member list")
    defrag.set_defaults(run=cmd_defrag)

    check = commands.add_parser("check", help="check perf / datascale: qualify the cluster's hardware (etcdctl's)")
    check_commands = commands.add_subparsers(check, dest="check_command", required=True)
    perf = check_commands.add_parser("perf", help="writes at the load's rate for 60 s; PASS or FAIL")
    datascale = check_commands.add_parser("datascale", help="the first endpoint's memory growth for the load's keys")
    for sub, prefix in ((perf, check_module.PERF_PREFIX), (datascale, check_module.DATASCALE_PREFIX)):
        sub.add_argument("--load", default="s", help="s(small), m(medium), l(large), xl(xLarge)")
        sub.add_argument("--prefix", default=prefix, help="where the check's keys go (must be empty)")
        sub.add_argument("--auto-compact", action="store_true", help="compact to the last revision afterwards")
        sub.add_argument("--auto-defrag", action="store_true", help="defragment the endpoints afterwards")
    # not etcdctl's: shorter runs, for tests and quick looks
    perf.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)
    datascale.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    perf.set_defaults(run=cmd_check)
    datascale.set_defaults(run=cmd_check)

    snapshot = commands.add_parser("snapshot", help="snapshot save / status")
    snapshot_commands = commands.add_subparsers(snapshot, dest="snapshot_command", required=True)
    save = snapshot_commands.add_parser("save", help="save a member's keyspace to a file")
    save.add_argument("file")
    save.set_defaults(run=cmd_snapshot_save)
    snapshot_status_ = snapshot_commands.add_parser("status", help="hash, revision, keys and size of a snapshot file")
    snapshot_status_.add_argument("file")
    snapshot_status_.set_defaults(run=cmd_snapshot_status)

    member = commands.add_parser("member", help="member add / remove / update / promote / list")
    member_commands = commands.add_subparsers(member, dest="member_command", required=True)
    member_list = member_commands.add_parser("list")
    member_list.set_defaults(run=cmd_member_list)
    member_add = member_commands.add_parser("add", help="add a member (start it with cairn node --join)")
    member_add.add_argument("name", help="the new member's name (its YAML name; its id derives from it)")
    member_add.add_argument("--peer-urls", required=True, help="comma-separated peer URLs (tcp://HOST:PORT)")
    member_add.add_argument("--learner", action="store_true", help="add as a learner (promote it once caught up)")
    member_add.add_argument("--client-urls", default="", help="comma-separated client URLs, for member list (cairn)")
    member_add.add_argument("--curve-key", default="", metavar="PUBLIC_KEY",
                            help="the new member's CURVE public key, or its .pub file (cairn keygen): "
                                 "required when the cluster's security mode is curve")
    member_add.set_defaults(run=cmd_member_add)
    member_remove = member_commands.add_parser("remove", help="remove a member")
    member_remove.add_argument("member_id", help="member ID in hex")
    member_remove.set_defaults(run=cmd_member_remove)
    member_update = member_commands.add_parser("update", help="update a member's peer URLs")
    member_update.add_argument("member_id", help="member ID in hex")
    member_update.add_argument("--peer-urls", required=True, help="comma-separated peer URLs")
    member_update.set_defaults(run=cmd_member_update)
    member_promote = member_commands.add_parser("promote", help="promote a learner to a voting member")
    member_promote.add_argument("member_id", help="member ID in hex")
    member_promote.set_defaults(run=cmd_member_promote)

    lease = commands.add_parser("lease", help="lease grant / revoke / timetolive / list / keep-alive")
    lease_commands = commands.add_subparsers(lease, dest="lease_command", required=True)
    grant = lease_commands.add_parser("grant")
    grant.add_argument("ttl", type=int, help="seconds")
    grant.set_defaults(run=cmd_lease_grant)
    revoke = lease_commands.add_parser("revoke")
    revoke.add_argument("id", help="lease ID in hex")
    revoke.set_defaults(run=cmd_lease_revoke)
    timetolive = lease_commands.add_parser("timetolive")
    timetolive.add_argument("id", help="lease ID in hex")
    timetolive.add_argument("--keys", action="store_true", help="list the keys attached")
    timetolive.set_defaults(run=cmd_lease_timetolive)
    lease_commands.add_parser("list").set_defaults(run=cmd_lease_list)
    keep_alive = lease_commands.add_parser("keep-alive")
    keep_alive.add_argument("id", help="lease ID in hex")
    keep_alive.add_argument("--once", action="store_true")
    keep_alive.set_defaults(run=cmd_lease_keep_alive)

    lock = commands.add_parser("lock", help="acquire a named lock (and run a command holding it)")
    lock.add_argument("name")
    lock.add_argument("command_args", nargs=argparse.REMAINDER, help="command to run while holding the lock")
    lock.add_argument("--ttl", type=int, default=10, help="session TTL in seconds")
    lock.set_defaults(run=cmd_lock)

    elect = commands.add_parser("elect", help="campaign in a named election, or --listen to it")
    elect.add_argument("name")
    elect.add_argument("proposal", nargs="?")
    elect.add_argument("-l", "--listen", action="store_true", help="print leaders as they change")
    elect.add_argument("--ttl", type=int, default=10, help="session TTL in seconds")
    elect.set_defaults(run=cmd_elect)

    commands.add_parser("version", help="print the version").set_defaults(run=cmd_version)

    alarm = commands.add_parser("alarm", help="alarm list / disarm")
    alarm_commands = commands.add_subparsers(alarm, dest="alarm_command", required=True)
    alarm_commands.add_parser("list").set_defaults(run=cmd_alarm_list)
    alarm_commands.add_parser("disarm").set_defaults(run=cmd_alarm_disarm)

    move_leader = commands.add_parser("move-leader", help="transfer leadership to another member")
    move_leader.add_argument("transferee", help="member ID in hex")
    move_leader.set_defaults(run=cmd_move_leader)

    watch = commands.add_parser("watch", help="watch a key, a range or a prefix for changes")
    _watch_flags(watch)
    watch.add_argument("-i", "--interactive", action="store_true", help="read watch commands from stdin")
    watch.set_defaults(run=cmd_watch)
    _auth_commands(commands)
    return parser


def security_flags(parser: argparse.ArgumentParser, default=lambda value: value) -> None:
    """The CURVE flags (cairnctl's global ones; `cairn bench` takes them too)."""
    parser.add_argument("--server-keys", default=default(os.environ.get("CAIRNCTL_SERVER_KEYS", "")),
                        help="CURVE: the member's public key (or .pub file), or ENDPOINT=KEY,... for several")
    parser.add_argument("--client-key", default=default(os.environ.get("CAIRNCTL_CLIENT_KEY", "")),
                        help="CURVE: this client's secret key file (cairn keygen)")
    parser.add_argument("--cluster-config", default=default(os.environ.get("CAIRNCTL_CLUSTER_CONFIG", "")),
                        help="a cluster config: its client endpoints and members' public keys")


def security_options(args, endpoints: list[str], default_endpoints: str = DEFAULT_ENDPOINTS) -> tuple[list[str], dict]:
    """(endpoints, Client keyword arguments) from the CURVE flags; UsageError if
    they make no sense. A cluster config's endpoints replace the default ones."""
    from transport.curve import KeyFileError

    server_keys = None
    if args.cluster_config:
        from cairn import config as config_module

        try:
            cluster = config_module.load(args.cluster_config)
        except config_module.ConfigError as error:
            raise UsageError(str(error)) from None
        if args.endpoints == default_endpoints:
            endpoints = cluster.client_endpoints()
        if cluster.security.curve:
            server_keys = {member.client: member.public_key for member in cluster.members}
    if args.server_keys:
        if args.server_keys.startswith("tcp://"):
            server_keys = dict(server_keys or {})
            for item in args.server_keys.split(","):
                endpoint, _, key = item.strip().partition("=")  # endpoints hold no '=', Z85 keys may
                if not key:
                    raise UsageError(f"--server-keys: {item!r} is not ENDPOINT=KEY")
                server_keys[endpoint] = key
        else:
            server_keys = args.server_keys.strip()
    if args.client_key and server_keys is None:
        raise UsageError("--client-key needs --server-keys (or --cluster-config): the members' public keys")
    if server_keys is None:
        return endpoints, {}
    try:
        from transport.curve import ClientCurve

        ClientCurve(endpoints, server_keys, args.client_key or None)  # check the keys and files now, for a clear error
    except (KeyFileError, ValueError) as error:
        raise UsageError(str(error)) from None
    return endpoints, {"server_public_keys": server_keys, "client_key": args.client_key or None}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    try:
        endpoints, args.security = security_options(args, endpoints)
    except UsageError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_USAGE
    for endpoint in endpoints:
        if not endpoint.startswith("tcp://"):
            print(f"Error: endpoint {endpoint!r} is not tcp://HOST:PORT", file=sys.stderr)
            return EXIT_USAGE
    try:
        user, password = _credentials(args)
        with Client(endpoints, timeout=args.command_timeout, dial_timeout=args.dial_timeout,
                    user=user, password=password, **args.security) as client:
            args.run(client, args)
    except UsageError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CairnError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except (TypeError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
