"""Refuse oversized request bodies before anything reads them."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse

# Room for the multipart envelope and the other form fields around a file of UPLOAD_MAX_BYTES; a file that
# fits in the slack but not the limit is refused later, with a field message, by the image check.
BODY_SLACK_BYTES = 1024 * 1024


class RequestBodyLimitMiddleware:
    """413 for bodies declared larger than ``UPLOAD_MAX_BYTES`` plus slack, decided from Content-Length alone.

    Django caps form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but streams any size of file to disk; this stops
    a huge upload before it is read. It must run before CsrfViewMiddleware, which reads POST bodies.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django itself refuses a malformed length
        limit = settings.UPLOAD_MAX_BYTES + BODY_SLACK_BYTES
        if length > limit:
            message = f"The request is larger than {limit // (1024 * 1024)} MB."
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
