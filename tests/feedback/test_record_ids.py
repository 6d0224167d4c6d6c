"""Record ids are made when ``record()`` is called, on the recording threads."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import telemetry
from telemetry.ids import IdClock


def test_ids_from_many_threads_are_unique_version_7_and_ascending_per_thread() -> None:
    clock = IdClock()
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(20_000):
            out.append(clock.next(time.time()))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every) == 80_000
    assert len({uid[:18] for uid in every}) == 80_000  # unique without the random bits: millisecond and counter
    assert all(out == sorted(out) for out in made)
    for text in every[::997]:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
        assert abs(int(text[:8] + text[9:13], 16) / 1000 - time.time()) < 60  # the stamp is the record's time


def test_a_clock_set_back_keeps_ids_ascending() -> None:
    clock = IdClock()
    late = clock.next(2_000_000_000.0)
    assert clock.next(1_000_000_000.0) > late


def test_record_returns_the_id_the_record_is_stored_and_sent_with(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db", sample_rate=0.5) as buffer:
        returned = [
            buffer.record(model="m", version="1", bundle_sha256="a" * 64, inputs={"x": i}, outputs={"prediction": 1.0}, flags=[])
            for i in range(400)
        ]
        kept = [r for r in returned if r is not None]
        stored = [r.id for r in buffer.oldest(1000)]
        stats = buffer.stats()
    assert stored == kept  # in recording order; the sampled-out ones are None
    assert stats.sampled_out == returned.count(None) > 0 and stats.recorded == 400
