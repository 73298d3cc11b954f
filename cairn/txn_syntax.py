"""etcdctl's txn syntax, for `cairnctl txn`:

    compares:            mod("key1") > "0"
                         value("key1") = "val1"
    <blank line>
    success requests:    put key1 "overwrote-key1"
    <blank line>
    failure requests:    put key1 "created-key1"
    <blank line>

Compare targets: value, mod, create, version, lease; operators = != < >.
Requests: put KEY VALUE [--lease=ID] [--prev-kv], get KEY [RANGE_END] [get flags],
del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv].
"""

from __future__ import annotations

import re
import shlex

from cairn.requests import Compare, Op
from transport.messages import TARGET_VALUE

_COMPARE = re.compile(r'^\s*(value|mod|create|version|lease|val|c|m|v)\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)\s*(=|==|!=|<|>)\s*(.+?)\s*$')
_TARGETS = {"value": Compare.value, "val": Compare.value, "mod": Compare.mod_revision, "m": Compare.mod_revision,
            "create": Compare.create_revision, "c": Compare.create_revision, "version": Compare.version,
            "v": Compare.version, "lease": Compare.lease}


class TxnSyntaxError(ValueError):
    pass


def parse_compare(line: str):
    match = _COMPARE.match(line)
    if not match:
        raise TxnSyntaxError(f"malformed comparison: {line!r} (expected e.g. mod(\"key\") > \"0\")")
    target, key, operator, operand = match.groups()
    operand = _unquote(operand)
    builder = _TARGETS[target](key)
    if builder.target != TARGET_VALUE:  # version, revisions and lease ids are numbers
        try:
            operand = int(operand)
        except ValueError:
            raise TxnSyntaxError(f"malformed comparison: {operand!r} is not a number") from None
    if operator in ("=", "=="):
        return builder == operand
    if operator == "!=":
        return builder != operand
    return builder > operand if operator == ">" else builder < operand


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return bytes(text[1:-1], "utf-8").decode("unicode_escape")
    return text


def parse_request(line: str):
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise TxnSyntaxError(f"malformed request {line!r}: {error}") from None
    if not words:
        raise TxnSyntaxError("empty request")
    verb, args = words[0], words[1:]
    flags = {a.split("=", 1)[0]: (a.split("=", 1)[1] if "=" in a else True) for a in args if a.startswith("--")}
    positional = [a for a in args if not a.startswith("--")]
    if verb == "put":
        if len(positional) != 2:
            raise TxnSyntaxError(f"put needs KEY VALUE: {line!r}")
        lease = int(flags["--lease"], 16) if "--lease" in flags else 0
        return Op.put(positional[0], positional[1], lease=lease, prev_kv="--prev-kv" in flags)
    if verb == "get":
        if not 1 <= len(positional) <= 2:
            raise TxnSyntaxError(f"get needs KEY [RANGE_END]: {line!r}")
        return Op.get(positional[0], range_end=positional[1] if len(positional) == 2 else None,
                      prefix="--prefix" in flags, from_key="--from-key" in flags,
                      keys_only="--keys-only" in flags, count_only="--count-only" in flags,
                      limit=int(flags.get("--limit", 0)), revision=int(flags.get("--rev", 0)))
    if verb in ("del", "delete"):
        if not 1 <= len(positional) <= 2:
            raise TxnSyntaxError(f"del needs KEY [RANGE_END]: {line!r}")
        return Op.delete(positional[0], range_end=positional[1] if len(positional) == 2 else None,
                         prefix="--prefix" in flags, from_key="--from-key" in flags, prev_kv="--prev-kv" in flags)
    raise TxnSyntaxError(f"unknown request {verb!r} (expected put, get or del)")


def read_txn(lines, prompt=None):
    """(compares, success, failure) from an iterator of lines; prompt(section) is
    called before each section when interactive."""
    sections = ([], [], [])
    names = ("compares", "success requests (get, put, del)", "failure requests (get, put, del)")
    parsers = (parse_compare, parse_request, parse_request)
    iterator = iter(lines)
    for index in range(3):
        if prompt:
            prompt(names[index])
        for line in iterator:
            line = line.rstrip("\n")
            if not line.strip():
                break
            sections[index].append(parsers[index](line))
    return sections
