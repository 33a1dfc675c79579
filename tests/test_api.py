"""REST API: photo search, more like this, catalog reads, staff writes, errors, throttling, the schema."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog import services as catalog_services
from catalog.models import Category, Product, ProductImage
from search.selectors import search_space_model
from tests.factories import CategoryFactory, ProductFactory, collage, jpeg_upload, uploaded_file, uploaded_image
from tests.support import embedding_queue

pytestmark = pytest.mark.django_db

SEARCH = "/api/v1/search/"
PRODUCTS = "/api/v1/products/"
CATEGORIES = "/api/v1/categories/"


@pytest.fixture(autouse=True)
def generous_throttle(settings):
    """Anonymous searches are throttled; only the throttling test runs into the limit."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "10000/min"}}


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def staff(django_user_model):
    """Staff who may add and change products and add photos: what the API's writes ask, as the admin does."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="catalog", codename__in=["add_product", "change_product", "add_productimage"]))
    return user


@pytest.fixture
def staff_api(staff):
    client = APIClient()
    client.force_login(staff)  # session auth, as the browsable API uses it
    return client


def search(api, photo, **fields):
    return api.post(SEARCH, {"image": photo, **fields}, format="multipart")


def skus(response) -> list[str]:
    return [result["product"]["sku"] for result in response.json()["results"]]


# --- Search by photo ------------------------------------------------------------------------------------


def test_search_by_photo_returns_ranked_products_in_the_documented_shape(api, catalog, test_images):
    response = search(api, uploaded_file(test_images / "chair-cafe-pair.jpg"), threshold="0")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "facets", "query", "model", "took_ms", "threshold", "cutoff"}
    assert body["model"] == search_space_model()
    assert body["took_ms"] > 0 and body["threshold"] == 0 and 0 < body["cutoff"] < 1
    assert sorted(skus(response)[:2]) == ["CHAIR-1", "CHAIR-2"]
    assert all(set(result) == {"product", "score", "similarity", "duplicates"} for result in body["results"])
    scores = [result["score"] for result in body["results"]]
    assert len(scores) == 5 and all(0 <= score <= 1 for score in scores)
    assert scores == sorted(scores, reverse=True)
    # The match score is the calibrated form of the similarity: one half exactly at the cut-off.
    for result in body["results"]:
        above = result["similarity"] >= body["cutoff"]
        assert (result["score"] >= 0.5) == above
    product = body["results"][0]["product"]
    assert set(product) == {"id", "sku", "title", "url", "image_url", "price", "currency", "category"}
    assert product["url"] == f"http://testserver/p/{product['sku']}/"
    assert product["image_url"].startswith("http://testserver/media/products/")
    assert product["category"] == {"slug": Category.objects.get(name="Chairs").slug, "name": "Chairs",
                                   "path": "Home > Chairs"}
    assert product["price"] in ("120.00", "80.00")


def test_search_within_a_category_includes_its_subcategories(api, catalog, test_images):
    clothing = Category.objects.get(name="Clothing", parent=None)
    response = search(api, uploaded_file(test_images / "chair-cafe-pair.jpg"), category=clothing.slug, threshold="0")
    assert response.status_code == 200
    assert set(skus(response)) == {"RUN-1", "RUN-3", "TEE-1"}


def test_limit_caps_the_results(api, catalog, test_images):
    response = search(api, uploaded_file(test_images / "shoe-running-2.jpg"), limit="2", threshold="0")
    assert skus(response) == ["RUN-1", "RUN-3"] or skus(response) == ["RUN-3", "RUN-1"]


def test_threshold_hides_weak_matches(api, catalog, test_images):
    cactus = test_images / "plant-cactus.jpg"  # nothing like it in this catalog
    assert len(skus(search(api, uploaded_file(cactus), threshold="0"))) == 5
    assert skus(search(api, uploaded_file(cactus), threshold="0.95")) == []
    exact_copy = search(api, uploaded_file(test_images / "shoe-running-3.jpg"), threshold="0.95")
    assert skus(exact_copy) == ["RUN-3"]


def test_box_searches_only_that_region(api, catalog, test_images):
    photo = collage(test_images)
    left = search(api, jpeg_upload(photo), box="0,0,500,500", threshold="0")
    right = search(api, jpeg_upload(photo), box="500, 0, 1000, 500", threshold="0")
    assert skus(left)[0].startswith("CHAIR")
    assert skus(right)[0] == "TEE-1"


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"category": "no-such-category"}, "category", "Unknown category 'no-such-category'."),
        ({"limit": "0"}, "limit", "greater than or equal to 1"),
        ({"limit": "101"}, "limit", "less than or equal to 100"),
        ({"limit": "ten"}, "limit", "valid integer"),
        ({"threshold": "high"}, "threshold", "valid number"),
        ({"threshold": "1.5"}, "threshold", "less than or equal to 1"),
        ({"threshold": "-0.1"}, "threshold", "greater than or equal to 0"),
        ({"threshold": "nan"}, "threshold", "valid number"),
        ({"box": "1,2,3"}, "box", "four numbers"),
        ({"box": "a,b,c,d"}, "box", "four numbers"),
        ({"box": "10,10,5,20"}, "box", "x1 > x0"),
        ({"box": "0,0,inf,5"}, "box", "finite"),
        ({"box": "2000,2000,2100,2100"}, "box", "outside the 320x240 photo"),
        ({"box": "1.5,1.5,2.5,2.5"}, "box", "at least 8 pixels"),
    ],
)
def test_bad_search_parameters_get_400_with_a_message(api, fields, field, message):
    response = search(api, uploaded_image(size=(320, 240)), **fields)
    assert response.status_code == 400
    assert set(response.json()) == {field}
    assert message in response.json()[field][0]


def test_missing_image_is_a_400(api):
    response = api.post(SEARCH, {"limit": "5"}, format="multipart")
    assert response.status_code == 400
    assert list(response.json()) == ["image"]
    assert response.json()["image"][0].startswith("No file was submitted")


@pytest.mark.parametrize(
    "upload, message",
    [
        (SimpleUploadedFile("photo.jpg", b"this is not a photo", content_type="image/jpeg"), "not a readable image"),
        (SimpleUploadedFile("empty.jpg", b"", content_type="image/jpeg"), "empty"),
    ],
)
def test_files_that_are_not_images_get_400(api, upload, message):
    response = search(api, upload)
    assert response.status_code == 400
    assert message in response.json()["image"][0]


def test_too_big_and_too_many_pixels_get_400(api, settings):
    settings.UPLOAD_MAX_PIXELS = 10_000
    response = search(api, uploaded_image(size=(320, 240)))
    assert response.status_code == 400 and "limit is" in response.json()["image"][0]

    settings.UPLOAD_MAX_PIXELS = 50_000_000
    settings.UPLOAD_MAX_BYTES = 1_000
    response = search(api, uploaded_image(size=(320, 240)))
    assert response.status_code == 400 and "larger than" in response.json()["image"][0]


def test_huge_body_is_refused_with_413_before_it_is_read(api, settings):
    settings.UPLOAD_MAX_BYTES = 100_000  # plus 1 MB of slack for the form around the file
    noise = SimpleUploadedFile("big.jpg", b"\xff" * (2 * 1024 * 1024), content_type="image/jpeg")
    response = search(api, noise)
    assert response.status_code == 413
    assert response.json() == {"detail": "The request is larger than 1 MB."}


def test_a_model_that_cannot_load_gives_503(api, settings):
    settings.EMBEDDING_MODEL = "no-such-model"  # no active space yet: search would use this model
    response = search(api, uploaded_image(size=(320, 240)))
    assert response.status_code == 503
    assert response.json() == {"detail": "Search is temporarily unavailable"}
    assert int(response["Retry-After"]) > 0  # when to try again


def test_more_like_this_whose_query_fails_gives_503_and_is_not_kept(api, catalog, monkeypatch):
    from django.db import OperationalError

    from search import api as search_api

    working = search_api.product_matches

    def timed_out(**kwargs):
        raise OperationalError("canceling statement due to statement timeout")

    url = "/api/v1/products/CHAIR-1/similar/"
    monkeypatch.setattr(search_api, "product_matches", timed_out)
    for _ in range(2):
        response = api.get(url)
        assert (response.status_code, response.json()) == (503, {"detail": "Search is temporarily unavailable"})
        assert "X-Cache" not in response and int(response["Retry-After"]) > 0
    monkeypatch.setattr(search_api, "product_matches", working)
    answered = api.get(url)
    assert answered.status_code == 200 and answered["X-Cache"] == "miss" and answered.json()["results"]


def test_json_body_is_refused_with_415(api):
    response = api.post(SEARCH, {"image": "x"}, format="json")
    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]


def test_anonymous_search_is_throttled_per_client_with_retry_after(api, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "2/min"}}
    address = "198.51.100.7"
    cache.delete(f"throttle_search_{address}")
    # Invalid requests are cheap here and still count: the throttle runs before the body is parsed.
    codes = [api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=address).status_code for _ in range(3)]
    assert codes == [400, 400, 429]
    response = api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=address)
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Request was throttled. Expected available in ")
    assert 0 < int(response["Retry-After"]) <= 60
    # Another client still gets through.
    other = "198.51.100.8"
    cache.delete(f"throttle_search_{other}")
    assert api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=other).status_code == 400
    cache.delete_many([f"throttle_search_{address}", f"throttle_search_{other}"])


def test_a_session_cookie_django_cannot_have_set_is_no_session(api, product, settings):
    """A cookie spelling NUL (``\\000``) reached PostgreSQL, which refuses NUL in text: a 500 on every API call, and
    the photo search's limit, which reads the user, let every search through."""
    cookie = 'sessionid="' + "\\000" * 8 + '"'
    assert api.get(PRODUCTS, HTTP_COOKIE=cookie).status_code == 200
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "1/min"}}
    address = "198.51.100.9"
    cache.delete(f"throttle_search_{address}")
    try:
        codes = [api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=address, HTTP_COOKIE=cookie).status_code
                 for _ in range(2)]
        assert codes == [400, 429]
    finally:
        cache.delete(f"throttle_search_{address}")


