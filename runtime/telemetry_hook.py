"""What the runtime needs from a telemetry sink: one ``record`` method, nothing imported.

``telemetry.Buffer`` implements it; so can any object with the same method. The runtime
calls ``record`` once per predicted row, after the prediction is computed. A sink that
raises never fails the prediction: the runtime counts the error and logs it once.

A sink may also have ``record_values`` (``telemetry.Buffer`` does): the same call with the
inputs as two tuples, ``names`` (the same object for every row of a model) and ``values``
(NaN as None). Single-row predictions then skip building a dict per row, which is most of
what telemetry costs the calling thread.

``record`` (and ``record_values``) may return the record's id. A sink that also has a
``feedback(record_id, label)`` method (``telemetry.Buffer`` does) gets that id added to
each result of ``EdgeModel.predict`` as ``"record_id"``, so that the application can
attach the ground truth later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TelemetrySink(Protocol):
    def record(
        self,
        *,
        model: str,
        version: str,
        bundle_sha256: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        flags: Sequence[str],
    ) -> str | None:
        """Store one prediction.

        ``inputs`` holds the validated value of every model feature by its original name
        (missing values as None); ``outputs`` is the result without its flags
        (``{"prediction": ..., "probabilities": {label: p}}`` or ``{"prediction": float}``);
        ``flags`` are the guardrail flags of that row. The mappings are fresh copies the
        sink may keep.

        Returns the record's id (a str) when the sink keeps records that can be referred
        to later; the runtime passes it on as the result's ``"record_id"`` (anything but a
        str becomes None there).
        """
        ...
