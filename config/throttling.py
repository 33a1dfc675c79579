"""Limits per client address, counted in the cache: anonymous API requests (``ApiAnonThrottle``), shop pages rendered
for anonymous clients (``PageAnonThrottle``), anonymous photo searches (search/throttles.py) and admin logins
(config/admin_site.py)."""

from __future__ import annotations

import ipaddress
import logging
import math

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle

logger = logging.getLogger(__name__)


class ClientThrottle(AnonRateThrottle):
    """A rate per client address, ``scope`` in REST_FRAMEWORK's DEFAULT_THROTTLE_RATES; unlimited for a signed-in
    user (AnonRateThrottle)."""

    # How much of an IPv6 address names one client: the /64 a single host is given.
    ipv6_prefix = 64

    def get_rate(self):
        # DRF copies the rates when its module is imported; reading them here lets settings overrides apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident(self, request):
        """The client's address; an IPv6 one by its ``ipv6_prefix`` block: counted address by address, one machine
        had 2^64 counters of its own."""
        ident = super().get_ident(request)
        try:
            address = ipaddress.ip_address(ident)
        except ValueError:
            return ident
        if address.version == 6 and address.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{address}/{self.ipv6_prefix}", strict=False))
        return ident

    def retry_after(self) -> int:
        """Whole seconds before a refused client may try again (a Retry-After header): at least one."""
        return math.ceil(self.wait() or 1)

    def allow_request(self, request, view):
        request.user  # read outside the guard: only the cache being down lets a request through uncounted
        try:
            return super().allow_request(request, view)
        except Exception:  # the counters live in the cache: while it is down, requests go on uncounted, not refused
            logger.warning("%s throttle unavailable: the cache is down", self.scope, exc_info=True)
            return True


class ApiAnonThrottle(ClientThrottle):
    """Anonymous API requests per client address: ``api`` in DEFAULT_THROTTLE_RATES (API_THROTTLE_RATE), every
    endpoint's default. More like this and the lists each run queries (an ANN statement, a text search): without a
    limit one client could keep the database busy. Photo search has its own, tighter limit instead."""

    scope = "api"


class PageAnonThrottle(ClientThrottle):
    """Shop pages rendered for an anonymous client, per client address: ``pages`` in DEFAULT_THROTTLE_RATES
    (PAGE_THROTTLE_RATE). A page served from the page cache costs nothing and is not counted; one rendered is: a
    product page runs two vector searches, a text search a full-text query, and a new value of any parameter (or a
    session cookie) renders one afresh. The API's reads of the same had their limit; the pages had none."""

    scope = "pages"
