"""Read replicas: which database each query goes to.

``DATABASE_REPLICA_URLS`` names PostgreSQL streaming replicas of ``DATABASE_URL``; the settings make them the
aliases ``replica_1``, ``replica_2``, ... The rule, and why it is this way round:

- **The primary by default.** Every query goes to "default" unless the request it belongs to was let onto the
  replicas. Celery tasks, management commands, the shell, migrations and in-process tests never are, so they read
  what was just written without thinking about it: a task dispatched on commit never looks for its row on a
  replica that has not replayed that commit yet. Opting reads *in* (one place: the middleware) is safer than
  opting every writer *out*.
- **Shopper reads opt in.** ``ReplicaRoutingMiddleware`` lets a request onto the replicas when it only reads: a
  GET or HEAD, or one of ``READ_ONLY_POSTS`` (the photo searches send the photo by POST but write nothing);
  never under /admin/; never from a client that wrote within ``DATABASE_REPLICA_STICKY_SECONDS`` (a cookie set on
  the answer to any request that wrote), so the admin's own pages and a page opened right after a write read the
  primary, where that write is; never for an API call with a token, whose programs seldom keep that cookie.
- **One server per request.** A request's reads all go to the replica picked at its first read. A write moves
  the rest of the request to the primary (and sets the cookie); so does a read inside a transaction on the primary,
  which may be part of a write (``select_for_update``, read-modify-write in a service).
- **A dead replica is skipped.** Before a request's first read the replica's connection is opened (with the
  short ``connect_timeout`` the settings give replicas) or, if persistent, health-checked, as Django would do on
  first use anyway. A replica that fails is skipped by this process for ``DATABASE_REPLICA_RETRY_SECONDS``: one
  failed connect per process per period, not a timeout per request. With none left, the primary answers. A replica
  that dies in the middle of a request fails that request only.

- **Cached pages stay honest.** A shopper on a replica sees the catalog as of the replica's lag (milliseconds when
  healthy). The page cache (catalog/page_cache.py) would stretch that to a cache lifetime by storing a lagging
  replica's page under the version of a newer change, so each version carries the primary's WAL position at the
  change (``primary_wal_position``) and a page is stored only when its reads had replayed that far
  (``reads_replayed``).

Raw SQL asks the router too: ``connections[router.db_for_read(Model)]``; ``django.db.connection`` is always the
primary. Statements that must run on the same server (``hnsw.ef_search`` set for the ANN statement after it) share
that one alias (search/selectors.py).
"""

from __future__ import annotations

import logging
import random
import time
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

logger = logging.getLogger(__name__)

REPLICA_PREFIX = "replica_"
STICKY_COOKIE = "lookalike_primary"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Views that take a POST but only read (URL names): the photo searches upload a photo, nothing is stored.
READ_ONLY_POSTS = frozenset({"search:photo", "api:search"})
ADMIN_PREFIX = "/admin/"
API_PREFIX = "/api/"


@dataclass
class _Routing:
    replicas_allowed: bool = False
    read_only_post: bool = False
    chosen: str | None = None  # the alias of the request's reads, once picked
    replayed: int | None = None  # how far the chosen replica had replayed the primary's WAL when it was picked
    wrote: bool = False


_routing: ContextVar[_Routing | None] = ContextVar("lookalike_db_routing", default=None)
# alias -> time.monotonic() until which this process does not try it again
_down_until: dict[str, float] = {}


def replica_aliases() -> list[str]:
    return [alias for alias in settings.DATABASES if alias.startswith(REPLICA_PREFIX)]


def replica_down(alias: str) -> bool:
    """Whether this process skips ``alias`` for now, after a failed connection check."""
    return time.monotonic() < _down_until.get(alias, 0.0)


def _usable(alias: str) -> bool:
    if replica_down(alias):
        return False
    connection = connections[alias]
    try:
        connection.ensure_connection()
        connection.close_if_health_check_failed()  # a persistent connection to a server that went away
        connection.ensure_connection()
        return True
    except DatabaseError:
        logger.warning("read replica %s cannot be reached; reading the primary for %ss", alias,
                       settings.DATABASE_REPLICA_RETRY_SECONDS, exc_info=True)
        _down_until[alias] = time.monotonic() + settings.DATABASE_REPLICA_RETRY_SECONDS
        connection.close()
        return False


def _pick_replica() -> str:
    candidates = replica_aliases()
    for alias in random.sample(candidates, len(candidates)):
        if _usable(alias):
            return alias
    return DEFAULT_DB_ALIAS


# A WAL position no server reaches: stands for "not known", so nothing counts as having replayed it.
UNREACHED_WAL_POSITION = "FFFFFFFF/FFFFFFFF"