def test_the_search_limit_counts_an_ipv6_client_by_its_slash_64(api, settings):
    """A host is given a whole /64: counted address by address, one machine could search without limit."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "2/min"}}
    keys = ["throttle_search_2001:db8::/64", "throttle_search_2001:db8:0:1::/64"]
    cache.delete_many(keys)
    try:
        codes = [api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=f"2001:db8::{n}").status_code
                 for n in (1, 2, 3)]
        assert codes == [400, 400, 429]
        assert api.post(SEARCH, {}, format="multipart", REMOTE_ADDR="2001:db8:0:1::1").status_code == 400  # next /64
    finally:
        cache.delete_many(keys)


def test_the_search_limit_also_counts_an_ipv6_site_by_its_slash_48(api, client, settings):
    """Counted per /64 alone, a home's /56 had 256 limits of its own, a server's /48 65,536: a model run each. A
    search its own /64's limit refused is not counted for the site: one /64 could have locked the whole site out."""
    from search.throttles import SITE_CLIENTS

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "1/min"}}
    hosts = [f"2001:db8:0:{n:x}::1" for n in range(SITE_CLIENTS + 2)]
    keys = ["throttle_search_2001:db8::/48", "throttle_search_2001:db8:1::/48",
            *(f"throttle_search_2001:db8:0:{n:x}::/64" for n in range(len(hosts)))]
    cache.delete_many(keys)
    try:
        codes = [api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=hosts[0]).status_code for _ in range(40)]
        assert codes == [400] + [429] * 39  # its own limit
        codes = [api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=host).status_code for host in hosts[1:-2]]
        assert codes == [400] * (SITE_CLIENTS - 1)  # the others of the site's sixteen, whatever the first sent
        refused = api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=hosts[-2])
        assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
        page = client.post("/search/photo/", {}, REMOTE_ADDR=hosts[-1])  # the page counts the same
        assert page.status_code == 429
        assert api.post(SEARCH, {}, format="multipart", REMOTE_ADDR="2001:db8:1::1").status_code == 400  # next site
    finally:
        cache.delete_many(keys)


