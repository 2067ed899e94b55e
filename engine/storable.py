"""What both stores can hold, checked at the edge so that SQLite and PostgreSQL agree.

PostgreSQL text and JSON cannot hold NUL (``\\u0000``) nor a lone UTF-16 surrogate, and its
integers stop at 64 bits; SQLite takes all of it. A value PostgreSQL cannot store used to be
accepted and then fail later (a 500, or a projection stuck on it forever). So every incoming
value is checked here, the same way on both stores, and refused with the place it was found.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

MIN_INT = -(2**63)
MAX_INT = 2**63 - 1


class NotStorable(ValueError):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}" if where else why)
        self.where = where
        self.why = why


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    if "\x00" in text:
        return "NUL characters (\\u0000) cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogates (invalid Unicode) cannot be stored"
    return None


def check_text(text: str, where: str = "") -> None:
    problem = text_problem(text)
    if problem is not None:
        raise NotStorable(where, problem)


def json_size(value: Any, where: str = "") -> int:
    """The size of ``value`` as compact JSON (closely), refusing what cannot be stored.

    Every incoming event goes through this, so the common case walks without building a path
    for each key; only a value that is refused is walked again to say where."""
    try:
        return _size(value)
    except _Refused:
        _locate(value, where)  # raises NotStorable naming the place
        raise AssertionError("unreachable") from None


def json_size_over(value: Any, most: int, where: str = "") -> int | None:
    """None when ``value`` is storable and its :func:`json_size` is at most ``most``; else that
    size (> ``most``). Raises :class:`NotStorable` exactly where :func:`json_size` would.

    Every incoming event is checked, so the common case is left to orjson's encoder (C): it
    refuses lone surrogates, and with ``OPT_STRICT_INTEGER`` any integer beyond 53 bits, and it
    spells NUL as ``\\u0000``. Whenever it refuses, or ``\\u0000`` appears (NUL, or only the
    text backslash-u0000), or the value is large, the Python walk decides, so the answer is
    always the walk's. "Large": :func:`json_size` is never more than twice the compact JSON
    length (a string counts its bytes plus quotes, at most its JSON; ``true`` and ``null`` count
    5 for 4; a float's ``str`` is at most 2 longer than orjson's at least 3; an object adds
    1 byte over its JSON), so a value whose JSON is at most half the limit is within it.
    """
    try:
        encoded = orjson.dumps(value, default=_decimal_text, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:  # orjson.JSONEncodeError included
        encoded = None
    if encoded is not None and b"\\u0000" not in encoded and 2 * len(encoded) <= most:
        return None
    size = json_size(value, where)
    return size if size > most else None


def check_storable(value: Any, where: str = "") -> None:
    """Raise :class:`NotStorable` at the first value a store cannot hold (any size)."""
    json_size_over(value, MAX_INT, where)


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


class _Refused(Exception):
    pass


def _size(value: Any) -> int:
    """The size; raises _Refused at the first value a store cannot hold. Iterative, so a
    deeply nested value cannot exhaust the stack."""
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            size += _text_size(item) + 2
        elif isinstance(item, bool) or item is None:
            size += 5
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                raise _Refused
            size += len(str(item))
        elif isinstance(item, (float, Decimal)):
            size += len(str(item))
        elif isinstance(item, dict):
            size += 2
            for key, inner in item.items():
                if isinstance(key, str):
                    size += _text_size(key) + 4
                stack.append(inner)
        elif isinstance(item, (list, tuple)):
            size += 2
            stack.extend(item)
    return size


def _text_size(text: str) -> int:
    if "\x00" in text:
        raise _Refused
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Refused from None


def _locate(value: Any, where: str) -> None:
    """Walk ``value`` with paths and raise NotStorable at its first unstorable place."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not MIN_INT <= item <= MAX_INT:
                raise NotStorable(path, "integers must fit in 64 bits")
        elif isinstance(item, dict):
            for key, inner in item.items():
                name = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    check_text(key, name)
                stack.append((inner, name))
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, f"{path}.{i}" if path else str(i)) for i, inner in enumerate(item))
