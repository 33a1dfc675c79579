"""The API's refinements of a visual search: price range and sort (photo search and more like this), the
predicted-category facets, and refining by the kept query vector without sending the photo again."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from catalog.models import Category
from search.kept_queries import KEPT_QUERY_PREFIX
from tests.factories import uploaded_file

pytestmark = pytest.mark.django_db

SEARCH = "/api/v1/search/"


@pytest.fixture(autouse=True)
def generous_throttle(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "10000/min"}}


@pytest.fixture
def api():
    return APIClient()


def search(api, test_images, photo="chair-cafe-pair.jpg", **fields):
    return api.post(SEARCH, {"image": uploaded_file(test_images / photo), **fields}, format="multipart")


# A price filter that keeps every product makes the search exact (few rows): in the five-product test catalog an
# approximate HNSW walk can miss a product when earlier tests have left many dead entries in the graph.
EXACT = {"min_price": "0"}


def skus(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [result["product"]["sku"] for result in response.json()["results"]]


def test_a_price_range_returns_exactly_the_matches_in_it(api, catalog, test_images):
    assert set(skus(search(api, test_images, threshold="0", min_price="60", max_price="80"))) == {
        "CHAIR-2", "RUN-1", "RUN-3"}
    assert set(skus(search(api, test_images, threshold="0", min_price="65.5"))) == {"CHAIR-1", "CHAIR-2"}
    assert set(skus(search(api, test_images, threshold="0", max_price="15"))) == {"TEE-1"}


@pytest.mark.parametrize("sort, expected", [
    ("price", ["TEE-1", "RUN-1", "RUN-3", "CHAIR-2", "CHAIR-1"]),
    ("-price", ["CHAIR-1", "CHAIR-2", "RUN-3", "RUN-1", "TEE-1"]),
    ("newest", ["TEE-1", "RUN-3", "RUN-1", "CHAIR-2", "CHAIR-1"]),  # the fixture creates them in its order
])
def test_sort_orders_the_matches(api, catalog, test_images, sort, expected):
    response = search(api, test_images, threshold="0", sort=sort, **EXACT)
    assert skus(response) == expected, response.json()


def test_sorting_by_price_never_lets_a_weak_match_in(api, catalog, test_images, settings):
    # A fixed cut-off: the chairs (0.24, 0.36) pass it, the shoes and the T-shirt (0.01 at most) do not.
    settings.SEARCH_MIN_SCORE = 0.15
    best = skus(search(api, test_images))
    cheapest = skus(search(api, test_images, sort="price"))
    assert sorted(best) == ["CHAIR-1", "CHAIR-2"]
    assert cheapest == ["CHAIR-2", "CHAIR-1"]  # 80.00, 120.00; the 15.00 T-shirt stays out


@pytest.mark.parametrize("fields, field", [
    ({"min_price": "-1"}, "min_price"),
    ({"max_price": "-0.01"}, "max_price"),
    ({"min_price": "cheap"}, "min_price"),
    ({"max_price": "nan"}, "max_price"),
    ({"min_price": "100", "max_price": "10"}, "max_price"),
    ({"sort": "cheapest"}, "sort"),
])
def test_bad_refinements_are_400s_naming_the_field(api, catalog, test_images, fields, field):
    response = search(api, test_images, **fields)
    assert response.status_code == 400
    assert list(response.json()) == [field]
    similar = api.get("/api/v1/products/CHAIR-1/similar/", fields)
    assert similar.status_code == 400
    assert list(similar.json()) == [field]


def test_more_like_this_takes_a_price_range_and_a_sort(api, catalog, settings):
    settings.SEARCH_MIN_SCORE = 0.12  # of RUN-1's neighbours only RUN-3 (0.16) passes it; the next is 0.08
    url = "/api/v1/products/RUN-1/similar/"
    # The default order lists every neighbour, however weak (a product page always has some)...
    assert skus(api.get(url, {"scope": "all"}))[0] == "RUN-3"
    assert len(skus(api.get(url, {"scope": "all"}))) == 4, api.get(url, {"scope": "all"}).json()
    # ...a refined list only real matches: sorting by price does not bring the cheaper T-shirt in.
    assert skus(api.get(url, {"scope": "all", "sort": "price"})) == ["RUN-3"]
    assert skus(api.get(url, {"scope": "all", "min_price": "65", "max_price": "65"})) == ["RUN-3"]
    assert skus(api.get(url, {"scope": "all", "max_price": "64.99"})) == []


def test_a_price_range_of_a_photo_search_is_in_one_currency(api, client, catalog, test_images, settings):
    from catalog.models import Product

    settings.SEARCH_MIN_SCORE = 0  # More like this with a price range keeps real matches only: let all count

    Product.objects.filter(sku="TEE-1").update(currency="EUR")  # 15 euros; the rest of the shop is in dollars
    assert "TEE-1" not in skus(search(api, test_images, threshold="0", max_price="70"))
    assert skus(search(api, test_images, threshold="0", max_price="70", currency="EUR")) == ["TEE-1"]
    assert skus(search(api, test_images, threshold="0", max_price="70", currency="eur")) == ["TEE-1"]  # any case
    assert "currency" in search(api, test_images, max_price="70", currency="euro").json()
    page = client.get("/p/CHAIR-1/", {"scope": "all", "max_price": "70"}).content.decode()
    assert "Price, USD" in page
    euros = client.get("/p/CHAIR-1/", {"scope": "all", "max_price": "70", "currency": "eur"})
    assert "Price, EUR" in euros.content.decode()
    assert [item.product.sku for item in euros.context["similar_products"]] == ["TEE-1"]


def test_the_results_page_keeps_its_prices_currency_in_its_links_and_says_which_comes_first(client, catalog,
                                                                                          test_images, settings):
    """Links left the currency to be worked out again: once the shop's changed, the same link meant other prices.
    And "cheapest first" listed dollars, then euros, as if one list."""
    from catalog.models import Product

    settings.SEARCH_MIN_SCORE = 0
    Product.objects.filter(sku="TEE-1").update(currency="EUR")
    searched = client.post("/search/photo/", {"photo": uploaded_file(test_images / "chair-cafe-pair.jpg")})
    token = searched.context["token"]
    sorted_page = client.get("/search/photo/", {"query": token, "sort": "price"})
    assert "cheapest first, USD prices first" in sorted_page.content.decode()
    chips = sorted_page.context["chips"]
    assert chips and all("currency=USD" in chip["url"] for chip in chips)
    plain = client.get("/search/photo/", {"query": token})
    assert "prices first" not in plain.content.decode()
    assert plain.context["chips"] and all("currency" not in chip["url"] for chip in plain.context["chips"])


def test_facets_count_the_matches_by_category_most_first(api, catalog, test_images):
    body = search(api, test_images, threshold="0", **EXACT).json()
    assert body["facets"]["categories"] == [
        {"slug": Category.objects.get(name="Chairs").slug, "name": "Chairs", "path": "Home > Chairs", "count": 2},
        {"slug": Category.objects.get(name="Shoes").slug, "name": "Shoes", "path": "Clothing > Shoes", "count": 2},
        {"slug": Category.objects.get(name="Tops").slug, "name": "Tops", "path": "Clothing > Tops", "count": 1},
    ]
    # Counted before the limit, after the price filter.
    limited = search(api, test_images, threshold="0", limit="1", max_price="70").json()["facets"]["categories"]
    assert [(facet["name"], facet["count"]) for facet in limited] == [("Shoes", 2), ("Tops", 1)]


def test_a_chip_scopes_the_next_search_by_its_query_token_without_the_photo(api, catalog, test_images):
    first = search(api, test_images, threshold="0", **EXACT).json()
    token = first["query"]
    assert len(token) == 22
    shoes = next(facet for facet in first["facets"]["categories"] if facet["name"] == "Shoes")
    scoped = api.post(SEARCH, {"query": token, "category": shoes["slug"], "threshold": "0"}, format="multipart")
    assert set(skus(scoped)) == {"RUN-1", "RUN-3"}
    assert scoped.json()["facets"]["categories"] == [{**shoes, "count": 2}]
    # The same vector: the order and scores are the unscoped search's, restricted to Shoes.
    unscoped = [r for r in first["results"] if r["product"]["category"]["name"] == "Shoes"]
    assert [r["score"] for r in scoped.json()["results"]] == [r["score"] for r in unscoped]
    # Only the vector and the detail descriptors are kept: no image bytes in the cache entry.
    kept = cache.get(KEPT_QUERY_PREFIX + token)
    assert set(kept) == {"model", "vector", "details"} and len(kept["vector"]) < 2048
    assert len(kept["details"]) == 2 + 196 + 196 * 112  # the 14 x 14 map's weights and int8 descriptors


def kept_queries() -> int:
    server = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    return sum(1 for _ in server.scan_iter(f"*{KEPT_QUERY_PREFIX}*"))


def test_a_refinement_answers_with_its_own_token_and_keeps_nothing_more(api, catalog, test_images):
    token = search(api, test_images, threshold="0", **EXACT).json()["query"]
    kept_before = kept_queries()
    for sort in ("price", "-price", "newest"):
        refined = api.post(SEARCH, {"query": token, "sort": sort}, format="multipart")
        assert refined.status_code == 200 and refined.json()["query"] == token
    assert kept_queries() == kept_before


def test_a_refinement_keeps_its_search_for_as_long_again(api, catalog, test_images, settings):
    """Answered with the token it came by, a refinement would expire 30 minutes after the photo search however often
    the shopper refined: each use keeps it for SEARCH_QUERY_KEEP_SECONDS again."""
    token = search(api, test_images, threshold="0", **EXACT).json()["query"]
    server = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    [key] = server.scan_iter(f"*{KEPT_QUERY_PREFIX}{token}")
    server.expire(key, 60)  # as if it were 29 minutes old

    assert api.post(SEARCH, {"query": f" {token} ", "sort": "price"}, format="multipart").json()["query"] == token
    assert server.ttl(key) > settings.SEARCH_QUERY_KEEP_SECONDS - 60


@pytest.mark.parametrize("fields, field", [
    ({}, "image"),
    ({"query": "A" * 22}, "query"),  # expired, or never issued
    ({"query": "not a token"}, "query"),
])
def test_query_token_problems_are_400s_naming_the_field(api, catalog, fields, field):
    response = api.post(SEARCH, fields, format="multipart")
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_a_query_token_goes_without_an_image_and_without_a_box(api, catalog, test_images):
    token = search(api, test_images).json()["query"]
    both = api.post(SEARCH, {"query": token, "image": uploaded_file(test_images / "chair-cafe-pair.jpg")},
                    format="multipart")
    assert both.status_code == 400 and list(both.json()) == ["query"]
    boxed = api.post(SEARCH, {"query": token, "box": "0,0,10,10"}, format="multipart")
    assert boxed.status_code == 400 and list(boxed.json()) == ["box"]
