"""The collector file's write lock (``home.stores.write_lock``): every edgepack writer of
the file takes it, in any process or thread, and waits for it no longer than its timeout.
(The bundled SQLite predates the WAL-reset fix: a checkpoint must never overlap another
connection's commit.)"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from home.errors import StoreError
from home.feedback.labels import LabelIn
from home.feedback.sqlite import FeedbackStore
from home.releases.status import StatusStore
from home.schema import parse_batch
from home.stores.sqlite import Store
from home.stores.write_lock import write_lock
from tests.support.locks import write_lock_held

from .batches import batch


def _parsed(count: int) -> object:
    return parse_batch(json.loads(json.dumps(batch(count))), max_records=1000)


def test_a_batch_waits_for_the_lock_and_is_stored_once_it_is_free(tmp_path: Path) -> None:
    store = Store(tmp_path / "home.db", lock_timeout_seconds=10)
    try:
        with write_lock_held(store.path) as holder:
            assert holder.stdin is not None
            threading.Timer(0.5, holder.stdin.close).start()  # the other process lets go in 0.5 s
            started = time.monotonic()
            store.ingest("d", _parsed(3), received_at=time.time())
            assert time.monotonic() - started >= 0.4  # it waited for the other process
        assert store.stats()["records"] == 3
    finally:
        store.close()


@pytest.mark.parametrize("writer", ["records", "feedback", "release status"])
def test_every_writer_waits_at_most_its_timeout_and_writes_nothing(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "home.db"
    store = Store(path, lock_timeout_seconds=0.3)
    feedback = FeedbackStore(path, lock_timeout_seconds=0.3)
    status = StatusStore(path)
    status.report("d", release=1, state="offered", reason=None, channel="stable", bundle_sha256=None)  # its tables exist
    writes = {
        "records": lambda: store.ingest("d", _parsed(2), received_at=time.time()),
        "feedback": lambda: feedback.ingest([LabelIn("d", str(uuid.uuid4()), "1", None)], received_at=time.time(), source="device"),
        "release status": lambda: status.report("d", release=1, state="active", reason=None, channel="stable", bundle_sha256=None),
    }
    try:
        with write_lock_held(path):
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"home\.db-lock was held by another edgepack process .* nothing was written"):
                writes[writer]()
            waited = time.monotonic() - started
        assert 0.25 <= waited < (11 if writer == "release status" else 3), waited  # release status waits 10 s
        assert store.stats()["records"] == 0
        writes[writer]()  # the lock is free again
    finally:
        status.close()
        feedback.close()
        store.close()


def test_threads_of_one_process_exclude_each_other_and_one_thread_may_nest(tmp_path: Path) -> None:
    lock = write_lock(tmp_path / "home.db")
    assert lock is write_lock(tmp_path / "." / "home.db")  # one lock per file and process
    inside: list[str] = []
    with lock.held(1.0):
        with lock.held(1.0):  # re-entrant in its own thread
            inside.append("nested")
        errors: list[BaseException] = []

        def try_it() -> None:
            try:
                with lock.held(0.2):
                    inside.append("other thread")
            except StoreError as exc:
                errors.append(exc)

        other = threading.Thread(target=try_it)
        other.start()
        other.join()
    assert inside == ["nested"] and len(errors) == 1 and "another thread of this process" in str(errors[0])
    with lock.held(0.2):  # released by the outermost block
        pass
