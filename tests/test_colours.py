"""Dominant colours: computed from the product's own pixels (not its background) on real photos and snapshots,
stored when a photo is embedded, backfilled by the sweep, and used to filter and facet visual matches."""

from __future__ import annotations

import io

import numpy as np
import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from bench.shopper import snapshot
from catalog import services as catalog_services
from catalog.models import Category, EmbeddingStatus, ProductImage
from catalog.page_cache import catalog_changed
from search.colours import FAMILIES, dominant_colours, pixel_families
from search.models import ImageEmbedding
from search.preprocessing import load_rgb
from search.services import images_embed
from search.sweep import embedding_sweep
from tests.factories import uploaded_file


@pytest.mark.parametrize("photo, colour", [
    ("chair-armchair-blue.jpg", "blue"),  # in a room: no plain background
    ("chair-shell-black.jpg", "black"),  # on a light grey floor and wall
    ("shoe-running-1.jpg", "black"),  # a black shoe on white: the white is background, not the shoe
    ("shoe-running-2.jpg", "black"),
    ("shoe-plimsoll-yellow-side.jpg", "yellow"),
    ("shoe-plimsoll-yellow-angle.jpg", "yellow"),
    ("tshirt-turquoise-front.jpg", "blue"),
])
def test_the_main_colour_of_real_photos_is_the_products(test_images, photo, colour):
    assert dominant_colours(load_rgb(test_images / photo, draft_size=256))[0] == colour


@pytest.mark.parametrize("photo, colour", [("shoe-plimsoll-yellow-angle.jpg", "yellow"),
                                           ("tshirt-turquoise-back.jpg", "blue")])
def test_shopper_snapshots_with_backgrounds_still_show_the_products_colour(test_images, photo, colour):
    rng = np.random.default_rng(3)
    with Image.open(test_images / photo) as original:
        original.load()
        found = [dominant_colours(load_rgb(io.BytesIO(snapshot(original, rng)))) for _ in range(4)]
    assert all(colour in colours for colours in found), found


def test_a_plain_background_never_counts():
    image = Image.new("RGB", (200, 200), (255, 255, 255))
    image.paste((200, 30, 30), (60, 60, 140, 140))  # a small red product on a large white background
    assert dominant_colours(image) == ["red"]


def test_pixel_families_name_the_basic_colours():
    samples = {"red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 220, 40), "green": (40, 160, 60),
               "blue": (30, 80, 220), "purple": (120, 50, 200), "pink": (240, 120, 190), "brown": (110, 70, 30),
               "black": (20, 20, 22), "white": (250, 250, 250), "grey": (150, 150, 150), "beige": (225, 205, 170)}
    pixels = np.array([list(samples.values())], dtype=np.int16)
    assert [FAMILIES[i] for i in pixel_families(pixels)[0]] == list(samples)


@pytest.mark.django_db
def test_colours_are_stored_when_embedded_and_copied_onto_the_vector_rows(catalog):
    colours = dict(ProductImage.objects.values_list("product__sku", "colours"))
    assert colours["CHAIR-1"][0] == "blue" and colours["TEE-1"][0] == "blue" and colours["RUN-1"][0] == "black"
    rows = dict(ImageEmbedding.objects.values_list("product__sku", "colour"))
    assert rows == {sku: found[0] for sku, found in colours.items()}


@pytest.mark.django_db
def test_the_sweep_backfills_colours_of_older_photos(catalog):
    before = dict(ProductImage.objects.values_list("pk", "colours"))
    ProductImage.objects.update(colours=None)  # as photos embedded before colours existed
    assert set(ImageEmbedding.objects.values_list("colour", flat=True)) == {""}
    assert embedding_sweep()["coloured"] == len(before)
    assert dict(ProductImage.objects.values_list("pk", "colours")) == before
    assert "" not in set(ImageEmbedding.objects.values_list("colour", flat=True))
    assert embedding_sweep()["coloured"] == 0  # bounded, and nothing left to do


