"""A request's declared charset (``Content-Type: ...; charset=...``) cannot break it.

Django decodes the query string and form fields with any codec Python knows. Some are not text encodings at all
(rot13, hex, base64, zlib, uu) and failed while Django built the request, before any middleware: the server's own
HTML 500, even under /api/. UTF-7 decodes ``+AAA-`` to NUL and ``+2AA-`` to a lone surrogate, which PostgreSQL's
driver cannot send: a 500 in every lookup that takes a parameter. Every request is now read as UTF-8.

Django's test client builds its requests itself, so these go through config.wsgi's application, as gunicorn and
runserver send them.
"""

from __future__ import annotations

import io
import sys

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client

from config.wsgi import application
from tests.factories import CategoryFactory, ProductFactory

pytestmark = pytest.mark.django_db

NOT_TEXT_CODECS = ["rot13", "hex", "base64", "zlib", "uu", "punycode"]
# "%2B" is "+": a bare "+" in a query string is a space.
UTF7_NUL, UTF7_SURROGATE = "%2BAAA-", "%2B2AA-"


@pytest.fixture(autouse=True)
def connection_kept():
    """Each WSGI request would close the database connection as it starts and ends, and with it the test's
    transaction; Django's own test client disconnects these handlers for the same reason."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


def _send(path: str, *, query: str = "", content_type: str, method: str = "GET", body: bytes = b"", cookie: str = ""):
    """``(status, content type, body)`` of one request through the WSGI application."""
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)), "HTTP_COOKIE": cookie,
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = int(status.split()[0]), dict(headers)

    response = application(environ, start_response)
    try:
        content = b"".join(response)
    finally:
        response.close()
    return started["status"], started["headers"].get("Content-Type", ""), content


@pytest.mark.parametrize("codec", NOT_TEXT_CODECS)
def test_a_charset_that_is_not_a_text_encoding_is_read_as_utf8(codec):
    product = ProductFactory(title="Blue chair")
    declared = f"text/plain; charset={codec}"
    status, content_type, body = _send("/api/v1/products/", query="q=chair", content_type=declared)
    assert (status, content_type) == (200, "application/json"), body[:300]
    assert b'"' + product.sku.encode() + b'"' in body
    status, _, body = _send("/search/", query="q=chair", content_type=declared)
    assert status == 200 and b"Blue chair" in body


@pytest.mark.parametrize("escape", [UTF7_NUL, UTF7_SURROGATE], ids=["nul", "surrogate"])
def test_utf7_cannot_smuggle_characters_postgresql_refuses(escape, admin_user):
    product = ProductFactory(category=CategoryFactory())
    utf7 = "text/plain; charset=utf-7"
    for path, query in [
        ("/api/v1/products/", f"category={escape}"),
        ("/api/v1/categories/", f"parent={escape}"),
        (f"/api/v1/products/{product.sku}/similar/", f"category={escape}"),
    ]:
        status, content_type, body = _send(path, query=query, content_type=utf7)
        assert (status, content_type) == (400, "application/json"), body[:300]
        assert b"Unknown category" in body
    status, content_type, _ = _send("/search/", query=f"q={escape}", content_type=utf7)
    assert status == 200 and content_type.startswith("text/html")

    staff = Client()
    staff.force_login(admin_user)
    cookie = f"sessionid={staff.cookies['sessionid'].value}"
    status, _, _ = _send("/admin/catalog/product/", query=f"q={escape}", content_type=utf7, cookie=cookie)
    assert status == 200

    boundary = "b0undary"
    form = f'--{boundary}\r\nContent-Disposition: form-data; name="category"\r\n\r\n{escape.replace("%2B", "+")}\r\n'
    form += f"--{boundary}--\r\n"
    status, content_type, body = _send(
        "/api/v1/search/", method="POST", body=form.encode(),
        content_type=f"multipart/form-data; boundary={boundary}; charset=utf-7",
    )
    assert (status, content_type) == (400, "application/json"), body[:300]
    assert b"Unknown category" in body
