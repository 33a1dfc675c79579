"""The admin: add a product with two images, see thumbnails and embedding status, re-embed, bad uploads."""

import html
import re
from decimal import Decimal

import pytest
from django.urls import reverse

from catalog.models import Category, EmbeddingStatus, Product, ProductImage
from search import services as search_services
from search.models import ImageEmbedding
from tests.factories import CategoryFactory, ProductFactory, uploaded_image
from tests.support import embedding_dispatches, embedding_queue

pytestmark = pytest.mark.django_db


def _product_form(category, **overrides):
    data = {
        "sku": "SOFA-1", "title": "Dimpled sofa", "category": category.pk, "price": "899.00", "currency": "EUR",
        "active": "on", "description": "Three seats, buttoned back.",
        "images-TOTAL_FORMS": "2", "images-INITIAL_FORMS": "0", "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
        "images-0-position": "0", "images-1-position": "1",
    }
    data.update(overrides)
    return data


def test_admin_adds_a_product_with_two_images_and_queues_both(
    admin_client, settings, django_capture_on_commit_callbacks
):
    category = CategoryFactory(name="Sofas")
    data = _product_form(category)
    data["images-0-file"] = uploaded_image("front.jpg", size=(800, 600))
    data["images-1-file"] = uploaded_image("side.png", size=(600, 800), color=(0, 0, 200))
    sent = embedding_queue(settings.CELERY_BROKER_URL)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 302, response.content[:2000]
    product = Product.objects.get(sku="SOFA-1")
    images = list(product.images.order_by("position"))
    assert [(i.width, i.height) for i in images] == [(800, 600), (600, 800)]
    assert all(i.embedding_status == EmbeddingStatus.PENDING and len(i.content_hash) == 64 for i in images)
    assert sent() == [[i.pk for i in images]]  # one task embeds both, in one model call, after commit


def test_admin_refuses_a_file_that_is_not_an_image(admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = _product_form(CategoryFactory())
    data["images-TOTAL_FORMS"] = "1"
    data["images-0-file"] = SimpleUploadedFile("sofa.jpg", b"#!/bin/sh\necho not a photo\n", content_type="image/jpeg")
    response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 200  # the form again, with the error
    assert not Product.objects.exists() and not ProductImage.objects.exists()
    assert "Upload a valid image" in response.text or "not a readable image" in response.text


def test_change_page_shows_thumbnails_and_status(admin_client, product):
    from catalog.services import product_image_add

    image = product_image_add(product=product, file=uploaded_image())
    search_services.images_embed(image_ids=[image.pk])
    response = admin_client.get(reverse("admin:catalog_product_change", args=[product.pk]))
    assert response.status_code == 200
    assert image.file.url in response.text
    assert "Ready" in response.text
    # Previews show the small copy: the lists loaded every original, megabytes each, and HEIC not at all.
    assert image.thumbnail and f'<img src="{image.card_url}"' in response.text
    listed = admin_client.get(reverse("admin:catalog_productimage_changelist")).text
    assert f'<img src="{image.card_url}"' in listed and f'<img src="{image.file.url}"' not in listed


def test_product_list_shows_embedded_count_and_filters(admin_client, product):
    from catalog.services import product_image_add

    product_image_add(product=product, file=uploaded_image())
    response = admin_client.get(reverse("admin:catalog_product_changelist"), {"q": product.sku})
    assert response.status_code == 200
    assert re.search(r">0/1<", response.text)
    response = admin_client.get(
        reverse("admin:catalog_product_changelist"), {"images__embedding_status": "ready"}
    )
    assert product.sku not in response.text

    # Filtered by status, the list joins the photos a second time: each counted once all the same.
    product_image_add(product=product, file=uploaded_image(color=(0, 0, 255)))
    search_services.images_embed(image_ids=[image.pk for image in product.images.all()])
    for query in ({"q": product.sku}, {"q": product.sku, "images__embedding_status": "ready"}):
        response = admin_client.get(reverse("admin:catalog_product_changelist"), query)
        assert re.search(r">2/2<", response.text), query


def test_reembed_action_resets_and_queues(admin_client, product, django_capture_on_commit_callbacks):
    from catalog.services import product_image_add

    image = product_image_add(product=product, file=uploaded_image())
    search_services.images_embed(image_ids=[image.pk])
    other = ProductFactory()
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            reverse("admin:catalog_product_changelist"),
            {"action": "reembed_images", "_selected_action": [product.pk, other.pk]},
            follow=True,
        )
    assert "1 image(s) will be embedded again" in response.text
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING
    assert len(embedding_dispatches(callbacks)) == 1


@pytest.fixture
def reduction_file_missing(monkeypatch, tmp_path):
    """A deployment whose reduction .npz went missing: the model cannot be identified, let alone loaded."""
    from search import embeddings

    monkeypatch.setattr(embeddings, "reduction_path", lambda **_: tmp_path / "gone.npz")
    embeddings.get_embedder.cache_clear()  # a fresh embedder, which has not loaded its reduction yet
    yield
    embeddings.get_embedder.cache_clear()


