"""Whole-response cache for anonymous shopper pages, dropped at once when the catalog changes.

Product, category and home pages and "More like this" are read far more often than the catalog changes, and
rendering them (queries, an ANN search, templates) costs milliseconds each time. Each cached response is keyed by
a catalog version; any change a page can show (a product, category or image saved or deleted, the vectors or the
calibration of the space search reads, a photo's colours) writes a new version (``catalog_changed``: model
signals, and the services that write in bulk), so a shopper never sees a cached page older than the last change, and
``PAGE_CACHE_SECONDS`` only bounds how long unused entries linger. With read replicas (config/db_router.py) a
version also carries the primary's WAL position at the change, and a page rendered from a replica that has not
replayed that far is served but not stored: such a page is as stale as the replica's lag, never for a whole cache
lifetime. Signed-in users and requests carrying a session or messages cookie bypass the cache (their pages may
hold per-user content), and so does everything while the cache server is unreachable. A page is keyed by its URL
with the query parameters it reads, and sees no others (``cache_catalog_page(reads=...)``): a campaign's
``utm_source`` or a made-up parameter is served the same cached page.

The same version keeps small reads that every search repeats (the active embedding space, the category paths, whether
a category filter is small enough to search exactly) in each process: ``kept_per_catalog_version``. A request reads
the version from the cache server once, however many kept reads it makes.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from functools import wraps
from typing import TypeVar
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import QueryDict

from catalog.page_limit import over_page_limit
from config import db_router

logger = logging.getLogger(__name__)

VERSION_KEY = "catalog:version"
# A value kept per version is read afresh after this long anyway: the bound on its age should a change's new version
# have been lost (the cache server was unreachable during the write).
KEPT_SECONDS = 60.0
# How long a version written before its transaction commits lasts (see _new_version).
UNCOMMITTED_VERSION_SECONDS = KEPT_SECONDS
# The most argument sets a kept read keeps values for in one process (one per category filter, say).
KEPT_VALUES = 1024
T = TypeVar("T")
# The version as this request first read it ({} until then); None outside requests (tasks, commands), which read the
# cache server every time. A photo search's kept reads cost one round trip instead of one each.
_request_version: ContextVar[dict[str, str] | None] = ContextVar("catalog_request_version", default=None)


def catalog_changed() -> None:
    """Retire every cached page: now (for requests inside this transaction) and again once it commits."""
    _new_version(committed=False)
    connection = transaction.get_connection()
    if not any(callback is _new_version for _, callback, _ in connection.run_on_commit):  # once per transaction
        # robust: its own failure does not stop the hooks after it. A hook before it that raises does stop it; the
        # version written before the commit then expires (UNCOMMITTED_VERSION_SECONDS).
        transaction.on_commit(_new_version, robust=True)


def _new_version(*, committed: bool = True) -> None:
    # Before the commit no replica can have the change (and no query may risk the writer's transaction). Such a
    # version expires: a transaction rolled back has no commit to replace it, and no replica would ever reach it.
    position = db_router.primary_wal_position() if committed else db_router.UNREACHED_WAL_POSITION
    if (memo := _request_version.get()) is not None:
        memo.clear()  # this request's own write: its next read sees the new version
    try:
        cache.set(VERSION_KEY, _version_at(position), None if committed else UNCOMMITTED_VERSION_SECONDS)
    except Exception:  # the cache being down must not fail the write; nothing can be served from it either
        logger.warning("could not retire cached pages", exc_info=True)


def _version_at(position: str) -> str:
    """A new, never repeated version, carrying the primary's WAL position that a replica must have replayed."""
    return f"{uuid.uuid4().hex}@{position}"


def _position(version: str) -> str:
    return version.partition("@")[2]


def _cacheable_request(request) -> bool:
    return (
        settings.PAGE_CACHE_SECONDS > 0
        and request.method in ("GET", "HEAD")  # the same page: the server leaves a HEAD's body out
        and settings.SESSION_COOKIE_NAME not in request.COOKIES
        and "messages" not in request.COOKIES
    )


def _cacheable_response(response) -> bool:
    # A response that sets a cookie or varies by it (a CSRF token in a form) is someone's own; one that says it
    # must not be stored (a page showing a passing failure) is not kept either.
    return (
        response.status_code == 200 and not response.cookies and "cookie" not in response.get("Vary", "").lower()
        and "no-store" not in response.get("Cache-Control", "")
    )


def _key(request, version: str, *, negotiated: bool) -> str:
    # The query string as the page sees it (_parameters_read), in one order: ?sort=new&page=2 is ?page=2&sort=new.
    # By name only: a name's values keep their order (?page=1&page=2 reads page 2, ?page=2&page=1 page 1).
    query = urlencode(sorted(request.GET.lists(), key=lambda item: item[0]), doseq=True)
    url = f"{request.scheme}://{request.get_host()}{request.path}?{query}"
    # The Accept header only where the answer depends on it (DRF's JSON indents for "; indent=4"): on a page, any
    # new value of it rendered the page afresh.
    identity = f"{url}\n{request.META.get('HTTP_ACCEPT', '')}" if negotiated else url
    return f"page:{version}:{hashlib.sha256(identity.encode()).hexdigest()}"


def _parameters_read(request, names: Iterable[str]) -> None:
    """Leave the request only the query parameters ``names``, in the order they came. What a page does not read (a
    campaign's utm_source, a click id, anything a client makes up) is not in its key, so it neither misses the cache
    nor stores another copy of the page, and no link on the page carries it on."""
    django_request = getattr(request, "_request", request)  # DRF's Request reads the query string of Django's
    names = set(names)
    kept = QueryDict(mutable=True)
    for name, values in django_request.GET.lists():
        if name in names:
            kept.setlist(name, values)
    kept._mutable = False
    django_request.GET = kept


