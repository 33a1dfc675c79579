"""The "nothing similar enough" cut-off calibrates itself to the catalog's own vectors (search/calibration.py)."""

import io

import pytest
from django.core.management import call_command
from PIL import Image, ImageOps

from catalog import services as catalog_services
from catalog.models import Product
from search import calibration
from search.models import EmbeddingSpace, ImageEmbedding
from search.selectors import photo_search, search_space_model
from search.services import images_embed
from search.sweep import embedding_space_calibrate, embedding_space_sync, embedding_sweep
from tests.factories import uploaded_file

pytestmark = [pytest.mark.django_db, pytest.mark.servers]

SHOES = ["shoe-plimsoll-yellow-angle.jpg", "shoe-plimsoll-yellow-side.jpg", "shoe-running-1.jpg",
         "shoe-running-2.jpg", "shoe-running-3.jpg"]
SHIRTS = ["tshirt-turquoise-back.jpg", "tshirt-turquoise-front.jpg"]
OTHER_DOMAIN = ["chair-armchair-blue.jpg", "chair-shell-black.jpg", "chair-cafe-pair.jpg", "plant-cactus.jpg"]


def _variants(path):
    """The photo, and two more shots of it as another listing would have them (a mirrored crop, a corner crop)."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    yield "a", image
    yield "b", ImageOps.mirror(image.crop((width // 20, height // 20, width, height)))
    yield "c", image.crop((0, 0, width * 9 // 10, height * 9 // 10))


def _add_products(test_images, tmp_path, names, *, path: str, sku_prefix: str = "") -> list[int]:
    category = catalog_services.category_get_or_create_path(path=path)
    image_ids = []
    for name in names:
        for suffix, image in _variants(test_images / name):
            file = tmp_path / f"{sku_prefix}{name}-{suffix}.jpg"
            image.save(file, "JPEG", quality=90)
            product = catalog_services.product_create(sku=f"{sku_prefix}{name[:-4]}-{suffix}", title=name,
                                                      category=category, price="10")
            image_ids.append(catalog_services.product_image_add(product=product, file=uploaded_file(file)).pk)
    images_embed(image_ids=image_ids)
    return image_ids


@pytest.fixture
def clothing_shop(settings, test_images, tmp_path):
    """21 products of one domain in two categories: shoes and T-shirts, each photo as three listings."""
    settings.EMBEDDING_MODEL = "efficientnet-lite0"
    settings.SEARCH_MIN_SCORE = None
    _add_products(test_images, tmp_path, SHOES, path="Clothing > Shoes")
    _add_products(test_images, tmp_path, SHIRTS, path="Clothing > T-shirts")
    return test_images


def _space() -> EmbeddingSpace:
    return EmbeddingSpace.objects.get(model=search_space_model())


def test_the_sweep_calibrates_the_cut_off_from_the_catalog_and_stores_it_with_the_space(clothing_shop):
    assert embedding_sweep()["min_score"] is not None
    space = _space()
    assert calibration.LOWEST_CUTOFF <= space.min_score <= calibration.DEFAULT_CUTOFF
    assert space.calibrated_vectors == 21 and space.calibrated_at is not None


def test_photos_of_another_domain_get_the_empty_state_at_the_default(clothing_shop):
    embedding_sweep()
    for name in OTHER_DOMAIN:
        search = photo_search(file=uploaded_file(clothing_shop / name))
        assert search.results == [], f"{name} matched {[(r.product.sku, r.score) for r in search.results]}"
        assert search.cutoff == _space().min_score


def test_a_new_photo_of_a_product_in_the_catalog_is_found_at_the_default(clothing_shop, tmp_path):
    embedding_sweep()
    shoe = Image.open(clothing_shop / "shoe-running-2.jpg").convert("RGB")
    width, height = shoe.size
    snapshot = tmp_path / "snapshot.jpg"
    ImageOps.mirror(shoe.crop((width // 10, 0, width, height * 9 // 10))).rotate(8, fillcolor=(230, 225, 215)).save(
        snapshot, "JPEG", quality=60)
    search = photo_search(file=uploaded_file(snapshot))
    assert search.results and search.results[0].product.sku.startswith("shoe-running-2")
    assert search.results[0].score >= calibration.MATCH_THRESHOLD


def test_the_cut_off_is_recomputed_when_the_catalog_has_changed_enough(clothing_shop, tmp_path):
    embedding_sweep()
    before = _space()
    embedding_sweep()  # nothing changed: nothing recomputed
    assert _space().calibrated_at == before.calibrated_at

    # The same shoes listed again under another category: categories now hold look-alikes, so the cut-off rises.
    _add_products(clothing_shop, tmp_path, SHOES, path="Clothing > Sneakers", sku_prefix="again-")
    embedding_sweep()
    after = _space()
    assert after.calibrated_vectors == 36 and after.calibrated_at > before.calibrated_at
    assert after.min_score > before.min_score


def test_the_cut_off_is_recomputed_when_products_are_replaced_one_for_one(clothing_shop, tmp_path):
    embedding_sweep()
    before = _space()
    for product in Product.objects.filter(category__name="T-shirts"):
        catalog_services.products_delete(products=[product])
    _add_products(clothing_shop, tmp_path, SHOES[:2], path="Clothing > Sneakers", sku_prefix="again-")
    assert ImageEmbedding.objects.filter(model=before.model).count() == before.calibrated_vectors  # as many as before

    embedding_sweep()
    after = _space()
    assert after.calibrated_at > before.calibrated_at and after.min_score > before.min_score


def test_a_catalog_split_into_categories_after_its_import_gets_calibrated(settings, test_images, tmp_path):
    settings.EMBEDDING_MODEL = "efficientnet-lite0"
    _add_products(test_images, tmp_path, SHOES + SHIRTS, path="Clothing")
    assert embedding_sweep()["min_score"] is None  # one category: nothing to calibrate on

    shirts = catalog_services.category_get_or_create_path(path="Clothing > T-shirts")
    for product in Product.objects.filter(title__startswith="tshirt"):
        catalog_services.product_update(product=product, category=shirts)
    assert embedding_sweep()["min_score"] is not None
    space = _space()  # computed from the catalog as it is now: every vector, two categories
    assert calibration.LOWEST_CUTOFF <= space.min_score <= calibration.DEFAULT_CUTOFF
    assert space.calibrated_vectors == Product.objects.count()


def test_an_operator_can_pin_the_cut_off(clothing_shop, settings, tmp_path):
    embedding_sweep()
    settings.SEARCH_MIN_SCORE = 0.05
    search = photo_search(file=uploaded_file(clothing_shop / "chair-shell-black.jpg"))
    assert search.cutoff == 0.05 and search.results  # everything is similar enough now

    # Pinned, the sweep leaves the calibration alone, and the command says which cut-off search uses
    before = _space()
    _add_products(clothing_shop, tmp_path, SHOES, path="Clothing > Sneakers", sku_prefix="again-")
    embedding_sweep()
    assert _space().calibrated_at == before.calibrated_at
    out = io.StringIO()
    call_command("calibrate", stdout=out)
    assert "SEARCH_MIN_SCORE pins the cut-off search uses at 0.050" in out.getvalue()


def test_a_catalog_with_one_category_uses_the_default(settings, test_images, tmp_path):
    settings.EMBEDDING_MODEL = "efficientnet-lite0"
    _add_products(test_images, tmp_path, SHOES + SHIRTS, path="Clothing")
    space = embedding_space_calibrate(space=embedding_space_sync(), force=True)
    assert space.min_score is None and space.calibrated_vectors == 21
    assert photo_search(file=uploaded_file(test_images / "shoe-running-2.jpg")).cutoff == calibration.DEFAULT_CUTOFF


def test_a_catalog_too_small_to_calibrate_uses_the_default(settings, test_images):
    settings.EMBEDDING_MODEL = "efficientnet-lite0"
    category = catalog_services.category_get_or_create_path(path="Clothing")
    product = catalog_services.product_create(sku="ONE", title="One", category=category, price="1")
    image = catalog_services.product_image_add(product=product, file=uploaded_file(test_images / "shoe-running-1.jpg"))
    images_embed(image_ids=[image.pk])
    space = embedding_space_calibrate(space=embedding_space_sync(), force=True)
    assert space.min_score is None and space.calibrated_vectors == 1
    assert photo_search(file=uploaded_file(test_images / "shoe-running-2.jpg")).cutoff == calibration.DEFAULT_CUTOFF


@pytest.mark.parametrize(("similarity", "cutoff", "score"), [
    (0.6, 0.6, 0.5), (1.0, 0.6, 1.0), (0.8, 0.6, 0.75), (0.3, 0.6, 0.25), (0.0, 0.6, 0.0), (-0.2, 0.6, 0.0),
    (0.9, 0.3, 0.5 + 0.5 * 0.6 / 0.7),
])
def test_the_match_score_is_one_half_at_the_cut_off_and_one_for_the_same_photo(similarity, cutoff, score):
    assert calibration.match_score(similarity, cutoff) == pytest.approx(score)


def test_the_cut_off_follows_the_neighbour_similarities_within_its_bounds():
    def cutoff(similarities, quantile=0.5):
        return calibration.cutoff_from_neighbours(similarities, quantile=quantile, highest=0.6)

    assert cutoff([0.5] * 10) == pytest.approx(0.5)
    assert cutoff([0.99] * 10) == 0.6
    assert cutoff([0.01] * 10) == calibration.LOWEST_CUTOFF
    spread = [0.3, 0.4, 0.5, 0.9]
    assert cutoff(spread, quantile=0.0) == 0.3
    assert cutoff(spread, quantile=1.0) == 0.6


def test_recalibration_waits_for_a_real_change():
    assert calibration.needs_calibration(calibrated_vectors=0, vectors=5)
    assert not calibration.needs_calibration(calibrated_vectors=0, vectors=0)
    assert not calibration.needs_calibration(calibrated_vectors=1000, vectors=1050)
    assert calibration.needs_calibration(calibrated_vectors=1000, vectors=1100)
    assert calibration.needs_calibration(calibrated_vectors=1000, vectors=850)
    assert not calibration.needs_calibration(calibrated_vectors=1000, vectors=1000, changed=lambda: 99)
    assert calibration.needs_calibration(calibrated_vectors=1000, vectors=1000, changed=lambda: 100)
