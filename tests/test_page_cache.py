"""Anonymous shopper pages come from the cache until the catalog changes, and never show a stale catalog."""

import pytest
from django.urls import reverse

from catalog import services
from catalog.models import ProductImage
from search.models import ImageEmbedding
from tests.factories import uploaded_file

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


def _similar_skus(response) -> list[str]:
    return [result["product"]["sku"] for result in response.json()["results"]]


def test_a_product_page_is_served_from_the_cache_until_the_product_changes(client, catalog):
    chair = catalog["CHAIR-1"]
    url = chair.get_absolute_url()

    first, second = client.get(url), client.get(url)
    assert (first["X-Cache"], second["X-Cache"]) == ("miss", "hit")
    assert second.content == first.content

    services.product_update(product=chair, title="Reupholstered armchair")
    changed = client.get(url)
    assert changed["X-Cache"] == "miss"
    assert b"Reupholstered armchair" in changed.content


def test_parameters_a_page_does_not_read_neither_miss_the_cache_nor_store_another_copy(client, catalog):
    """Every query string was a key of its own: a campaign's link (?utm_source=...) always missed, and made-up
    parameters filled the cache, pushing out what shoppers need kept (their photo searches' refinements)."""
    import redis
    from django.conf import settings

    stored = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])

    def pages() -> int:
        return len(stored.keys(f"{settings.CACHES['default']['KEY_PREFIX']}:*page:*"))

    chair = catalog["CHAIR-1"]
    url = chair.get_absolute_url()
    assert client.get(url)["X-Cache"] == "miss"
    pages_before = pages()
    for junk in ("?utm_source=newsletter&utm_campaign=spring", "?fbclid=abc", "?x=1", "?x=2&y=3"):
        response = client.get(url + junk)
        assert response["X-Cache"] == "hit", junk
        assert b"utm_source" not in response.content and b"fbclid" not in response.content
    assert pages() == pages_before

    # What the page reads keys it, whatever the order it comes in.
    scoped = client.get(f"{url}?scope=all&sort=price")
    assert scoped["X-Cache"] == "miss" and scoped.content != client.get(url).content
    assert client.get(f"{url}?sort=price&utm_medium=email&scope=all")["X-Cache"] == "hit"
    category = chair.category.get_absolute_url()
    # A name's values are read in their order (the last one counts): two orders are two pages.
    assert client.get(f"{category}?page=1&page=2")["X-Cache"] == "miss"
    assert client.get(f"{category}?page=2&page=1")["X-Cache"] == "miss"
    assert client.get(f"{category}?sort=newest&page=1")["X-Cache"] == "miss"
    assert client.get(f"{category}?page=1&ref=ad&sort=newest")["X-Cache"] == "hit"
    similar = reverse("api:product-similar", args=[chair.sku])
    assert client.get(f"{similar}?limit=3")["X-Cache"] == "miss"
    answer = client.get(f"{similar}?utm_source=x&limit=3")
    assert answer["X-Cache"] == "hit" and len(answer.json()["results"]) <= 3


def test_a_product_page_whose_more_like_this_failed_is_not_kept(client, catalog, monkeypatch):
    """The page answers 200 with "can't be shown right now": kept, every shopper got it until the catalog
    changed."""
    from catalog import hooks

    url = catalog["CHAIR-1"].get_absolute_url()
    working = hooks._similar_products

    def failing(**kwargs):
        raise RuntimeError("canceling statement due to statement timeout")

    monkeypatch.setattr(hooks, "_similar_products", failing)
    for _ in range(2):
        broken = client.get(url)
        assert broken.status_code == 200 and "X-Cache" not in broken  # not from the cache, and not stored
        assert "no-store" in broken["Cache-Control"]
    monkeypatch.setattr(hooks, "_similar_products", working)
    assert client.get(url)["X-Cache"] == "miss" and client.get(url)["X-Cache"] == "hit"