@pytest.mark.django_db
@pytest.mark.parametrize("error", [TimeoutError, SoftTimeLimitExceeded])
def test_a_photo_whose_file_stops_the_backfill_does_not_hold_up_the_colours_of_the_others(catalog, monkeypatch, error):
    """The backfill began from the first uncoloured photo on every sweep: one file the storage never answered for
    (or whose reading outlasted the sweep's time limit, or killed the worker) stopped it there, and no photo after it
    got its colours. Such a photo gets an empty list, as an unreadable file does, and the others their colours."""
    from django.core.files.storage import FileSystemStorage

    from django.core.cache import cache

    from search.sweep import COLOUR_BACKFILL_AFTER_KEY, image_colours_backfill

    cache.delete(COLOUR_BACKFILL_AFTER_KEY)  # a place kept by an earlier run, whose ids this one reuses
    ProductImage.objects.update(colours=None)
    photos = ProductImage.objects.count()
    stuck = ProductImage.objects.order_by("pk")[1]
    real_open = FileSystemStorage._open

    def times_out(storage, name, mode="rb"):
        if name == stuck.file.name:
            # Kept before the photo is read: a decoder that kills the worker here is known to the next run too.
            assert cache.get(COLOUR_BACKFILL_AFTER_KEY) == (stuck.pk, True)
            raise error("the storage did not answer")
        return real_open(storage, name, mode)

    monkeypatch.setattr(FileSystemStorage, "_open", times_out)
    with pytest.raises(error):
        image_colours_backfill()
    assert ProductImage.objects.filter(colours__isnull=True).count() == photos - 1  # the first, before it

    # The next sweep (or the same one, its message back after its worker died): not it again, the rest after it.
    assert image_colours_backfill() == photos - 2
    assert ProductImage.objects.get(pk=stuck.pk).colours == []
    assert not ProductImage.objects.filter(colours__isnull=True).exists()
    assert cache.get(COLOUR_BACKFILL_AFTER_KEY)[1] is False  # the run that ended kept no photo as being read


@pytest.mark.django_db
def test_a_sweep_that_finds_another_running_leaves_the_work_to_it(catalog):
    """Two sweeps at once (one outlasting its interval): the second took the photo the first was reading colours
    from for one that had stopped a sweep, and gave it no colours for good."""
    import psycopg
    from django.core.cache import cache
    from django.db import connection

    from search import sweep
    from tests.support import database_url

    ProductImage.objects.update(colours=None)
    being_read = ProductImage.objects.order_by("pk")[1]
    cache.set(sweep.COLOUR_BACKFILL_AFTER_KEY, (being_read.pk, True), None)  # the running sweep's place
    with psycopg.connect(database_url(connection.settings_dict), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [sweep.SWEEP_LOCK])
        assert sweep.embedding_sweep() == {"skipped": "another sweep is running"}
        assert ProductImage.objects.get(pk=being_read.pk).colours is None
        assert not ProductImage.objects.filter(colours__isnull=False).exists()
        other.execute("SELECT pg_advisory_unlock(%s)", [sweep.SWEEP_LOCK])
    cache.set(sweep.COLOUR_BACKFILL_AFTER_KEY, (being_read.pk, False), None)  # that sweep ended
    assert sweep.embedding_sweep()["coloured"] > 0


@pytest.mark.django_db
def test_the_backfill_leaves_failed_photos_alone(catalog, monkeypatch):
    """A photo failed for killing its worker (search/lost_runs.py) has no colours: the backfill read it again every
    minute, and each read killed the worker running the sweep."""
    from django.core.cache import cache

    from search import sweep

    cache.delete(sweep.COLOUR_BACKFILL_AFTER_KEY)
    failed = ProductImage.objects.order_by("pk")[1]
    photos = ProductImage.objects.update(colours=None)
    ProductImage.objects.filter(pk=failed.pk).update(embedding_status=EmbeddingStatus.FAILED,
                                                     embedding_error="worker lost")
    read = []
    real_colours = sweep._photo_colours
    monkeypatch.setattr(sweep, "_photo_colours", lambda image: read.append(image.pk) or real_colours(image))

    assert sweep.image_colours_backfill() == photos - 1
    assert failed.pk not in read and len(read) == photos - 1


@pytest.fixture
def api(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "10000/min"}}
    return APIClient()


