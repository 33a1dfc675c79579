import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_healthz_reports_the_broker_down_without_taking_the_site_out(client, settings):
    """The shop browses and searches without Redis and keeps uploads for later: a 503 had a load balancer take
    every web node out (or restart them) for one degraded feature."""
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "database": "ok", "broker": "down"}
