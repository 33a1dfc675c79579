"""Request guards and the JSON shape of errors under /api/.

RequestBodyLimitMiddleware refuses oversized request bodies before anything reads them, and URLs PostgreSQL
cannot compare. ApiJsonErrorsMiddleware makes every error under /api/ a JSON answer with the right status,
whatever produced it (DRF, Django's URL resolver, a request Django refuses before DRF parses it, a crash), in
development (DEBUG) as in production.
"""

from __future__ import annotations

import logging
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.core import signals
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpResponse, JsonResponse
from django.middleware.common import CommonMiddleware
from django.template.loader import render_to_string
from django.urls import is_valid_path
from django.utils.crypto import constant_time_compare
from django.utils.log import log_response

API_PREFIX = "/api/"

# Room for the multipart envelope and the other form fields around a file of UPLOAD_MAX_BYTES; a file that
# fits in the slack but not the limit is refused later, with a field message, by the image check.
BODY_SLACK_BYTES = 1024 * 1024
# The admin's product form sends the photos of its image inline in one request (config/urls.py mounts it here).
ADMIN_PREFIX = "/admin/"
ADMIN_FILES_PER_REQUEST = 5


class RequestBodyLimitMiddleware:
    """413 for bodies declared larger than ``UPLOAD_MAX_BYTES`` plus slack (five photos' worth under /admin/ for a
    signed-in staff session, whose product form sends up to ADMIN_FILES_PER_REQUEST), decided from Content-Length and
    the session cookie.

    Django caps form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but streams any size of file to disk; this stops
    a huge upload before it is read. It must run before CsrfViewMiddleware, which reads POST bodies.
    A body without Content-Length (chunked) is not read by Django at all: under /api/ a write sent so is refused
    with 411, where it went on as a request with no body.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # PostgreSQL text cannot hold NUL: a lookup with one fails in the driver, which would be a 500.
        if "\x00" in request.path_info or "%00" in request.META.get("QUERY_STRING", ""):
            return _bad_request(request, "The address contains a NUL character.")
        if (request.path_info.startswith(API_PREFIX) and request.method in ("POST", "PUT", "PATCH")
                and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
                and not request.META.get("CONTENT_LENGTH")):
            # Django reads no body without a length: a PATCH answered 200 having changed nothing, a PUT named every
            # field missing. (Behind the compose proxy nginx buffers such a body and sends its length.)
            return _answer(request, "Send the request body with a Content-Length header: a body sent in chunks "
                                    "without one is not read.", status=411)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django itself refuses a malformed length
        limit = settings.UPLOAD_MAX_BYTES + BODY_SLACK_BYTES
        # The admin's larger budget for staff only, decided before CSRF reads the body: granted by the path alone,
        # anyone could have 100 MB read and written to disk ahead of the login check.
        admin = request.path_info.startswith(ADMIN_PREFIX)
        staff = admin and length > limit and _staff_session(request)
        if staff:
            limit = settings.UPLOAD_MAX_BYTES * ADMIN_FILES_PER_REQUEST + BODY_SLACK_BYTES
        if length > limit:
            photo_mb = settings.UPLOAD_MAX_BYTES // (1024 * 1024)
            message = f"The request is larger than {limit // (1024 * 1024)} MB."
            if staff:  # a product form with more photos than one save takes: say how many it does
                message += (f" Go back and add at most {ADMIN_FILES_PER_REQUEST} photos of up to {photo_mb} MB in "
                            "one save, then the rest.")
            elif not admin and not request.path_info.startswith(API_PREFIX):  # a shopper's photo: in its words
                message = f"The photo is larger than {photo_mb} MB. Choose a smaller one, or a copy of it made smaller."
            return _too_large(request, message)
        return self.get_response(request)


def _staff_session(request) -> bool:
    """Whether the request's session cookie names a signed-in active staff user, as Django's own check would (read
    from the session store: the session and auth middleware have not run yet)."""
    key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    if (user_id := session.get(SESSION_KEY)) is None:
        return False
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True, is_staff=True).first()
    # A session whose password has changed since is no longer the user's.
    return user is not None and constant_time_compare(session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


def _bad_request(request, message: str) -> HttpResponse:
    return _answer(request, message, status=400)


def _too_large(request, message: str) -> HttpResponse:
    return _answer(request, message, status=413)


def _answer(request, message: str, *, status: int) -> HttpResponse:
    if request.path_info.startswith(API_PREFIX):
        response = JsonResponse({"detail": message}, status=status)
    elif status == 413:  # a page, not a line of text: a shopper without the page's script lands here
        admin = request.path_info.startswith(ADMIN_PREFIX)
        response = HttpResponse(render_to_string("413.html", {
            "heading": "Too many photos at once" if admin else "That photo is too large", "message": message,
            "back_url": "/admin/" if admin else "/search/photo/",
            "back_text": "Back to the admin" if admin else "Back to the photo search",
        }), status=status)
        # The middleware that adds these to every page comes after this one, which answers before it runs.
        response["X-Frame-Options"] = "DENY"
        if settings.CONTENT_SECURITY_POLICY:
            response["Content-Security-Policy"] = settings.CONTENT_SECURITY_POLICY
    else:
        response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    # This answer skips CommonMiddleware, which sets the length. Without it the client reads until the server
    # closes the connection, and a server that reads the unread body first (Django's own) never does.
    response["Content-Length"] = str(len(response.content))
    return response


# --- JSON errors under /api/ ---

# What a client of the API is told when the answer was not made by DRF (which words its own errors).
STATUS_MESSAGES = {
    400: "Bad request.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "The request is too large.",
    500: "A server error occurred.",
}
# Headers of a replaced answer that still hold for its JSON replacement.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Vary")


class ApiJsonErrorsMiddleware:
    """Every error under /api/ as ``{"detail": "..."}`` JSON with the right status. It must come first in MIDDLEWARE.

    Django answers some API requests itself, in HTML: a path no URL matches (404), an exception (500, or the
    debug page), and the requests it refuses as suspicious when they are parsed: more than
    DATA_UPLOAD_MAX_NUMBER_FIELDS fields or parameters, more than DATA_UPLOAD_MAX_NUMBER_FILES files, a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE. Those reach process_exception (their type decides 400 or 413); whatever else
    comes back as a non-JSON error is replaced here, keeping DRF's message where DRF rendered it in another format
    (the schema's YAML, the docs' HTML). Answers in JSON are left alone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path_info.startswith(API_PREFIX)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            # DRF's message where it rendered one in another format (the schema's YAML, the docs' HTML)
            data = getattr(response, "data", None) if hasattr(response, "accepted_renderer") else None
            message = data["detail"] if isinstance(data, dict) and "detail" in data else (
                STATUS_MESSAGES.get(response.status_code, "Error."))
            if response.status_code == 404 and _slash_missing(request):
                message = f"Not found. API paths end with a slash: {request.path}/"
            response = _json_error(message, response.status_code, replaced=response)
        return response

    def process_exception(self, request, exception):
        if not request.path_info.startswith(API_PREFIX):
            return None
        # In DEBUG, DRF may raise an AttributeError of its own while handling the first exception (when that came
        # before content negotiation, e.g. while parsing the query string): look at the chain, not the last one.
        refused = _in_chain(exception, SuspiciousOperation)
        if refused is not None:
            return _refused(request, refused)
        if _in_chain(exception, Http404) is not None:
            return _json_error(STATUS_MESSAGES[404], 404)
        if _in_chain(exception, PermissionDenied) is not None:
            return _json_error(STATUS_MESSAGES[403], 403)
        # A crash: reported as Django reports one (the signal, which also lets the test client re-raise it, and
        # the django.request log with the traceback), answered in JSON instead of the debug or 500 page.
        signals.got_request_exception.send(sender=None, request=request)
        response = _json_error(STATUS_MESSAGES[500], 500)
        log_response("%s: %s", "Internal Server Error", request.path, response=response, request=request,
                     exception=exception)
        return response


