"""A bounded reader for the ``marshal`` blobs that buffer schema 1 stored, for migration.

Schema 1 kept each record's ``(values, outputs, flags)`` as a marshal blob (format 2)
and each context's input names as a marshal tuple (format 4). ``marshal.loads`` must not
see those bytes: a damaged or hostile blob of five bytes can declare a tuple of 2**31-1
items and make it allocate gigabytes (``MemoryError``, on every attempt). This reader
understands only the subset edgepack wrote (None, booleans, int, float, str, tuple, list,
dict, and format 4's references), refuses anything else, and checks every declared
length against the bytes that remain before allocating anything, so what it allocates is
bounded by the blob's size. It is used once per row, when a schema 1 file is migrated.
"""

from __future__ import annotations

import struct
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting accepted (edgepack wrote at most a dict inside a tuple inside a tuple)."""

MAX_LONG_DIGITS = 1024
"""Most 15-bit digits of one integer (about 4,600 decimal digits)."""

_FLAG_REF = 0x80
_DOUBLE = struct.Struct("<d")
_INT32 = struct.Struct("<i")


class LegacyFormatError(ValueError):
    """A schema 1 blob is damaged, hostile, or holds a type edgepack never wrote."""


def read_marshal(blob: bytes) -> Any:
    """The object a schema 1 blob holds; ``LegacyFormatError`` if it is not exactly one
    object of the subset edgepack wrote."""
    reader = _Reader(bytes(blob))
    value = reader.read(0)
    if reader.pos != len(reader.data):
        raise LegacyFormatError(f"{len(reader.data) - reader.pos} trailing byte(s) after the object")
    return value


class _Reader:
    __slots__ = ("data", "pos", "refs")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []

    def _take(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise LegacyFormatError(f"declares {n} byte(s) at offset {self.pos}, {len(self.data) - self.pos} remain")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _count(self, size: int, each: int = 1) -> int:
        # Every element takes at least ``each`` bytes: a count beyond what remains is a lie.
        n = size if size >= 0 else -1
        if n < 0 or n * each > len(self.data) - self.pos:
            raise LegacyFormatError(f"declares {size} item(s) at offset {self.pos}, only {len(self.data) - self.pos} byte(s) remain")
        return n

    def _int32(self) -> int:
        return _INT32.unpack(self._take(4))[0]

    def read(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise LegacyFormatError(f"nested deeper than {MAX_DEPTH} levels")
        code = self._take(1)[0]
        flag = code & _FLAG_REF
        kind = chr(code & ~_FLAG_REF)
        if kind == "r":
            index = self._int32()
            if not 0 <= index < len(self.refs) or self.refs[index] is _PENDING:
                raise LegacyFormatError(f"reference {index} to an object not read yet")
            return self.refs[index]
        slot = -1
        if flag:
            slot = len(self.refs)
            self.refs.append(_PENDING)
        value = self._value(kind, depth)
        if flag:
            self.refs[slot] = value
        return value

    def _value(self, kind: str, depth: int) -> Any:
        if kind == "N":
            return None
        if kind == "T":
            return True
        if kind == "F":
            return False
        if kind == "i":
            return self._int32()
        if kind == "g":
            return _DOUBLE.unpack(self._take(8))[0]
        if kind == "f":
            text = self._take(self._take(1)[0])
            try:
                return float(text.decode("ascii"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise LegacyFormatError(f"bad text float {text!r}") from exc
        if kind == "l":
            size = self._int32()
            digits = abs(size)
            if digits > MAX_LONG_DIGITS:
                raise LegacyFormatError(f"an integer of {digits} digits (at most {MAX_LONG_DIGITS})")
            raw = self._take(2 * self._count(digits, 2))
            value = 0
            for i in range(digits - 1, -1, -1):
                digit = raw[2 * i] | raw[2 * i + 1] << 8
                if digit >= 1 << 15:
                    raise LegacyFormatError("an integer digit out of range")
                value = value << 15 | digit
            return -value if size < 0 else value
        if kind in "zZ":
            return self._text(self._take(1)[0], "ascii")
        if kind in "aA":
            return self._text(self._int32(), "ascii")
        if kind in "ut":
            return self._text(self._int32(), "utf-8")
        if kind == ")":
            return tuple(self._items(self._take(1)[0], depth))
        if kind == "(":
            return tuple(self._items(self._int32(), depth))
        if kind == "[":
            return self._items(self._int32(), depth)
        if kind == "{":
            out: dict[Any, Any] = {}
            while True:
                if self.pos < len(self.data) and self.data[self.pos] == ord("0"):
                    self.pos += 1
                    return out
                key = self.read(depth + 1)
                try:
                    out[key] = self.read(depth + 1)
                except TypeError as exc:  # an unhashable key
                    raise LegacyFormatError(f"unhashable dict key {type(key).__name__}") from exc
        raise LegacyFormatError(f"type code {kind!r} is not one edgepack wrote")

    def _text(self, size: int, codec: str) -> str:
        raw = self._take(size)
        try:
            return raw.decode(codec, "surrogatepass" if codec == "utf-8" else "strict")
        except UnicodeDecodeError as exc:
            raise LegacyFormatError(f"bad {codec} text: {exc.reason}") from exc

    def _items(self, size: int, depth: int) -> list[Any]:
        n = self._count(size)
        data, pos = self.data, self.pos
        # The common record: a run of binary floats (or of small ints). Reading them with
        # one struct call instead of one ``read`` each makes upgrading a large schema 1
        # backlog several times faster; the length was checked above.
        for code, each, fmt in ((b"g", 9, "xd"), (b"i", 5, "xi")):
            if n and pos + each * n <= len(data) and data[pos : pos + each * n : each] == code * n:
                self.pos = pos + each * n
                return list(struct.unpack_from("<" + fmt * n, data, pos))
        return [self.read(depth + 1) for _ in range(n)]


_PENDING = object()
