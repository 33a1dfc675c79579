"""Each vector row carries its product's category and active flag, kept equal by PostgreSQL on every write path."""

import re

import numpy as np
import pytest
from django.db import connection

from catalog.models import Product, ProductImage
from search import services
from search.models import ImageEmbedding
from search.selectors import search_space_model, similar_products_to_vector
from tests.factories import CategoryFactory, ProductFactory, clustered_catalog
from tests.support import held_in_another_transaction

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.fixture
def clustered():
    """60 products with clustered vectors in 3 categories (20 each)."""
    return clustered_catalog(products=60, categories=3, clusters=4, seed=5)


def _copies(product):
    return set(ImageEmbedding.objects.filter(product=product).values_list("category_id", "active"))


def test_a_new_vector_takes_its_products_category_and_flag(clustered):
    _, categories, products, _ = clustered
    # bulk_create in the factory sent no category at all: the insert trigger filled it in.
    for product in products[:6]:
        assert _copies(product) == {(product.category_id, True)}


def test_moving_a_product_moves_its_vectors_and_search_follows(settings, clustered):
    settings.SEARCH_EXACT_MAX_VECTORS = 0  # through the HNSW index
    model, categories, products, vectors = clustered
    product = products[0]
    elsewhere = CategoryFactory()

    product.category = elsewhere
    product.save()

    assert _copies(product) == {(elsewhere.pk, True)}
    found = similar_products_to_vector(vector=vectors[0], limit=12, category_ids=[elsewhere.pk], model=model)
    assert [r.product.pk for r in found] == [product.pk]
    before = similar_products_to_vector(vector=vectors[0], limit=60, category_ids=[categories[0].pk], model=model)
    assert product.pk not in {r.product.pk for r in before}


@pytest.mark.parametrize("exact_max_vectors", [0, 1000], ids=["hnsw", "exact"])
def test_a_product_deactivated_by_a_bulk_update_leaves_search(settings, clustered, exact_max_vectors):
    settings.SEARCH_EXACT_MAX_VECTORS = exact_max_vectors
    model, categories, products, vectors = clustered
    hidden = products[0]
    assert similar_products_to_vector(vector=vectors[0], limit=1, model=model)[0].product == hidden

    Product.objects.filter(pk=hidden.pk).update(active=False)  # no save(), no signals: only the trigger sees it

    assert _copies(hidden) == {(hidden.category_id, False)}
    for category_ids in (None, [hidden.category_id]):
        found = similar_products_to_vector(vector=vectors[0], limit=60, category_ids=category_ids, model=model)
        assert found and hidden.pk not in {r.product.pk for r in found}
    Product.objects.filter(pk=hidden.pk).update(active=True)
    assert similar_products_to_vector(vector=vectors[0], limit=1, model=model)[0].product == hidden


def test_a_vector_row_cannot_be_given_another_category(clustered):
    _, categories, products, _ = clustered
    product = products[0]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE search_imageembedding SET category_id = %s, active = false WHERE product_id = %s",
            [categories[1].pk, product.pk],
        )
    assert _copies(product) == {(product.category_id, True)}


def test_a_photo_moved_to_another_product_by_a_bulk_update_takes_its_vector_along(settings, clustered):
    """Issue 13: a ProductImage given another product (same file) kept its vector under the old product."""
    settings.SEARCH_EXACT_MAX_VECTORS = 0
    model, categories, products, vectors = clustered
    old, new = products[0], products[1]  # round-robin: categories 0 and 1
    ProductImage.objects.filter(product=old).update(product=new)  # no save(), no signals: only the database sees it

    assert _copies(old) == set()
    assert _copies(new) == {(new.category_id, True)}
    found = similar_products_to_vector(vector=vectors[0], limit=1, model=model)
    assert [r.product.pk for r in found] == [new.pk]
    in_new_category = similar_products_to_vector(vector=vectors[0], limit=60, category_ids=[new.category_id],
                                                 model=model)
    assert new.pk in {r.product.pk for r in in_new_category}
    in_old_category = similar_products_to_vector(vector=vectors[0], limit=60, category_ids=[old.category_id],
                                                 model=model)
    assert old.pk not in {r.product.pk for r in in_old_category}


def test_a_vector_row_takes_its_products_price_and_currency_and_follows_its_photo_to_another_product(clustered):
    _, categories, products, vectors = clustered
    euro = ProductFactory(category=categories[0], price="12.50", currency="EUR")
    image = ProductImage.objects.create(product=euro, file="x/euro.jpg", width=1, height=1, content_hash="b" * 64)
    row = ImageEmbedding.objects.create(image=image, product=euro, model=search_space_model(), vector=vectors[0])
    row.refresh_from_db()
    assert (str(row.price), row.currency) == ("12.50", "EUR")
    ProductImage.objects.filter(pk=image.pk).update(product=products[1])  # a dollar product
    row.refresh_from_db()
    assert (row.price, row.currency) == (products[1].price, "USD")


def test_a_vector_row_cannot_be_given_another_product_than_its_photos(clustered):
    _, _, products, _ = clustered
    with connection.cursor() as cursor:
        cursor.execute("UPDATE search_imageembedding SET product_id = %s WHERE product_id = %s",
                       [products[1].pk, products[0].pk])
    assert {row.product_id for row in ImageEmbedding.objects.filter(image__product=products[0])} == {products[0].pk}


