"""An admin adds a product with a photo in the real admin; a real Celery worker embeds it; shoppers find it by photo."""

import re

import pytest

pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt")

from playwright.sync_api import expect  # noqa: E402

from catalog.models import EmbeddingStatus, ProductImage
from catalog.services import category_get_or_create_path
from tests.browser.pages import card_titles, search_by_photo
from tests.support import wait_for

pytestmark = [pytest.mark.system, pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_admin_adds_a_product_with_a_photo_and_shoppers_find_it_by_photo(
    page, shop, celery_worker_process, django_user_model, test_images, screenshot
):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "a-long-test-password")
    plants = category_get_or_create_path(path="Home > Plants")
    photo = test_images / "plant-cactus.jpg"

    page.goto("/admin/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("a-long-test-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()

    page.goto("/admin/catalog/product/add/")
    page.get_by_label("Sku").fill("CACTUS-1")
    page.get_by_label("Title").fill("Potted cactus")
    # The category field is an autocomplete (select2): open it, type, pick the match the server returns.
    page.locator(".field-category .select2-selection").click()
    page.locator(".select2-search__field").fill("Plan")
    page.locator(".select2-results__option", has_text="Plants").click()
    expect(page.locator(".field-category .select2-selection__rendered")).to_have_text(re.compile("Plants"))
    page.get_by_label("Price").fill("24.50")
    page.locator("input[name='images-0-file']").set_input_files(str(photo))
    screenshot(page, "browser-admin-add-product", full_page=True, readme=True)
    page.get_by_role("button", name="Save", exact=True).click()

    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    image = ProductImage.objects.get(product__sku="CACTUS-1")
    assert image.product.category == plants

    def embedded():
        image.refresh_from_db()
        return image.embedding_status != EmbeddingStatus.PENDING

    wait_for(embedded, timeout=90, message="the worker to embed the new product's photo")
    assert image.embedding_status == EmbeddingStatus.READY, image.embedding_error

    # The product list shows the photo as embedded.
    page.goto("/admin/catalog/product/")
    row = page.locator("#result_list tr", has_text="CACTUS-1")
    expect(row.locator(".field-images_ready")).to_have_text("1/1")
    screenshot(page, "browser-admin-product-list")

    # A shopper searching with the same photo finds the new product first.
    page.goto("/search/photo/")
    search_by_photo(page, photo)
    assert card_titles(page)[0] == "Potted cactus"
    expect(page.locator(".results .match-badge").first).to_have_text(re.compile(r"^(99|100)% match$"))
    screenshot(page, "browser-admin-product-found", readme=True)
