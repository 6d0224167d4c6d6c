"""Which input columns a ColumnTransformer routes to one of its transformers."""

from __future__ import annotations

from typing import Any


def routed_columns(cols: Any, transformer: Any) -> list[str] | None:
    """The column names ``cols`` (one entry of ``ColumnTransformer.transformers_``) selects:
    a name, a list of names, a slice, a boolean mask or integer positions, resolved against
    the transformer's ``feature_names_in_``. None when they cannot be named (positions
    without fitted names, a callable selector)."""
    names = [str(n) for n in getattr(transformer, "feature_names_in_", [])]
    if isinstance(cols, str):
        return [cols]
    if isinstance(cols, slice):
        return names[cols] if names else None
    try:
        items = list(cols)
    except TypeError:
        return None
    if items and all(type(c).__name__ in ("bool", "bool_") for c in items):
        return [n for n, keep in zip(names, items) if keep] if names else None
    if items and all(type(c).__name__.startswith("int") for c in items):
        return [names[int(i)] for i in items] if names else None
    return [str(c) for c in items]
