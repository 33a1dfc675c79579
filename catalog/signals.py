"""What the catalog announces about its photos. Apps built on it (search) connect receivers in their
``AppConfig.ready()``; the catalog never imports them.

Both signals are sent inside the transaction that made the change, with keyword arguments ``image_ids`` (a list)
and ``on_not_queued``: ``None``, or a callable a receiver calls with a count when work it queues after the commit
cannot be queued now (the admin shows a notice). Receivers that start work outside the database do it on commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from django.dispatch import Signal

# New photos were stored.
photos_added = Signal()
# Photos whose file was replaced, or whose derived data an admin asked to recompute: what was computed from
# the old pixels (vectors) is stale. A replaced photo's duplicate flags the catalog clears itself.
photo_files_changed = Signal()
# A bulk load (an import) begins: each receiver returns a context manager, held open until the load ends, in
# which it may group the work that many small transactions announce (search sends fewer, larger tasks).
bulk_load = Signal()


@contextmanager
def bulk_load_announced() -> Iterator[None]:
    """Run a bulk load inside every receiver's ``bulk_load`` context."""
    with ExitStack() as contexts:
        for _, context in bulk_load.send(sender=None):
            if context is not None:
                contexts.enter_context(context)
        yield
