"""Where labels are stored: one protocol, a SQLite file or a PostgreSQL database behind it.

``open_feedback(db)`` opens the storage of a database named as the rest of home names it
(``edgepack export --db``, ``edgepack feedback import --db``): a SQLite file's path, or a
``postgresql://`` URI. ``collector_feedback(collector)`` is the storage a running collector
stores ``POST /v1/feedback`` in: on PostgreSQL it borrows the collector's own pool of
writer connections (one per writer thread), on SQLite it opens the file per request, as
the records' single writer thread runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import StoreError
from .labels import FeedbackOutcome, LabelIn

if TYPE_CHECKING:
    from ..app import Collector


class FeedbackStorage(Protocol):
    """What storing labels needs of a database: one batch judged and stored atomically by
    the rules of ``home.feedback.labels``."""

    def ingest(self, labels: list[LabelIn], *, received_at: float, source: str) -> FeedbackOutcome: ...

    def close(self) -> None: ...

    def __enter__(self) -> FeedbackStorage: ...

    def __exit__(self, *exc: object) -> None: ...


def open_feedback(db: str | Path, *, create: bool = True, lock_timeout_seconds: float = 5.0) -> FeedbackStorage:
    """The label storage of ``db`` (a SQLite path or a ``postgresql://`` URI); pending
    migrations are applied. ``create=False`` refuses a SQLite file that does not exist."""
    from ..stores.postgres import is_postgres_url

    if isinstance(db, str) and is_postgres_url(db):
        from .postgres import PostgresFeedbackStore

        return PostgresFeedbackStore(db)
    from .sqlite import FeedbackStore

    return FeedbackStore(db, create=create, lock_timeout_seconds=lock_timeout_seconds)


def collector_feedback(collector: Collector) -> FeedbackStorage:
    """The label storage of a running ``collector`` (call it on one of its writer threads)."""
    settings = collector.settings
    if settings.db_url is not None:
        from .postgres import PostgresFeedbackStore
        from ..stores.postgres import PostgresStore

        store = collector._store
        if not isinstance(store, PostgresStore):
            raise StoreError("the store is not open")
        return PostgresFeedbackStore(settings.db_url, pool=store.pool)
    from .sqlite import FeedbackStore

    assert settings.db_path is not None
    return FeedbackStore(settings.db_path, lock_timeout_seconds=settings.lock_timeout_seconds)