def test_vectors_of_a_space_being_built_leave_cached_pages_alone(client, catalog, settings):
    """Every stored batch retired every cached page: during a rebuild, of hours, shoppers got no cached page."""
    from search.services import images_embed
    from search.sweep import embedding_space_sync

    url = catalog["CHAIR-1"].get_absolute_url()
    settings.EMBEDDING_MODEL = "efficientnet-lite2"
    embedding_space_sync()  # building; search stays on the catalog's space
    assert client.get(url)["X-Cache"] == "miss"

    images_embed(image_ids=list(ProductImage.objects.values_list("pk", flat=True)[:2]))
    assert client.get(url)["X-Cache"] == "hit"


def test_a_new_product_shows_on_its_category_page_at_once(client, catalog):
    chairs = catalog["CHAIR-1"].category
    url = reverse("catalog:category", args=[chairs.slug])
    client.get(url)
    assert client.get(url)["X-Cache"] == "hit"

    services.product_create(sku="CHAIR-9", title="Rocking chair", category=chairs, price="99.00")
    assert b"Rocking chair" in client.get(url).content


def test_more_like_this_changes_when_a_new_photo_is_embedded(client, catalog, test_images):
    from search.services import images_embed

    url = reverse("api:product-similar", args=["CHAIR-1"]) + "?scope=all"
    before = client.get(url)
    assert client.get(url)["X-Cache"] == "hit"
    assert "CHAIR-3" not in _similar_skus(before)

    chairs = catalog["CHAIR-1"].category
    product = services.product_create(sku="CHAIR-3", title="Another armchair", category=chairs, price="130.00")
    image = services.product_image_add(product=product, file=uploaded_file(test_images / "chair-armchair-blue.jpg"))
    images_embed(image_ids=[image.pk])
    assert ImageEmbedding.objects.filter(image=image).exists()

    after = client.get(url)
    assert after["X-Cache"] == "miss"
    assert _similar_skus(after)[0] == "CHAIR-3"  # the same photo: the nearest of all


def test_a_product_page_cached_before_its_photo_was_embedded_is_retired_by_the_vector(client, catalog, test_images):
    from search.services import images_embed

    chairs = catalog["CHAIR-1"].category
    product = services.product_create(sku="CHAIR-3", title="Another armchair", category=chairs, price="130.00")
    image = services.product_image_add(product=product, file=uploaded_file(test_images / "chair-armchair-blue.jpg"))
    url = product.get_absolute_url()
    client.get(url)
    waiting = client.get(url)
    assert waiting["X-Cache"] == "hit"
    assert b"Similar products appear once" in waiting.content

    images_embed(image_ids=[image.pk])  # what the worker does: vectors are stored in bulk, with no model signal
    ready = client.get(url)
    assert ready["X-Cache"] == "miss"
    assert b"Similar products appear once" not in ready.content
    assert catalog["CHAIR-1"].get_absolute_url().encode() in ready.content  # its More like this


def test_a_photo_that_failed_or_is_embedded_again_retires_cached_pages(client, catalog, test_images):
    """A product page said "Similar products appear once ..." for a cache lifetime after its photo had failed, and
    other pages listed a product whose vectors the admin's re-embed had dropped."""
    from search.services import image_embedding_fail, image_embedding_mark_pending

    chairs = catalog["CHAIR-1"].category
    product = services.product_create(sku="CHAIR-3", title="Another armchair", category=chairs, price="130.00")
    image = services.product_image_add(product=product, file=uploaded_file(test_images / "chair-armchair-blue.jpg"))
    url = product.get_absolute_url()
    assert client.get(url)["X-Cache"] == "miss"
    waiting = client.get(url)
    assert waiting["X-Cache"] == "hit" and b"Similar products appear once" in waiting.content
    image_embedding_fail(image_id=image.pk, error="OSError: truncated file")
    failed = client.get(url)
    assert failed["X-Cache"] == "miss" and b"Similar products appear once" not in failed.content

    neighbour = catalog["CHAIR-1"].get_absolute_url()
    assert client.get(neighbour)["X-Cache"] == "miss" and client.get(neighbour)["X-Cache"] == "hit"
    image_embedding_mark_pending(image_ids=[catalog["CHAIR-2"].images.get().pk])  # in its More like this
    assert client.get(neighbour)["X-Cache"] == "miss"


