"""Record ids: UUIDv7, strictly ascending per buffer, random where sampling looks."""

from __future__ import annotations

import uuid

from telemetry.ids import IdClock, sample_key

NOW = 1_796_000_000.123  # a fixed wall clock, in seconds


def test_ids_are_version_7_and_carry_the_millisecond() -> None:
    ids = IdClock().take(3, now=NOW)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
        assert parsed.int >> 80 == int(NOW * 1000)


def test_ids_ascend_within_a_millisecond_across_groups_and_past_the_counter() -> None:
    clock = IdClock()
    first = clock.take(3000, now=NOW)
    second = clock.take(3000, now=NOW)  # same millisecond: the counter runs out and moves on
    ids = first + second
    assert ids == sorted(ids) and len(set(ids)) == 6000
    stamps = {uuid.UUID(i).int >> 80 for i in ids}
    assert stamps == {int(NOW * 1000), int(NOW * 1000) + 1}


def test_a_clock_set_back_keeps_the_order() -> None:
    clock = IdClock()
    before = clock.take(5, now=NOW)
    after = clock.take(5, now=NOW - 3600)
    assert before + after == sorted(before + after)


def test_the_random_bits_differ_and_feed_sampling() -> None:
    ids = IdClock().take(2000, now=NOW)
    keys = [sample_key(i) for i in ids]
    assert len(set(keys)) > 1990  # 32 random bits each
    below = sum(k < 2**31 for k in keys)
    assert 880 < below < 1120  # about half: binomial(2000, 0.5), sd 22


def test_ids_made_every_30_microseconds_ascend_carry_their_millisecond_and_are_unique() -> None:
    # A recorder at ~33 ids per millisecond, then one id per 5 ms (each the first of its
    # millisecond), then fast again, past the pool of random tails: every property holds.
    clock = IdClock()
    stamps = [NOW + i * 30e-6 for i in range(5000)]
    stamps += [stamps[-1] + (i + 1) * 5e-3 for i in range(50)]  # one id per 5 ms
    stamps += [stamps[-1] + (i + 1) * 30e-6 for i in range(3000)]
    ids = [clock.next(now) for now in stamps]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [uuid.UUID(i).int >> 80 for i in ids] == [int(now * 1000) for now in stamps]
    assert all(uuid.UUID(i).version == 7 for i in ids[::97])


def test_record_ids_past_a_full_millisecond_continue_in_the_next(tmp_path, monkeypatch) -> None:
    # record() makes its ids inline (telemetry.intake), not through IdClock.next: 5,000
    # records in one frozen millisecond run past its 4,096 counter values and the pool of
    # random tails, and must still be unique, ascending and stored as returned.
    import time

    import telemetry

    monkeypatch.setattr(time, "time", lambda: NOW)
    with telemetry.Buffer(tmp_path / "p.db") as buffer:
        record = buffer.recorder(model="m", version="1", bundle_sha256="a" * 64, names=("x",))
        ids = [record((float(i),), {"prediction": 1.0}, ()) for i in range(5000)]
        buffer.flush()
        stored = [r.id for r in buffer.oldest(6000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000 and stored == ids
    assert {uuid.UUID(i).int >> 80 for i in ids} == {int(NOW * 1000), int(NOW * 1000) + 1}
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids[::101])


def test_threads_in_one_frozen_millisecond_share_no_counter_and_run_past_it_together() -> None:
    # Four threads take 3,000 ids each at the same instant: 12,000 ids need three
    # milliseconds' counters and a dozen refills of the tail pool, raced for by all four.
    import sys
    import threading

    clock = IdClock()
    made: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def take(out: list[str]) -> None:
        barrier.wait()
        for _ in range(3000):
            out.append(clock.next(NOW))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as the interpreter allows
    try:
        threads = [threading.Thread(target=take, args=(out,)) for out in made]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    every = [uid for out in made for uid in out]
    assert len({uid[:18] for uid in every}) == 12_000  # no millisecond and counter given twice
    assert all(out == sorted(out) for out in made)
    stamps = {uuid.UUID(uid).int >> 80 for uid in every}
    assert stamps == {int(NOW * 1000) + k for k in range(3)}


def _tails_of(ids: list[str]) -> set[str]:
    return {uid[19:] for uid in ids}  # the variant and the 62 random bits


def test_a_forked_child_makes_other_random_bits_than_its_parent() -> None:
    # The tails come from the module's own generator (see telemetry.ids): a child that
    # kept its parent's state would make the parent's next ids' random bits.
    import os

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its tails to the parent, then out without cleanup
        try:
            os.write(writer, " ".join(IdClock().take(200, now=NOW)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = IdClock().take(200, now=NOW)
    assert len(child) == 200
    assert not _tails_of(child) & _tails_of(parent)


def test_seeding_the_random_module_does_not_repeat_ids_or_sampling() -> None:
    # An application that seeds ``random`` for reproducible training or tests must not
    # get the same tails (and so the same sampling decisions) on every run.
    import random

    random.seed(7)
    first = IdClock().take(200, now=NOW)
    random.seed(7)
    second = IdClock().take(200, now=NOW)
    assert not _tails_of(first) & _tails_of(second)


def test_making_ids_makes_no_system_call_for_randomness(monkeypatch) -> None:
    # ``os.urandom`` gives the GIL up and the recording thread takes it straight back,
    # which resets the switch timer of the buffer's writer waiting for the GIL: refilled
    # every 1024 ids, it kept the writer waiting 20-100 ms at a time (telemetry.ids).
    import os

    def refuse(size: int) -> bytes:
        raise AssertionError(f"os.urandom({size}) called while making ids")

    monkeypatch.setattr(os, "urandom", refuse)
    ids = IdClock().take(5000, now=NOW)
    assert len(set(ids)) == 5000
