"""Search answers are built as plain dicts (search/responses.py); the DRF serializers that the OpenAPI schema is
generated from must give byte-for-byte the same JSON for the same search. Also the card reads behind them."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIRequestFactory

from catalog import services as catalog_services
from catalog.models import Product, ProductImage
from catalog.selectors import product_cards
from catalog.serializers import ProductSummarySerializer
from search.responses import photo_search_response, product_card, search_response
from search.selectors import product_matches, photo_search
from search.serializers import PhotoSearchResponseSerializer, SearchResponseSerializer
from search.services import images_embed
from tests.factories import ProductFactory, uploaded_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def request_():
    return APIRequestFactory().get("/api/v1/search/", HTTP_HOST="testserver")


def _serializer_data(matches) -> dict:
    """What the views handed the serializers before search/responses.py: results and facets as objects."""

    def result(match) -> dict:
        return {"product": match.product, "score": math.floor(match.score * 10_000) / 10_000,
                "similarity": math.floor(match.similarity * 10_000) / 10_000}

    return {
        "results": [{**result(m), "duplicates": [result(d) for d in m.duplicates]} for m in matches.results],
        "facets": {"categories": matches.categories, "colours": matches.colours},
    }


def _json(data) -> bytes:
    return JSONRenderer().render(data)


@pytest.fixture
def catalog_with_a_copy(catalog, test_images):
    """The test catalog plus a second product with the first chair's photo: a near-duplicate that gets folded."""
    chair = catalog["CHAIR-1"]
    copy = catalog_services.product_create(sku="CHAIR-1-COPY", title="Same chair, other seller",
                                           category=chair.category, price="119.5")
    catalog_services.product_image_add(product=copy, file=uploaded_file(test_images / "chair-armchair-blue.jpg"))
    images_embed(image_ids=list(copy.images.values_list("pk", flat=True)))
    return catalog


def _documented_photo_search(search, *, token: str, request) -> dict:
    """What PhotoSearchResponseSerializer, the API schema's source, gives for ``search``."""
    return PhotoSearchResponseSerializer(
        {**_serializer_data(search), "query": token, "model": search.model, "took_ms": round(search.took_ms, 1),
         "threshold": search.threshold, "cutoff": round(search.cutoff, 4)},
        context={"request": request},
    ).data

@pytest.mark.parametrize("photo", ["chair-armchair-blue.jpg", "chair-cafe-pair.jpg", "shoe-running-2.jpg"])
def test_photo_search_json_is_what_the_documented_serializer_gives(catalog_with_a_copy, test_images, request_, photo):
    search = photo_search(file=uploaded_file(test_images / photo), threshold=0.0)
    assert search.results and search.categories

    lean = photo_search_response(search, token="t0ken", request=request_)

    assert _json(lean) == _json(_documented_photo_search(search, token="t0ken", request=request_))
    if photo == "chair-armchair-blue.jpg":  # the copy is folded under the original: duplicates are covered too
        assert lean["results"][0]["duplicates"]


def test_more_like_this_json_is_what_the_documented_serializer_gives(catalog_with_a_copy, request_):
    matches = product_matches(product=catalog_with_a_copy["CHAIR-2"], limit=12)
    assert matches.results

    lean = search_response(matches, model="space", took_ms=3.14159, request=request_)
    documented = SearchResponseSerializer(
        {**_serializer_data(matches), "model": "space", "took_ms": round(3.14159, 1)}, context={"request": request_}
    ).data

    assert _json(lean) == _json(documented)


def test_an_empty_answer_has_the_documented_shape(catalog, test_images, request_):
    search = photo_search(file=uploaded_file(test_images / "chair-cafe-pair.jpg"), threshold=1.0)
    assert not search.results

    lean = photo_search_response(search, token="t", request=request_)
    assert _json(lean) == _json(_documented_photo_search(search, token="t", request=request_))


def test_a_card_of_a_product_without_photos_has_no_image_url(request_):
    product = ProductFactory(price=Decimal("7.5"))
    (card,) = product_cards(product_ids=[product.pk]).values()

    assert card.card_images == []
    lean = product_card(card, request=request_, paths=_AllPaths())
    assert _json(lean) == _json(ProductSummarySerializer(card, context={"request": request_}).data)
    assert lean["image_url"] is None and lean["price"] == "7.50"


class _AllPaths(dict):
    def __missing__(self, category_id):
        from catalog.selectors import CategoryPaths

        return CategoryPaths()[category_id]


def test_cards_carry_the_first_photo_and_never_blank_what_they_did_not_read(catalog, test_images):
    product = catalog["RUN-1"]
    Product.objects.filter(pk=product.pk).update(description="Light trail shoe")
    first = product.images.get()
    catalog_services.product_image_add(product=product, file=uploaded_file(test_images / "shoe-running-3.jpg"))
    ProductImage.objects.filter(pk=first.pk).update(position=5)  # the new photo now comes first
    newest = product.images.order_by("position", "pk").first()

    card = product_cards(product_ids=[product.pk, 999_999])[product.pk]

    assert [image.pk for image in card.card_images] == [newest.pk]
    assert card.card_images[0].file.name == newest.file.name and card.card_images[0].card_url
    assert card.category.name == product.category.name
    assert card.description == "Light trail shoe"  # not read with the card: loaded when asked for
    card.title = "Renamed"
    card.save()
    product.refresh_from_db()
    assert (product.title, product.description) == ("Renamed", "Light trail shoe")


def test_a_score_just_under_the_cut_off_never_reads_as_one_at_it(request_):
    """Rounded, 0.49996 came out 0.5 in the API and 0.4951 as a "50% match" badge beside the note that under 50%
    is below what the catalog counts as similar."""
    from django.template.loader import render_to_string

    from search.responses import search_response
    from search.selectors import Matches, SimilarProduct
    from tests.factories import ProductFactory

    product = ProductFactory()
    answer = search_response(Matches(results=[SimilarProduct(product=product, score=0.49996, similarity=0.51996)]),
                             model="space", took_ms=1.0, request=request_)
    assert (answer["results"][0]["score"], answer["results"][0]["similarity"]) == (0.4999, 0.5199)
    for score, badge in [(0.4951, "49% match"), (0.995, "99% match"), (0.57, "57% match"), (1.0, "100% match")]:
        card = render_to_string("catalog/_product_card.html", {"product": product, "image": None, "match": score})
        assert badge in card
