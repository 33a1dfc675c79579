"""Near-duplicate listings fold under the higher-ranked result: nested in the API, "+1 similar listing" on pages."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from catalog import services as catalog_services
from catalog.models import Category
from search.refine import fold_duplicates
from search.selectors import SimilarProduct
from search.services import images_embed
from tests.factories import ProductFactory, uploaded_file

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def generous_throttle(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "10000/min"}}
    settings.SEARCH_MIN_SCORE = 0  # every product matches


@pytest.fixture
def relisted(catalog, test_images):
    """The catalog plus CHAIR-2's photo listed again by another seller: resized and re-compressed, dearer."""
    buffer = io.BytesIO()
    with Image.open(test_images / "chair-shell-black.jpg") as photo:
        photo.convert("RGB").resize((photo.width * 3 // 4, photo.height * 3 // 4)).save(buffer, "JPEG", quality=70)
    chairs = Category.objects.get(name="Chairs")
    copy = catalog_services.product_create(sku="CHAIR-2-AGAIN", title="Shell chair, black", category=chairs,
                                           price="95.00")
    image = catalog_services.product_image_add(
        product=copy, file=SimpleUploadedFile("again.jpg", buffer.getvalue(), content_type="image/jpeg"))
    images_embed(image_ids=[image.pk])
    return catalog


def _vector(*values):
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _match(pk, image_id):
    return SimilarProduct(product=ProductFactory.build(pk=pk), score=1, similarity=1, image_id=image_id)


def _close_pairs(vectors, minimum):
    """What search.selectors reads from PostgreSQL: the pairs at ``minimum`` or more, lower image id first."""
    ids = sorted(vectors)
    return {(a, b): float(vectors[a] @ vectors[b]) for i, a in enumerate(ids) for b in ids[i + 1:]
            if float(vectors[a] @ vectors[b]) >= minimum}


def test_fold_keeps_order_and_folds_only_near_duplicates_of_kept_results():
    vectors = {1: _vector(1, 0, 0), 2: _vector(0, 1, 0), 3: _vector(0.99, 0.05, 0), 4: _vector(0.7, 0.7, 0)}
    folded = fold_duplicates([_match(10, 1), _match(20, 2), _match(30, 3), _match(40, 4)],
                             _close_pairs(vectors, 0.9), min_similarity=0.9)
    assert [m.product.pk for m in folded] == [10, 20, 40]
    assert [d.product.pk for d in folded[0].duplicates] == [30]
    assert folded[1].duplicates == () and folded[2].duplicates == ()  # 0.7 from both: not a near-duplicate


def test_a_match_folds_into_its_most_similar_kept_result_the_first_on_a_tie_and_never_into_a_folded_one():
    pairs = {(1, 5): 0.95, (2, 5): 0.97, (3, 6): 0.93, (4, 6): 0.93, (5, 7): 0.99, (1, 2): 0.5}
    folded = fold_duplicates([_match(pk, pk) for pk in (1, 2, 3, 4, 5, 6, 7)], pairs, min_similarity=0.9)
    assert [m.product.pk for m in folded] == [1, 2, 3, 4, 7]  # 7 is close only to 5, itself folded: kept
    duplicates = {m.product.pk: [d.product.pk for d in m.duplicates] for m in folded}
    assert duplicates == {1: [], 2: [5], 3: [6], 4: [], 7: []}


def test_the_api_nests_a_relisted_photo_under_the_better_ranked_listing(relisted, test_images):
    response = APIClient().post(
        "/api/v1/search/", {"image": uploaded_file(test_images / "chair-shell-black.jpg")}, format="multipart")
    results = response.json()["results"]
    top = [result["product"]["sku"] for result in results]
    assert top[0] == "CHAIR-2" and "CHAIR-2-AGAIN" not in top
    assert [d["product"]["sku"] for d in results[0]["duplicates"]] == ["CHAIR-2-AGAIN"]
    assert set(results[0]["duplicates"][0]) == {"product", "score", "similarity"}
    assert all(result["duplicates"] == [] for result in results[1:])
    # The facets count it with the listing it is folded under, as a search of the category would list it.
    chairs = next(f for f in response.json()["facets"]["categories"] if f["name"] == "Chairs")
    assert chairs["count"] == 2


def test_folded_listings_do_not_count_towards_the_limit(relisted, test_images):
    response = APIClient().post(
        "/api/v1/search/", {"image": uploaded_file(test_images / "chair-shell-black.jpg"), "limit": "2"},
        format="multipart")
    assert [r["product"]["sku"] for r in response.json()["results"]] == ["CHAIR-2", "CHAIR-1"]


def test_folding_does_not_shorten_a_page_whose_pool_is_its_limit(relisted, test_images):
    # A pool no larger than the limit (a page of 48 or more): the folded listing must not cost the page a product.
    from search.query import query_image_read, query_vector
    from search.selectors import search_space_model, vector_matches

    with open(test_images / "chair-shell-black.jpg", "rb") as photo:
        vector = query_vector(image=query_image_read(photo), model=search_space_model())
    matches = vector_matches(vector=vector, limit=3, fold=True)
    assert len(matches.results) == 3
    assert [r.product.sku for r in matches.results][:2] == ["CHAIR-2", "CHAIR-1"]
    assert [d.product.sku for d in matches.results[0].duplicates] == ["CHAIR-2-AGAIN"]


def test_sorting_by_price_folds_under_the_first_listed(relisted, test_images):
    response = APIClient().post(
        "/api/v1/search/", {"image": uploaded_file(test_images / "chair-shell-black.jpg"), "sort": "-price"},
        format="multipart")
    results = response.json()["results"]
    assert [r["product"]["sku"] for r in results][:2] == ["CHAIR-1", "CHAIR-2-AGAIN"]  # 120.00, then 95.00
    assert [d["product"]["sku"] for d in results[1]["duplicates"]] == ["CHAIR-2"]


def test_the_results_page_offers_the_folded_listing_behind_a_details(client, relisted, test_images):
    page = client.post("/search/photo/", {"photo": uploaded_file(test_images / "chair-shell-black.jpg")})
    html = page.content.decode()
    assert html.count("data-duplicates") == 1
    assert "+1 similar listing<" in html and "Shell chair, black" in html
    folded = re.search(r"<details[^>]*data-duplicates>.*?</details>", html, re.S).group(0)
    assert re.search(r'href="/p/CHAIR-2(-AGAIN)?/"', folded)  # the folded listing, one tap away
