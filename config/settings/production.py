"""Production: every secret and host comes from the environment; nothing insecure by default."""

import os

from django.core.exceptions import ImproperlyConfigured

from config import dotenv

dotenv.read()  # before checking for the variables

# Fail fast, before base settings would fall back to the embedded development services.
_missing = [name for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
if _missing:
    raise ImproperlyConfigured(f"production settings need these environment variables: {', '.join(_missing)}")

from .base import *  # noqa: E402,F403
from .base import env, env_flag, env_list, env_number  # noqa: E402

DEBUG = False
SECRET_KEY = env("SECRET_KEY")  # no default: fail fast
# Django's own rule for a key (its deploy check, security.W009), applied at every start: only `check --deploy` said it.
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured("SECRET_KEY is too easy to guess: use 50 or more random characters, such as "
                               "python3 -c 'import secrets; print(secrets.token_urlsafe(64))' prints")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")  # no default: fail fast

# Tests of redelivery shorten it at will; a deployment that did would hand a running task to a second worker.
_visibility = CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]  # noqa: F405
if _visibility < LONGEST_TASK_SECONDS + 120:  # noqa: F405
    raise ImproperlyConfigured(
        f"CELERY_BROKER_VISIBILITY_TIMEOUT is {_visibility} s; it needs to be above the longest task "
        f"({LONGEST_TASK_SECONDS} s) by 120 s at least, or a running task is handed to a second worker")  # noqa: F405

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_flag("SECURE_SSL_REDIRECT", default=True)
# /healthz is probed over plain HTTP inside the compose network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_number("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 30, low=0, kind=int)
# Both flags reach beyond this site, so they are the operator's to turn on: includeSubDomains cuts browsers off from
# any of the domain's subdomains still on plain HTTP, and the preload lists take only a max-age of a year and more.
# The deploy check's warnings about them (W005, W021) stand for that choice, not for a missing setting.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env_flag("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Anonymous API reads and pages rendered are limited per client here (the development settings leave them unlimited,
# for a client's own test harness); an empty value lifts a limit.
def _production_rate(name: str, default: str) -> str | None:
    return None if os.environ.get(name, "x").strip() == "" else throttle_rate(name, default)  # noqa: F405


REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {  # noqa: F405 - copies: base's own stay as they are
    **REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],  # noqa: F405
    "api": _production_rate("API_THROTTLE_RATE", "600/min"),
    "pages": _production_rate("PAGE_THROTTLE_RATE", "300/min")}}