def test_deleting_a_photo_retires_cached_pages(client, catalog):
    chair = catalog["CHAIR-1"]
    url = chair.get_absolute_url()
    assert client.get(url)["X-Cache"] == "miss" and client.get(url)["X-Cache"] == "hit"
    services.product_image_delete(image=chair.images.get())
    assert client.get(url)["X-Cache"] == "miss"


def test_colours_filled_in_by_the_sweep_retire_cached_pages(client, catalog):
    """The backfill's bulk update sends no signal; its colours change the product page's "other colours"."""
    from search.sweep import image_colours_backfill

    ProductImage.objects.update(colours=None)  # as photos embedded before colours existed
    url = catalog["TEE-1"].get_absolute_url()
    assert client.get(url)["X-Cache"] == "miss" and client.get(url)["X-Cache"] == "hit"
    assert image_colours_backfill() == len(catalog)
    assert client.get(url)["X-Cache"] == "miss"


def test_signed_in_users_and_sessions_bypass_the_cache(client, admin_user, catalog):
    url = catalog["CHAIR-1"].get_absolute_url()
    assert [client.get(url)["X-Cache"] for _ in range(2)] == ["miss", "hit"]
    client.force_login(admin_user)
    assert "X-Cache" not in client.get(url)
    client.logout()
    client.cookies["messages"] = "a message waiting for this visitor"
    assert "X-Cache" not in client.get(url)


def test_other_accept_headers_and_head_requests_are_served_the_stored_page(client, catalog):
    """Each Accept header keyed a page of its own, and a HEAD was never served from the cache: either rendered a
    product page afresh (two vector searches) for anyone who asked."""
    url = catalog["CHAIR-1"].get_absolute_url()
    assert client.head(url)["X-Cache"] == "miss"  # the page is rendered and kept, as for a GET
    first = client.get(url, HTTP_ACCEPT="text/html")
    assert first["X-Cache"] == "hit" and b"</html>" in first.content
    for accept in ("x/1", "*/*", ""):
        assert client.get(url, HTTP_ACCEPT=accept)["X-Cache"] == "hit", accept
    assert client.head(url)["X-Cache"] == "hit"
    similar = reverse("api:product-similar", args=[catalog["CHAIR-1"].sku])  # DRF's answer depends on it
    assert client.get(similar, HTTP_ACCEPT="application/json")["X-Cache"] == "miss"
    indented = client.get(similar, HTTP_ACCEPT="application/json; indent=4")
    assert indented["X-Cache"] == "miss" and b"\n    " in indented.content


def test_pages_rendered_for_one_client_are_limited_and_stored_ones_are_not_counted(client, catalog, settings):
    """A new value of any parameter a page reads renders it afresh: without a limit anyone could keep the database
    busy through the pages, where the API's reads of the same were limited."""
    from django.core.cache import cache

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"pages": "3/min"}}
    cache.delete_many(["throttle_pages_127.0.0.1", "throttle_pages_192.0.2.7"])
    url = catalog["CHAIR-1"].get_absolute_url()
    assert client.get(url)["X-Cache"] == "miss"  # 1
    assert all(client.get(url)["X-Cache"] == "hit" for _ in range(5))  # stored: not counted
    assert client.get(url, {"scope": "all"}).status_code == 200  # 2
    assert client.get("/search/", {"q": "chair"}).status_code == 200  # 3
    for refused in (client.get(url, {"sort": "price"}), client.get("/search/", {"q": "sofa"})):
        assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
        assert "That was a lot of pages at once" in refused.content.decode()
    assert client.get(url)["X-Cache"] == "hit"  # what is stored is still served
    assert client.get(url, {"sort": "price"}, REMOTE_ADDR="192.0.2.7").status_code == 200  # another client