def primary_wal_position() -> str:
    """The primary's WAL position now: what a replica must have replayed to show the present. Asked whether or not
    this process knows of replicas: a worker or a command on a host configured without them writes versions that the
    web's replica reads are measured against."""
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            return cursor.fetchone()[0]
    except DatabaseError:
        return UNREACHED_WAL_POSITION


def reads_replayed(position: str) -> bool:
    """Whether this request's reads came from a server that shows the primary as of ``position``: the primary
    itself, or a replica that had replayed that far when the request picked it. A replica's reads never count
    against no position (a version written before this rule).

    As of the pick, not of now: a replica that caught up while the page was being rendered from what it showed
    before had its stale page kept under the new catalog version. Replay only moves forward, so every read of the
    request shows at least what the replica had replayed when it was picked."""
    state = _routing.get()
    if state is None or state.chosen in (None, DEFAULT_DB_ALIAS):
        return True
    return bool(position) and state.replayed is not None and state.replayed >= _wal_number(position)


def _replayed_position(alias: str) -> int | None:
    """How far replica ``alias`` has replayed the primary's WAL; None when it cannot say (not a standby, down)."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
            position = cursor.fetchone()[0]
    except DatabaseError:
        return None
    return _wal_number(position) if position else None


def _wal_number(position: str) -> int:
    """A WAL position ("16/B374D848") as a number, to compare positions without a query."""
    high, low = position.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class PrimaryReplicaRouter:
    """Reads of requests the middleware let onto the replicas go to one replica; everything else to the primary."""

    def db_for_read(self, model, **hints):
        state = _routing.get()
        if state is None or not state.replicas_allowed:
            return DEFAULT_DB_ALIAS
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:  # part of a write, or of a consistent read of the primary
            return DEFAULT_DB_ALIAS
        if state.chosen is None:
            state.chosen = _pick_replica()
            if state.chosen != DEFAULT_DB_ALIAS:
                state.replayed = _replayed_position(state.chosen)  # before the first read (reads_replayed)
        return state.chosen

    def db_for_write(self, model, **hints):
        state = _routing.get()
        if state is not None:
            state.wrote = True
            state.replicas_allowed = False  # what this request reads next may be what it just wrote
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # every alias holds the same data

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS  # replicas replay the primary's schema; they cannot be written


def just_wrote(request) -> bool:
    """Whether this client wrote within DATABASE_REPLICA_STICKY_SECONDS (its cookie): its reads go to the primary,
    and no stored page is served to it. Signed: a cookie anyone could set sent all their reads to the primary and
    past the page cache."""
    return request.get_signed_cookie(STICKY_COOKIE, default=None, salt=STICKY_COOKIE,
                                     max_age=settings.DATABASE_REPLICA_STICKY_SECONDS) is not None


class ReplicaRoutingMiddleware:
    """Lets read-only shopper requests onto the replicas and keeps a client that wrote on the primary for a while.

    Place it before SessionMiddleware, so a session saved at the end of a request counts as that request's write.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not replica_aliases():
            return self.get_response(request)
        state = _Routing()
        token = _routing.set(state)
        try:
            response = self.get_response(request)
        finally:
            _routing.reset(token)
        if state.wrote or self._may_have_written(request, state):
            response.set_signed_cookie(STICKY_COOKIE, "1", salt=STICKY_COOKIE,
                                       max_age=settings.DATABASE_REPLICA_STICKY_SECONDS, httponly=True,
                                       samesite="Lax", secure=request.is_secure())
        return response

    @staticmethod
    def _may_have_written(request, state: _Routing) -> bool:
        """A signed-in client's write through SQL of its own (a cursor, not the router) counts too. A shopper's does
        not: shoppers write nothing but their session, through the router, and any refused POST (a 401, a CSRF
        403) would otherwise hand anyone the cookie that sends all their reads to the primary, past the page cache."""
        user = getattr(request, "user", None)
        return (request.method not in SAFE_METHODS and not state.read_only_post
                and user is not None and user.is_authenticated)

    def process_view(self, request, view_func, view_args, view_kwargs):
        state = _routing.get()
        if state is None:
            return None
        match = request.resolver_match
        state.read_only_post = request.method == "POST" and match is not None and match.view_name in READ_ONLY_POSTS
        state.replicas_allowed = (
            (request.method in SAFE_METHODS or state.read_only_post)
            and not request.path_info.startswith(ADMIN_PREFIX)
            and not just_wrote(request)
            and not _api_token_sent(request)
            and not state.wrote
        )
        return None


def _api_token_sent(request) -> bool:
    """Whether the request is an API call with a token: staff's program, which seldom keeps cookies, and whose read
    right after its own write must find it. Shoppers send none; any other Authorization header (one a proxy adds,
    or one sent to a page) reads as a shopper's, or anyone could aim reads at the primary with a made-up one."""
    return (request.path_info.startswith(API_PREFIX)
            and request.META.get("HTTP_AUTHORIZATION", "").startswith("Token "))