def test_anonymous_api_reads_are_limited_per_client_and_photo_search_keeps_its_own_limit(api, staff_api, product,
                                                                                           settings):
    """More like this runs an ANN statement and the lists a text search for anyone, with no limit at all."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"api": "2/min", "search": "100/min"}}
    address = "198.51.100.9"
    keys = [f"throttle_api_{address}", f"throttle_search_{address}"]
    cache.delete_many(keys)
    try:
        reads = [f"{PRODUCTS}{product.sku}/similar/", PRODUCTS, f"{PRODUCTS}{product.sku}/"]
        codes = [api.get(url, REMOTE_ADDR=address).status_code for url in reads]
        assert codes == [200, 200, 429]
        refused = api.get(PRODUCTS, REMOTE_ADDR=address)
        assert refused.json()["detail"].startswith("Request was throttled") and int(refused["Retry-After"]) > 0
        assert api.post(SEARCH, {}, format="multipart", REMOTE_ADDR=address).status_code == 400  # its own limit
        assert staff_api.get(PRODUCTS, REMOTE_ADDR=address).status_code == 200  # signed in: not limited
        # Unset (the default outside compose), nothing is limited: a client's own harness meets no 429.
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
        assert {api.get(PRODUCTS, REMOTE_ADDR=address).status_code for _ in range(5)} == {200}
    finally:
        cache.delete_many(keys)


# --- More like this -------------------------------------------------------------------------------------


def test_similar_products_exclude_the_product_itself(api, catalog):
    response = api.get(f"{PRODUCTS}RUN-1/similar/", {"scope": "all"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "facets", "model", "took_ms"}
    assert skus(response)[0] == "RUN-3" and "RUN-1" not in skus(response)
    assert len(body["results"]) == 4
    scores = [result["score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= score <= 1 for score in scores)
    assert body["results"][0]["product"]["category"]["path"] == "Clothing > Shoes"


def test_similar_products_stay_in_the_products_category_unless_asked(api, catalog):
    assert skus(api.get(f"{PRODUCTS}RUN-1/similar/")) == ["RUN-3"]  # Clothing > Shoes holds one other product
    assert len(skus(api.get(f"{PRODUCTS}RUN-1/similar/", {"scope": "all"}))) == 4


def test_similar_products_take_limit_and_category(api, catalog):
    home = Category.objects.get(name="Home", parent=None)
    response = api.get(f"{PRODUCTS}RUN-1/similar/", {"category": home.slug, "limit": 1})
    assert response.status_code == 200
    assert len(skus(response)) == 1 and skus(response)[0].startswith("CHAIR")


@pytest.mark.parametrize(
    "params, field",
    [({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"category": "nope"}, "category"), ({"scope": "x"}, "scope")],
)
def test_similar_products_refuse_bad_parameters(api, product, params, field):
    response = api.get(f"{PRODUCTS}{product.sku}/similar/", params)
    assert response.status_code == 400 and field in response.json()


def test_similar_products_of_an_unknown_or_inactive_product_are_404(api, category):
    ProductFactory(sku="HIDDEN", category=category, active=False)
    assert api.get(f"{PRODUCTS}NOPE/similar/").json() == {"detail": "No such product."}
    assert api.get(f"{PRODUCTS}HIDDEN/similar/").status_code == 404


# --- Catalog reads --------------------------------------------------------------------------------------


@pytest.fixture
def shelf():
    furniture = CategoryFactory(name="Furniture", slug="furniture")
    sofas = CategoryFactory(name="Sofas", slug="sofas", parent=furniture)
    lamps = CategoryFactory(name="Lamps", slug="lamps")
    ProductFactory(sku="SOFA-1", title="Grey velvet sofa", category=sofas, price=Decimal("499"))
    ProductFactory(sku="SOFA-2", title="Green linen sofa", category=sofas, price=Decimal("899"))
    ProductFactory(sku="CHAIR-1", title="Oak chair", category=furniture, price=Decimal("120"))
    ProductFactory(sku="LAMP-1", title="Brass lamp", category=lamps, price=Decimal("60"))
    ProductFactory(sku="LAMP-OLD", title="Old lamp", category=lamps, price=Decimal("10"), active=False)


def listed(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [product["sku"] for product in response.json()["results"]]


def test_products_are_paginated(api, shelf):
    first = api.get(PRODUCTS, {"page_size": 3}).json()
    assert first["count"] == 4  # the inactive lamp is not listed
    assert [p["sku"] for p in first["results"]] == ["LAMP-1", "SOFA-2", "SOFA-1"]  # by title
    second = api.get(first["next"]).json()
    assert [p["sku"] for p in second["results"]] == ["CHAIR-1"] and second["next"] is None
    assert api.get(PRODUCTS, {"page": 9}).status_code == 404


@pytest.mark.parametrize("page_size", ["abc", "0", "-3", "101", "2.5"])
def test_a_page_size_the_list_cannot_use_is_refused_with_the_reason(api, shelf, page_size):
    for url in (PRODUCTS, CATEGORIES):
        response = api.get(url, {"page_size": page_size})
        assert response.status_code == 400, (url, page_size)
        assert "1 to 100" in response.json()["page_size"][0]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"category": "furniture"}, ["SOFA-2", "SOFA-1", "CHAIR-1"]),  # includes subcategories
        ({"category": "sofas"}, ["SOFA-2", "SOFA-1"]),
        ({"q": "sofa"}, ["SOFA-2", "SOFA-1"]),
        ({"q": "velvet"}, ["SOFA-1"]),
        ({"q": "sofa", "max_price": "500"}, ["SOFA-1"]),
        ({"min_price": "100", "max_price": "500"}, ["SOFA-1", "CHAIR-1"]),
        ({"active": "false"}, ["LAMP-1", "SOFA-2", "SOFA-1", "CHAIR-1"]),  # only staff may see inactive ones
    ],
)
def test_products_filter(api, shelf, params, expected):
    assert listed(api.get(PRODUCTS, params)) == expected


@pytest.mark.parametrize(
    "params, field",
    [
        ({"category": "nope"}, "category"),
        ({"min_price": "x"}, "min_price"),
        ({"min_price": "9", "max_price": "1"}, "max_price"),
        ({"sort": "price"}, "sort"),
        ({"max_price": "9", "currency": "euro"}, "currency"),
    ],
)
def test_bad_product_filters_get_400(api, shelf, params, field):
    response = api.get(PRODUCTS, params)
    assert response.status_code == 400 and field in response.json()


def test_a_price_range_is_in_the_shops_currency_unless_another_is_asked(api, shelf):
    """A 90-euro stool was listed "up to 100" beside the dollar products, as if euros were dollars."""
    ProductFactory(sku="STOOL-EU", title="Beech stool", category=Category.objects.get(slug="furniture"),
                   price=Decimal("90"), currency="EUR")
    assert listed(api.get(PRODUCTS, {"max_price": "100"})) == ["LAMP-1"]  # most products are in USD
    assert listed(api.get(PRODUCTS, {"max_price": "100", "currency": "EUR"})) == ["STOOL-EU"]
    assert "STOOL-EU" in listed(api.get(PRODUCTS, {"page_size": 10}))  # no price range: every currency


def test_staff_see_inactive_products_and_can_filter_on_them(staff_api, shelf):
    everything = staff_api.get(PRODUCTS).json()["results"]
    assert {product["sku"]: product["active"] for product in everything}["LAMP-OLD"] is False
    assert listed(staff_api.get(PRODUCTS, {"active": "false"})) == ["LAMP-OLD"]
    # Their text search too: it held active products only, so a hidden product could not be found by its name.
    assert listed(staff_api.get(PRODUCTS, {"q": "lamp", "active": "false"})) == ["LAMP-OLD"]
    assert staff_api.get(f"{PRODUCTS}LAMP-OLD/").json()["active"] is False
    assert staff_api.get(f"{PRODUCTS}NOPE/").json() == {"detail": "No such product."}


@pytest.mark.parametrize(("is_staff", "sees"), [(True, True), (False, False)])
def test_staff_who_may_only_view_products_see_hidden_ones_and_write_nothing(django_user_model, shelf, is_staff, sees):
    """The admin's view permission alone shows hidden products there: the API shows them too, to staff."""
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=is_staff)
    viewer.user_permissions.add(Permission.objects.get(codename="view_product"))
    api = APIClient()
    api.force_login(viewer)
    assert ("LAMP-OLD" in listed(api.get(PRODUCTS, {"active": "false"}))) is sees
    assert api.get(f"{PRODUCTS}LAMP-OLD/").status_code == (200 if sees else 404)
    assert api.post(PRODUCTS, NEW_PRODUCT, format="json").status_code == 403
    assert not Product.objects.filter(sku=NEW_PRODUCT["sku"]).exists()


