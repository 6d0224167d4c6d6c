"""The health gate after a switch, as steps of the update loop (``UpdateLoop`` inherits them).

The gate is opened right after ``ModelStore.install`` switched the pointer (its state is on
disk before the switch). It re-runs the golden self-test of the installed bundle, then reads
what the serving processes counted for that bundle (``runtime.health``): rows predicted,
rows whose call raised, rows with guardrail flags, and whether they could switch at all.
It closes after N predictions or M seconds; a failure rolls the store back to the previous
bundle and the release is rejected on this device for good.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .result import PollResult
from .state import save_state

log = logging.getLogger("edgepack.updates")


class HealthGateSteps:
    """The gate's steps; they use the loop's ``store``, ``state``, ``options`` and reports."""

    store: Any
    state: Any
    options: Any
    state_path: Any
    _settled: bool

    def _open_gate(self) -> None:
        from runtime.health import read_health

        gate = self.state.gate
        assert gate is not None
        health = read_health(self.store.root, gate["sha256"])
        gate["started_at"] = time.time()
        gate["baseline"] = {k: health[k] for k in ("predictions", "errors", "flagged")}
        # What the same apps saw on the bundle before: an app that always sends some rows the
        # model refuses must not roll back every release for it. The gate judges the change.
        before = read_health(self.store.root, gate["previous"]) if gate.get("previous") else None
        seen = before["predictions"] if before else 0
        gate["previous_rates"] = {
            "errors": before["errors"] / seen if seen else 0.0,
            "flagged": before["flagged"] / seen if seen else 0.0,
            "predictions": seen,
        }
        save_state(self.state_path, self.state)

    def _advance_gate(self) -> PollResult | None:
        """None while nothing is decided (the poll goes on), else what the gate did."""
        from runtime import EdgeError, load
        from runtime.health import read_health

        gate = self.state.gate
        assert gate is not None
        current = self.store.state().current
        if current is None or current.sha256 != gate["sha256"]:
            # The switch never happened (a crash before the pointer moved) or was undone by
            # hand: nothing to watch; the release is looked at again by this poll.
            self.state.gate = None
            save_state(self.state_path, self.state)
            self._settled = False
            return None
        if gate.get("started_at") is None:
            # A crash after the pointer moved, before the loop noted it: the switch stands.
            self._discard_download(gate["sha256"])
            self._open_gate()
            self._raise_floor(gate["release"])
            self._report("active", release=gate["release"], reason="switched; health gate open", sha=gate["sha256"])
        if not gate.get("selftest"):
            try:
                key = self.options.public_key
                load(self.store.path_of(current), public_key=key, require_signature=key is not None)
            except EdgeError as exc:
                return self._gate_failed(f"golden self-test failed after the switch: {exc}")
            gate["selftest"] = True
            save_state(self.state_path, self.state)
        health = read_health(self.store.root, gate["sha256"])
        if health["load_errors"]:
            return self._gate_failed(f"the serving app could not switch to it: {health['load_errors'][0]}")
        base = gate.get("baseline") or {}
        rows = health["predictions"] - base.get("predictions", 0)
        errors = health["errors"] - base.get("errors", 0)
        flagged = health["flagged"] - base.get("flagged", 0)
        elapsed = time.time() - gate["started_at"]
        limits = self.options.gate
        if rows < limits.predictions and elapsed < limits.seconds:
            return PollResult(outcome="gate_open", release=gate["release"],
                              detail=f"{rows} of {limits.predictions} predictions, {elapsed:.0f} of {limits.seconds:g} s")
        previous = gate.get("previous_rates") or {}
        error_limit = limits.max_error_rate + previous.get("errors", 0.0)
        if rows and errors / rows > error_limit:
            return self._gate_failed(
                f"health gate: {errors} of the first {rows} predictions failed ({errors / rows:.0%}, limit "
                f"{error_limit:.0%}{_over(previous, 'errors')}) within {elapsed:.0f} s of the switch"
            )
        if rows and limits.max_flag_rate is not None:
            flag_limit = limits.max_flag_rate + previous.get("flagged", 0.0)
            if flagged / rows > flag_limit:
                return self._gate_failed(
                    f"health gate: {flagged} of the first {rows} predictions carried guardrail flags "
                    f"({flagged / rows:.0%}, limit {flag_limit:.0%}{_over(previous, 'flagged')})"
                )
        self.state.gate = None
        save_state(self.state_path, self.state)
        detail = f"health gate passed: {rows} predictions, {errors} errors in {elapsed:.0f} s"
        self._report("active", release=gate["release"], reason=detail, sha=gate["sha256"])
        return PollResult(outcome="gate_passed", release=gate["release"], detail=detail)

    def _gate_failed(self, reason: str) -> PollResult:
        from runtime.errors import StoreError

        gate = self.state.gate
        assert gate is not None
        release = gate["release"]
        try:
            restored = self.store.rollback()
        except StoreError as exc:
            reason = f"{reason}; and no rollback possible ({exc})"
            self.state.rejected[str(release)] = reason
            self.state.gate = None
            save_state(self.state_path, self.state)
            self._report("failed", release=release, reason=reason, sha=gate["sha256"])
            return PollResult(outcome="refused", release=release, detail=reason)
        self.state.rejected[str(release)] = reason
        self.state.gate = None
        save_state(self.state_path, self.state)
        log.error("release %s rolled back to %s v%s: %s", release, restored.current.name, restored.current.version, reason)  # type: ignore[union-attr]
        self._report("rolled_back", release=release, reason=reason, sha=gate["sha256"])
        return PollResult(outcome="rolled_back", release=release, detail=reason)



def _over(previous: dict[str, Any], key: str) -> str:
    rate = previous.get(key, 0.0)
    return f": the allowance over the previous bundle's {rate:.0%}" if rate else ""
