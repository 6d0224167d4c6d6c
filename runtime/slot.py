"""``ModelSlot``: the model a running device serves, replaceable without a restart."""

from __future__ import annotations

import os
import threading
from typing import Any

from .errors import RollbackError, SchemaChangeError
from .highwater import HighWater
from .model import EdgeModel, Result, load


class ModelSlot:
    """Holds the current ``EdgeModel``; swaps in a new bundle only after it fully loads.

    ``swap`` reads, verifies and self-tests the new bundle before one atomic switch of
    the current model; a prediction already running finishes on the model it started
    with. If the new bundle fails in any way, the old model keeps serving and the error
    is raised. ``rollback`` returns to the model that served before the last swap (one
    level: the slot keeps at most one previous model in memory).

    Downgrades are refused (``DowngradeError``): a bundle whose registry version is lower
    than the highest version of the same model name this slot accepted, unless the caller
    says so (``rollback()``, or ``allow_downgrade=True``). With ``state_file`` the highest
    version survives restarts (see ``runtime.highwater``); ``high_water`` shares one
    ``HighWater`` between several slots or with a model store.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        *,
        state_file: str | os.PathLike[str] | None = None,
        high_water: HighWater | None = None,
        allow_downgrade: bool = False,
        **load_options: Any,
    ) -> None:
        if state_file is not None and high_water is not None:
            raise ValueError("give state_file or high_water, not both")
        self._load_options = dict(load_options)
        self.high_water = high_water if high_water is not None else HighWater(state_file)
        """The version floor this slot enforces."""
        model = load(path, **self._load_options)
        # A restart on an older bundle than the device already ran is a downgrade too.
        self.high_water.check(model.name, model.version, allow_downgrade=allow_downgrade)
        self.high_water.accept(model.name, model.version, downgrade=allow_downgrade)
        self._model: EdgeModel = model
        self._previous: EdgeModel | None = None
        self._lock = threading.Lock()  # serialises swaps and rollbacks, never predictions

    @property
    def model(self) -> EdgeModel:
        """The model serving now."""
        return self._model

    @property
    def previous(self) -> EdgeModel | None:
        """The model ``rollback`` would return to, if any."""
        return self._previous

    def predict(self, data: Any) -> Result | list[Result]:
        return self._model.predict(data)

    def predict_batch(self, columns: Any) -> dict[str, Any]:
        return self._model.predict_batch(columns)

    def swap(
        self, path: str | os.PathLike[str] | bytes, *, allow_schema_change: bool = False, allow_downgrade: bool = False
    ) -> EdgeModel:
        """Load ``path`` with the slot's load options and make it the current model.

        Refuses (``SchemaChangeError``) a bundle of another model name or with other input
        features (name, dtype, kind, order) unless ``allow_schema_change=True``, and
        (``DowngradeError``) an older version of a model than one already accepted unless
        ``allow_downgrade=True``.
        """
        with self._lock:
            candidate = load(path, **self._load_options)
            current = self._model
            if not allow_schema_change:
                if candidate.name != current.name:
                    raise SchemaChangeError(
                        f"bundle holds model {candidate.name!r} but this slot serves {current.name!r}; "
                        "pass allow_schema_change=True to replace it with another model"
                    )
                if candidate.schema_signature() != current.schema_signature():
                    raise SchemaChangeError(
                        f"{candidate.name} v{candidate.version} takes inputs {_describe(candidate)} but "
                        f"v{current.version} takes {_describe(current)}; callers would break. "
                        "Pass allow_schema_change=True if they have been updated"
                    )
            self.high_water.check(candidate.name, candidate.version, allow_downgrade=allow_downgrade)
            # Recorded before the switch: if the state file cannot be written, the old model keeps serving.
            self.high_water.accept(candidate.name, candidate.version, downgrade=allow_downgrade)
            self._previous, self._model = current, candidate
            return candidate

    def rollback(self) -> EdgeModel:
        """Serve the previous model again; raises ``RollbackError`` if there is none."""
        with self._lock:
            if self._previous is None:
                raise RollbackError("no previous model to roll back to (no swap since the slot was created or last rolled back)")
            # An explicit step back: the floor follows, so a restart on this version is allowed.
            self.high_water.accept(self._previous.name, self._previous.version, downgrade=True)
            self._model, self._previous = self._previous, None
            return self._model


def _describe(model: EdgeModel) -> str:
    return "[" + ", ".join(f"{name}:{dtype}" for name, dtype, _ in model.schema_signature()) + "]"
