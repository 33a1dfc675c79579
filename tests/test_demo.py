import hashlib
import io
from dataclasses import replace
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from catalog.demo import (
    CATEGORY_TREE,
    SOURCES,
    DEFAULT_CACHE_DIR,
    VENDURE,
    DemoProduct,
    DemoSourceUnavailable,
    demo_products_collect,
    demo_products_load,
    demo_source_fetch,
)
from catalog.models import Category, EmbeddingStatus, Product, ProductImage
from catalog.services import PhotoRefused, product_image_add
from tests.factories import uploaded_file
from tests.support import embedding_dispatches


@pytest.fixture
def demo_items(test_images):
    return [
        DemoProduct(
            sku="VEN-freerun-running-shoe", title="Freerun Running Shoe", price=Decimal("160.00"),
            category_path="Clothing > Shoes > Running Shoes", images=(test_images / "shoe-running-1.jpg",),
            description="A light running shoe.",
        ),
        DemoProduct(
            sku="SAL-112", title="T-shirt", price=Decimal("30.00"), category_path="Clothing > Tops > T-shirts",
            images=(test_images / "tshirt-turquoise-front.jpg", test_images / "tshirt-turquoise-back.jpg"),
        ),
        DemoProduct(
            sku="VEN-black-eaves-chair", title="Black Eaves Chair", price=Decimal("70.00"),
            category_path="Home & Garden > Furniture > Chairs & Stools",
            images=(test_images / "chair-shell-black.jpg",),
        ),
    ]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_creates_products_in_one_category_tree_with_their_photos(db, demo_items):
    summary = demo_products_load(products=demo_items)

    assert (summary.created, summary.updated, summary.unchanged, summary.images_added) == (3, 0, 0, 4)
    shoe = Product.objects.get(sku="VEN-freerun-running-shoe")
    assert (shoe.title, shoe.price, shoe.currency, shoe.description) == (
        "Freerun Running Shoe", Decimal("160.00"), "USD", "A light running shoe."
    )
    assert [shoe.category.name, shoe.category.parent.name, shoe.category.parent.parent.name] == [
        "Running Shoes", "Shoes", "Clothing"
    ]
    tee = Product.objects.get(sku="SAL-112")
    assert tee.category.parent.parent == shoe.category.parent.parent  # one "Clothing", shared by both sources
    assert Category.objects.filter(parent=None).count() == 2
    views = list(tee.images.order_by("position"))
    assert [image.position for image in views] == [0, 1]
    assert [image.content_hash for image in views] == [_sha256(path) for path in demo_items[1].images]
    assert all(image.embedding_status == EmbeddingStatus.PENDING for image in views)
    assert views[0].file.read() == demo_items[1].images[0].read_bytes()


def test_reloading_changes_nothing(db, demo_items):
    demo_products_load(products=demo_items)
    counts = (Product.objects.count(), ProductImage.objects.count(), Category.objects.count())

    summary = demo_products_load(products=demo_items)

    assert (summary.created, summary.updated, summary.unchanged, summary.images_added) == (0, 0, 3, 0)
    assert (Product.objects.count(), ProductImage.objects.count(), Category.objects.count()) == counts


def test_reloading_updates_changed_fields_adds_missing_photos_and_keeps_others(db, demo_items, test_images):
    tee = replace(demo_items[1], images=demo_items[1].images[:1])
    demo_products_load(products=[tee])
    product = Product.objects.get(sku="SAL-112")
    product_image_add(product=product, file=uploaded_file(test_images / "plant-cactus.jpg"))  # an admin's upload

    summary = demo_products_load(products=[replace(demo_items[1], title="Turquoise T-shirt", price=Decimal("25"))])

    assert (summary.created, summary.updated, summary.images_added) == (0, 1, 1)
    product.refresh_from_db()
    assert (product.title, product.price) == ("Turquoise T-shirt", Decimal("25.00"))
    hashes = sorted(product.images.values_list("content_hash", flat=True))
    assert hashes == sorted(_sha256(path) for path in [*demo_items[1].images, test_images / "plant-cactus.jpg"])


