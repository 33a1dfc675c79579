"""Photo search needs only PostgreSQL and the model: with the cache (Redis) down it still answers, without the
refinements that the kept query vector would allow; the throttle counts nothing instead of refusing everything."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.factories import uploaded_file

pytestmark = [pytest.mark.django_db, pytest.mark.servers]

TOKEN = "A" * 22  # the shape of a kept query's token


@pytest.fixture
def cache_down(settings, catalog):
    # A real Redis client against a port nothing listens on: every cache call fails as in an outage.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "30/min"}}


def test_the_search_page_answers_without_its_refinements(client, cache_down, test_images):
    response = client.post("/search/photo/", {"photo": uploaded_file(test_images / "chair-shell-black.jpg")})
    assert response.status_code == 200
    assert [item.product.sku for item in response.context["search"].results][0] == "CHAIR-2"
    assert b"data-not-refinable" in response.content
    assert b"?query=" not in response.content and b"data-refine-form" not in response.content
    assert b'name="photo"' in response.content  # another photo can still be searched


def test_the_api_answers_with_no_query_token(client, cache_down, test_images):
    response = client.post("/api/v1/search/", {"image": uploaded_file(test_images / "chair-shell-black.jpg")})
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["query"] is None
    assert body["results"][0]["product"]["sku"] == "CHAIR-2"


def test_a_refinement_asks_for_the_photo_again(client, cache_down):
    page = client.get("/search/photo/", {"query": TOKEN, "sort": "price"})
    assert page.status_code == 410 and b"data-expired" in page.content
    api = client.post("/api/v1/search/", {"query": TOKEN})
    assert api.status_code == 400 and "query" in api.json()


def test_a_redis_that_hangs_costs_a_page_a_bounded_wait_not_the_worker(client, settings, catalog):
    """A Redis that accepts connections and never answers (a host stalled, a partition): redis-py waited for ever
    on every cache read, and gunicorn killed the worker after 60 s. With the settings' timeouts the page renders
    without its cache."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # connections are queued by the kernel and never read
    settings.CACHES = {"default": {**settings.CACHES["default"],
                                   "LOCATION": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}}

    class Hung(BaseException):  # not an Exception: the cache's fallbacks would catch that and go on waiting
        pass

    def hung(signum, frame):
        raise Hung("the page hung on the cache")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)  # a hang detector, not a speed requirement: well within gunicorn's 60 s (it took 50 s)
    try:
        page = client.get(catalog["CHAIR-1"].get_absolute_url())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        silent.close()
    assert page.status_code == 200 and b"CHAIR-1" in page.content
