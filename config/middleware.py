"""Refuse oversized request bodies before anything reads them, and URLs PostgreSQL cannot compare."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse

# Room for the multipart envelope and the other form fields around a file of UPLOAD_MAX_BYTES; a file that
# fits in the slack but not the limit is refused later, with a field message, by the image check.
BODY_SLACK_BYTES = 1024 * 1024
# The admin's product form sends the photos of its image inline in one request (config/urls.py mounts it here).
ADMIN_PREFIX = "/admin/"
ADMIN_FILES_PER_REQUEST = 5


class RequestBodyLimitMiddleware:
    """413 for bodies declared larger than ``UPLOAD_MAX_BYTES`` plus slack, decided from Content-Length alone.

    Django caps form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but streams any size of file to disk; this stops
    a huge upload before it is read. It must run before CsrfViewMiddleware, which reads POST bodies.
    A body without Content-Length (chunked) is not read by Django at all, so it needs no check here.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # PostgreSQL text cannot hold NUL: a lookup with one fails in the driver, which would be a 500.
        if "\x00" in request.path_info or "%00" in request.META.get("QUERY_STRING", ""):
            return _bad_request(request, "The address contains a NUL character.")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django itself refuses a malformed length
        files = ADMIN_FILES_PER_REQUEST if request.path_info.startswith(ADMIN_PREFIX) else 1
        limit = settings.UPLOAD_MAX_BYTES * files + BODY_SLACK_BYTES
        if length > limit:
            return _too_large(request, f"The request is larger than {limit // (1024 * 1024)} MB.")
        return self.get_response(request)


def _bad_request(request, message: str) -> HttpResponse:
    return _answer(request, message, status=400)


def _too_large(request, message: str) -> HttpResponse:
    return _answer(request, message, status=413)


def _answer(request, message: str, *, status: int) -> HttpResponse:
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=status)
    else:
        response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    # This answer skips CommonMiddleware, which sets the length. Without it the client reads until the server
    # closes the connection, and a server that reads the unread body first (Django's own) never does.
    response["Content-Length"] = str(len(response.content))
    return response