def test_product_detail_has_images_and_category_path(api, shelf):
    product = Product.objects.get(sku="SOFA-1")
    catalog_services.product_image_add(product=product, file=uploaded_image(size=(64, 48)))
    body = api.get(f"{PRODUCTS}SOFA-1/").json()
    assert body["category"] == {"slug": "sofas", "name": "Sofas", "path": "Furniture > Sofas"}
    assert body["price"] == "499.00" and body["description"]
    assert [(i["width"], i["height"], i["embedding_status"]) for i in body["images"]] == [(64, 48, "pending")]
    assert body["image_url"] == body["images"][0]["url"]
    assert api.get(f"{PRODUCTS}LAMP-OLD/").status_code == 404
    assert api.get(f"{PRODUCTS}NOPE/").json() == {"detail": "No such product."}


def test_product_list_costs_a_fixed_number_of_queries(api, shelf, django_assert_max_num_queries):
    for n in range(10):  # more products in more categories must not mean more queries
        ProductFactory(category=CategoryFactory(parent=Category.objects.get(slug="lamps")), title=f"Extra {n}")
    with django_assert_max_num_queries(6):
        assert len(listed(api.get(PRODUCTS))) == 14


def test_categories_are_paginated_and_filterable(api, shelf):
    body = api.get(CATEGORIES, {"page_size": 2}).json()
    assert body["count"] == 3 and body["next"]
    assert [c["slug"] for c in body["results"]] == ["furniture", "lamps"]
    sofas = api.get(CATEGORIES, {"parent": "furniture"}).json()["results"]
    assert sofas == [{"id": Category.objects.get(slug="sofas").pk, "slug": "sofas", "name": "Sofas",
                      "path": "Furniture > Sofas", "parent": "furniture", "url": "http://testserver/c/sofas/"}]
    roots = api.get(CATEGORIES, {"root": "true"}).json()["results"]
    assert [c["slug"] for c in roots] == ["furniture", "lamps"]
    assert api.get(f"{CATEGORIES}sofas/").json()["path"] == "Furniture > Sofas"
    assert api.get(CATEGORIES, {"parent": "nope"}).status_code == 400


# --- Staff writes ---------------------------------------------------------------------------------------

NEW_PRODUCT = {"sku": "NEW-1", "title": "New sofa", "price": "250.00", "category": "sofas", "description": "Soft."}


def test_anonymous_writes_are_refused_with_401(api, shelf):
    response = api.post(PRODUCTS, NEW_PRODUCT, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert api.patch(f"{PRODUCTS}SOFA-1/", {"title": "x"}, format="json").status_code == 401
    assert api.post(f"{PRODUCTS}SOFA-1/images/", {"image": uploaded_image()}).status_code == 401
    assert not Product.objects.filter(sku="NEW-1").exists()


def test_customers_cannot_write(api, shelf, django_user_model):
    customer = django_user_model.objects.create_user("customer", password="pw")
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=customer).key}")
    response = api.post(PRODUCTS, NEW_PRODUCT, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "You do not have permission to perform this action."}


def test_staff_without_the_model_permissions_cannot_write(api, shelf, django_user_model):
    """The admin refuses staff the changes their permissions do not allow: so does the API."""
    clerk = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    api.force_authenticate(clerk)
    forbidden = {"detail": "You do not have permission to perform this action."}
    assert (api.post(PRODUCTS, NEW_PRODUCT, format="json").json()) == forbidden
    response = api.patch(f"{PRODUCTS}SOFA-1/", {"price": "1.00"}, format="json")
    assert (response.status_code, response.json()) == (403, forbidden)
    assert api.post(f"{PRODUCTS}SOFA-1/images/", {"image": uploaded_image()}).status_code == 403
    assert Product.objects.get(sku="SOFA-1").price == Decimal("499") and not ProductImage.objects.exists()
    assert api.get(f"{PRODUCTS}SOFA-1/").status_code == 200  # reading is everyone's
    assert "actions" not in api.options(PRODUCTS).json()  # nor offered a write it may not make
    # Nor the hidden products, which the admin would not show this user either
    Product.objects.filter(sku="SOFA-1").update(active=False)
    assert api.get(f"{PRODUCTS}SOFA-1/").status_code == 404
    assert "SOFA-1" not in [item["sku"] for item in api.get(PRODUCTS, {"active": "false"}).json()["results"]]


