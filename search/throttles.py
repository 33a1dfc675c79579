"""The limits on anonymous photo searches, shared by the API and the search page: a photo runs the model; a
refinement of a kept search (a chip, an order, a price, "show more") only searches the catalog again."""

from __future__ import annotations

from config.throttling import ClientThrottle

# An IPv6 site's (its /48's) photo searches: this many clients' worth.
SITE_CLIENTS = 16


class SearchAnonThrottle(ClientThrottle):
    """Anonymous photo searches per client address: ``search`` in DEFAULT_THROTTLE_RATES (SEARCH_THROTTLE_RATE).
    One counter per address for the API and the page alike, so neither is a way around the other's limit. An IPv6
    client's site is limited as well (``_SearchSiteThrottle``), counted only for searches its own limit let through:
    counted for refused ones too, one /64 could have locked its whole site out."""

    scope = "search"

    def allow_request(self, request, view):
        self._refused_by = self
        if not super().allow_request(request, view):
            return False
        site = _SearchSiteThrottle()
        if site.allow_request(request, view):
            return True
        self._refused_by = site
        return False

    def wait(self):
        return super().wait() if self._refused_by is self else self._refused_by.wait()


class _SearchSiteThrottle(ClientThrottle):
    """Anonymous photo searches per IPv6 site (its /48), at SITE_CLIENTS times the rate of one client. Counted per
    /64 alone, a home given a /56 had 256 limits of its own and a server given a /48 65,536: as many model runs a
    minute as it cared to send. IPv4 clients are counted by their address alone."""

    scope = "search"
    ipv6_prefix = 48

    def get_rate(self):
        rate = super().get_rate()
        if rate is None:
            return None
        requests, period = rate.split("/")
        return f"{int(requests) * SITE_CLIENTS}/{period}"

    def allow_request(self, request, view):
        if "/" not in (self.get_ident(request) or ""):  # not an IPv6 network: nothing to add to the client's counter
            return True
        return super().allow_request(request, view)


class RefineAnonThrottle(ClientThrottle):
    """Anonymous refinements of a kept search per client address: ``refine`` in DEFAULT_THROTTLE_RATES
    (REFINE_THROTTLE_RATE). They search the catalog by the kept vector, no model run: counted as photo searches, a
    shopper clicking through chips and orders met the photo searches' limit and lost the results."""

    scope = "refine"

