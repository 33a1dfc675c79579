"""Work that must not run twice at once across processes: a PostgreSQL session-level advisory lock, tried."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def held_unless_taken(key: int) -> Iterator[bool]:
    """Take advisory lock ``key`` if it is free and hold it for the block; yields whether it was taken (False: another
    process holds it, and the block should leave the work to that one). Never waits."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        taken = cursor.fetchone()[0]
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