def test_staff_who_may_add_photos_add_them_to_a_hidden_product_too(api, shelf, django_user_model):
    """Looking the product up as a shopper would, the upload answered 404 for a hidden product, which the admin
    lets the same user add photos to."""
    from django.contrib.auth.models import Permission

    photographer = django_user_model.objects.create_user("photos", password="pw", is_staff=True)
    photographer.user_permissions.add(Permission.objects.get(codename="add_productimage"))
    api.force_authenticate(photographer)
    Product.objects.filter(sku="SOFA-1").update(active=False)
    assert api.post(f"{PRODUCTS}SOFA-1/images/", {"image": uploaded_image()}).status_code == 201
    assert api.get(f"{PRODUCTS}SOFA-1/").status_code == 404  # reading it is still for those who may view products


def test_two_photos_in_one_upload_are_refused_not_one_stored_silently(staff_api, shelf):
    """The last was stored (201) and the first dropped, with nothing said."""
    response = staff_api.post(f"{PRODUCTS}SOFA-1/images/", {"image": [uploaded_image("a.jpg"), uploaded_image(
        "b.jpg", color=(0, 0, 200))]}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"image": ["Send one photo: this request has 2."]}
    assert not ProductImage.objects.filter(product__sku="SOFA-1").exists()


def test_a_photo_sent_again_is_not_stored_twice(staff_api, shelf):
    """A client retrying its upload after a timeout stored a second copy each time."""
    url = f"{PRODUCTS}SOFA-1/images/"
    first = staff_api.post(url, {"image": uploaded_image("a.jpg")}, format="multipart")
    again = staff_api.post(url, {"image": uploaded_image("again.jpg")}, format="multipart")  # the same pixels
    other = staff_api.post(url, {"image": uploaded_image("b.jpg", color=(0, 0, 200))}, format="multipart")

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"]
    assert ProductImage.objects.filter(product__sku="SOFA-1").count() == 2


def test_options_describe_only_the_writes_the_user_may_make(api, staff_api, shelf):
    """OPTIONS told anonymous users they could POST, and described the read shape (category as a read-only
    object), so a form built from it could never send the category slug a write needs."""
    assert "actions" not in api.options(PRODUCTS).json()
    post = staff_api.options(PRODUCTS).json()["actions"]["POST"]
    assert post["category"]["read_only"] is False and post["sku"]["required"] is True
    # A product's PUT, which DRF's own lookup of the product left out, and a photo upload's fields
    put = staff_api.options(f"{PRODUCTS}SOFA-1/").json()["actions"]["PUT"]
    assert put["category"]["read_only"] is False
    upload = staff_api.options(f"{PRODUCTS}SOFA-1/images/").json()["actions"]["POST"]
    assert set(upload) == {"image", "position"} and upload["image"]["required"] is True
    assert "actions" not in api.options(f"{PRODUCTS}SOFA-1/images/").json()


def test_an_update_that_changes_nothing_writes_nothing(api, staff_api, shelf):
    """Each save retires every cached page: a client that sends a product again, unchanged, kept the cache cold."""
    before = Product.objects.get(sku="SOFA-1").updated_at
    assert api.get("/p/SOFA-1/")["X-Cache"] == "miss"
    assert staff_api.patch(f"{PRODUCTS}SOFA-1/", {}, format="json").status_code == 200
    same = staff_api.patch(f"{PRODUCTS}SOFA-1/", {"price": "499.00", "category": "sofas"}, format="json")
    assert same.status_code == 200
    assert Product.objects.get(sku="SOFA-1").updated_at == before
    assert api.get("/p/SOFA-1/")["X-Cache"] == "hit"  # the shop's cached page still stands


def test_a_change_based_on_a_stale_read_is_refused_with_412(staff_api, shelf):
    """Without it, a client that read a product, then PUT it back edited, silently undid what another writer had
    changed in between (a price an import or another member of staff set)."""
    url = f"{PRODUCTS}SOFA-1/"
    read = staff_api.get(url)
    etag = read["ETag"]
    changed = staff_api.patch(url, {"price": "450.00"}, format="json")  # someone else, meanwhile
    assert changed.status_code == 200 and changed["ETag"] != etag
    stale = staff_api.put(url, {**NEW_PRODUCT, "sku": "SOFA-1", "title": "Grey sofa"}, format="json",
                          HTTP_IF_MATCH=etag)
    assert stale.status_code == 412 and "changed since" in stale.json()["detail"]
    assert Product.objects.get(sku="SOFA-1").price == Decimal("450.00")  # the other change stands
    fresh = staff_api.patch(url, {"title": "Grey sofa"}, format="json", HTTP_IF_MATCH=changed["ETag"])
    assert fresh.status_code == 200 and fresh.json()["title"] == "Grey sofa"
    assert staff_api.patch(url, {"title": "Sofa"}, format="json", HTTP_IF_MATCH="*").status_code == 200
    assert staff_api.patch(url, {"title": "Sofa?"}, format="json", HTTP_IF_MATCH='"not-a-version"').status_code == 412


def test_if_match_takes_a_list_and_compares_etags_as_strings(staff_api, shelf):
    """A list holding the current ETag was refused, and a tag was read as a hex number: "0x…", upper case, spaces
    and the unquoted tag all matched."""
    url = f"{PRODUCTS}SOFA-1/"
    etag = staff_api.get(url)["ETag"]
    bare = etag.strip('"')
    for other in (f'"0x{bare}"', f'"{bare.upper()}"', f'" {bare} "', bare, f"W/{etag}"):
        if other != etag:
            assert staff_api.patch(url, {"title": "Sofa?"}, format="json", HTTP_IF_MATCH=other).status_code == 412, other
    # A tag of the right shape whose version no date can hold (past the year 9999): refused, not a 500.
    assert staff_api.patch(url, {"title": "Sofa?"}, format="json",
                           HTTP_IF_MATCH='"ffffffffffffffff"').status_code == 412
    assert Product.objects.get(sku="SOFA-1").title != "Sofa?"
    listed = staff_api.patch(url, {"title": "Sofa!"}, format="json", HTTP_IF_MATCH=f'"1", {etag}, W/"2"')
    assert listed.status_code == 200 and listed.json()["title"] == "Sofa!"


