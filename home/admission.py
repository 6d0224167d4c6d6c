"""Who may upload right now: uploads and decompressed bytes in progress, per device and in all.

One device, whatever it sends and however slowly, can only use its own share: at most
``max_pending_per_device`` uploads and ``max_inflight_bytes_per_device`` bytes of body in
memory (a refusal is a 429, which the device's sync retries after ``Retry-After``).
Everything together is held to ``max_pending_batches`` uploads and ``max_inflight_bytes``
bytes (a 503). Bytes are counted as they arrive (after gzip is undone), so a body is
refused the moment it would cross a limit, not after it has been inflated.

A request refused for bytes gives back everything it held at once. So when many large
bodies arrive together the ones refused free room for the others, and those that fit
finish: the pool never deadlocks with every request holding part of it.

Everything here runs on the event loop thread, so plain counters need no lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Busy, TooManyRequests
from .settings import CollectorSettings


class Ticket:
    """One admitted upload: the bytes it holds, given back when it leaves."""

    def __init__(self, admission: Admission, device: str) -> None:
        self._admission = admission
        self.device = device
        self.held = 0

    def reserve(self, size: int) -> None:
        """Account ``size`` more bytes of body in memory, or raise (429/503) and give back all held."""
        self._admission._reserve(self, size)

    def release(self) -> None:
        self._admission._release(self)


class Admission:
    """The limits of ``CollectorSettings`` on work in progress, kept on the event loop."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.pending = 0
        self.pending_by_device: Counter[str] = Counter()
        self.bytes = 0
        self.bytes_by_device: Counter[str] = Counter()

    @contextmanager
    def admit(self, device: str) -> Iterator[Ticket]:
        """Let one upload of ``device`` in, or raise ``Busy`` (503) / ``TooManyRequests`` (429)."""
        settings = self.settings
        retry = settings.retry_after_seconds
        if self.pending >= settings.max_pending_batches:
            raise Busy(
                f"the collector is busy with {self.pending} batches (at most {settings.max_pending_batches}); "
                "nothing was stored, send it again later",
                retry_after=retry,
            )
        mine = self.pending_by_device[device]
        if mine >= settings.max_pending_per_device:
            raise TooManyRequests(
                f"device {device!r} already has {mine} uploads in progress (at most {settings.max_pending_per_device} "
                "per device); nothing was stored, send one batch at a time",
                retry_after=retry,
            )
        self.pending += 1
        self.pending_by_device[device] += 1
        ticket = Ticket(self, device)
        try:
            yield ticket
        finally:
            ticket.release()
            self.pending -= 1
            self.pending_by_device[device] -= 1
            if not self.pending_by_device[device]:
                del self.pending_by_device[device]

    def _reserve(self, ticket: Ticket, size: int) -> None:
        settings = self.settings
        device = ticket.device
        if self.bytes_by_device[device] + size > settings.max_inflight_bytes_per_device:
            held = self.bytes_by_device[device]
            ticket.release()
            raise TooManyRequests(
                f"device {device!r} has {held + size} bytes of batches in progress, over its share of "
                f"{settings.max_inflight_bytes_per_device}; nothing was stored, send one batch at a time",
                retry_after=settings.retry_after_seconds,
            )
        if self.bytes + size > settings.max_inflight_bytes:
            ticket.release()
            raise Busy(
                f"the collector holds {settings.max_inflight_bytes} bytes of batches in progress at most and is full; "
                "nothing was stored, send it again later",
                retry_after=settings.retry_after_seconds,
            )
        ticket.held += size
        self.bytes += size
        self.bytes_by_device[device] += size

    def _release(self, ticket: Ticket) -> None:
        if not ticket.held:
            return
        self.bytes -= ticket.held
        self.bytes_by_device[ticket.device] -= ticket.held
        if not self.bytes_by_device[ticket.device]:
            del self.bytes_by_device[ticket.device]
        ticket.held = 0
