"""The ``InputError``s of the input contract about a row: what it lacks, what it has too
many of, and which value of it is refused and why.

The row path (``runtime.schema``) and the column path (``runtime.columns``) raise the same
messages, each naming the feature at fault and what it expects. They are built only when
an input is refused, never on the way of a row that validates.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .features import FIT, Feature, PackedInput


def missing_text(missing: Sequence[str], names: Sequence[str]) -> str:
    """The message for the ``missing`` features of a model that takes ``names``."""
    return (
        f"missing feature(s) {', '.join(map(repr, missing))}; this model takes: {', '.join(names)}"
    )


def missing_error(row: Mapping[str, Any], names: Sequence[str]) -> InputError:
    missing = [n for n in names if n not in row]
    return InputError(missing_text(missing, names), feature=missing[0])


def value_error(row: Mapping[str, Any] | None, f: Feature, v: Any, names: Sequence[str]) -> InputError:
    """``v`` is no value of ``f`` (of another type, or missing where ``f`` is not nullable)."""
    # A row that also lacks features reports those first: it is the bigger problem.
    if row is not None and any(n not in row for n in names):
        return missing_error(row, names)
    if v is None or (isinstance(v, (float, np.floating)) and v != v):
        what = "is not nullable but got a missing value (null/None/NaN)"
    else:
        what = f"got {type(v).__name__} {v!r}"
    return InputError(f"feature {f.name!r} {what}; expected {f.expected}", feature=f.name)


def fit_error(f: Feature, v: Any) -> InputError:
    return InputError(
        f"feature {f.name!r} got {v!r}, which does not fit {f.dtype} (finite values up to ±{FIT[f.dtype]:.3g}); "
        f"expected {f.expected}",
        feature=f.name,
    )


def unseen_error(f: Feature, v: Any) -> InputError:
    return InputError(
        f"feature {f.name!r} got {v!r}, a value never seen in training (strict mode); expected {f.expected}",
        feature=f.name,
    )


def reserved_error(f: Feature, value: str) -> InputError:
    return InputError(
        f"feature {f.name!r} got {value!r}, the string this bundle feeds its graph for a missing value; "
        f"send None for a missing value, or another string; expected {f.expected}",
        feature=f.name,
    )


def extra_error(extra: Sequence[Any], names: Sequence[str]) -> InputError:
    """Strict mode refuses the keys ``extra``, which are no feature of the model."""
    return InputError(
        f"unexpected feature(s) {', '.join(map(repr, extra))} (strict mode); this model takes: {', '.join(names)}",
        feature=str(extra[0]),
    )


def check_extra(row: Mapping[str, Any], names: Sequence[str], name_set: Collection[str]) -> None:
    """Raise ``extra_error`` for the keys of ``row`` that are not in ``name_set``, if any."""
    if extra := [k for k in row if k not in name_set]:
        raise extra_error(extra, names)


def pack_error(p: PackedInput, vals: Sequence[Any], exc: Exception, *, assembled: bool) -> InputError:
    """Why a row's values ``vals`` of ``p`` cannot become its tensor: the first feature
    whose value does not fit its dtype, else ``exc``. ``assembled``: ``vals`` are the feed
    in slot order (encoded features), not one value per feature."""
    for f, v in zip(p.features if not assembled else (), vals):
        try:
            np.array(v, dtype=p.dtype)
        except (OverflowError, TypeError, ValueError):
            return InputError(f"feature {f.name!r} got {v!r}, which does not fit {f.dtype}; expected {f.expected}", feature=f.name)
    return InputError(f"inputs for {p.name!r} cannot be packed as {p.dtype}: {exc}")