def test_reembed_works_while_the_model_cannot_be_identified(
    admin_client, product, django_capture_on_commit_callbacks, request
):
    from catalog.services import product_image_add

    image = product_image_add(product=product, file=uploaded_image())
    search_services.images_embed(image_ids=[image.pk])
    assert ImageEmbedding.objects.filter(image=image).exists()
    request.getfixturevalue("reduction_file_missing")

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            reverse("admin:catalog_product_changelist"),
            {"action": "reembed_images", "_selected_action": [product.pk]},
            follow=True,
        )

    assert response.status_code == 200 and "1 image(s) will be embedded again" in response.text
    assert not ImageEmbedding.objects.filter(image=image).exists()  # no stale vector would mark it ready later
    assert len(embedding_dispatches(callbacks)) == 1
    # The worker's turn: the image fails with the reason instead of crashing.
    assert search_services.images_embed(image_ids=[image.pk])["failed"] == 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.FAILED
    assert image.embedding_error.startswith("model unavailable: cannot load the efficientnet-lite0 reduction")


def test_anonymous_users_cannot_reach_the_admin(client):
    response = client.get(reverse("admin:catalog_product_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_near_duplicate_upload_is_flagged_with_a_link_to_the_other_product(admin_client, test_images):
    from catalog.services import product_image_add
    from tests.factories import uploaded_file

    original = ProductFactory(sku="CHAIR-ORIG")
    product_image_add(product=original, file=uploaded_file(test_images / "chair-shell-black.jpg"))
    unrelated = ProductFactory(sku="TEE")
    product_image_add(product=unrelated, file=uploaded_file(test_images / "tshirt-turquoise-front.jpg"))
    copy_product = ProductFactory(sku="CHAIR-COPY")
    # The same photo, downscaled and re-encoded: what a re-upload from another shop looks like.
    from io import BytesIO

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    buffer = BytesIO()
    Image.open(test_images / "chair-shell-black.jpg").resize((300, 300)).save(buffer, "JPEG", quality=70)
    copy = product_image_add(product=copy_product, file=SimpleUploadedFile("copy.jpg", buffer.getvalue()))
    search_services.images_embed(image_ids=list(ProductImage.objects.order_by("pk").values_list("pk", flat=True)))

    copy.refresh_from_db()
    assert copy.near_duplicate_of.product == original
    assert copy.near_duplicate_score >= 0.9
    assert ProductImage.objects.get(product=unrelated).near_duplicate_of is None
    response = admin_client.get(reverse("admin:catalog_product_change", args=[copy_product.pk]))
    assert reverse("admin:catalog_product_change", args=[original.pk]) in response.text
    assert "CHAIR-ORIG" in response.text and "⚠" in response.text

    # The original's file replaced by another picture: the copy is no longer a copy of it
    original_photo = ProductImage.objects.get(product=original)
    response = admin_client.post(
        reverse("admin:catalog_productimage_change", args=[original_photo.pk]),
        {"product": original.pk, "position": 0, "file": uploaded_file(test_images / "plant-cactus.jpg")},
    )
    assert response.status_code == 302, response.content[:2000]
    copy.refresh_from_db()
    assert (copy.near_duplicate_of, copy.near_duplicate_score) == (None, None)


# --- Photos written through catalog.services (issue 13) ------------------------------------------------


def _stored(media_root, name) -> bool:
    return bool(name) and (media_root / name).is_file()


def _embedded_photo(product, test_images, name="chair-shell-black.jpg", copy=0):
    """``copy``: the same picture in other bytes, which a product may take once more."""
    from catalog.services import product_image_add
    from tests.factories import copied, uploaded_file

    upload = uploaded_file(test_images / name)
    image = product_image_add(product=product, file=copied(upload, copy) if copy else upload)
    search_services.images_embed(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.READY
    return image


def _photos_change(product, images):
    """The product's page posted as it was shown with ``images`` in its photo rows."""
    data = _product_form(product.category, sku=product.sku, title=product.title, price=str(product.price),
                         currency=product.currency)
    data.update({"images-TOTAL_FORMS": str(len(images)), "images-INITIAL_FORMS": str(len(images))})
    for index, image in enumerate(images):
        data.update({f"images-{index}-id": str(image.pk), f"images-{index}-product": str(product.pk),
                     f"images-{index}-position": str(image.position),
                     f"initial-images-{index}-position": str(image.position)})  # what the page showed
    return data


def _inline_change(product, image, **fields):
    data = _photos_change(product, [image])
    data.update({f"images-0-{name}": value for name, value in fields.items()})
    return data


def test_photos_added_in_the_admin_without_a_position_go_after_the_others(admin_client, product, media_root):
    from catalog.services import product_image_add

    for colour in ((200, 0, 0), (0, 200, 0)):
        product_image_add(product=product, file=uploaded_image("kept.jpg", size=(100, 100), color=colour))
    page = admin_client.get(reverse("admin:catalog_product_change", args=[product.pk]))
    assert re.search(r'name="images-2-position"(?![^>]*value=)', page.content.decode())  # empty, not 0
    data = _product_form(product.category, sku=product.sku, title=product.title, price=str(product.price),
                         currency=product.currency)
    data.update({"images-TOTAL_FORMS": "4", "images-INITIAL_FORMS": "2", "images-2-position": "",
                 "images-3-position": "", "images-2-file": uploaded_image("third.jpg", size=(300, 200)),
                 "images-3-file": uploaded_image("fourth.jpg", size=(200, 300))})
    for index, image in enumerate(product.images.order_by("position")):
        data.update({f"images-{index}-id": str(image.pk), f"images-{index}-product": str(product.pk),
                     f"images-{index}-position": str(image.position)})

    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)

    assert response.status_code == 302, response.content[:2000]
    assert list(product.images.order_by("position", "pk").values_list("position", "width", "height")) == [
        (0, 100, 100), (1, 100, 100), (2, 300, 200), (3, 200, 300)
    ]


def test_a_photo_the_product_has_already_is_refused_beside_its_upload_and_the_page_kept(admin_client, product):
    """The product page stored a second copy of a photo the product had, or of another new one of the same save."""
    from catalog.services import product_image_add

    shown = product_image_add(product=product, file=uploaded_image("kept.jpg", color=(200, 0, 0)))
    data = _photos_change(product, [shown])
    data.update({"title": "Renamed", "images-TOTAL_FORMS": "3", "images-1-position": "", "images-2-position": "",
                 "images-1-file": uploaded_image("again.jpg", color=(200, 0, 0)),
                 "images-2-file": uploaded_image("new.jpg", color=(0, 0, 200))})

    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)

    assert response.status_code == 200  # the page again, as the admin filled it in
    assert response.context["inline_admin_formsets"][0].formset.errors[1] == {
        "file": ["This photo is on the product already."]}
    assert 'value="Renamed"' in response.text
    product.refresh_from_db()
    assert product.title != "Renamed" and list(product.images.all()) == [shown]

    data.update({"images-1-file": uploaded_image("new.jpg", color=(0, 0, 200)),
                 "images-2-file": uploaded_image("new.jpg", color=(0, 0, 200))})
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)
    formset = response.context["inline_admin_formsets"][0].formset
    assert (formset.errors[1], formset.errors[2]) == ({}, {"file": ["This photo is on the product already."]})
    assert list(product.images.all()) == [shown]


