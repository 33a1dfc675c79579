import time

import pytest
from django.core.cache import cache

from search.selectors import SWEEP_RAN_AT_KEY

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.fixture
def swept():
    """The embedding sweep has just run, as beat and a worker make it every minute."""
    from search.sweep import embedding_sweep

    cache.delete(SWEEP_RAN_AT_KEY)
    embedding_sweep()
    yield
    cache.delete(SWEEP_RAN_AT_KEY)


def test_healthz_reports_database_broker_and_the_last_sweep(client, swept):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "database": "ok", "broker": "ok", "sweep": "ok",
                    "sweep_age_seconds": body["sweep_age_seconds"]}
    assert 0 <= body["sweep_age_seconds"] < 30
    assert "no-cache" in response["Cache-Control"]


def test_probes_reuse_one_connection_to_redis(client, settings, swept):
    """Each probe made a client of its own and connected to Redis afresh: every few seconds, for each balancer."""
    import redis

    server = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.get("/healthz")
    connections = server.info("stats")["total_connections_received"]
    for _ in range(5):
        assert client.get("/healthz").json()["broker"] == "ok"
    assert server.info("stats")["total_connections_received"] == connections


def test_healthz_reports_the_broker_down_without_taking_the_site_out(client, settings, swept, caplog):
    """The shop browses and searches without Redis and keeps uploads for later: a 503 had a load balancer take
    every web node out (or restart them) for one degraded feature. The log says why it is down."""
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = client.get("/healthz")
    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if k != "sweep_age_seconds"} == {
        "status": "degraded", "database": "ok", "broker": "down", "sweep": "ok"}
    assert any(record.getMessage().startswith("healthz: the broker does not answer: ConnectionError")
               for record in caplog.records), caplog.text


def test_healthz_says_when_the_sweep_is_late_without_taking_the_site_out(client, settings, swept):
    """A dead worker or beat went unnoticed: photos stayed pending and nothing said why. The web still serves, so
    the answer stays a 200 (a load balancer must not take it out of rotation for this)."""
    settings.EMBEDDING_SWEEP_SECONDS = 60.0
    cache.set(SWEEP_RAN_AT_KEY, time.time() - 11 * 60, None)  # ten sweeps missed
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["sweep"]) == ("degraded", "late")
    assert 11 * 60 <= body["sweep_age_seconds"] < 11 * 60 + 30


def test_healthz_says_when_no_sweep_has_run_and_when_it_cannot_tell(client, settings):
    cache.delete(SWEEP_RAN_AT_KEY)
    never = client.get("/healthz")
    assert never.status_code == 200
    assert (never.json()["status"], never.json()["sweep"], never.json()["sweep_age_seconds"]) == (
        "degraded", "never", None)

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}  # nothing listens there
    unknown = client.get("/healthz")
    assert unknown.status_code == 200
    assert (unknown.json()["sweep"], unknown.json()["sweep_age_seconds"]) == ("unknown", None)
