"""Test runs: real PostgreSQL and Redis (embedded unless DATABASE_URL/REDIS_URL are given)."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "insecure-test-key")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("EMBEDDED_REDIS_DB", "1")
# Many tests search and read the API anonymously; the throttling tests set their own small rates.
os.environ.setdefault("SEARCH_THROTTLE_RATE", "100000/min")
os.environ.setdefault("REFINE_THROTTLE_RATE", "100000/min")
os.environ.setdefault("API_THROTTLE_RATE", "100000/min")

from .base import *  # noqa: E402,F403
from .base import env  # noqa: E402

MEDIA_ROOT = env.path("MEDIA_ROOT", default=tempfile.mkdtemp(prefix="lookalike-test-media-"))
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user fixtures
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
CACHES["default"]["KEY_PREFIX"] = "lookalike-test"  # noqa: F405