def test_a_picture_moved_from_a_photo_deleted_to_another_in_one_save_is_taken(admin_client, product):
    """The older photo given the picture of a newer one deleted in the same save was refused as a copy (the photos
    were saved oldest first, the deletion after it), and the page's other edits with it."""
    from catalog.services import product_image_add

    older, newer = (product_image_add(product=product, file=uploaded_image(f"{n}.jpg", color=colour))
                    for n, colour in enumerate([(200, 0, 0), (0, 200, 0)]))
    data = _photos_change(product, [older, newer])
    data.update({"title": "Renamed", "images-0-file": uploaded_image("again.jpg", color=(0, 200, 0)),
                 "images-1-DELETE": "on"})

    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)

    assert response.status_code == 302, response.content[:2000]
    product.refresh_from_db()
    assert product.title == "Renamed" and list(product.images.all()) == [older]
    assert older.content_hash != product.images.get().content_hash == newer.content_hash


def test_a_picture_a_later_photo_gives_up_in_the_same_save_is_said_at_the_upload_not_lost(admin_client, product):
    """The older photo given the newer one's picture, the newer one a new picture: the page's check passed (the
    newer one's old picture was leaving), the services, replacing the older first, refused it as a copy, and the
    page's edits were lost with a message."""
    from catalog.services import product_image_add

    older, newer = (product_image_add(product=product, file=uploaded_image(f"{n}.jpg", color=colour))
                    for n, colour in enumerate([(200, 0, 0), (0, 200, 0)]))
    data = _photos_change(product, [older, newer])
    data.update({"title": "Renamed", "images-0-file": uploaded_image("a.jpg", color=(0, 200, 0)),
                 "images-1-file": uploaded_image("b.jpg", color=(0, 0, 200))})

    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)

    assert response.status_code == 200 and 'value="Renamed"' in response.text  # the page, as the admin filled it in
    assert response.context["inline_admin_formsets"][0].formset.errors[0] == {
        "file": ["This photo is on the product already."]}


def test_photos_a_product_had_twice_already_do_not_stop_its_page_from_saving(admin_client, product):
    copies = [ProductImage.objects.create(product=product, position=position, file=f"copy-{position}.jpg",
                                          content_hash="a" * 64, width=10, height=10) for position in (0, 1)]
    data = _photos_change(product, copies)
    data["title"] = "Renamed"
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)
    assert response.status_code == 302, response.content[:2000]
    product.refresh_from_db()
    assert product.title == "Renamed" and product.images.count() == 2


def test_a_photo_uploaded_in_the_admin_gets_a_thumbnail(admin_client, media_root):
    """Issue 13: admin uploads were stored without a thumbnail, so grids served the full-size original."""
    data = _product_form(CategoryFactory())
    data["images-TOTAL_FORMS"] = "1"
    data["images-0-file"] = uploaded_image("front.jpg", size=(1600, 1200))
    response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 302, response.content[:2000]

    image = ProductImage.objects.get()
    assert _stored(media_root, image.thumbnail.name) and image.thumbnail.name.endswith(".webp")
    assert image.card_url == image.thumbnail.url


def test_a_photo_replaced_in_the_product_page_gets_a_new_thumbnail_and_new_vectors(
    admin_client, product, test_images, media_root, settings, django_capture_on_commit_callbacks
):
    """Issue 13: a replaced photo kept its old thumbnail (grids showed the old photo, search the new one)."""
    from search.models import ImageEmbedding
    from tests.factories import uploaded_file

    image = _embedded_photo(product, test_images)
    old_file, old_thumbnail, old_hash = image.file.name, image.thumbnail.name, image.content_hash
    sent = embedding_queue(settings.CELERY_BROKER_URL)

    data = _inline_change(product, image, file=uploaded_file(test_images / "tshirt-turquoise-front.jpg"))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)
    assert response.status_code == 302, response.content[:3000]

    image.refresh_from_db()
    assert image.content_hash != old_hash and image.thumbnail.name != old_thumbnail
    assert _stored(media_root, image.file.name) and _stored(media_root, image.thumbnail.name)
    assert not _stored(media_root, old_file) and not _stored(media_root, old_thumbnail)
    assert image.embedding_status == EmbeddingStatus.PENDING
    assert not ImageEmbedding.objects.filter(image=image).exists()
    assert sent() == [[image.pk]]


