"""The limit on anonymous photo searches, shared by the API and the search page: each one runs the model."""

from __future__ import annotations

import ipaddress
import logging

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle

logger = logging.getLogger(__name__)


class SearchAnonThrottle(AnonRateThrottle):
    """Anonymous photo searches per client address: ``search`` in DEFAULT_THROTTLE_RATES (SEARCH_THROTTLE_RATE).
    One counter per address for the API and the page alike, so neither is a way around the other's limit."""

    scope = "search"

    def get_rate(self):
        # DRF copies the rates when its module is imported; reading them here lets settings overrides apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident(self, request):
        """The client's address; an IPv6 one by its /64, the block a single host is given: counted address by
        address, one machine had 2^64 counters of its own."""
        ident = super().get_ident(request)
        try:
            address = ipaddress.ip_address(ident)
        except ValueError:
            return ident
        if address.version == 6 and address.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return ident

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception:  # the counters live in the cache: while it is down, searches go on uncounted, not at all
            logger.warning("search throttle unavailable: the cache is down", exc_info=True)
            return True
