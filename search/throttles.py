"""The limits on anonymous photo searches, shared by the API and the search page: a photo runs the model; a
refinement of a kept search (a chip, an order, a price, "show more") only searches the catalog again."""

from __future__ import annotations

from config.throttling import ClientThrottle


class SearchAnonThrottle(ClientThrottle):
    """Anonymous photo searches per client address: ``search`` in DEFAULT_THROTTLE_RATES (SEARCH_THROTTLE_RATE).
    One counter per address for the API and the page alike, so neither is a way around the other's limit."""

    scope = "search"


class RefineAnonThrottle(ClientThrottle):
    """Anonymous refinements of a kept search per client address: ``refine`` in DEFAULT_THROTTLE_RATES
    (REFINE_THROTTLE_RATE). They search the catalog by the kept vector, no model run: counted as photo searches, a
    shopper clicking through chips and orders met the photo searches' limit and lost the results."""

    scope = "refine"