def test_a_photo_replaced_on_its_own_page_gets_a_new_thumbnail(admin_client, product, test_images, media_root):
    from tests.factories import uploaded_file

    image = _embedded_photo(product, test_images)
    old_thumbnail = image.thumbnail.name
    response = admin_client.post(
        reverse("admin:catalog_productimage_change", args=[image.pk]),
        {"product": product.pk, "position": 0, "file": uploaded_file(test_images / "tshirt-turquoise-front.jpg")},
    )
    assert response.status_code == 302, response.content[:3000]
    image.refresh_from_db()
    assert image.thumbnail.name != old_thumbnail and _stored(media_root, image.thumbnail.name)
    assert image.embedding_status == EmbeddingStatus.PENDING


def test_a_photo_replaced_on_its_own_page_keeps_a_move_saved_meanwhile(admin_client, product, test_images):
    """The page sent back the product and position it showed, and the save moved the photo back: another admin's
    move (or reordering) was undone without a word."""
    from catalog.services import product_image_update
    from tests.factories import uploaded_file

    image = _embedded_photo(product, test_images)
    other = ProductFactory(category=product.category)
    shown = {"product": product.pk, "position": 0, "initial-product": product.pk, "initial-position": 0}
    product_image_update(image=image, product=other, position=3)  # another admin, while this page was open
    response = admin_client.post(reverse("admin:catalog_productimage_change", args=[image.pk]),
                                 {**shown, "file": uploaded_file(test_images / "tshirt-turquoise-front.jpg")})
    assert response.status_code == 302, response.content[:3000]
    image.refresh_from_db()
    assert (image.product, image.position, image.height) == (other, 3, 480)  # the new file, where it was moved


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_a_photo_moved_to_another_product_while_the_product_page_saves_is_left_alone(
    admin_client, product, test_images, monkeypatch, change
):
    """The page's photo rows are read before its uploads are checked (seconds for a large photo): a photo another
    admin moved to another product in between was deleted, or given this page's picture, on that product."""
    from catalog import admin as catalog_admin
    from catalog.services import product_image_update
    from tests.factories import uploaded_file

    image = _embedded_photo(product, test_images)
    other = ProductFactory(category=product.category)
    real_update = catalog_admin.product_update

    def moved_meanwhile(**kwargs):
        product_image_update(image=image, product=other)
        return real_update(**kwargs)

    monkeypatch.setattr(catalog_admin, "product_update", moved_meanwhile)
    row = ({"DELETE": "on"} if change == "delete"
           else {"file": uploaded_file(test_images / "tshirt-turquoise-front.jpg")})
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]),
                                 _inline_change(product, image, **row), follow=True)
    assert ("Nothing was saved: a photo on this page was moved to another product meanwhile: reload the page to see "
            "the product's photos as they are now") in html.unescape(response.text)
    # Neither deleted nor given this page's picture (the move, made here inside the page's transaction, is undone
    # with it; another admin's would have been committed).
    assert ProductImage.objects.get(pk=image.pk).file.name == image.file.name


def test_a_photo_moved_to_another_product_in_the_admin_is_found_under_its_new_product(
    admin_client, product, test_images
):
    """Issue 13: the vector row kept the old product and category, so photo search returned the old product."""
    from search.models import ImageEmbedding
    from search.selectors import similar_products_to_vector

    image = _embedded_photo(product, test_images)
    other = ProductFactory()  # in another category
    response = admin_client.post(
        reverse("admin:catalog_productimage_change", args=[image.pk]),
        {"product": other.pk, "position": 0, "file": ""},
    )
    assert response.status_code == 302, response.content[:3000]

    image.refresh_from_db()
    assert image.product == other and image.embedding_status == EmbeddingStatus.READY  # the same file
    row = ImageEmbedding.objects.get(image=image)
    assert (row.product_id, row.category_id) == (other.pk, other.category_id)
    found = similar_products_to_vector(vector=row.vector, limit=5, model=row.model)
    assert [result.product for result in found] == [other]
    in_new_category = similar_products_to_vector(vector=row.vector, limit=5, model=row.model,
                                                 category_ids=[other.category_id])
    assert [result.product for result in in_new_category] == [other]


def test_a_product_deleted_in_the_admin_takes_its_photos_files_along(
    admin_client, product, test_images, media_root, django_capture_on_commit_callbacks
):
    image = _embedded_photo(product, test_images)
    files = [image.file.name, image.thumbnail.name]
    assert all(_stored(media_root, name) for name in files)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_product_delete", args=[product.pk]), {"post": "yes"})
    assert response.status_code == 302, response.content[:3000]
    assert not ProductImage.objects.exists() and not ImageEmbedding.objects.exists()
    assert not any(_stored(media_root, name) for name in files)


def test_deleting_selected_products_takes_only_their_files_along(
    admin_client, product, test_images, media_root, django_capture_on_commit_callbacks
):
    kept = ProductFactory(category=product.category)
    gone_image, kept_image = _embedded_photo(product, test_images), _embedded_photo(kept, test_images, "plant-cactus.jpg")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_product_changelist"),
                                     {"action": "delete_selected", "_selected_action": [product.pk], "post": "yes"})
    assert response.status_code == 302, response.content[:3000]
    assert list(ProductImage.objects.all()) == [kept_image]
    assert not any(_stored(media_root, name) for name in [gone_image.file.name, gone_image.thumbnail.name])
    assert all(_stored(media_root, name) for name in [kept_image.file.name, kept_image.thumbnail.name])


