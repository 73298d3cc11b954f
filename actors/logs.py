"""Per-actor structured logs: JSON lines in <data_dir>/logs/<actor>.log.

Every line carries ts (UTC, ISO-8601 with microseconds, so lines from several
files sort into time order as text), level, node, actor and event, plus term,
index, revision and request ids where the caller knows them. Hot paths log once
per batch with `request_ids` (a list) rather than once per request, so that
`cairn logs --request ID` can follow a request without costing a line per
request per actor.
"""

from __future__ import annotations

import logging
import os

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log_path(data_dir: str, actor: str) -> str:
    return os.path.join(data_dir, "logs", f"{actor}.log")


def configure(data_dir: str, node: str, actor: str, level: str):
    """Point structlog at this actor's file and return a logger bound to node and actor."""
    os.makedirs(os.path.join(data_dir, "logs"), exist_ok=True)
    handle = open(log_path(data_dir, actor), "a", buffering=1, encoding="utf-8")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=handle),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger().bind(node=node, actor=actor)