def test_staff_create_and_update_a_product(staff_api, shelf):
    response = staff_api.post(PRODUCTS, NEW_PRODUCT, format="json")
    assert response.status_code == 201, response.content
    assert response["Location"] == "http://testserver/api/v1/products/NEW-1/"
    assert response["ETag"] == staff_api.get(response["Location"])["ETag"]  # the version to send back in If-Match
    assert response.json()["category"]["path"] == "Furniture > Sofas"
    product = Product.objects.get(sku="NEW-1")
    assert (product.price, product.currency, product.active) == (Decimal("250.00"), "USD", True)

    response = staff_api.patch(f"{PRODUCTS}NEW-1/", {"price": "199.50", "active": False}, format="json")
    assert response.status_code == 200, response.content
    product.refresh_from_db()
    assert (product.price, product.active, product.title) == (Decimal("199.50"), False, "New sofa")


@pytest.mark.parametrize("body", ["multipart", "urlencoded"])
def test_a_product_sent_as_form_data_without_active_is_active_and_stays_so(staff_api, shelf, body):
    """A form body leaves out a boolean as an unticked box: the product was created inactive, and a PUT without the
    field hid a shown product from shoppers."""
    encode = {"multipart": {"format": "multipart"},
              "urlencoded": {"data": urlencode(NEW_PRODUCT), "content_type": "application/x-www-form-urlencoded"}}
    created = staff_api.post(PRODUCTS, **({"data": NEW_PRODUCT} | encode[body]))
    assert created.status_code == 201, created.content
    assert created.json()["active"] is True
    replaced = {**NEW_PRODUCT, "title": "Newer sofa"}
    encode["urlencoded"]["data"] = urlencode(replaced)
    response = staff_api.put(f"{PRODUCTS}NEW-1/", **({"data": replaced} | encode[body]))
    assert response.status_code == 200, response.content
    assert response.json()["active"] is True and response.json()["title"] == "Newer sofa"


@pytest.mark.parametrize("change", [{"is_active": False}, {"Price": "9.00"}, {"updated_at": "2020-01-01T00:00:00Z"}])
def test_a_field_a_product_write_does_not_take_is_a_400_naming_it(staff_api, shelf, change):
    """It was dropped without a word and the answer was a 200: the client took the product for hidden or repriced."""
    response = staff_api.patch(f"{PRODUCTS}SOFA-1/", change, format="json")
    (name,) = change
    assert response.status_code == 400 and response.json()[name][0].startswith("Unknown field; a product takes sku")
    product = Product.objects.get(sku="SOFA-1")
    assert (product.active, product.price) == (True, Decimal("499"))
    both = staff_api.patch(f"{PRODUCTS}SOFA-1/", {**change, "price": "cheap"}, format="json").json()
    assert set(both) == {name, "price"}  # named with the other fields' errors, not a round later
    listed = staff_api.patch(f"{PRODUCTS}SOFA-1/", [{"a": 1}], format="json")  # not an object: DRF's own words
    assert listed.status_code == 400 and "Expected a dictionary" in listed.json()["non_field_errors"][0]


def test_a_description_too_long_for_the_search_index_is_a_400(staff_api, shelf):
    """A few MB of words made a search document PostgreSQL refuses: a 500."""
    words = " ".join(f"word{n}" for n in range(20_000))  # 188,890 characters
    before = Product.objects.get(sku="SOFA-1").description
    response = staff_api.patch(f"{PRODUCTS}SOFA-1/", {"description": words}, format="json")
    assert response.status_code == 400 and "description" in response.json()
    assert Product.objects.get(sku="SOFA-1").description == before


@pytest.mark.parametrize(
    "change, field",
    [
        ({"sku": "SOFA-1"}, "sku"),  # taken
        ({"price": "-1"}, "price"),
        ({"price": "cheap"}, "price"),
        ({"category": "nope"}, "category"),
        ({"currency": "us"}, "currency"),
        ({"title": ""}, "title"),
    ],
)
def test_invalid_products_get_400(staff_api, shelf, change, field):
    response = staff_api.post(PRODUCTS, {**NEW_PRODUCT, **change}, format="json")
    assert response.status_code == 400 and field in response.json()


@pytest.mark.parametrize("sku", [".", ".."])
def test_skus_that_are_path_segments_get_400_naming_sku(staff_api, shelf, sku):
    """/p/./ and /p/../ resolve to other pages, so such a product's page could never be reached."""
    message = "A SKU cannot be '.' or '..': its page address would lead elsewhere."
    created = staff_api.post(PRODUCTS, {**NEW_PRODUCT, "sku": sku}, format="json")
    assert created.status_code == 400 and created.json() == {"sku": [message]}
    renamed = staff_api.patch(f"{PRODUCTS}SOFA-1/", {"sku": sku}, format="json")
    assert renamed.status_code == 400 and renamed.json() == {"sku": [message]}
    assert not Product.objects.filter(sku=sku).exists()


def _sent_as_json(body) -> dict:
    return {"data": json.dumps(body), "content_type": "application/json"}  # "\u0000", "\ud800" as JSON escapes


@pytest.mark.parametrize(
    "body",
    [
        {**NEW_PRODUCT, "category": "sofas\ud800"},  # the category lookup sent it to PostgreSQL: a 500
        {**NEW_PRODUCT, "extra": {"nested": ["\ud800"]}},
        {**NEW_PRODUCT, "extra\u0000key": 1},
    ],
    ids=["surrogate-category", "nested-surrogate", "nul-key"],
)
def test_json_strings_postgresql_cannot_hold_get_400(staff_api, shelf, body):
    """JSON carries NUL and lone surrogates as escapes, and PostgreSQL's driver fails on either. DRF's string fields
    refuse both; the body is refused whole, wherever such a string is, so that no field or view has to."""
    created = staff_api.post(PRODUCTS, **_sent_as_json(body))
    assert created.status_code == 400, created.content
    assert created.json() == {"detail": "JSON parse error - a string holds a NUL character or an unpaired surrogate."}
    assert not Product.objects.filter(sku="NEW-1").exists()