@pytest.mark.django_db(transaction=True)
def test_a_product_deactivated_while_its_vector_is_stored_leaves_search():
    """The admin deactivates a product while a worker stores a vector of its photo: the update passes its change on
    to the vector rows already committed only, and the new row copies the product as last committed. Whichever
    commits first, the new row must end up inactive."""
    product = ProductFactory()
    image = ProductImage.objects.create(product=product, file="x/1.jpg", width=1, height=1, content_hash="a" * 64)
    model = search_space_model()
    # The update is held uncommitted until the store waits for it (a store that does not wait commits first).
    with held_in_another_transaction(lambda: Product.objects.filter(pk=product.pk).update(active=False),
                                     timeout=5) as update:
        services.image_embeddings_store(model=model, items=[services.StoredVector(image_id=image.pk, vector=np.ones(
            ImageEmbedding._meta.get_field("vector").dimensions))])

    assert update.waited, "the store did not wait for the product's update"
    assert _copies(product) == {(product.category_id, False)}


@pytest.mark.django_db(transaction=True)
def test_a_photo_deleted_while_a_worker_stores_its_vector_is_deleted_with_it():
    """The cascade deleted the photo's vectors (none yet), then waited for the worker's lock on the photo; the
    worker stored a vector and committed, and the delete's commit then found a vector of a deleted photo: an error
    for the admin, and nothing deleted."""
    from catalog.services import product_image_delete

    image = ProductImage.objects.create(product=ProductFactory(), file="x/1.jpg", width=1, height=1,
                                        content_hash="a" * 64)
    model = search_space_model()

    def store():
        services.image_embeddings_store(model=model, items=[services.StoredVector(
            image_id=image.pk, vector=np.ones(ImageEmbedding._meta.get_field("vector").dimensions))])

    # The worker holds the photo (the store's own first step) until the delete waits for it, then stores.
    with held_in_another_transaction(lambda: ProductImage.objects.select_for_update().get(pk=image.pk),
                                     then=store) as worker:
        product_image_delete(image=image)
    assert worker.waited
    assert not ProductImage.objects.filter(pk=image.pk).exists()
    assert not ImageEmbedding.objects.filter(image_id=image.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_worker_storing_a_vector_while_an_admin_saves_the_product_and_its_photo_do_not_deadlock():
    """The admin's form locks the product, then its photos; the worker locked the photo, then the product: each
    waited for the other, and PostgreSQL ended one of them with an error."""
    product = ProductFactory()
    image = ProductImage.objects.create(product=product, file="x/1.jpg", width=1, height=1, content_hash="a" * 64)
    model = search_space_model()

    def admin_saves_the_photo_too():
        ProductImage.objects.select_for_update().get(pk=image.pk)

    with held_in_another_transaction(lambda: Product.objects.select_for_update().get(pk=product.pk),
                                     then=admin_saves_the_photo_too, timeout=5) as admin:
        stored = services.image_embeddings_store(model=model, items=[services.StoredVector(
            image_id=image.pk, vector=np.ones(ImageEmbedding._meta.get_field("vector").dimensions))])

    assert admin.waited, "the worker did not wait for the admin's lock on the product"
    assert [item.image_id for item in stored] == [image.pk]


@pytest.mark.django_db(transaction=True)
def test_an_admin_saving_photos_of_an_unchanged_product_and_adding_one_does_not_deadlock_with_a_worker(
    admin_client, test_images
):
    """With the product's fields unchanged its row was not locked until the photo added at the end: the photos
    renumbered before it were locked first, the worker's order the other way round."""
    from django.urls import reverse

    from catalog.services import product_image_add
    from tests.factories import uploaded_image

    product = ProductFactory()
    image = product_image_add(product=product, file=uploaded_image())
    data = {"sku": product.sku, "title": product.title, "category": product.category_id, "price": str(product.price),
            "currency": product.currency, "description": product.description,
            "images-TOTAL_FORMS": "2", "images-INITIAL_FORMS": "1", "images-MIN_NUM_FORMS": "0",
            "images-MAX_NUM_FORMS": "1000", "images-0-id": str(image.pk), "images-0-product": str(product.pk),
            "images-0-position": "3", "images-1-position": "", "images-1-file": uploaded_image("new.jpg", color=(0, 90, 0))}
    if product.active:
        data["active"] = "on"
    page = admin_client.get(reverse("admin:catalog_product_change", args=[product.pk])).content.decode()
    data.update(re.findall(r'<input type="hidden" name="(initial-[a-z]+)" value="([^"]*)"', page))  # as shown

    def worker_share_locks_the_product():  # as image_embeddings_store does, then the photo
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {Product._meta.db_table} WHERE id = %s FOR SHARE", [product.pk])

    def worker_locks_the_photo():
        ProductImage.objects.select_for_update().get(pk=image.pk)

    with held_in_another_transaction(worker_share_locks_the_product, then=worker_locks_the_photo,
                                     timeout=5) as worker:
        response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)

    assert response.status_code == 302, response.content[:2000]
    assert worker.waited, "the admin did not wait for the worker's lock on the product"
    assert sorted(ProductImage.objects.filter(product=product).values_list("position", flat=True)) == [3, 4]
