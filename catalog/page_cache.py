"""Whole-response cache for anonymous shopper pages, dropped at once when the catalog changes.

Product, category and home pages and "More like this" are read far more often than the catalog changes, and
rendering them (queries, an ANN search, templates) costs milliseconds each time. Each cached response is keyed by
a catalog version; any save or delete of a product, category, image, vector or embedding space writes a new
version (``catalog_changed``), so a shopper never sees a cached page older than the last change, and
``PAGE_CACHE_SECONDS`` only bounds how long unused entries linger. With read replicas (config/db_router.py) a
version also carries the primary's WAL position at the change, and a page rendered from a replica that has not
replayed that far is served but not stored: such a page is as stale as the replica's lag, never for a whole cache
lifetime. Signed-in users and requests carrying a session or messages cookie bypass the cache (their pages may
hold per-user content), and so does everything while the cache server is unreachable.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from config import db_router

logger = logging.getLogger(__name__)

VERSION_KEY = "catalog:version"


def catalog_changed() -> None:
    """Retire every cached page: now (for requests inside this transaction) and again once it commits."""
    _new_version(committed=False)
    connection = transaction.get_connection()
    if not any(callback is _new_version for _, callback, _ in connection.run_on_commit):  # once per transaction
        transaction.on_commit(_new_version)


def _new_version(*, committed: bool = True) -> None:
    # Before the commit no replica can have the change (and no query may risk the writer's transaction).
    position = db_router.primary_wal_position() if committed else db_router.UNREACHED_WAL_POSITION
    try:
        cache.set(VERSION_KEY, f"{uuid.uuid4().hex}@{position}", None)
    except Exception:  # the cache being down must not fail the write; nothing can be served from it either
        logger.warning("could not retire cached pages", exc_info=True)


def _cacheable_request(request) -> bool:
    return (
        settings.PAGE_CACHE_SECONDS > 0
        and request.method == "GET"
        and settings.SESSION_COOKIE_NAME not in request.COOKIES
        and "messages" not in request.COOKIES
    )


def _cacheable_response(response) -> bool:
    # A response that sets a cookie or varies by it (a CSRF token in a form) is someone's own.
    return response.status_code == 200 and not response.cookies and "cookie" not in response.get("Vary", "").lower()


def _key(request, version: str) -> str:
    identity = f"{request.build_absolute_uri()}\n{request.META.get('HTTP_ACCEPT', '')}"
    return f"page:{version}:{hashlib.sha256(identity.encode()).hexdigest()}"


def cache_catalog_page(view):
    """Serve ``view``'s anonymous GET responses from the cache while the catalog is unchanged (X-Cache: hit/miss)."""

    @wraps(view)
    def cached_view(request, *args, **kwargs):
        if not _cacheable_request(request):
            return view(request, *args, **kwargs)
        try:
            version = cache.get(VERSION_KEY) or "0"
            key = _key(request, version)
            response = cache.get(key)
        except Exception:
            logger.warning("page cache unavailable", exc_info=True)
            return view(request, *args, **kwargs)
        if response is not None:
            response["X-Cache"] = "hit"
            return response
        response = view(request, *args, **kwargs)
        if _cacheable_response(response):
            response["X-Cache"] = "miss"
            position = version.partition("@")[2]
            if getattr(response, "is_rendered", True):
                _store(key, response, position)
            else:  # a DRF or template response is rendered after the view returns
                response.add_post_render_callback(lambda rendered: _store(key, rendered, position))
        return response

    return cached_view


def _store(key: str, response, position: str) -> None:
    if not db_router.reads_replayed(position):
        return
    try:
        cache.set(key, response, settings.PAGE_CACHE_SECONDS)
    except Exception:
        logger.warning("page cache unavailable", exc_info=True)


def _on_catalog_write(sender, **kwargs) -> None:
    catalog_changed()


def connect_signals() -> None:
    """Every model a shopper page shows; bulk writes that bypass signals call ``catalog_changed`` themselves."""
    from django.db.models.signals import post_delete, post_save

    for model in ("catalog.Category", "catalog.Product", "catalog.ProductImage"):
        post_save.connect(_on_catalog_write, sender=model, dispatch_uid=f"page-cache-save-{model}")
        post_delete.connect(_on_catalog_write, sender=model, dispatch_uid=f"page-cache-delete-{model}")
    # Apps built on the catalog connect their own models (search: search/handlers.py).
