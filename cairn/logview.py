"""`cairn logs`: merge the per-actor JSON logs of one or more members in time order.

Every line's `ts` is UTC ISO-8601 with microseconds, so text order is time
order and merging is a sort. A request is followed by its id: a line matches
--request ID when its request_id is ID or its request_ids list holds ID (hot
paths log once per batch, see actors/logs.py).
"""

from __future__ import annotations

import glob
import heapq
import json
import os
import sys
import time

LEVEL_ORDER = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4, "exception": 3}
FIXED_FIELDS = ("ts", "level", "node", "actor", "event")


def log_files(data_dirs) -> list[str]:
    files = []
    for data_dir in data_dirs:
        files.extend(sorted(glob.glob(os.path.join(data_dir, "logs", "*.log"))))
    return files


def parse(line: str):
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "ts" in record else None


def matches(record: dict, actors, level: str, request_id) -> bool:
    if actors and record.get("actor") not in actors:
        return False
    if LEVEL_ORDER.get(record.get("level", "info"), 1) < LEVEL_ORDER[level]:
        return False
    if request_id is not None:
        if record.get("request_id") == request_id:
            return True
        ids = record.get("request_ids")
        return isinstance(ids, list) and request_id in ids
    return True


def render(record: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps(record, separators=(",", ":"))
    extras = " ".join(f"{k}={_short(v)}" for k, v in record.items() if k not in FIXED_FIELDS)
    return "{ts} {node:<6} {actor:<10} {level:<7} {event} {extras}".format(
        ts=record.get("ts", "?"), node=record.get("node", "?"), actor=record.get("actor", "?"),
        level=record.get("level", "?"), event=record.get("event", "?"), extras=extras,
    ).rstrip()


def _short(value) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:197] + "..."


def read_records(path: str, offset: int = 0):
    """(records, new offset) of complete lines from offset on."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        while True:
            line = handle.readline()
            if not line or not line.endswith("\n"):
                break
            offset = handle.tell()
            record = parse(line)
            if record is not None:
                records.append(record)
    return records, offset


def run_logs(args) -> int:
    files = log_files(args.data_dirs)
    if not files:
        print(f"cairn logs: no logs found under {', '.join(args.data_dirs)} (expected <data_dir>/logs/*.log)", file=sys.stderr)
        return 1
    actors = set(args.actor or ())
    offsets = {}
    streams = []
    for path in files:
        records, offsets[path] = read_records(path)
        streams.append([r for r in records if matches(r, actors, args.level, args.request)])
    try:
        for record in heapq.merge(*streams, key=lambda r: r["ts"]):
            print(render(record, args.json))
        sys.stdout.flush()
        while args.follow:
            time.sleep(0.2)
            fresh = []
            for path in log_files(args.data_dirs):
                records, offsets[path] = read_records(path, offsets.get(path, 0))
                fresh.extend(r for r in records if matches(r, actors, args.level, args.request))
            for record in sorted(fresh, key=lambda r: r["ts"]):
                print(render(record, args.json), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0
