"""End to end through the real queue: upload -> Redis -> a real `celery worker` process -> pgvector -> More like this."""

import pytest

from catalog import services
from catalog.models import EmbeddingStatus, ProductImage
from search.selectors import similar_products_to_product
from tests.factories import uploaded_file
from tests.support import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _add(sku, title, category, photo):
    product = services.product_create(sku=sku, title=title, category=category, price="49.00")
    services.product_image_add(product=product, file=uploaded_file(photo))
    return product


def test_worker_embeds_uploads_and_more_like_this_finds_the_neighbour(celery_worker_process, test_images):
    shoes = services.category_get_or_create_path(path="Clothing > Shoes")
    chairs = services.category_get_or_create_path(path="Home > Furniture > Chairs")
    runner = _add("RUN-1", "Trail runner", shoes, test_images / "shoe-running-1.jpg")
    other_runner = _add("RUN-2", "Road runner", shoes, test_images / "shoe-running-2.jpg")
    _add("CHAIR-1", "Blue armchair", chairs, test_images / "chair-armchair-blue.jpg")
    _add("CHAIR-2", "Black shell chair", chairs, test_images / "chair-shell-black.jpg")

    def none_pending():
        return not ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).exists()

    wait_for(none_pending, timeout=120, message="the worker to process every image")
    failures = list(ProductImage.objects.exclude(embedding_status=EmbeddingStatus.READY).values_list("embedding_error"))
    assert failures == []

    similar = similar_products_to_product(product=runner, limit=3)
    assert [s.product.sku for s in similar][0] == other_runner.sku
    assert runner.sku not in [s.product.sku for s in similar]  # never the product itself
    assert similar[0].score > similar[-1].score
    # Restricted to the chairs' category only chairs come back.
    in_chairs = similar_products_to_product(product=runner, limit=3, category_ids=[chairs.pk])
    assert {s.product.sku for s in in_chairs} == {"CHAIR-1", "CHAIR-2"}
