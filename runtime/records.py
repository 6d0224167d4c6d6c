"""Rows from JSON lines or CSV text, typed by the model's features (for ``edgepack predict``).

Row numbers are 1-based positions of the records in the input: JSON lines count
non-blank lines, CSV counts data rows after the header. A row that cannot be read is
returned as an ``InputError`` in its place, so one bad row never stops the others.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .errors import InputError
from .features import Feature

Record = tuple[int, dict[str, Any] | InputError]


def json_lines(lines: Iterable[str]) -> Iterator[Record]:
    """One JSON object per non-blank line."""
    row = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            # The line number too: blank lines make it differ from the row number.
            yield row, InputError(
                f"not valid JSON at line {number}, column {exc.colno} ({exc.msg}); expected one JSON object per line",
                row=row,
            )
            continue
        if not isinstance(value, dict):
            yield row, InputError(f"expected a JSON object of feature -> value, got {type(value).__name__}", row=row)
            continue
        yield row, value


def looks_like_csv_header(line: str, names: Sequence[str]) -> bool:
    """True when ``line`` is no JSON but a CSV header naming at least one of the features."""
    text = line.strip().lstrip("\ufeff")
    if not text or text[0] in "{[":
        return False
    try:
        json.loads(text)
    except ValueError:
        pass
    else:
        return False
    try:
        cells = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        return False
    return len(cells) > 1 and bool({cell.strip() for cell in cells} & set(names))


def csv_rows(lines: Iterable[str], features: Sequence[Feature]) -> Iterator[Record]:
    """A header line, then one row per line; numeric features are converted by the manifest.

    An empty cell of a numeric feature is a missing value (None); other columns stay text.
    """
    by_name: Mapping[str, Feature] = {f.name: f for f in features}
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield 0, InputError(f"cannot read the CSV header: {exc}")
        return
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row += 1
            yield row, InputError(f"malformed CSV: {exc}", row=row)
            continue
        if not cells:
            continue
        row += 1
        if len(cells) != len(header):
            yield row, InputError(f"has {len(cells)} cells but the header has {len(header)} columns", row=row)
            continue
        try:
            yield row, {name: _convert(by_name.get(name), text) for name, text in zip(header, cells)}
        except InputError as exc:
            yield row, exc.at_row(row)


def _convert(feature: Feature | None, text: str) -> Any:
    if feature is None or feature.dtype == "string":
        return text
    if text.strip() == "":
        return None
    try:
        if feature.dtype == "int64":
            return int(text)
        return float(text)
    except ValueError:
        raise InputError(
            f"feature {feature.name!r} got {text!r}, which is not a number; expected {feature.expected}",
            feature=feature.name,
        ) from None
