import time

import pytest
from django.core.cache import cache, caches

from search.selectors import SWEEP_FAILED_KEY, SWEEP_RAN_AT_KEY

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.fixture
def swept():
    """The embedding sweep has just run, as beat and a worker make it every minute; what it recorded is put back
    after the test (other modules' tests may read /healthz)."""
    from search.sweep import embedding_sweep

    server = caches["default"]  # this one, whatever a test sets CACHES to
    kept = server.get_many([SWEEP_RAN_AT_KEY, SWEEP_FAILED_KEY])
    embedding_sweep()
    yield
    server.delete_many([SWEEP_RAN_AT_KEY, SWEEP_FAILED_KEY])
    server.set_many(kept, None)


def test_healthz_reports_database_broker_and_the_last_sweep(client, swept):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "database": "ok", "broker": "ok", "sweep": "ok",
                    "sweep_age_seconds": body["sweep_age_seconds"], "sweep_failed_steps": []}
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
        "status": "degraded", "database": "ok", "broker": "down", "sweep": "ok", "sweep_failed_steps": []}
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


def test_healthz_says_which_steps_of_the_last_sweep_failed_without_taking_the_site_out(client, swept, monkeypatch):
    """A step failing at every sweep (a reduction file gone: no model switch, ever) said "sweep": "ok": the sweep
    recorded its run before it reported the failure, and only the worker's log told."""
    from search import sweep

    def gone():
        raise FileNotFoundError("the reduction file")

    monkeypatch.setattr(sweep, "retired_vectors_delete", gone)
    with pytest.raises(sweep.SweepIncomplete):
        sweep.embedding_sweep()
    failing = client.get("/healthz")
    assert failing.status_code == 200
    assert {k: failing.json()[k] for k in ("status", "sweep", "sweep_failed_steps")} == {
        "status": "degraded", "sweep": "failing", "sweep_failed_steps": ["freeing retired vectors"]}

    monkeypatch.undo()
    sweep.embedding_sweep()
    assert {k: client.get("/healthz").json()[k] for k in ("status", "sweep", "sweep_failed_steps")} == {
        "status": "ok", "sweep": "ok", "sweep_failed_steps": []}


def test_healthz_says_when_no_sweep_has_run_and_when_it_cannot_tell(client, swept, settings):
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