@pytest.mark.parametrize("new_file", [False, True], ids=["alone", "with a new file picked on its row"])
def test_a_photo_deleted_in_the_admin_takes_its_files_along(
    admin_client, product, test_images, media_root, django_capture_on_commit_callbacks, new_file
):
    """A new file picked on the row it deletes was put on the photo by the form: the stored files were left."""
    image = _embedded_photo(product, test_images)
    files = [image.file.name, image.thumbnail.name]
    picked = {"file": uploaded_image("new.jpg", size=(100, 100))} if new_file else {}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]),
                                     _inline_change(product, image, DELETE="on", **picked))
    assert response.status_code == 302, response.content[:3000]
    assert not ProductImage.objects.exists()
    assert not any(_stored(media_root, name) for name in files)


def test_a_photo_deleted_meanwhile_and_deleted_again_on_the_product_page_is_no_error(admin_client, product):
    """Another admin deleted the photo while this one's page was open: its row came back with no photo, and
    sorting the rows by id failed on it (a 500)."""
    from catalog.services import product_image_add, product_image_delete

    kept, gone = (product_image_add(product=product, file=uploaded_image(f"{n}.jpg", color=(n * 90, 0, 0)))
                  for n in range(2))
    data = _photos_change(product, [kept, gone])
    data["images-1-DELETE"] = "on"
    product_image_delete(image=gone)
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)
    assert response.status_code == 302, response.content[:3000]
    assert list(product.images.all()) == [kept]


@pytest.mark.parametrize("position", ["7", None], ids=["its row changed", "its row as it was"])
def test_a_photo_deleted_meanwhile_and_kept_on_the_product_page_is_refused_saying_why(admin_client, product,
                                                                                      position):
    """Its row came back with no photo, in error by its hidden id only: "Please correct the errors below", and none
    shown."""
    from catalog.services import product_image_add, product_image_delete

    gone, kept = (product_image_add(product=product, file=uploaded_image(f"{n}.jpg", color=(n * 90, 0, 0)))
                  for n in range(2))
    data = _photos_change(product, [gone, kept])  # the first row: shown again, beside the photo after it
    if position:
        data["images-0-position"] = position
    data["title"] = "A new title"
    product_image_delete(image=gone)
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)
    assert response.status_code == 200  # the form again
    assert ("A photo on this page was deleted or moved to another product meanwhile: reload the page to see the "
            "product's photos as they are now.") in html.unescape(response.text)
    assert "This field is required" not in response.text  # its file, which it had: nothing to ask of the admin
    product.refresh_from_db()
    assert product.title != "A new title" and list(product.images.all()) == [kept]


def test_a_photos_position_emptied_on_the_product_page_is_refused_not_ignored(admin_client, product, test_images):
    """Emptied, the position was left as it was while the admin said the photo changed."""
    image = _embedded_photo(product, test_images)
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]),
                                 _inline_change(product, image, position=""))
    assert response.status_code == 200  # the form again
    assert "This field is required" in response.text


def test_hiding_every_product_selected_reads_their_ids_not_their_photos(admin_client, category, test_images):
    """"Select all" handed the admin's list query, photos prefetched, to the service, which loaded them all."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from catalog.services import product_image_add

    for n in range(3):
        product = ProductFactory(category=category, sku=f"ALL-{n}")
        product_image_add(product=product, file=uploaded_image(f"{n}.jpg", color=(n * 60, 0, 0)))
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(reverse("admin:catalog_product_changelist"), {
            "action": "hide_from_shop", "select_across": "1", "index": "0",
            "_selected_action": [str(pk) for pk in Product.objects.values_list("pk", flat=True)],
        })
    assert response.status_code == 302
    assert not Product.objects.filter(active=True).exists()
    assert not [query["sql"] for query in queries.captured_queries if 'FROM "catalog_productimage"' in query["sql"]]


@pytest.mark.django_db(transaction=True)
def test_a_photo_added_in_the_admin_to_a_product_deleted_meanwhile_is_refused_with_a_message(
    admin_client, product, media_root, monkeypatch
):
    """The photo row was refused only at the commit: an error page, and the photo's files left on disk."""
    from catalog import admin as catalog_admin
    from catalog.services import products_delete

    add = catalog_admin.product_image_add

    def deleted_meanwhile(**kwargs):
        products_delete(products=[product])
        return add(**kwargs)

    monkeypatch.setattr(catalog_admin, "product_image_add", deleted_meanwhile)
    response = admin_client.post(reverse("admin:catalog_productimage_add"),
                                 {"product": product.pk, "position": 0, "file": uploaded_image()}, follow=True)

    assert response.status_code == 200
    assert "Nothing was saved: something it refers to was deleted meanwhile" in response.content.decode()
    assert not ProductImage.objects.exists()
    assert not [path for path in media_root.rglob("*") if path.is_file()]


