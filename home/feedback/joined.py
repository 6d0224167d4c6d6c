"""Reading records joined with their labels, from a SQLite file or a PostgreSQL database.

``labeled.py`` (the training data) and ``scores.py`` (live quality) run one read-only query
over ``records`` and ``feedback``; ``joined_rows`` runs it on either store. The query is
written once, in SQLite's words with ``?`` placeholders; on PostgreSQL the placeholders
become ``%s`` and ``COLLATE BINARY`` becomes ``COLLATE "C"``: both order text by code
point (SQLite's BINARY compares UTF-8 bytes, which is the same order), so an export lists
rows in the same order on both stores whatever the PostgreSQL database's locale.
A PostgreSQL result is streamed through a server-side cursor, in one read-only snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import HomeError

TABLES = ("records", "feedback")
FETCH_ROWS = 2000
"""Rows fetched from a PostgreSQL cursor at a time."""
CONNECT_TIMEOUT_SECONDS = 10


def is_postgres(db: str | Path) -> bool:
    """Whether ``db`` is a PostgreSQL URI (a ``Path`` is always a SQLite file)."""
    from ..stores.postgres import is_postgres_url

    return isinstance(db, str) and is_postgres_url(db)


def describe(db: str | Path) -> str:
    """``db`` for messages: the path, or the URI without its password."""
    if is_postgres(db):
        from ..stores.postgres import redacted

        return redacted(str(db))
    return str(db)


def joined_rows(db: str | Path, sql: str, params: Sequence[Any], *, error: type[HomeError], action: str) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` on the database ``db`` (a SQLite path or a ``postgresql://`` URI);
    nothing when the database lacks ``records`` or ``feedback``. Every database error is
    raised as ``error`` naming ``action`` and the database."""
    if is_postgres(db):
        yield from _postgres_rows(str(db), sql, params, error=error, action=action)
    else:
        yield from _sqlite_rows(Path(db), sql, params, error=error, action=action)


def _sqlite_rows(path: Path, sql: str, params: Sequence[Any], *, error: type[HomeError], action: str) -> Iterator[tuple[Any, ...]]:
    if not path.exists():
        raise error(f"no collector database at {path} (expected the --db of 'edgepack collector')")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise error(f"cannot open {path}: {exc}") from exc
    try:
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not set(TABLES) <= present:
            return
        yield from conn.execute(sql, params)
    except sqlite3.Error as exc:
        raise error(f"{action} from {path}: {exc}") from exc
    finally:
        conn.close()


def _postgres_rows(url: str, sql: str, params: Sequence[Any], *, error: type[HomeError], action: str) -> Iterator[tuple[Any, ...]]:
    from ..stores.postgres import redacted

    try:
        import psycopg
    except ImportError as exc:
        raise error("a postgresql:// database needs psycopg 3: pip install 'edgepack[postgres]'") from exc
    where = redacted(url)
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        raise error(f"cannot open {where}: {_first_line(exc)}") from exc
    try:
        conn.read_only = True
        with conn.transaction():
            # One snapshot for the whole read, however long it streams.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            found = conn.execute("SELECT " + ", ".join(f"to_regclass('{name}')" for name in TABLES)).fetchone()
            if any(value is None for value in found):
                return
            with conn.cursor(name="edgepack_joined") as cursor:
                cursor.itersize = FETCH_ROWS
                cursor.execute(sql.replace("?", "%s").replace("COLLATE BINARY", 'COLLATE "C"'), params)
                yield from cursor
    except psycopg.Error as exc:
        raise error(f"{action} from {where}: {_first_line(exc)}") from exc
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
