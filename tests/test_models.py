"""Constraints live in the database: these writes bypass forms and must still be refused."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from catalog.models import Category, EmbeddingStatus, Product, ProductImage
from tests.factories import CategoryFactory, ProductFactory

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


def _refused(**kwargs):  # bulk_create: no model-level save() logic, only the database decides
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        model = kwargs.pop("model")
        model.objects.bulk_create([model(**kwargs)])


def test_sku_is_unique(category):
    ProductFactory(sku="ABC-1", category=category)
    _refused(model=Product, sku="ABC-1", title="Other", price=Decimal("1.00"), category=category)


# Each of Product's check constraints, with values that break it.
PRODUCT_CHECKS = {
    "product_price_not_negative": [("price", Decimal("-0.01"))],
    "product_currency_iso_4217": [("currency", "usd"), ("currency", "EURO"), ("currency", "US1")],
    "product_sku_not_empty": [("sku", "")],
    "product_sku_no_slash": [("sku", "a/b")],
    "product_sku_not_dot_segment": [("sku", "."), ("sku", "..")],
    "product_title_not_empty": [("title", "")],
}
PRODUCT_BREAKS = [case for cases in PRODUCT_CHECKS.values() for case in cases]


@pytest.mark.parametrize("field, value", PRODUCT_BREAKS)
def test_product_field_checks(category, field, value):
    fields = {"sku": "OK-1", "title": "Lamp", "price": Decimal("5.00"), "currency": "USD", field: value}
    _refused(model=Product, category=category, **fields)


@pytest.mark.parametrize("field, value", PRODUCT_BREAKS)
def test_full_clean_names_the_field_of_every_product_check_without_asking_the_database(category, field, value):
    # Product.validate_constraints asks nothing: the field rules must refuse all the database would.
    assert {c.name for c in Product._meta.constraints} == set(PRODUCT_CHECKS)
    product = Product(sku="OK-1", title="Lamp", price=Decimal("5.00"), currency="USD", category=category)
    setattr(product, field, value)
    with pytest.raises(ValidationError) as refused, CaptureQueriesContext(connection) as queries:
        product.full_clean(exclude=["category"])
    assert set(refused.value.message_dict) == {field}
    assert not [query for query in queries if "_check" in query["sql"]]


def test_category_names_unique_among_siblings_and_roots():
    home = CategoryFactory(name="Home", slug="home")
    CategoryFactory(name="Sofas", slug="sofas", parent=home)
    _refused(model=Category, name="Sofas", slug="sofas-2", parent=home)
    _refused(model=Category, name="Home", slug="home-2", parent=None)
    # The same name under another parent is fine.
    garden = CategoryFactory(name="Garden", slug="garden")
    assert Category.objects.create(name="Sofas", slug="garden-sofas", parent=garden).pk


def test_category_cannot_be_its_own_parent():
    category = CategoryFactory()
    category.parent_id = category.pk
    with pytest.raises(IntegrityError), transaction.atomic():
        category.save()


def test_category_with_products_cannot_be_deleted(product):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        product.category.delete()


def _image(product, **overrides):
    fields = {
        "product": product, "file": "products/x.jpg", "width": 10, "height": 10, "content_hash": "a" * 64,
        "embedding_status": EmbeddingStatus.PENDING, **overrides,
    }
    return fields


def test_product_image_size_must_be_positive(product):
    # ImageField re-reads the size from the file on save(), so write the column directly.
    image = ProductImage.objects.bulk_create([ProductImage(**_image(product))])[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        ProductImage.objects.filter(pk=image.pk).update(width=0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"embedding_status": "done"},
        {"content_hash": "not-a-hash"},
        {"embedding_status": EmbeddingStatus.READY},  # ready without model and time
        {"embedding_status": EmbeddingStatus.FAILED},  # failed without the error
    ],
)
def test_product_image_checks(product, overrides):
    _refused(model=ProductImage, **_image(product, **overrides))


def test_ready_image_with_model_and_time_is_accepted(product):
    from django.utils import timezone

    image = ProductImage.objects.create(
        **_image(product, embedding_status=EmbeddingStatus.READY, embedding_model="m@v1", embedded_at=timezone.now())
    )
    assert image.pk


def test_search_document_is_maintained_by_the_database(category):
    ProductFactory(title="Velvet sofa", description="Deep buttoned dimples", category=category)
    ProductFactory(title="Oak chair", description="Solid wood", category=category)
    from django.contrib.postgres.search import SearchQuery

    hits = Product.objects.filter(search_document=SearchQuery("dimple", config="english"))
    assert [p.title for p in hits] == ["Velvet sofa"]


@pytest.mark.parametrize("sku", ["SKU-1", "ÄÖ-é", "a b", "50%off", "a?b#c&d=e+f", "x~y:z@w,!$'()*;", "💡", 'q"<>'])
@pytest.mark.parametrize("script_prefix", ["/", "/shop/"])
def test_a_product_address_is_the_one_reverse_gives(category, sku, script_prefix):
    from django.urls import reverse, set_script_prefix

    product = Product(sku=sku, title="T", category=category, price=1)
    set_script_prefix(script_prefix)
    try:
        assert product.get_absolute_url() == reverse("catalog:product", kwargs={"sku": sku})
        assert product.get_absolute_url().startswith(script_prefix)
    finally:
        set_script_prefix("/")