def test_a_product_save_refused_after_a_photos_new_file_was_stored_takes_the_file_away(
    admin_client, product, media_root, monkeypatch
):
    """The first photo's new file was stored and its savepoint released; the second photo's save was refused and
    the whole change undone, and the first's new file and thumbnail stayed on disk, held by no row."""
    from catalog import admin as catalog_admin
    from catalog.services import product_image_add

    first, second = (product_image_add(product=product, file=uploaded_image(f"{n}.jpg", color=(n * 90, 0, 0)))
                     for n in range(2))
    before = sorted(path for path in media_root.rglob("*") if path.is_file())
    update = catalog_admin.product_image_update

    def second_deleted_meanwhile(*, image, **kwargs):
        if image.pk == second.pk:
            raise ProductImage.DoesNotExist("deleted meanwhile")
        return update(image=image, **kwargs)

    monkeypatch.setattr(catalog_admin, "product_image_update", second_deleted_meanwhile)
    data = _photos_change(product, [first, second])
    data.update({f"images-{index}-position": str(image.position + 5) for index, image in enumerate((first, second))})
    data["images-0-file"] = uploaded_image("new.jpg", size=(120, 90))
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data, follow=True)

    assert "Nothing was saved" in response.content.decode()
    assert ProductImage.objects.get(pk=first.pk).file.name == first.file.name
    assert sorted(path for path in media_root.rglob("*") if path.is_file()) == before


def test_saving_an_unchanged_category_or_photo_in_the_admin_keeps_the_cached_pages(admin_client, product, category):
    """The admin saves a form that changed nothing too: each such save retired every cached page of the shop."""
    from catalog import page_cache
    from catalog.services import product_image_add

    image = product_image_add(product=product, file=uploaded_image())
    before = page_cache._version()
    response = admin_client.post(reverse("admin:catalog_category_change", args=[category.pk]),
                                 {"name": category.name, "slug": category.slug, "parent": category.parent_id or ""})
    assert response.status_code == 302, response.content[:2000]
    response = admin_client.post(reverse("admin:catalog_productimage_change", args=[image.pk]),
                                 {"product": product.pk, "position": image.position})
    assert response.status_code == 302, response.content[:2000]
    assert page_cache._version() == before


def test_a_category_named_like_one_another_admin_saved_meanwhile_is_refused_with_a_message(
    admin_client, category, monkeypatch
):
    """The form's check passed, then the database's unique constraint refused the save: an error page."""
    from catalog.models import Category

    full_clean, calls = Category.full_clean, []

    def another_admin_saves_meanwhile(self, *args, **kwargs):
        full_clean(self, *args, **kwargs)
        calls.append(self.name)
        if len(calls) == 2:  # the service's check, after the form's
            Category.objects.create(name="Lamps", slug="lamps-elsewhere", parent=category)

    monkeypatch.setattr(Category, "full_clean", another_admin_saves_meanwhile)
    response = admin_client.post(reverse("admin:catalog_category_add"),
                                 {"name": "Lamps", "slug": "lamps", "parent": category.pk}, follow=True)

    assert response.status_code == 200
    assert "Nothing was saved: There is already a category &#x27;Lamps&#x27; here." in response.content.decode()
    # The save undone, and the other admin's with it here: it stands in this request's transaction
    assert not Category.objects.filter(name="Lamps").exists()


def test_a_product_edited_in_the_admin_keeps_a_price_set_while_its_page_was_open(admin_client, product):
    from catalog.services import product_update

    page = admin_client.get(reverse("admin:catalog_product_change", args=[product.pk])).content.decode()
    seen = dict(re.findall(r'<input type="hidden" name="(initial-[a-z]+)" value="([^"]*)"', page))  # as shown
    product_update(product=Product.objects.get(pk=product.pk), price="5.00")  # an import, meanwhile

    data = _product_form(product.category, sku=product.sku, title="Renamed", price=str(product.price),
                         currency=product.currency, description=product.description, **seen)
    data.update({"images-TOTAL_FORMS": "0"})
    if not product.active:
        del data["active"]
    response = admin_client.post(reverse("admin:catalog_product_change", args=[product.pk]), data)

    assert response.status_code == 302, response.content[:2000]
    product.refresh_from_db()
    assert (product.title, str(product.price)) == ("Renamed", "5.00")


def test_a_category_moved_in_the_admin_keeps_a_rename_saved_while_its_page_was_open(admin_client, category):
    """The page sent back the name and slug it showed: another admin's rename, saved meanwhile, was undone."""
    from catalog.services import category_save

    living = CategoryFactory(name="Living", slug="living")
    page = admin_client.get(reverse("admin:catalog_category_change", args=[category.pk])).content.decode()
    seen = dict(re.findall(r'<input type="hidden" name="(initial-[a-z]+)"(?: value="([^"]*)")?', page))  # as shown
    assert set(seen) == {"initial-name", "initial-slug", "initial-parent"}  # a root: no parent, no value
    renamed = Category.objects.get(pk=category.pk)
    renamed.name, renamed.slug = "Couches", "couches"
    category_save(category=renamed)  # another admin, meanwhile

    response = admin_client.post(reverse("admin:catalog_category_change", args=[category.pk]),
                                 {"name": category.name, "slug": category.slug, "parent": living.pk, **seen})

    assert response.status_code == 302, response.content[:2000]
    category.refresh_from_db()
    assert (category.name, category.slug, category.parent) == ("Couches", "couches", living)


