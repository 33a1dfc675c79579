"""The limit on anonymous photo searches, shared by the API and the search page: each one runs the model."""

from __future__ import annotations

from config.throttling import ClientThrottle


class SearchAnonThrottle(ClientThrottle):
    """Anonymous photo searches per client address: ``search`` in DEFAULT_THROTTLE_RATES (SEARCH_THROTTLE_RATE).
    One counter per address for the API and the page alike, so neither is a way around the other's limit."""

    scope = "search"
