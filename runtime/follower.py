"""``StoreFollower``: keeps a ``ModelSlot`` on whatever bundle the model store names as current.

The model side of ``edgepack serve --store``, usable by any application that embeds the
runtime. A background thread stats the store's pointer (one ``stat`` per interval: no
change costs nothing more); when it changes, the new current bundle is loaded through
``ModelSlot.swap`` (verify, self-test, then one atomic switch), so a prediction in
flight finishes on the model it started with and none is refused. A bundle that fails
to load leaves the old model serving; the reason is kept in ``last_error``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from .errors import EdgeError
from .health import HealthProbe, WatchedModel
from .model import EdgeModel
from .slot import ModelSlot
from .store import ModelStore, StoreError

log = logging.getLogger(__name__)


class StoreFollower:
    """The model the store names as current, reloaded when the store changes."""

    def __init__(
        self,
        store: ModelStore | str | os.PathLike[str],
        *,
        interval: float = 0.5,
        allow_schema_change: bool = False,
        health: bool = False,
        **load_options: Any,
    ) -> None:
        self.store = store if isinstance(store, ModelStore) else ModelStore(store)
        # With health=True, predictions through ``model`` are counted per bundle for the
        # update loop's health gate (runtime.health); the files live in the store.
        self.health = HealthProbe(self.store.root, interval=interval) if health else None
        self._watched: Any = None
        self.interval = interval
        self.allow_schema_change = allow_schema_change
        self._load_options = load_options
        self._slot: ModelSlot | None = None
        self._stamp: tuple[int, int, int] | None | str = "unread"
        self._checked = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        """Why the store's current bundle is not the one serving (None when it is)."""
        self.switches = 0
        """How many times the serving model changed since start."""
        self.check()

    @property
    def model(self) -> EdgeModel | None:
        """The model serving now; None while the store holds no loadable bundle."""
        slot = self._slot
        if slot is None:
            return None
        if self.health is None:
            return slot.model
        watched = self._watched
        if watched is None or watched._model is not slot.model:
            watched = self._watched = WatchedModel(slot.model, self.health)
        return watched

    def check(self) -> bool:
        """Follow the store once; True when the serving model changed."""
        with self._checked:
            stamp = self.store.stamp()
            if stamp == self._stamp:
                return False  # same pointer as last time: what it said has been acted on
            self._stamp = stamp
            try:
                state = self.store.state()
            except StoreError as exc:
                return self._failed(str(exc))
            if state.current is None:
                return False
            slot = self._slot
            if slot is not None and slot.model.sha256 == state.current.sha256:
                self.last_error = None
                return False
            path = self.store.path_of(state.current)
            try:
                if slot is None:
                    self._slot = self._first_slot(state)
                elif slot.previous is not None and slot.previous.sha256 == state.current.sha256:
                    slot.rollback()  # the store went back: the model is still in memory
                else:
                    slot.swap(path, **self._swap_options(slot))
            except EdgeError as exc:
                if self.health is not None:
                    self.health.load_failed(state.current.sha256, str(exc))
                return self._failed(
                    f"store {self.store.root} names {state.current.name} v{state.current.version} "
                    f"({state.current.sha256[:12]}) but it cannot serve: {exc}"
                )
            model = self.model
            if model.sha256 == state.current.sha256:
                self.last_error = None
            self.switches += 1
            log.info("now serving %s v%s (sha256 %s) from %s", model.name, model.version, model.sha256[:12], self.store.root)
            return True

    def _first_slot(self, state: Any) -> ModelSlot:
        """The current bundle; if it cannot load (damaged on disk since), the previous one."""
        try:
            return ModelSlot(self.store.path_of(state.current), **self._load_options)
        except EdgeError as exc:
            if state.previous is None:
                raise
            log.error("the store's current bundle %s cannot load (%s); starting on the previous one", state.current.sha256[:12], exc)
            slot = ModelSlot(self.store.path_of(state.previous), **self._load_options)
            self.last_error = f"current bundle {state.current.sha256[:12]} cannot load: {exc}; serving the previous one"
            return slot

    def _swap_options(self, slot: ModelSlot) -> dict[str, Any]:
        # The store already refused downgrades it was not told to allow (install
        # --allow-downgrade, rollback): the slot follows what the store says is current.
        return {"allow_schema_change": self.allow_schema_change, "allow_downgrade": True}

    def _failed(self, message: str) -> bool:
        if message != self.last_error:
            log.error("%s; %s", message, "still serving the previous model" if self._slot else "nothing to serve yet")
        self.last_error = message
        return False

    def start(self) -> StoreFollower:
        """Check the store every ``interval`` seconds in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edgepack-store-follower", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
                if self.health is not None:
                    self.health.flush()
            except Exception:  # noqa: BLE001 - the follower must outlive any one bad poll
                log.exception("following the model store %s failed; retrying", self.store.root)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.health is not None:
            self.health.flush(force=True)
