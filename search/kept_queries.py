"""Kept query vectors: a photo search's query vector (never the photo), kept in the cache for a while under a random
token, so that a chip, a price range or another order refines the search without uploading the photo again."""

from __future__ import annotations

import logging
import re
import secrets

import numpy as np
from django.conf import settings
from django.core.cache import cache

from search import details
from search.query import KeptQuery
from search.selectors import search_space_model

logger = logging.getLogger(__name__)

KEPT_QUERY_PREFIX = "search:query:f32:"  # the format in the key: entries of another format are never read as this
KEPT_QUERY_DTYPE = "<f4"
KEPT_QUERY_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


def query_vector_keep(*, model: str, vector, query_details: tuple | None = None) -> str | None:
    """Keep a photo search's query vector for SEARCH_QUERY_KEEP_SECONDS (from its last use: ``query_vector_kept``)
    under a new random token; returns the token.
    ``query_details`` (the photo's detail descriptors) are kept with it, 22 KB in int8, so that a refinement orders
    its matches as the search did. None when the cache is down: the search itself needs only the database and the
    model, so it is answered without the means to refine it."""
    token = secrets.token_urlsafe(16)  # 22 characters, 128 random bits: not guessable, so not shareable by chance
    # The float32 bytes (1.5 KB): a quarter of the time a list of numbers took to build and store.
    values = np.asarray(vector, dtype=KEPT_QUERY_DTYPE).tobytes()
    try:
        kept = {"model": model, "vector": values,
                "details": details.encode(*query_details) if query_details is not None else None}
        cache.set(KEPT_QUERY_PREFIX + token, kept, settings.SEARCH_QUERY_KEEP_SECONDS)
    except Exception:  # the cache client's errors (Redis down, timeouts) have no common base class
        logger.warning("cannot keep a query vector: the cache is unavailable", exc_info=True)
        return None
    return token


def query_vector_kept(*, token: str) -> KeptQuery | None:
    """The query vector kept under ``token``, if it has not expired and its space is still the one searched (after a
    model switch its vector compares with nothing). None as well while the cache is down: the shopper searches with
    the photo again, as after the token expired."""
    try:
        kept = cache.get(KEPT_QUERY_PREFIX + token) if KEPT_QUERY_TOKEN.fullmatch(token or "") else None
    except Exception:  # the cache client's errors (Redis down, timeouts) have no common base class
        logger.warning("cannot read a kept query vector: the cache is unavailable", exc_info=True)
        return None
    if kept is None or kept["model"] != search_space_model():
        return None
    try:  # kept for as long again from its last use: a shopper refining for half an hour keeps the search
        cache.touch(KEPT_QUERY_PREFIX + token, settings.SEARCH_QUERY_KEEP_SECONDS)
    except Exception:  # the cache client's errors (Redis down, timeouts) have no common base class
        logger.warning("cannot keep a query vector longer: the cache is unavailable", exc_info=True)
    kept_details = details.decode(kept["details"]) if kept.get("details") else None
    return KeptQuery(model=kept["model"], vector=np.frombuffer(kept["vector"], dtype=KEPT_QUERY_DTYPE).copy(),
                     details=kept_details, token=token)
