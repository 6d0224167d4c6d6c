"""What strict JSON, and so the store, can carry exactly, and finding what it cannot.

orjson (the fast path) refuses NaN, Infinity and unpaired surrogates, but reads an
integer beyond 64 bits as a float and a non-zero number below the smallest double
(``1e-400``) as 0.0, without a word. The ``json`` module reads all of these. Bodies that
may hold one are read again with ``loads_exact`` and checked with ``refuse_inexact``,
which names the first value that cannot be stored as sent.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import SchemaError

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
"""orjson reads integers from ``INT64_MIN`` to here exactly; beyond, it silently reads a float."""


def _where(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def inexact(value: object, path: str) -> tuple[str, str] | None:
    """The first place in ``value`` that strict JSON cannot carry exactly, and why."""
    kind = type(value)
    if kind is _Underflow:
        return path, (
            f"expected a number a double can hold, got {value:.60}, which is not zero but would be stored as 0.0 "
            "(the smallest double is about 5e-324); send 0, or the value as a string"
        )
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            spelled = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")  # type: ignore[arg-type, operator]
            return path, f"expected a finite number, got {spelled}; strict JSON has no NaN or Infinity"
    elif kind is int:
        if not INT64_MIN <= value <= UINT64_MAX:  # type: ignore[operator]
            return path, (
                f"expected an integer from {INT64_MIN} to {UINT64_MAX}, got {value!r:.60}; "
                "larger integers cannot be stored exactly, send them as strings"
            )
    elif kind is str:
        if not _unicode(value):  # type: ignore[arg-type]
            return path, f"expected valid Unicode text, got an unpaired surrogate in {value!r:.60}"
    elif kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if isinstance(key, str) and not _unicode(key):
                return path, f"expected keys in valid Unicode, got an unpaired surrogate in key {key!r:.60}"
            found = inexact(item, _where(path, key))
            if found:
                return found
    elif kind is list:
        for index, item in enumerate(value):  # type: ignore[arg-type]
            found = inexact(item, _where(path, index))
            if found:
                return found
    return None


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Underflow(str):
    """A number literal that is not zero but reads as 0.0: below the smallest double."""


_NONZERO_DIGIT = re.compile(r"[1-9]")
# A non-zero literal reads as 0.0 only below about 2.5e-324: its exponent has at least
# three digits, or (with an exponent of at most two digits) its fraction starts with over
# 200 zeros. These cheap searches find every such body, and a few more, which the exact
# reading then clears. A number ends at , } ] or white space: requiring that keeps ids
# out (a UUID such as "...8e-1234-..." has an "e-" and three digits, never one of those
# after them). Each pattern starts with a literal, which the regex engine looks for fast.
_SMALL_EXPONENT = re.compile(rb"e-[0-9]{3,}[,}\]\s]")
_SMALL_EXPONENT_UPPER = re.compile(rb"E-[0-9]{3,}[,}\]\s]")
_ZERO_RUN = b"0" * 200


def _exact_float(literal: str) -> float | _Underflow:
    value = float(literal)
    if value == 0.0 and _NONZERO_DIGIT.search(literal.lower().partition("e")[0]):
        return _Underflow(literal)
    return value


def may_underflow(body: bytes) -> bool:
    """Whether ``body`` may hold a non-zero number that a double reads as 0.0."""
    return (
        _SMALL_EXPONENT.search(body) is not None
        or _SMALL_EXPONENT_UPPER.search(body) is not None
        or _ZERO_RUN in body
    )


def loads_exact(body: bytes | str) -> Any:
    """``json.loads``, with every number too small for a double kept aside (for ``refuse_inexact``)."""
    return json.loads(body, parse_float=_exact_float)


def refuse_inexact(document: object) -> None:
    """Raise ``SchemaError`` naming the first value strict JSON cannot carry exactly.

    For documents the ``json`` module reads but orjson does not (NaN, Infinity, numbers
    beyond a double or 64-bit integer, unpaired surrogates), and numbers below the
    smallest double as read by ``loads_exact``: storing them would either write JSON that
    other readers refuse, or change the value without saying so.
    """
    found = inexact(document, "")
    if found:
        where, problem = found
        raise SchemaError(problem, field=where or None)