@pytest.mark.django_db
def test_the_colour_filter_returns_exactly_the_matches_of_that_colour(api, catalog, test_images, settings):
    def search(**fields):
        response = api.post("/api/v1/search/", {"image": uploaded_file(test_images / "chair-cafe-pair.jpg"),
                                                "threshold": "0", **fields}, format="multipart")
        assert response.status_code == 200, response.content
        return response.json()

    everything = search()
    main = dict(ImageEmbedding.objects.values_list("product__sku", "colour"))
    expected = sorted(sku for sku, colour in main.items() if colour == "blue")
    assert expected == ["CHAIR-1", "TEE-1"]
    assert sorted(r["product"]["sku"] for r in search(colour="blue")["results"]) == expected
    assert sorted(r["product"]["sku"] for r in search(colour=" Blue")["results"]) == expected  # any case, as currency
    counts = {facet["colour"]: facet["count"] for facet in everything["facets"]["colours"]}
    assert counts == {colour: list(main.values()).count(colour) for colour in set(main.values())}
    assert [f["count"] for f in everything["facets"]["colours"]] == sorted(counts.values(), reverse=True)
    bad = api.post("/api/v1/search/", {"image": uploaded_file(test_images / "chair-cafe-pair.jpg"), "colour": "teal"},
                   format="multipart")
    assert bad.status_code == 400 and list(bad.json()) == ["colour"]
    settings.SEARCH_MIN_SCORE = 0  # every neighbour a match: a refined More like this keeps only matches
    similar = api.get("/api/v1/products/CHAIR-1/similar/", {"scope": "all", "colour": "black"})
    assert similar.status_code == 200
    black = sorted(sku for sku, colour in main.items() if colour == "black" and sku != "CHAIR-1")
    assert sorted(r["product"]["sku"] for r in similar.json()["results"]) == black
    assert api.get("/api/v1/products/CHAIR-1/similar/", {"colour": "teal"}).json() == {
        "colour": ['"teal" is not a valid choice.']}


@pytest.mark.django_db
def test_swatches_on_the_results_page_filter_by_colour(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0
    page = client.post("/search/photo/", {"photo": uploaded_file(test_images / "chair-cafe-pair.jpg")})
    html = page.content.decode()
    assert 'data-colour="blue"' in html and 'data-colour="black"' in html
    blue = client.get("/search/photo/", {"query": page.context["token"], "colour": "blue"})
    assert sorted(item.product.sku for item in blue.context["search"].results) == ["CHAIR-1", "TEE-1"]
    assert 'name="colour" value="blue"' in blue.content.decode()  # the price/sort form keeps the colour
    assert "Any colour" in blue.content.decode()


@pytest.mark.django_db
def test_the_product_page_lists_the_same_look_in_other_colours(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0.15
    with Image.open(test_images / "tshirt-turquoise-front.jpg") as photo:
        red, green, blue = photo.convert("RGB").split()
        buffer = io.BytesIO()
        Image.merge("RGB", (blue, red, green)).save(buffer, "JPEG", quality=90)  # the same T-shirt, dyed
    tops = Category.objects.get(name="Tops")
    dyed = catalog_services.product_create(sku="TEE-2", title="The same T-shirt, dyed", category=tops, price="15")
    image = catalog_services.product_image_add(
        product=dyed, file=SimpleUploadedFile("dyed.jpg", buffer.getvalue(), content_type="image/jpeg"))
    images_embed(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.colours[0] != "blue"

    page = client.get("/p/TEE-1/")
    assert [item.product.sku for item in page.context["other_colours"]] == ["TEE-2"]
    assert "Same look, other colours" in page.content.decode()
    # Each product once on the page: the dyed T-shirt is not listed under More like this again (the only other top).
    assert page.content.decode().count('href="/p/TEE-2/"') == 1
    everywhere = [item.product.sku for item in client.get("/p/TEE-1/", {"scope": "all"}).context["similar_products"]]
    assert everywhere and "TEE-2" not in everywhere
    # The blue armchair: the black shell chair passes this cut-off, in another colour; the T-shirts are elsewhere.
    assert [item.product.sku for item in client.get("/p/CHAIR-1/").context["other_colours"]] == ["CHAIR-2"]
    settings.SEARCH_MIN_SCORE = 0.9
    catalog_changed()  # not a change pages are retired for: an operator's setting comes with a restart
    assert client.get("/p/CHAIR-1/").context["other_colours"] == []  # only close ones
