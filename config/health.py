"""Health for load balancers and compose healthchecks.

The database must answer: without it no page can be drawn. The broker (Redis) is reported but does not fail the
check: without it the shop still browses and searches, uploads are kept and queued later (docs/reliability.md), and
a failing check would have a load balancer take every web node out, or restart them, for one degraded feature.
"""

import redis
from django.conf import settings
from django.db import connection, transaction
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

# A probe's query and Redis ping give up after this (a database stuck in a lock queue, a Redis that hangs): gunicorn's
# 60 s would kill the worker first, and three stuck probes would hold every worker. A database cut off by a network
# partition is bounded by the connection's own timeouts (DATABASE_CONNECT_TIMEOUT, DATABASE_TCP_USER_TIMEOUT).
PROBE_TIMEOUT_SECONDS = 2


@never_cache
def healthz(request):
    database, broker = _database_ok(), _broker_ok()
    status = "ok" if database and broker else "degraded" if database else "unavailable"
    return JsonResponse(
        {"status": status, "database": "ok" if database else "down", "broker": "ok" if broker else "down"},
        status=200 if database else 503,
    )


def _database_ok() -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = %s", [f"{PROBE_TIMEOUT_SECONDS}s"])
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _broker_ok() -> bool:
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
                                      socket_timeout=PROBE_TIMEOUT_SECONDS)
        return bool(client.ping())
    except Exception:
        return False
