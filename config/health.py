"""Health for load balancers and compose healthchecks.

The database must answer: without it no page can be drawn. The broker (Redis) is reported but does not fail the
check: without it the shop still browses and searches, uploads are kept and queued later (docs/reliability.md), and
a failing check would have a load balancer take every web node out, or restart them, for one degraded feature.
The embedding sweep's age is reported the same way: a sweep that is late says that beat or the workers are down
(photos then stay pending), which the web cannot mend by leaving the rotation.
"""

import functools
import logging

import redis
from django.conf import settings
from django.db import connection, transaction
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from search.selectors import embedding_sweep_last_run

logger = logging.getLogger(__name__)

# A probe's query and Redis ping give up after this (a database stuck in a lock queue, a Redis that hangs): gunicorn's
# 60 s would kill the worker first, and three stuck probes would hold every worker. A database cut off by a network
# partition is bounded by the connection's own timeouts (DATABASE_CONNECT_TIMEOUT, DATABASE_TCP_USER_TIMEOUT).
PROBE_TIMEOUT_SECONDS = 2
# The sweep is late after this many of its intervals (EMBEDDING_SWEEP_SECONDS) without a run. It waits in the queue
# behind the embeddings (up to SWEEP_QUEUE_MAX_TASKS of them: about 2.5 minutes of work on two cores, more on fewer),
# and expires unrun if it waits longer than its interval, so a busy, healthy worker may run one only every few minutes.
SWEEP_LATE_INTERVALS = 10


@never_cache
def healthz(request):
    database, broker = _database_ok(), _broker_ok()
    sweep, sweep_age, failed = _sweep()
    status = "ok" if database and broker and sweep == "ok" else "degraded" if database else "unavailable"
    return JsonResponse(
        {"status": status, "database": "ok" if database else "down", "broker": "ok" if broker else "down",
         "sweep": sweep, "sweep_age_seconds": sweep_age, "sweep_failed_steps": failed},
        status=200 if database else 503,  # the database alone decides: nothing else is mended by leaving the rotation
    )


def _sweep() -> tuple[str, int | None, list[str]]:
    """The sweep's state, "ok", "failing" (some of its steps failed in its last run), "late", "never" (a new install,
    until the first sweep) or "unknown" (the cache does not answer); the seconds since it last ran; the steps that
    failed then."""
    try:
        age, failed = embedding_sweep_last_run()
    except Exception:
        return "unknown", None, []
    if age is None:
        return "never", None, []
    late = age > SWEEP_LATE_INTERVALS * settings.EMBEDDING_SWEEP_SECONDS
    return "late" if late else "failing" if failed else "ok", round(age), failed


def _database_ok() -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = %s", [f"{PROBE_TIMEOUT_SECONDS}s"])
            cursor.execute("SELECT 1")
        return True
    except Exception as error:
        # Said here: "down" alone gave an operator no reason (a password, pg_hba.conf, a timeout).
        logger.warning("healthz: the database does not answer: %s: %s", type(error).__name__, error)
        return False


def _broker_ok() -> bool:
    try:
        return bool(_broker(settings.CELERY_BROKER_URL).ping())
    except Exception as error:
        logger.warning("healthz: the broker does not answer: %s: %s", type(error).__name__, error)
        return False


@functools.cache
def _broker(url: str) -> redis.Redis:
    """One client per process, whose pooled connection each probe reuses: a client per probe connected to Redis
    afresh every few seconds for every load balancer asking."""
    return redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS)