def test_selected_products_are_hidden_from_the_shop_and_shown_again(client, admin_client, test_images):
    """Discontinuing products took an edit page each, or deleting them."""
    kept, hidden, also_hidden = ProductFactory(), ProductFactory(), ProductFactory()
    image = _embedded_photo(hidden, test_images)
    _embedded_photo(kept, test_images, name="chair-armchair-blue.jpg")
    similar = f"/api/v1/products/{kept.sku}/similar/?scope=all"

    def found(product):
        return product.sku in [item["product"]["sku"] for item in client.get(similar).json()["results"]]

    assert found(hidden) and client.get(hidden.get_absolute_url()).status_code == 200  # and now cached

    def act(action, products):
        return admin_client.post(reverse("admin:catalog_product_changelist"),
                                 {"action": action, "_selected_action": [p.pk for p in products]}, follow=True)

    response = act("hide_from_shop", [hidden, also_hidden])
    assert "2 product(s) hidden from the shop" in response.text
    assert list(Product.objects.filter(active=False).order_by("pk")) == [hidden, also_hidden]
    assert not ImageEmbedding.objects.get(image=image).active and not found(hidden)  # search no longer finds it
    assert client.get(hidden.get_absolute_url()).status_code == 404  # the cached page was retired
    assert client.get(kept.get_absolute_url()).status_code == 200

    assert "0 product(s) hidden" in act("hide_from_shop", [hidden]).text  # already hidden: nothing changes
    assert "1 product(s) now shown in the shop" in act("show_in_shop", [hidden]).text
    assert ImageEmbedding.objects.get(image=image).active and found(hidden)
    assert client.get(hidden.get_absolute_url()).status_code == 200


def test_staff_who_may_only_view_products_cannot_run_the_actions_that_change_them(client):
    """Django offers an action without ``permissions`` to whoever may view the list: a view-only member of staff
    could hide the whole catalog, or queue every photo for embedding again."""
    from django.contrib.auth.models import Permission, User

    product = ProductFactory()
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_product", "view_productimage"]))
    client.force_login(viewer)
    changelist = reverse("admin:catalog_product_changelist")
    page = client.get(changelist)
    assert page.status_code == 200 and product.sku in page.text
    for action in ("hide_from_shop", "show_in_shop", "reembed_images"):
        assert f'value="{action}"' not in page.text
    client.post(changelist, {"action": "hide_from_shop", "_selected_action": [product.pk]})
    product.refresh_from_db()
    assert product.active
    images = client.get(reverse("admin:catalog_productimage_changelist"))
    assert images.status_code == 200 and 'value="reembed"' not in images.text


def test_admin_logins_are_limited_per_client_address(client, settings):
    """Each attempt hashes a password for about 0.2 s of CPU: without a limit passwords could be guessed at leisure,
    and a dozen attempts a second kept every web worker busy."""
    from django.core.cache import cache

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"admin_login": "3/min"}}
    keys = ["throttle_admin_login_203.0.113.5", "throttle_admin_login_203.0.113.6"]
    cache.delete_many(keys)
    try:
        url = reverse("admin:login")
        codes = [client.post(url, {"username": "admin", "password": f"guess-{n}"}, REMOTE_ADDR="203.0.113.5")
                 .status_code for n in range(4)]
        assert codes == [200, 200, 200, 429]  # the login form again with its error, then refused unheard
        refused = client.post(url, {"username": "admin", "password": "x"}, REMOTE_ADDR="203.0.113.5")
        assert 0 < int(refused["Retry-After"]) <= 60 and b"Too many login attempts" in refused.content
        assert client.get(url, REMOTE_ADDR="203.0.113.5").status_code == 200  # the form itself is still shown
        assert client.post(url, {"username": "admin", "password": "x"}, REMOTE_ADDR="203.0.113.6").status_code == 200
    finally:
        cache.delete_many(keys)


def test_admin_logins_from_ipv6_are_limited_per_site_not_per_host(client, settings):
    """Counted per /64, a site's /48 had 65,536 limits of its own to guess passwords with."""
    from django.core.cache import cache

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"admin_login": "2/min"}}
    keys = ["throttle_admin_login_2001:db8:7::/48", "throttle_admin_login_2001:db8:8::/48"]
    cache.delete_many(keys)
    try:
        url = reverse("admin:login")
        codes = [client.post(url, {"username": "admin", "password": "x"}, REMOTE_ADDR=f"2001:db8:7:{n}::1").status_code
                 for n in range(3)]  # three hosts of one site
        assert codes == [200, 200, 429]
        assert client.post(url, {"username": "admin", "password": "x"}, REMOTE_ADDR="2001:db8:8::1").status_code == 200
    finally:
        cache.delete_many(keys)


def test_staff_can_narrow_the_product_list_to_one_currency(admin_client, category):
    """Sorted by price, the list mixed yen and dollars: the filter keeps one currency."""
    ProductFactory(sku="YEN-1", category=category, price=Decimal("1500"), currency="JPY")
    ProductFactory(sku="USD-1", category=category, price=Decimal("15"))
    page = admin_client.get(reverse("admin:catalog_product_changelist"), {"currency": "JPY", "o": "5"})
    assert page.status_code == 200
    assert "currency" in [getattr(spec, "field_path", None) for spec in page.context["cl"].filter_specs]
    assert [product.sku for product in page.context["cl"].result_list] == ["YEN-1"]


def test_a_product_form_with_more_photos_than_a_save_takes_says_how_many_it_does(admin_client):
    from config.middleware import ADMIN_FILES_PER_REQUEST

    page = admin_client.get(reverse("admin:catalog_product_add")).text
    assert f"at most {ADMIN_FILES_PER_REQUEST} new ones per save" in page
    response = admin_client.generic("POST", reverse("admin:catalog_product_add"), b"",
                                     CONTENT_LENGTH=str(200 * 1024 * 1024))
    assert response.status_code == 413
    assert f"add at most {ADMIN_FILES_PER_REQUEST} photos of up to 20 MB in one save, then the rest" in response.text