def test_json_escapes_of_characters_beyond_the_bmp_are_kept(staff_api, shelf):
    """A surrogate pair is one character, which PostgreSQL stores: only an unpaired surrogate is refused."""
    response = staff_api.post(PRODUCTS, **_sent_as_json({**NEW_PRODUCT, "title": "Sofa \U0001f6cb"}))
    assert response.status_code == 201, response.content
    assert Product.objects.get(sku="NEW-1").title == "Sofa \U0001f6cb"


def test_a_json_body_nested_too_deeply_gets_400(staff_api, shelf):
    """Python's json raises RecursionError, which DRF's parser let through: a 500."""
    response = staff_api.post(PRODUCTS, data="[" * 100_000, content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]


def test_a_lone_surrogate_category_however_it_arrives_is_an_unknown_category(staff_api, shelf):
    """Django's own request (its test client, ASGI) still decodes a query string with a declared UTF-7 charset,
    where "+2AA-" is a lone surrogate: the category lookup refuses it as it refuses NUL."""
    for path, name in [(PRODUCTS, "category"), (CATEGORIES, "parent"), (f"{PRODUCTS}SOFA-1/similar/", "category")]:
        response = staff_api.generic("GET", f"{path}?{name}=%2B2AA-", content_type="text/plain; charset=utf-7")
        assert response.status_code == 400 and name in response.json(), response.content


def test_staff_upload_an_image_which_queues_its_embedding(
    staff_api, shelf, settings, django_capture_on_commit_callbacks
):
    sent = embedding_queue(settings.CELERY_BROKER_URL)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_api.post(f"{PRODUCTS}SOFA-1/images/", {"image": uploaded_image(size=(400, 300))})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["width"], body["height"], body["position"], body["embedding_status"]) == (400, 300, 0, "pending")
    image = ProductImage.objects.get(pk=body["id"])
    assert image.product.sku == "SOFA-1" and image.file.storage.exists(image.file.name)
    assert sent() == [[image.pk]]  # one task, sent after the commit, for exactly this image


def test_a_photo_sent_with_a_position_another_holds_goes_before_it(staff_api, shelf):
    """Sent at position 0, a photo stayed behind the cover it was meant to replace (a tie goes to the older photo),
    both answered as at 0."""
    def sent(colour, **position):
        response = staff_api.post(f"{PRODUCTS}SOFA-1/images/", {"image": uploaded_image(color=colour), **position})
        assert response.status_code == 201, response.content
        return response.json()["id"]

    cover, second = sent((200, 0, 0)), sent((0, 200, 0))
    new_cover = sent((0, 0, 200), position=0)
    product = staff_api.get(f"{PRODUCTS}SOFA-1/").json()
    assert [(image["id"], image["position"]) for image in product["images"]] == [
        (new_cover, 0), (cover, 1), (second, 2)]
    assert product["image_url"].endswith(ProductImage.objects.get(pk=new_cover).file.url)  # the cover
    between = sent((200, 200, 0), position=5)  # free: taken as it is, the others left alone
    assert list(ProductImage.objects.filter(product__sku="SOFA-1").values_list("pk", "position")) == [
        (new_cover, 0), (cover, 1), (second, 2), (between, 5)]


@pytest.mark.parametrize("stem", ["\U0001d429" * 70, "\U00020000" * 100], ids=["70-math-letters", "100-cjk"])
def test_staff_upload_of_a_photo_whose_name_is_long_in_bytes_is_stored(staff_api, shelf, stem):
    """Django cuts a stored name to 100 characters, but a file system's limit is 255 bytes: 70 characters of 4 bytes
    each failed with "File name too long", a 500. The same name twice makes the second one longer still."""
    for n in range(2):  # two photos (a photo sent again is not stored twice) of the same name
        response = staff_api.post(f"{PRODUCTS}SOFA-1/images/",
                                  {"image": uploaded_image(f"{stem}.jpg", color=(100 * n, 0, 0))})
        assert response.status_code == 201, response.content
        image = ProductImage.objects.get(pk=response.json()["id"])
        for stored in (image.file, image.thumbnail):
            assert stored.storage.exists(stored.name)
        assert image.file.name.endswith(".jpg") and image.thumbnail.name.endswith(".webp")
        assert image.file.name.split("/")[-1].startswith(stem[:10])
    assert ProductImage.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_staff_upload_to_a_product_deleted_while_its_photo_was_checked_is_a_404_that_stores_nothing(
    staff_api, shelf, media_root, monkeypatch
):
    """The photo row was refused only at the commit (its product gone): a 500, and its files left on disk."""
    prepare = catalog_services.image_prepare

    def deleted_meanwhile(file):
        prepared = prepare(file)
        catalog_services.products_delete(products=Product.objects.filter(sku="SOFA-1"))
        return prepared

    monkeypatch.setattr(catalog_services, "image_prepare", deleted_meanwhile)
    response = staff_api.post(f"{PRODUCTS}SOFA-1/images/", {"image": uploaded_image()})

    assert (response.status_code, response.json()) == (404, {"detail": "No such product."})
    assert not ProductImage.objects.exists()
    assert not [path for path in media_root.rglob("*") if path.is_file()]


@pytest.mark.parametrize("name", ["📷.jpg", "#.png", ".jpg", "★★"])
def test_staff_upload_of_a_photo_named_in_symbols_alone_is_stored_under_a_visible_name(staff_api, shelf, name):
    """Storage drops every character of "📷" or "#" from a name: the photo was stored as the hidden ".jpg"."""
    response = staff_api.post(f"{PRODUCTS}SOFA-1/images/", {"image": uploaded_image(name)})
    assert response.status_code == 201, response.content
    image = ProductImage.objects.get(pk=response.json()["id"])
    stored, thumbnail = (file.name.split("/")[-1] for file in (image.file, image.thumbnail))
    assert re.fullmatch(r"(image|jpg)\.(jpg|png)", stored) and re.fullmatch(r"(image|jpg)\.webp", thumbnail)


