"""config/settings/production.py: `check --deploy` is clean, and missing secrets fail fast.

Each case starts `manage.py` in a fresh process, as a deployment does, with the environment an
operator would give it (this session's real PostgreSQL and Redis URLs).
"""

import logging
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL")


def production_env(tmp_path: Path, **overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED and k != "DEBUG"}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="shop.example.com",
        DATABASE_URL=settings.DATABASE_URL,
        REDIS_URL=settings.REDIS_URL,
        # A state dir of its own: a fail-fast run must not start embedded servers in it.
        LOOKALIKE_STATE_DIR=str(tmp_path / "state"),
        MEDIA_ROOT=str(tmp_path / "media"),
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def deploy_check(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    "database_url",
    [None, "postgres://lookalike:secret@db:5432/lookalike"],
    ids=["session-database", "compose-style-tcp-url"],
)
def test_deploy_check_is_clean(tmp_path, database_url):
    # The check does not connect, so the compose URL's host need not exist here; it must still parse.
    overrides = {"DATABASE_URL": database_url} if database_url else {}
    result = deploy_check(production_env(tmp_path, **overrides))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stderr


@pytest.mark.parametrize(("scope", "name", "default"), [("api", "API_THROTTLE_RATE", "600/min"),
                                                     ("pages", "PAGE_THROTTLE_RATE", "300/min")])
@pytest.mark.parametrize(("given", "rate"), [
    (None, None), ("100/hour", "100/hour"), ("", "None"), (" ", "None"), ("100 / Hour", "100/hour")])