def cache_catalog_page(*, reads: Iterable[str] | Callable[[], Iterable[str]] = (), api: bool = False):
    """Serve the view's anonymous GET (and HEAD) responses from the cache while the catalog is unchanged (X-Cache:
    hit/miss).

    The view sees only the query parameters it ``reads`` (their names, or a function that gives them), whoever
    asks: a parameter it reads and does not declare is dropped, which its own tests then show. A page rendered, not
    served from the cache, counts against the client's limit on pages (catalog.page_limit); an ``api`` view (DRF's)
    has its own limit, and its answer depends on the Accept header too."""
    return lambda view: _cached(view, reads, api)


def _cached(view, reads, api: bool):
    def rendered(request, *args, **kwargs):
        if not api and (refused := over_page_limit(request)):
            return refused
        return view(request, *args, **kwargs)

    @wraps(view)
    def cached_view(request, *args, **kwargs):
        _parameters_read(request, reads() if callable(reads) else reads)
        if not _cacheable_request(request):
            return rendered(request, *args, **kwargs)
        try:
            version = _version()
            key = _key(request, version, negotiated=api)
            # A client that just wrote reads the primary (db_router) and is not served a stored page, which could
            # predate its write if retiring the pages failed; what it renders is the present, stored for others.
            response = None if db_router.just_wrote(request) else cache.get(key)
        except Exception:
            logger.warning("page cache unavailable", exc_info=True)
            return view(request, *args, **kwargs)  # nor would the limit's counter: not asked, not waited for
        if response is not None:
            response["X-Cache"] = "hit"
            return response
        response = rendered(request, *args, **kwargs)
        if _cacheable_response(response):
            response["X-Cache"] = "miss"
            position = _position(version)
            if getattr(response, "is_rendered", True):
                _store(key, response, position, request)
            else:  # a DRF or template response is rendered after the view returns
                response.add_post_render_callback(lambda rendered: _store(key, rendered, position, request))
        return response

    return cached_view


def _store(key: str, response, position: str, request) -> None:
    # A page that holds a CSRF token (a form rendered with {% csrf_token %}) is this visitor's own: the token goes
    # with a cookie that the CSRF middleware sets only after the view, where _cacheable_response cannot see it.
    if request.META.get("CSRF_COOKIE_NEEDS_UPDATE") or not db_router.reads_replayed(position):
        return
    try:
        cache.set(key, response, settings.PAGE_CACHE_SECONDS)
    except Exception:
        logger.warning("page cache unavailable", exc_info=True)


def kept_per_catalog_version(read: Callable[..., T]) -> Callable[..., T]:
    """``read`` (a query of the catalog) run once per catalog version in each process, for each set of arguments (at
    most KEPT_VALUES sets, which must be hashable): one cache lookup instead of a statement on every call. The value
    is shared: callers must not change it.

    Kept only when it is sure to be committed and current: not when read inside a transaction (it could be rolled
    back, and the version written before its commit would then stay), and from a replica only once that has replayed
    the version's change; and for KEPT_SECONDS at most. While the cache server is unreachable ``read`` runs every time.
    """
    kept: dict[tuple, tuple[str, float, T]] = {}  # arguments -> (version, when, value); entries replaced whole

    @wraps(read)
    def current(*args) -> T:
        try:
            version = _version()
        except Exception:
            return read(*args)
        entry = kept.get(args)
        if entry and entry[0] == version and time.monotonic() - entry[1] < KEPT_SECONDS:
            return entry[2]
        value = read(*args)
        if not transaction.get_connection().in_atomic_block and db_router.reads_replayed(_position(version)):
            if len(kept) >= KEPT_VALUES:
                kept.clear()  # values of older versions, or of arguments seldom asked: all read again at once
            kept[args] = (version, time.monotonic(), value)
        return value

    return current


def _version() -> str:
    """The catalog's version, read once per request; a new one when the cache server has none (it was restarted,
    keeping nothing): a version never comes back, so a value kept under one before the restart is never taken for
    the present."""
    memo = _request_version.get()
    if memo and "version" in memo:
        return memo["version"]
    version = cache.get(VERSION_KEY)
    if version is None:
        fresh = _version_at(db_router.primary_wal_position())
        version = fresh if cache.add(VERSION_KEY, fresh, None) else cache.get(VERSION_KEY) or fresh
    if memo is not None:
        memo["version"] = version
    return version


def _request_began(**kwargs) -> None:
    _request_version.set({})


def _request_ended(**kwargs) -> None:
    _request_version.set(None)


def _on_catalog_write(sender, **kwargs) -> None:
    catalog_changed()


def connect_signals() -> None:
    """Each request's version read; writes of every model a shopper page shows (bulk writes that bypass signals call
    ``catalog_changed`` themselves)."""
    from django.core.signals import request_finished, request_started
    from django.db.models.signals import post_delete, post_save

    request_started.connect(_request_began, dispatch_uid="page-cache-request-began")
    request_finished.connect(_request_ended, dispatch_uid="page-cache-request-ended")
    for model in ("catalog.Category", "catalog.Product", "catalog.ProductImage"):
        post_save.connect(_on_catalog_write, sender=model, dispatch_uid=f"page-cache-save-{model}")
        post_delete.connect(_on_catalog_write, sender=model, dispatch_uid=f"page-cache-delete-{model}")
    # Apps built on the catalog connect their own models (search: search/handlers.py).
