"""Which photo searches run alone on their host: a lone search may run the network on every core.

gunicorn's workers each run the network on their share of the cores (config/gunicorn.py), which serves the most
searches when many shoppers search at once. With one shopper the other cores sit idle while the network runs on
one, so a search that finds no other search running on the host uses every core: a photo's three query views take
about two thirds of the time (docs/performance.md).

The gunicorn master shares a table of the searches running before it forks the workers: a search holds a slot,
with its worker's pid, while its photo is embedded. A worker that dies mid-search leaves its slot taken; the master
frees it when it hears of the death (``worker_exited``). Where no table is shared (runserver, a shell, tests,
Celery), a search keeps the threads it was given.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_running = None  # multiprocessing.Array of pids, shared by the gunicorn master with the workers it forks


def share_among_workers(*, slots: int) -> None:
    """Called by the master before it forks: ``slots`` is how many searches can run at once on the host.

    Where the host cannot share memory and a lock between processes (no /dev/shm, as in some sandboxes), the site
    still starts: every search keeps its worker's share of the cores, as without this module."""
    global _running
    try:
        _running = multiprocessing.Array("i", max(1, slots))
    except OSError:
        logger.warning("cannot share the table of running searches; each search keeps its worker's cores",
                       exc_info=True)
        _running = None


def worker_exited(pid: int) -> None:
    """Called by the master when a worker exits: free the slots of any search it died in."""
    if _running is None:
        return
    with _running.get_lock():
        for index, holder in enumerate(_running):
            if holder == pid:
                _running[index] = 0


@contextlib.contextmanager
def searching() -> Iterator[bool]:
    """Hold a slot while a query photo is embedded; yields True when no other search held one as it started."""
    if _running is None:
        yield False
        return
    with _running.get_lock():
        holders = _running[:]
        free = next((index for index, holder in enumerate(holders) if not holder), None)
        if free is not None:
            _running[free] = os.getpid()
    try:
        yield free is not None and not any(holders)
    finally:
        if free is not None:
            with _running.get_lock():
                _running[free] = 0