class ApiAwareCommonMiddleware(CommonMiddleware):
    """Django's CommonMiddleware, but an /api/ path without its trailing slash is not redirected: the redirect
    loses a POST's body (and in DEBUG Django raises instead of redirecting one). The client gets a JSON 404 that
    names the path it meant."""

    def should_redirect_with_slash(self, request):
        return not request.path_info.startswith(API_PREFIX) and super().should_redirect_with_slash(request)


def _slash_missing(request) -> bool:
    path = request.path_info
    return not path.endswith("/") and is_valid_path(f"{path}/", getattr(request, "urlconf", None))


def _in_chain(exception: BaseException, kind: type) -> BaseException | None:
    seen = set()
    while exception is not None and id(exception) not in seen:
        if isinstance(exception, kind):
            return exception
        seen.add(id(exception))
        exception = exception.__cause__ or exception.__context__
    return None


def _refused(request, exception: SuspiciousOperation) -> HttpResponse:
    if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
        request._mark_post_parse_error()  # as Django does: reading POST again would raise again
    # Logged where Django logs them, so the same alerting sees them.
    logging.getLogger(f"django.security.{exception.__class__.__name__}").error(
        str(exception), extra={"status_code": 400, "request": request}
    )
    if isinstance(exception, RequestDataTooBig):
        return _json_error(f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.", 413)
    if isinstance(exception, TooManyFieldsSent):
        return _json_error(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields or query parameters.", 400
        )
    if isinstance(exception, TooManyFilesSent):
        return _json_error(f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files.", 400)
    return _json_error(STATUS_MESSAGES[400], 400)


def _json_error(message: str, status: int, *, replaced: HttpResponse | None = None) -> JsonResponse:
    response = JsonResponse({"detail": message}, status=status)
    for header in KEPT_HEADERS:
        if replaced is not None and header in replaced:
            response[header] = replaced[header]
    # Made outside CommonMiddleware, which sets the length (see _answer).
    response["Content-Length"] = str(len(response.content))
    return response


class ContentSecurityPolicyMiddleware:
    """The ``Content-Security-Policy`` header (``CONTENT_SECURITY_POLICY``) on every answer that has none: scripts,
    styles, pictures and requests only from this site, so that markup slipped into a product's text by a bug could
    run nothing. The API's docs pages are left out: drf-spectacular's pages start their UI with an inline script."""

    EXEMPT_VIEWS = {"api:docs", "api:redoc"}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = request.resolver_match
        if settings.CONTENT_SECURITY_POLICY and not (match and match.view_name in self.EXEMPT_VIEWS):
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response

