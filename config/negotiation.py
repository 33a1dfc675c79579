"""Content negotiation for the API."""

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation

FORMAT_SHOWN_MAX = 20  # of a format named in an error: an answer echoing megabytes would cost as much again


class FormatNamedNegotiation(DefaultContentNegotiation):
    """DRF's, but an unknown ``?format=`` (xml, api) is a 406 that names it: DRF answered 404 "Not found." for a
    product that exists."""

    def filter_renderers(self, renderers, format):
        found = [renderer for renderer in renderers if renderer.format == format]
        if not found:
            shown = format[:FORMAT_SHOWN_MAX] + ("…" if len(format) > FORMAT_SHOWN_MAX else "")
            known = ", ".join(sorted({renderer.format for renderer in renderers}))
            raise NotAcceptable(f"There is no format '{shown}' here: ask for {known}, or leave format out.")
        return found