def test_the_admins_larger_bodies_are_for_signed_in_staff_only(admin_client, client, django_user_model):
    """Granted by the path alone, anyone had 100 MB read and written to disk ahead of the login check (CSRF reads
    a POST's body before any view)."""
    from django.conf import settings

    from config.middleware import ADMIN_FILES_PER_REQUEST, BODY_SLACK_BYTES

    staff_size = str(settings.UPLOAD_MAX_BYTES * (ADMIN_FILES_PER_REQUEST - 1))  # within the staff's budget
    login = reverse("admin:login")
    refused = client.generic("POST", login, b"", CONTENT_LENGTH=staff_size)
    assert refused.status_code == 413
    assert f"larger than {(settings.UPLOAD_MAX_BYTES + BODY_SLACK_BYTES) // 2**20} MB" in refused.text
    shopper = django_user_model.objects.create_user("shopper", password="x")  # signed in, not staff
    client.force_login(shopper)
    assert client.generic("POST", login, b"", CONTENT_LENGTH=staff_size).status_code == 413
    # Staff get theirs (the request then fails on its empty body, past the limit) ...
    assert admin_client.generic("POST", reverse("admin:catalog_product_add"), b"",
                                CONTENT_LENGTH=staff_size).status_code != 413
    staff = django_user_model.objects.get(username="admin")
    staff.set_password("changed elsewhere")  # ... while the session is theirs: a password changed since ends it
    staff.save()
    assert admin_client.generic("POST", reverse("admin:catalog_product_add"), b"",
                                CONTENT_LENGTH=staff_size).status_code == 413


def test_a_failed_photo_says_why_on_its_product_page_and_a_photos_page_shows_its_duplicate(
    admin_client, product, test_images
):
    """The reason was only a badge's hover text (out of reach on a touch screen), and a photo's own page did not
    say which photo it copies."""
    original, copy = (_embedded_photo(product, test_images, copy=n) for n in range(2))
    copy.refresh_from_db()
    assert copy.near_duplicate_of_id == original.pk
    ProductImage.objects.filter(pk=original.pk).update(embedding_status=EmbeddingStatus.FAILED,
                                                       embedding_error="OSError: " + "the file is gone " * 10)
    page = admin_client.get(reverse("admin:catalog_product_change", args=[product.pk])).text
    assert "<small>OSError: the file is gone" in page and "…</small>" in page
    photo_page = admin_client.get(reverse("admin:catalog_productimage_change", args=[copy.pk])).text
    assert "Near-duplicate of" in photo_page and f"{product.sku} (image {original.position})" in photo_page


def test_the_admin_takes_a_currency_in_any_case_and_offers_the_default(admin_client, category):
    page = admin_client.get(reverse("admin:catalog_product_add")).text
    assert re.search(r'name="currency"[^>]*value="USD"', page)
    response = admin_client.post(reverse("admin:catalog_product_add"), _product_form(
        category, currency="eur", **{"images-TOTAL_FORMS": "0"}))
    assert response.status_code == 302, response.content[:2000]
    assert Product.objects.get(sku="SOFA-1").currency == "EUR"


def test_view_on_site_is_offered_for_products_the_shop_shows(admin_client, product):
    """For a hidden product it led to the shop's "No such product"."""
    page = reverse("admin:catalog_product_change", args=[product.pk])
    assert product.get_absolute_url() in admin_client.get(page).content.decode()
    Product.objects.filter(pk=product.pk).update(active=False)
    assert "View on site" not in admin_client.get(page).content.decode()


def test_the_category_picker_offers_the_categories_named_so_first(admin_client):
    """Sorted by name alone, "Furniture" came after a subcategory whose slug holds the word: Enter took that one."""
    from catalog.services import category_get_or_create_path

    chairs = category_get_or_create_path(path="Home > Furniture > Chairs & stools")
    Category.objects.filter(pk=chairs.pk).update(slug="furniture-chairs-stools")
    category_get_or_create_path(path="Furniture")
    category_get_or_create_path(path="Furniture sets")
    picked = admin_client.get("/admin/autocomplete/", {"app_label": "catalog", "model_name": "product",
                                                      "field_name": "category", "term": "furniture"}).json()
    texts = [result["text"] for result in picked["results"]]
    assert sorted(texts[:2]) == ["Furniture", "Home > Furniture"]  # the term itself
    assert texts[2:] == ["Furniture sets", "Home > Furniture > Chairs & stools"]  # begins with it, then the rest


def test_categories_of_the_same_name_are_told_apart_by_their_paths(admin_client):
    """Two "Accessories" (under Clothing and under Electronics) were two identical choices in the product form's
    picker, its list and its filter."""
    from catalog.services import category_get_or_create_path

    worn = category_get_or_create_path(path="Clothing > Accessories")
    plugged = category_get_or_create_path(path="Electronics > Accessories")
    scarf = ProductFactory(category=worn, title="Scarf")
    ProductFactory(category=plugged, title="Cable")

    picked = admin_client.get("/admin/autocomplete/", {"app_label": "catalog", "model_name": "product",
                                                      "field_name": "category", "term": "Access"}).json()
    assert sorted(result["text"] for result in picked["results"]) == [
        "Clothing > Accessories", "Electronics > Accessories"]
    listed = html.unescape(admin_client.get(reverse("admin:catalog_product_changelist")).content.decode())
    assert listed.count("Clothing > Accessories") == 2 and listed.count("Electronics > Accessories") == 2  # row, filter
    form = html.unescape(admin_client.get(reverse("admin:catalog_product_change", args=[scarf.pk])).content.decode())
    assert re.search(r'<option value="%d" selected>Clothing > Accessories</option>' % worn.pk, form)
