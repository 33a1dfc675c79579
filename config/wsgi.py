"""The WSGI application gunicorn and runserver serve (WSGI_APPLICATION): Django's, reading every request as UTF-8."""

import codecs
import os

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.utils.http import parse_header_parameters

from config import dotenv
from config.celery_app import DEVELOPMENT_SETTINGS, SETTINGS_DEFAULTED

dotenv.read()  # first: .env may name the settings module too
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
# Importing this module imported the package, whose Celery app set the development default first: a server started
# without the variable ran with DEBUG on and the embedded services. Not once another value was named since (gunicorn's
# --env, applied after its config imported the package), nor once settings are loaded (runserver, whose reloader's
# next process would inherit the change).
if (SETTINGS_DEFAULTED and os.environ["DJANGO_SETTINGS_MODULE"] == DEVELOPMENT_SETTINGS
        and not settings.configured):
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.production"

# Declared charsets that are honoured (by their codec's name): what the shop's pages and the API speak.
HONOURED_CHARSETS = {"utf-8", "ascii"}


class Utf8WSGIRequest(WSGIRequest):
    """A request whose query string and form fields are decoded as UTF-8 (DEFAULT_CHARSET) whatever charset its
    Content-Type declares, unless that is UTF-8 or ASCII.

    Django decodes them with any codec Python knows. Some are not text encodings (rot13, hex, base64, zlib, uu) or
    fail on ordinary text (punycode): Django raised while it built the request, before any middleware, and the
    server answered with its own HTML 500, even under /api/. UTF-7 decodes ``+AAA-`` to NUL and ``+2AA-`` to a
    lone surrogate, past the middleware's check for ``%00``, and PostgreSQL's driver fails on either: a 500 in
    every lookup of a parameter.
    """

    def _set_content_type_params(self, meta):
        self.content_type, self.content_params = parse_header_parameters(meta.get("CONTENT_TYPE", ""))
        charset = self.content_params.get("charset")
        if charset and _codec_name(charset) in HONOURED_CHARSETS:
            self.encoding = charset


def _codec_name(charset: str) -> str | None:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None


class Utf8WSGIHandler(WSGIHandler):
    request_class = Utf8WSGIRequest


# What django.core.wsgi.get_wsgi_application does, with the handler above.
django.setup(set_prefix=False)
application = Utf8WSGIHandler()