def test_a_product_deleted_while_its_change_was_checked_is_a_404(staff_api, shelf, monkeypatch):
    """Read, then deleted by an admin before the change locked it: a 500."""
    update = catalog_services.product_update

    def deleted_meanwhile(*, product, **fields):
        catalog_services.products_delete(products=[product])
        return update(product=product, **fields)

    monkeypatch.setattr(catalog_services, "product_update", deleted_meanwhile)
    response = staff_api.patch(f"{PRODUCTS}SOFA-1/", {"price": "1.00"}, format="json")
    assert (response.status_code, response.json()) == (404, {"detail": "No such product."})


def test_staff_upload_of_a_non_image_is_a_400(staff_api, shelf):
    upload = SimpleUploadedFile("photo.jpg", b"GIF89a but not really", content_type="image/gif")
    response = staff_api.post(f"{PRODUCTS}SOFA-1/images/", {"image": upload})
    assert response.status_code == 400 and "not a readable image" in response.json()["image"][0]
    assert not ProductImage.objects.exists()


def test_token_auth_works_for_staff(api, staff, shelf):
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    assert api.post(PRODUCTS, NEW_PRODUCT, format="json").status_code == 201
    assert "LAMP-OLD" in listed(api.get(PRODUCTS))  # token-authenticated staff see inactive products too


# --- Schema and docs ------------------------------------------------------------------------------------


def test_openapi_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    assert "multipart/form-data" in schema and "format: binary" in schema


def test_schema_and_docs_pages_are_served_without_a_cdn(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/search/", "/api/v1/products/{sku}/similar/", "/api/v1/products/{sku}/images/"} <= set(paths)
    docs = api.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "https://" not in html  # every asset is served locally


def test_the_schema_marks_what_every_answer_holds_and_names_the_refusals(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]
    assert {"currency", "active"} <= set(components["ProductListItem"]["required"])
    assert {"description", "images", "active"} <= set(components["Product"]["required"])
    assert {"position", "embedding_status"} <= set(components["ProductImage"]["required"])
    product = schema["paths"]["/api/v1/products/{sku}/"]
    assert "404" in product["get"]["responses"]
    assert {"400", "401", "403", "404"} <= set(product["patch"]["responses"])
    search_body = schema["paths"]["/api/v1/search/"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/x-www-form-urlencoded"} <= set(search_body)
    # What any operation may answer beside its own: only declared statuses are in a schema.
    paths = schema["paths"]
    assert {"400", "401", "404", "429"} <= set(paths["/api/v1/products/"]["get"]["responses"])
    assert {"401", "404", "429"} <= set(paths["/api/v1/categories/{slug}/"]["get"]["responses"])
    assert {"411", "413", "415", "429"} <= set(paths["/api/v1/search/"]["post"]["responses"])
    assert {"411", "413", "415"} <= set(paths["/api/v1/products/{sku}/images/"]["post"]["responses"])


def test_the_shops_currency_is_the_one_most_products_are_in_and_one_currency_costs_no_count(shelf):
    from catalog.selectors import product_currencies

    with CaptureQueriesContext(connection) as queries:
        assert product_currencies() == ["USD"]
    assert len(queries) == 1 and "GROUP BY" not in queries[0]["sql"]  # one probe of the index per currency
    for sku in ("EU-1", "EU-2", "EU-3", "EU-4"):
        ProductFactory(sku=sku, category=Category.objects.get(slug="lamps"), currency="EUR")
    ProductFactory(sku="GB-1", category=Category.objects.get(slug="lamps"), currency="GBP", active=False)
    assert product_currencies() == ["EUR", "USD"]  # 4 against 4 shown: ties by code; a hidden product counts not


def test_two_photos_in_one_search_are_refused_not_one_searched_silently(api, catalog, test_images):
    """The last file was searched and the first ignored, with nothing said."""
    response = api.post(SEARCH, {"image": [uploaded_file(test_images / "tshirt-turquoise-front.jpg"),
                                           uploaded_file(test_images / "chair-shell-black.jpg")]}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"image": ["Send one photo: this request has 2."]}


def test_a_currency_is_written_in_any_case_as_it_is_read(staff_api, api, shelf):
    """Reads took "eur"; writes refused "usd" with "in capitals", the words reads gave for "xx" too."""
    created = staff_api.post("/api/v1/products/", {"sku": "LOW-1", "title": "Lamp", "price": "9.00",
                                                   "currency": "usd", "category": "lamps"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["currency"] == "USD" and Product.objects.get(sku="LOW-1").currency == "USD"
    refused = api.get("/api/v1/products/", {"min_price": "1", "currency": "xx"})
    assert refused.status_code == 400
    assert refused.json() == {"currency": ["Enter a three-letter ISO 4217 code, such as USD."]}


@pytest.mark.parametrize("code", ["ZZZ", "zzz", "XXX"])
def test_a_currency_is_one_prices_are_in(staff_api, shelf, code):
    """Any three letters were taken: a lamp "15.00 ZZZ" showed in the shop and left every price filter in USD."""
    refused = staff_api.patch("/api/v1/products/SOFA-1/", {"currency": code}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"currency": ["Enter the code of a currency prices are in (ISO 4217), such as USD."]}
    assert Product.objects.get(sku="SOFA-1").currency == "USD"
    assert staff_api.patch("/api/v1/products/SOFA-1/", {"currency": "chf"}, format="json").json()["currency"] == "CHF"


def test_a_product_stored_in_a_code_no_longer_taken_can_still_be_changed(staff_api, shelf):
    """Checked on every save, the rule made a product stored in "RMB" before it unsaveable, a new price included."""
    Product.objects.filter(sku="SOFA-1").update(currency="RMB")
    changed = staff_api.patch("/api/v1/products/SOFA-1/", {"price": "99.00"}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["price"], changed.json()["currency"]) == ("99.00", "RMB")


@pytest.mark.parametrize(("page", "status"), [("abc", 400), ("-1", 400), ("0", 400), ("1.5", 400), ("999", 404),
                                              ("9" * 18, 404), ("1" * 4301, 400), ("last", 200)])
def test_a_page_that_is_no_number_is_a_bad_request_and_one_past_the_end_not_found(api, shelf, page, status):
    response = api.get("/api/v1/products/", {"page": page})
    assert response.status_code == status, response.content
    if status == 400:
        assert response.json() == {"page": ["Ensure this is a whole number of 1 or more (or last)."]}
