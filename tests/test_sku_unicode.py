"""A SKU is one product however its accents are encoded: stored in Unicode NFC (catalog.models.sku_normalized) by
every write path, and looked up the same way by pages, the API and the import."""

import importlib

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from catalog.importer import catalog_csv_import
from catalog.models import Product
from catalog.services import product_create
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

COMPOSED, DECOMPOSED = "CAF\u00c9-1", "CAFE\u0301-1"  # "CAFÉ-1" as most keyboards and as a Mac's file system write it


def test_a_product_created_with_a_decomposed_sku_is_stored_composed_and_found_by_either(category, client):
    product = product_create(sku=DECOMPOSED, title="Cafe chair", category=category, price="10")

    assert product.sku == COMPOSED
    with pytest.raises(ValidationError) as refused:  # the same SKU to the uniqueness check
        product_create(sku=COMPOSED, title="Another", category=category, price="10")
    assert "sku" in refused.value.message_dict
    for sku in (COMPOSED, DECOMPOSED):
        assert client.get(f"/p/{sku}/").status_code == 200
        assert APIClient().get(f"/api/v1/products/{sku}/").json()["sku"] == COMPOSED


def test_an_import_row_with_the_sku_decomposed_updates_the_product_it_names(category, tmp_path):
    """It created a second product whose SKU looked the same, and the first kept its old price."""
    ProductFactory(sku=COMPOSED, category=category, price="10.00")
    path = tmp_path / "catalog.csv"
    path.write_text(f"sku,title,category,price,description,images\n{DECOMPOSED},Cafe chair,Home,12.50,,\n",
                    encoding="utf-8")

    summary = catalog_csv_import(path=path)

    assert summary.failed == [] and summary.created == 0
    assert [(sku, str(price)) for sku, price in Product.objects.values_list("sku", "price")] == [(COMPOSED, "12.50")]


def test_every_loader_finds_the_product_its_decomposed_sku_names(category):
    """The loaders' write path looked products up by the SKU as given and keyed them by the SKU as stored: a KeyError
    for a decomposed one."""
    from catalog.services import ProductWithPhotos, atomic_with_files, products_with_photos_upsert

    ProductFactory(sku=COMPOSED, category=category, price="10.00")
    fields = {"title": "Cafe chair", "description": "", "price": "11.00", "currency": "USD", "category": category}
    with atomic_with_files() as stored:
        (result,) = products_with_photos_upsert(items=[ProductWithPhotos(sku=DECOMPOSED, fields=fields)], stored=stored)

    assert result.outcome == "updated" and result.product.sku == COMPOSED
    assert [str(price) for price in Product.objects.values_list("price", flat=True)] == ["11.00"]


def test_stored_decomposed_skus_are_composed_by_the_migration_unless_taken(category, capsys):
    migration = importlib.import_module("catalog.migrations.0012_product_sku_nfc")
    alone = ProductFactory(sku="N\u0303-1", category=category)  # "Ñ-1" decomposed, written before the rule
    ProductFactory(sku="\u00d1-2", category=category)
    twin = ProductFactory(sku="N\u0303-2", category=category)  # composed, it is the product above's

    migration.skus_composed(apps, None)

    assert Product.objects.get(pk=alone.pk).sku == "\u00d1-1"
    assert Product.objects.get(pk=twin.pk).sku == "N\u0303-2"
    assert "left as it is" in capsys.readouterr().out