def test_anonymous_api_reads_and_pages_are_limited_unless_the_operator_lifts_it(tmp_path, scope, name, default,
                                                                                given, rate):
    """Unset, the production settings let one client read the whole catalog as fast as it could ask."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         f"from django.conf import settings; print(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['{scope}'])"],
        cwd=ROOT, env=production_env(tmp_path, **{name: given}), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (rate or default)


def test_debug_from_the_environment_cannot_switch_production_to_debug(tmp_path):
    result = deploy_check(production_env(tmp_path, DEBUG="true"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("key", ["too-short", "k" * 60, "django-insecure-" + "0123456789abcdef" * 4],
                         ids=["short", "one character", "django's insecure prefix"])
def test_a_weak_secret_key_stops_every_start(tmp_path, key):
    """Only `check --deploy` said so, and nothing runs it at a start: SECRET_KEY=changeme signed every session."""
    result = _settings_read(production_env(tmp_path, SECRET_KEY=key), "pass")
    assert result.returncode != 0 and "SECRET_KEY is too easy to guess" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_missing_variable_fails_fast_naming_it(tmp_path, name, value):
    result = deploy_check(production_env(tmp_path, **{name: value}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert name in last_line
    # Fail fast: before base settings fall back to starting the embedded PostgreSQL and Valkey.
    assert not (tmp_path / "state").exists()


def test_a_database_server_that_does_not_answer_fails_the_connection_instead_of_holding_it(tmp_path):
    connect = "import django; django.setup(); from django.db import connection; connection.ensure_connection()"
    with socket.socket() as silent:  # the kernel accepts the connection; no server ever answers on it
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = production_env(tmp_path, DATABASE_URL=f"postgres://shop:secret@127.0.0.1:{silent.getsockname()[1]}/shop",
                             DATABASE_CONNECT_TIMEOUT="1")
        result = subprocess.run([sys.executable, "-c", connect], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode != 0 and "timeout expired" in result.stderr, result.stderr[-2000:]


def test_an_open_database_connection_fails_when_its_query_goes_unacknowledged(db):
    """A network partition left a connection waiting on TCP for about 15 minutes (a worker, /healthz): libpq's
    tcp_user_timeout bounds it. No test can cut the network, so this checks that the live connection has it."""
    from django.db import connection

    connection.ensure_connection()
    assert connection.connection.info.get_parameters()["tcp_user_timeout"] == str(settings.DATABASE_TCP_USER_TIMEOUT * 1000)


def _settings_read(env: dict, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; "
                                                 f"{code}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_list_settings_take_spaces_after_their_commas_and_hsts_stays_on_this_site(tmp_path):
    """"shop.example.com, www.example.com" let www answer 400 alone; includeSubDomains and preload were on by
    default, cutting a domain's plain-HTTP subdomains off and asking the preload lists for too short a max-age."""
    env = production_env(tmp_path, ALLOWED_HOSTS="shop.example.com, www.example.com ,")
    result = _settings_read(env, "print(settings.ALLOWED_HOSTS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
                                 "settings.SECURE_HSTS_PRELOAD)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['shop.example.com', 'www.example.com'] False False"


def test_a_task_time_limit_too_short_for_its_soft_limit_is_refused(tmp_path):
    """30 s or less gave a soft limit at or below zero: every task failed at once."""
    result = _settings_read(production_env(tmp_path, CELERY_TASK_TIME_LIMIT="30"), "pass")
    assert result.returncode != 0 and "CELERY_TASK_TIME_LIMIT is 30 s; it needs at least 60 s" in result.stderr


@pytest.mark.parametrize(("name", "value", "refusal"), [
    ("SEARCH_THROTTLE_RATE", "30 a minute", "SEARCH_THROTTLE_RATE='30aminute' is not a rate"),
    ("ADMIN_LOGIN_THROTTLE_RATE", "/min", "ADMIN_LOGIN_THROTTLE_RATE='/min' is not a rate"),
    ("API_THROTTLE_RATE", "600/week", "API_THROTTLE_RATE='600/week' is not a rate"),
    ("API_THROTTLE_RATE", "1000/month", "API_THROTTLE_RATE='1000/month' is not a rate"),  # DRF: a minute
    ("CACHE_TIMEOUT_SECONDS", "0", "CACHE_TIMEOUT_SECONDS is 0.0; it needs to be above 0"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL='LOUD' is not a log level"),
    # django-environ read every word but its own as false: the shop was served over plain HTTP.
    ("SECURE_SSL_REDIRECT", "ture", "SECURE_SSL_REDIRECT='ture': set it to true or false"),
    ("DEBUG", "enabled", "DEBUG='enabled': set it to true or false"),
    # Read as a cosine: every photo search said "nothing similar enough", no photo was a near-duplicate.
    ("SEARCH_MIN_SCORE", "75", "SEARCH_MIN_SCORE is 75.0; it needs to be at least -1 and at most 1 (a cosine: 0.75"),
    ("NEAR_DUPLICATE_MIN_SCORE", "90", "NEAR_DUPLICATE_MIN_SCORE is 90.0; it needs to be at least -1 and at most 1"),
    ("SEARCH_CATEGORY_INDEX_MAX_SHARE", "25", "SEARCH_CATEGORY_INDEX_MAX_SHARE is 25.0; it needs to be at least 0"),
    ("SEARCH_QUERY_VIEWS", "30", "SEARCH_QUERY_VIEWS is 30; it needs to be at least 1 and at most 3"),  # was clamped
    # DRF then read the client's own X-Forwarded-For entry as its address: a new one per request, past every limit.
    ("NUM_PROXIES", "-1", "NUM_PROXIES is -1; it needs to be at least 0"),
    # Beat sent sweeps without a pause, each expired at once: the sweep never ran.
    ("EMBEDDING_SWEEP_SECONDS", "0", "EMBEDDING_SWEEP_SECONDS is 0.0; it needs to be above 0"),
    ("CATEGORY_INDEX_SYNC_SECONDS", "-5", "CATEGORY_INDEX_SYNC_SECONDS is -5.0; it needs to be above 0"),
    # A running index build handed to a second worker, which dropped it and started over.
    ("CELERY_BROKER_VISIBILITY_TIMEOUT", "3600", "CELERY_BROKER_VISIBILITY_TIMEOUT is 3600 s; it needs to be above "
                                                 "the longest task (3600 s) by 120 s at least"),
])
def test_a_setting_that_would_fail_requests_stops_the_start_naming_it(tmp_path, name, value, refusal):
    """A throttle rate DRF cannot read passed the start and made every request it limits a 500 (every photo search,
    every admin login); a cache timeout of 0 failed every cache call, and with it every throttle; a log level in
    lower case, or none, crashed every process."""
    result = _settings_read(production_env(tmp_path, **{name: value}), "pass")
    assert result.returncode != 0 and refusal in result.stderr, result.stderr[-2000:]


def test_rates_and_the_log_level_are_read_in_any_case_and_spacing(tmp_path):
    env = production_env(tmp_path, SEARCH_THROTTLE_RATE=" 30/Min", REFINE_THROTTLE_RATE="", LOG_LEVEL="warning ",
                         ADMIN_LOGIN_THROTTLE_RATE="5/hours")
    result = _settings_read(env, "import logging; rates = settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']; "
                                 "print(rates['search'], rates['refine'], rates['admin_login'], "
                                 "logging.getLogger().level)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30/min", "120/min", "5/hours", str(logging.WARNING)]  # empty: the default
