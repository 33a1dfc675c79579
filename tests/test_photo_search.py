"""Search by photo: real model, real pgvector; regions, thresholds, category filters through HNSW."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image

from search.query import Box, InvalidBox
from search.selectors import photo_search, search_space_model, similar_products_to_vector
from tests.factories import clustered_catalog, collage, jpeg_upload, uploaded_file

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


def _skus(search):
    return [r.product.sku for r in search.results]


def test_a_photo_finds_its_kind_first(catalog, test_images):
    search = photo_search(file=uploaded_file(test_images / "chair-cafe-pair.jpg"), threshold=0)
    assert _skus(search)[:2] in (["CHAIR-1", "CHAIR-2"], ["CHAIR-2", "CHAIR-1"])
    assert search.model == search_space_model()
    assert all(0 <= r.score <= 1 for r in search.results)
    assert [r.score for r in search.results] == sorted((r.score for r in search.results), reverse=True)


def test_category_filter_includes_descendants(catalog, test_images):
    from catalog.models import Category

    clothing = Category.objects.get(name="Clothing", parent=None)
    search = photo_search(file=uploaded_file(test_images / "chair-cafe-pair.jpg"), category=clothing, threshold=0)
    assert set(_skus(search)) == {"RUN-1", "RUN-3", "TEE-1"}  # shoes and tops, no chairs


def test_region_search_finds_what_is_inside_the_box(catalog, test_images):
    photo = collage(test_images)
    left = photo_search(file=jpeg_upload(photo), box=Box(0, 0, 500, 500), threshold=0)
    right = photo_search(file=jpeg_upload(photo), box=Box(500, 0, 1000, 500), threshold=0)
    assert _skus(left)[0].startswith("CHAIR")
    assert _skus(right)[0] == "TEE-1"


def test_region_is_measured_on_the_upright_photo(catalog, test_images):
    # Stored on its side with EXIF orientation 6 ("rotate 90 clockwise to view"): the upright photo is
    # the collage, 1000 wide and 500 high, and the box refers to that.
    stored = collage(test_images).transpose(Image.Transpose.ROTATE_90)  # what a phone writes before tagging it
    exif = Image.Exif()
    exif[0x0112] = 6
    right = photo_search(file=jpeg_upload(stored, exif=exif), box=Box(500, 0, 1000, 500), threshold=0)
    assert _skus(right)[0] == "TEE-1"


def test_a_large_png_is_reduced_as_a_jpeg_would_be_and_its_box_still_lands_on_the_upright_photo(catalog, test_images):
    """Only a JPEG decodes at a reduced scale: a PNG was kept whole and copied twice more (a 50-megapixel one, about
    500 MB at once). A PNG is reduced as soon as it is decoded now, and searches as the same photo as a JPEG."""
    import io

    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile

    from search.query import PREVIEW_MAX_SIDE, QUERY_DECODE_MIN_SIDE, query_image_read, query_vector

    photo = collage(test_images).resize((4000, 2000))
    stored = photo.transpose(Image.Transpose.ROTATE_90).convert("P", palette=Image.Palette.ADAPTIVE)
    exif = Image.Exif()
    exif[0x0112] = 6  # upright, it is the collage: 4000 wide, 2000 high
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    png = SimpleUploadedFile("query.png", buffer.getvalue(), content_type="image/png")

    image = query_image_read(png)
    assert (image.width, image.height) == (4000, 2000)
    assert image.pixels.size == (1000, 500)  # reduced by 4, upright: as a JPEG's draft would be
    assert QUERY_DECODE_MIN_SIDE <= min(image.pixels.size) < 2 * QUERY_DECODE_MIN_SIDE
    assert max(image.pixels.size) >= PREVIEW_MAX_SIDE  # the results page's preview is made from them, not decoded again
    as_jpeg = query_image_read(jpeg_upload(photo))
    model = search_space_model()
    assert float(np.dot(query_vector(image=image, model=model), query_vector(image=as_jpeg, model=model))) > 0.95
    png.seek(0)
    assert _skus(photo_search(file=png, box=Box(2000, 0, 4000, 2000), threshold=0))[0] == "TEE-1"


def test_box_partly_outside_is_clipped(catalog, test_images):
    photo = collage(test_images)
    clipped = photo_search(file=jpeg_upload(photo), box=Box(500, -200, 1500, 900), threshold=0)
    assert _skus(clipped)[0] == "TEE-1"


@pytest.mark.parametrize(
    "text, message",
    [("1,2,3", "four numbers"), ("a,b,c,d", "four numbers"), ("10,10,5,20", "x1 > x0"), ("0,0,nan,5", "finite")],
)
def test_malformed_boxes_are_refused_with_a_reason(text, message):
    with pytest.raises(InvalidBox, match=message):
        Box.parse(text)


def test_box_wholly_outside_the_photo_is_refused(catalog, test_images):
    with pytest.raises(InvalidBox, match="outside"):
        photo_search(file=jpeg_upload(collage(test_images)), box=Box(2000, 2000, 2100, 2100))


def test_a_region_smaller_than_a_photo_may_be_is_refused(catalog, test_images):
    with pytest.raises(InvalidBox, match="at least 8 pixels"):
        photo_search(file=jpeg_upload(collage(test_images)), box=Box(1.5, 1.5, 2.5, 2.5))


def test_the_smallest_region_of_a_big_photo_decoded_at_an_eighth_is_searched(catalog, test_images):
    # 4000 x 2000 is decoded at 1/8 (500 x 250); the 8 px region 12-20 lies in decoded pixels 1.5-2.5, which
    # rounding to the nearest pixel made empty.
    photo = collage(test_images).resize((4000, 2000))
    assert photo_search(file=jpeg_upload(photo), box=Box(12, 12, 20, 20), threshold=0).results


@pytest.mark.parametrize(
    "box, scale, crop",
    [
        (Box(12, 12, 20, 20), 1 / 8, (1, 1, 3, 3)),  # partial edge pixels count
        (Box(0, 0, 8, 8), 1 / 8, (0, 0, 1, 1)),
        (Box(992, 492, 1000, 500), 1 / 8, (124, 61, 125, 62)),  # the last pixel of a 125 x 62 decode
        (Box(100, 50, 300, 250), 1, (100, 50, 300, 250)),
    ],
)
def test_a_region_maps_onto_at_least_one_whole_decoded_pixel(box, scale, crop):
    assert box.scaled_crop(scale, 125 if scale < 1 else 1000, 62 if scale < 1 else 500) == crop


def test_threshold_hides_weak_matches(catalog, test_images):
    query = test_images / "plant-cactus.jpg"  # nothing like it in this catalog
    everything = photo_search(file=uploaded_file(query), threshold=0)
    assert len(everything.results) == 5
    strict = photo_search(file=uploaded_file(query), threshold=0.95)
    assert strict.results == []
    exact_copy = photo_search(file=uploaded_file(test_images / "shoe-running-3.jpg"), threshold=0.95)
    assert _skus(exact_copy) == ["RUN-3"]  # the same photo still matches at a strict threshold


def test_one_in_twenty_category_returns_k_products_through_hnsw(settings):
    """Clustered vectors in 20 categories: a filtered query must still return k products of its category."""
    settings.SEARCH_EXACT_MAX_VECTORS = 0  # force the HNSW path
    model, categories, products, vectors = clustered_catalog(products=600, categories=20, clusters=8, seed=7)
    query = vectors[1]  # a product outside category 0
    # 5: the rows read for them (four a product) are fewer than the category's 30, so the index alone must find them.
    with CaptureQueriesContext(connection) as queries:
        results = similar_products_to_vector(vector=query, limit=5, category_ids=[categories[0].pk], model=model)
    assert not any("OFFSET 0" in captured["sql"] for captured in queries.captured_queries)  # no exact fallback
    assert len(results) == 5
    assert {r.product.category_id for r in results} == {categories[0].pk}
    # The same 5 as an exact scan over the category, in the same order.
    in_category = [(float(v @ query), p.pk) for p, v in zip(products, vectors) if p.category_id == categories[0].pk]
    assert [r.product.pk for r in results] == [pk for _, pk in sorted(in_category, reverse=True)[:5]]


def test_a_search_orders_by_the_details_a_refinement_will_keep(catalog, test_images):
    """The first page was ordered with the photo's details in full, a refinement ("Show more", a chip) with the int8
    copy kept for it: two look-alikes close in detail could swap places between the two."""
    import numpy as np

    from search import details
    from search.kept_queries import query_vector_keep, query_vector_kept

    first = photo_search(file=uploaded_file(test_images / "chair-cafe-pair.jpg"))
    kept = query_vector_kept(token=query_vector_keep(model=first.model, vector=first.vector,
                                                     query_details=first.details))
    assert all(np.array_equal(a, b) for a, b in zip(first.details, kept.details))
    refined = photo_search(kept=kept)
    assert [r.product.pk for r in refined.results] == [r.product.pk for r in first.results]
    assert details.encode(*first.details) == details.encode(*kept.details)