def test_a_client_that_just_wrote_bypasses_the_cache(client, catalog):
    """The cookie that keeps a client that wrote on the primary: a stored page from before its write was served.
    Only as the site signed it: anyone could send all their reads past the cache, and to the primary."""
    from django.http import HttpResponse

    from config.db_router import STICKY_COOKIE

    url = catalog["CHAIR-1"].get_absolute_url()
    client.get(url)
    assert client.get(url)["X-Cache"] == "hit"
    client.cookies[STICKY_COOKIE] = "1"
    assert client.get(url)["X-Cache"] == "hit"
    signed = HttpResponse()
    signed.set_signed_cookie(STICKY_COOKIE, "1", salt=STICKY_COOKIE)
    client.cookies[STICKY_COOKIE] = signed.cookies[STICKY_COOKIE].value
    assert client.get(url)["X-Cache"] == "miss"


@pytest.mark.django_db(transaction=True)
def test_a_change_rolled_back_does_not_keep_pages_uncached_for_good(client, catalog):
    """The version written before the commit is one no replica reaches; rolled back, nothing replaced it, and no page
    read from a replica was stored until the next change."""
    from django.core.cache import cache
    from django.db import transaction

    from catalog import page_cache
    from config import db_router

    with pytest.raises(RuntimeError), transaction.atomic():
        page_cache.catalog_changed()
        raise RuntimeError("a photo refused: the batch rolls back")
    assert page_cache._position(page_cache._version()) == db_router.UNREACHED_WAL_POSITION
    key = cache.make_and_validate_key(page_cache.VERSION_KEY)
    assert 0 < cache._cache.get_client(key).ttl(key) <= page_cache.UNCOMMITTED_VERSION_SECONDS  # it expires ...
    cache.delete(page_cache.VERSION_KEY)  # ... as here, without waiting a minute
    assert page_cache._position(page_cache._version()) != db_router.UNREACHED_WAL_POSITION


def test_a_replicas_reads_never_count_as_replayed_against_a_version_without_a_position():
    """A worker configured without replicas wrote versions with no position: a lagging replica's page then counted
    as up to date and was stored."""
    from config import db_router

    token = db_router._routing.set(db_router._Routing(replicas_allowed=True, chosen="replica_1", replayed=10**12))
    try:
        assert not db_router.reads_replayed("")
        assert db_router.reads_replayed("0/10")
    finally:
        db_router._routing.reset(token)
    assert db_router.reads_replayed("")  # the primary's reads: always


@pytest.mark.parametrize("status_url", ["/p/NO-SUCH-SKU/", "/c/no-such-category/"])
def test_errors_are_not_cached(client, db, status_url):
    assert client.get(status_url).status_code == 404
    assert "X-Cache" not in client.get(status_url)


def test_pages_still_render_when_the_cache_server_is_down(client, catalog, settings):
    # A port nothing listens on: every cache call fails; the page is rendered as if there were no cache.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    chair = catalog["CHAIR-1"]
    response = client.get(chair.get_absolute_url())
    assert response.status_code == 200 and "X-Cache" not in response
    services.product_update(product=chair, title="Saved while the cache is down")  # the write is not refused
    assert b"Saved while the cache is down" in client.get(chair.get_absolute_url()).content


def test_a_page_with_a_csrf_token_in_a_form_is_not_kept_for_the_next_visitor(db):
    """The token's cookie is set by the CSRF middleware after the view returns, where the cache could not see it:
    a cached page with a form would have handed one visitor's token to everyone."""
    from django.contrib.auth.models import AnonymousUser
    from django.template import engines
    from django.template.response import TemplateResponse
    from django.test import RequestFactory

    from catalog.page_cache import cache_catalog_page

    form = engines["django"].from_string('<form method="post">{% csrf_token %}</form>')

    @cache_catalog_page()
    def page_with_a_form(request):
        return TemplateResponse(request, form)

    @cache_catalog_page()
    def page_without(request):
        return TemplateResponse(request, engines["django"].from_string("<p>A sofa</p>"))

    def served(view, path):
        request = RequestFactory().get(path)
        request.user = AnonymousUser()  # as the middleware sets it
        response = view(request)
        response.render()
        return response["X-Cache"]

    assert [served(page_with_a_form, "/form-page/") for _ in range(2)] == ["miss", "miss"]
    assert [served(page_without, "/plain-page/") for _ in range(2)] == ["miss", "hit"]

