"""The limit on shop pages rendered for one anonymous client (config.throttling.PageAnonThrottle)."""

from django.http import HttpResponse
from django.shortcuts import render

from config.throttling import PageAnonThrottle


def over_page_limit(request) -> HttpResponse | None:
    """The 429 page when this client has had its pages' worth rendered for now, else None (and the page counted)."""
    throttle = PageAnonThrottle()
    if throttle.allow_request(request, None):
        return None
    wait = throttle.retry_after()
    response = render(request, "429.html", {"wait": wait}, status=429)
    response["Retry-After"] = str(wait)
    return response
