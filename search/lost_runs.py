"""Runs of a task whose worker died under them, counted so that one photo cannot take every worker down for ever.

A pool process killed in the middle of a task (the kernel's OOM killer, a crash in a decoder) puts the task's
message back in the queue at once (CELERY_TASK_REJECT_ON_WORKER_LOST), and a whole worker lost has it handed out
again after the broker's visibility timeout. That saves the work of a healthy batch; but a photo that kills whatever
decodes it would come back again and again, each time with the 31 other photos of its batch, none of them ever
embedded or marked failed. Each run is counted in the cache until it ends, however it ends (a retry, a failure and a
soft time limit end it too); a run that finds earlier runs of its task still counted knows their worker died. No
message is handed out while its run goes on: a worker that loses the broker stops its tasks
(CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS), and every task ends well within the broker's
visibility timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import cache

logger = logging.getLogger(__name__)

# Longer than any wait before a lost message is handed out again (the broker's visibility timeout, two hours).
RUN_COUNT_SECONDS = 24 * 3600


@contextmanager
def runs_counted(task_id: str | None) -> Iterator[int]:
    """Count this run of task ``task_id`` while it lasts; yields how many earlier runs of it began and never ended
    (0 when the cache cannot tell, or for a call outside a worker, with no task id)."""
    if task_id is None:
        yield 0
        return
    key = f"task-runs:{task_id}"
    try:
        cache.add(key, 0, RUN_COUNT_SECONDS)
        lost = cache.incr(key) - 1
    except Exception:  # the cache down must not stop the work
        logger.warning("could not count the runs of task %s", task_id, exc_info=True)
        lost = 0
    try:
        yield lost
    finally:
        try:
            cache.delete(key)
        except Exception:
            logger.warning("could not end the count of task %s's runs", task_id, exc_info=True)
