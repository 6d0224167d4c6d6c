"""Which store a collector opens: the SQLite file (default) or a PostgreSQL database.

The app asks only for a writer (``RecordStore``), a reader (``StatsSource``) and how many
threads may store batches at once: one for SQLite, whose single writer connection
serialises writes by construction, and the pool size for PostgreSQL, whose server takes
many writers at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..settings import CollectorSettings
from .sqlite import RecordStore, StatsSource

STATS_POOL_SIZE = 2


@dataclass(frozen=True, kw_only=True)
class Backend:
    """How to open the store behind a collector."""

    description: str
    """The database, for logs (a PostgreSQL URI without its password)."""

    writer_threads: int
    """Threads that may store batches at once."""

    open_store: Callable[[], RecordStore]
    """Opens (creating or migrating) the store batches are written to."""

    open_reader: Callable[[], StatsSource]
    """Opens the connection(s) stats are read on, apart from the writers."""


def backend_for(settings: CollectorSettings) -> Backend:
    """The backend ``settings`` name."""
    if settings.db_url is not None:
        from .postgres import PostgresStore, redacted

        url = settings.db_url
        return Backend(
            description=redacted(url),
            writer_threads=settings.db_pool_size,
            open_store=lambda: PostgresStore(url, pool_size=settings.db_pool_size),
            open_reader=lambda: PostgresStore(url, pool_size=STATS_POOL_SIZE, migrate=False, name="collector-stats", check=True),
        )
    from .sqlite import Store, StoreReader

    path = settings.db_path
    assert path is not None
    return Backend(
        description=str(path),
        writer_threads=1,
        open_store=lambda: Store(path, lock_timeout_seconds=settings.lock_timeout_seconds),
        open_reader=lambda: StoreReader(path),
    )