def test_a_product_whose_photo_is_refused_leaves_no_file_behind(db, demo_items, tmp_path, media_root):
    """The product's transaction rolls back at its second photo (a damaged cache): the file the first photo
    stored went with it."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    product = replace(demo_items[0], images=(demo_items[0].images[0], broken))
    with pytest.raises(PhotoRefused):
        demo_products_load(products=[product])
    assert not Product.objects.exists()
    assert not any(path.is_file() for path in media_root.rglob("*"))


def test_embeddings_are_queued_once_per_new_photo(db, demo_items, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as first:
        demo_products_load(products=demo_items)
    with django_capture_on_commit_callbacks() as second:
        demo_products_load(products=demo_items)

    assert len(embedding_dispatches(first)) == 3  # one per product, for its photos (4 in all)
    assert embedding_dispatches(second) == []


def test_once_leaves_a_source_loaded_before_as_an_admin_left_it(db, demo_items, tmp_path, monkeypatch):
    """`bin/lookalike run` loaded the demo at every start: a title an admin changed came back, and a product deleted
    came back too. With --once a source whose load completed is left alone; one cut short is loaded again."""
    from catalog.management.commands import load_demo

    def collect(*, sources, **options):  # the packages, as parsed, without fetching them
        return [item for item in demo_items if any(item.sku.startswith(SOURCES[name].sku_prefix) for name in sources)]

    monkeypatch.setattr(load_demo, "demo_products_collect", collect)
    once = ["--once", "--cache-dir", str(tmp_path)]
    demo_products_load(products=demo_items[:1])  # a first load cut short: one Vendure product of two, no Saleor
    call_command("load_demo", *once, stdout=io.StringIO())
    assert Product.objects.count() == 3  # loaded again, to the end
    Product.objects.filter(sku="VEN-freerun-running-shoe").update(title="Renamed by an admin")
    Product.objects.filter(sku="VEN-black-eaves-chair").delete()
    out = io.StringIO()

    call_command("load_demo", *once, stdout=out)

    assert "Demo catalog: vendure, saleor loaded already, left as it is" in out.getvalue()
    assert Product.objects.get(sku="VEN-freerun-running-shoe").title == "Renamed by an admin"
    assert not Product.objects.filter(sku="VEN-black-eaves-chair").exists()
    Product.objects.filter(sku__startswith="SAL-").delete()  # all of a source, to start the shop's own catalog
    call_command("load_demo", *once, stdout=io.StringIO())
    assert not Product.objects.filter(sku__startswith="SAL-").exists()


def test_no_fetch_with_an_empty_cache_says_what_to_do(tmp_path):
    with pytest.raises(CommandError, match="not in the cache.*without --no-fetch"):
        call_command("load_demo", "--no-fetch", "--cache-dir", str(tmp_path))


def test_the_command_says_so_before_it_fetches_a_package_which_may_take_minutes(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm: the fetch fails at once, after the notice
    err = io.StringIO()
    with pytest.raises(CommandError, match="npm is needed"):
        call_command("load_demo", "--source", "vendure", "--cache-dir", str(tmp_path / "cache"), stderr=err)
    assert f"Fetching the vendure demo ({VENDURE.spec}) from its package registry" in err.getvalue()


def test_vendure_fetch_without_npm_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without Node.js

    with pytest.raises(DemoSourceUnavailable, match="npm is needed.*--source saleor"):
        demo_source_fetch(source=VENDURE, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / VENDURE.directory_name).exists()


def _real_products():
    """The real packages, from the cache or fetched into it; skipped when no registry can be reached."""
    try:
        return demo_products_collect(cache_dir=DEFAULT_CACHE_DIR)
    except DemoSourceUnavailable as error:
        pytest.skip(f"demo packages unavailable: {error}")


@pytest.mark.network
def test_real_packages_parse_into_the_category_tree():
    products = _real_products()

    by_sku = {product.sku: product for product in products}
    assert len(by_sku) == len(products) == 85
    assert sum(sku.startswith("VEN-") for sku in by_sku) == 54
    assert all(path.is_file() for product in products for path in product.images)
    assert sum(len(product.images) for product in products) == 99
    # Every product lands in the hand-made tree, and every entry of the tree is used (no stale slugs).
    assert {product.category_path for product in products} == set(CATEGORY_TREE)
    assert {path.split(" > ")[0] for path in CATEGORY_TREE} == {
        "Electronics", "Sports & Outdoors", "Clothing", "Home & Garden", "Groceries"
    }
    assert [path.name for path in by_sku["SAL-87"].images] == [
        f"saleordemoproduct_sneakers_01_{view}.png" for view in (1, 2, 3, 4)
    ]
    assert by_sku["SAL-87"].category_path == by_sku["VEN-allstar-sneakers"].category_path
    assert by_sku["VEN-laptop"].price == Decimal("1299.00")
    assert by_sku["VEN-laptop"].description.startswith("Now equipped with seventh-generation Intel Core")
    assert "SAL-72" not in by_sku  # its photo shows another product


@pytest.mark.network
def test_load_demo_command_loads_the_real_catalog_once(db):
    _real_products()  # skip early when the packages are unavailable
    out = io.StringIO()
    call_command("load_demo", verbosity=0, stdout=out)
    assert "85 products (85 created, 0 updated, 0 unchanged), 99 images added" in out.getvalue()
    assert ProductImage.objects.filter(product__sku__startswith="SAL-").count() == 45

    out = io.StringIO()
    call_command("load_demo", "--no-fetch", verbosity=0, stdout=out)
    assert "(0 created, 0 updated, 85 unchanged), 0 images added" in out.getvalue()
    assert (Product.objects.count(), ProductImage.objects.count()) == (85, 99)
