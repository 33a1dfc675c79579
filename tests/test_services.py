import re

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, transaction

from catalog import services
from catalog.models import POSITION_MAX, Category, EmbeddingStatus, Product, ProductImage
from tests.factories import uploaded_image
from tests.support import embedding_dispatches

pytestmark = pytest.mark.django_db


def test_category_path_creates_missing_levels_once():
    sofas = services.category_get_or_create_path(path="Home > Furniture > Sofas")
    again = services.category_get_or_create_path(path=" Home>Furniture > Sofas ")
    assert sofas == again
    assert [sofas.parent.parent.name, sofas.parent.name, sofas.name] == ["Home", "Furniture", "Sofas"]
    assert Category.objects.count() == 3
    chairs = services.category_get_or_create_path(path="Home > Furniture > Chairs")
    assert chairs.parent == sofas.parent
    assert len({c.slug for c in Category.objects.all()}) == 4


def test_category_paths_written_with_other_spacing_or_case_find_the_same_categories():
    """A spreadsheet's "home >  sofas" made a second tree beside "Home > Sofas": duplicates shoppers see."""
    sofas = services.category_get_or_create_path(path="Home > Sofas")
    assert services.category_get_or_create_path(path="home >  sofas") == sofas
    assert services.category_get_or_create_path(path="Home\u00a0> Sofas") == sofas  # a no-break space
    assert services.category_get_or_create_path(path="Home > Corner   sofas").name == "Corner sofas"
    assert Category.objects.count() == 3


def test_category_paths_in_other_scripts_get_slugs_of_their_own():
    """Cyrillic and CJK names slugify to nothing: all were called category, category-2, ..., each new one found
    by trying every earlier one, a query each."""
    first = services.category_get_or_create_path(path="Дом > Диваны")
    second = services.category_get_or_create_path(path="家 > 沙发")
    slugs = [first.parent.slug, first.slug, second.parent.slug, second.slug]
    assert len(set(slugs)) == 4 and all(re.fullmatch(r"category-[0-9a-f]{8}", slug) for slug in slugs), slugs


def test_a_category_path_deeper_than_the_limit_is_refused():
    with pytest.raises(ValueError, match=f"at most {services.CATEGORY_DEPTH_MAX} levels"):
        services.category_get_or_create_path(path=" > ".join(["a"] * (services.CATEGORY_DEPTH_MAX + 1)))
    assert not Category.objects.exists()


def test_an_update_writes_only_its_own_fields_over_what_another_writer_changed(product):
    """The API changes a product read at the start of its request: a plain save wrote every column back, the
    price an import had set meanwhile included."""
    stale = Product.objects.get(pk=product.pk)
    Product.objects.filter(pk=product.pk).update(price=99)  # another writer, after the read
    services.product_update(product=stale, title="Renamed")
    product.refresh_from_db()
    assert (product.title, product.price) == ("Renamed", 99)
    assert stale.title == "Renamed"


def test_a_sku_taken_between_the_check_and_the_save_is_a_field_error(product, monkeypatch):
    """Two creates of one SKU at once (a client retrying after a timeout): the second's insert broke the unique
    constraint after its check had passed, a 500."""
    check = Product.full_clean

    def check_then_taken(self, *args, **kwargs):
        check(self, *args, **kwargs)
        if self.pk is None and not Product.objects.filter(sku=self.sku).exists():
            Product.objects.create(sku=self.sku, title="First", category=product.category, price=1)

    monkeypatch.setattr(Product, "full_clean", check_then_taken)
    with pytest.raises(ValidationError) as raised:
        services.product_create(sku="RACE-1", title="Second", category=product.category, price="1")
    assert raised.value.message_dict == {"sku": ["Product with this SKU already exists."]}
    assert list(Product.objects.filter(sku="RACE-1").values_list("title", flat=True)) == ["First"]


def test_image_add_records_size_hash_and_queues_embedding_on_commit(product, django_capture_on_commit_callbacks):
    import hashlib

    upload = uploaded_image(size=(400, 300))
    sent = upload.read()
    upload.seek(0)
    with django_capture_on_commit_callbacks() as callbacks:
        image = services.product_image_add(product=product, file=upload)
    assert (image.width, image.height) == (400, 300)
    assert image.content_hash == hashlib.sha256(sent).hexdigest()  # what finds a copy sent again
    assert image.embedding_status == EmbeddingStatus.PENDING
    assert image.file.storage.exists(image.file.name)
    assert len(embedding_dispatches(callbacks)) == 1  # one embedding task, sent only after commit


def test_image_add_positions_follow_each_other(product):
    first = services.product_image_add(product=product, file=uploaded_image())
    second = services.product_image_add(product=product, file=uploaded_image(color=(0, 0, 255)))
    assert (first.position, second.position) == (0, 1)


def test_a_photo_added_after_one_at_the_highest_position_goes_after_it(product, media_root):
    """The API and the admin accept any position up to the column's highest; the next photo without one was put
    one past it, and the database refused the row (a 500), leaving its stored files behind."""
    last = services.product_image_add(product=product, file=uploaded_image(), position=POSITION_MAX)
    added = services.product_image_add(product=product, file=uploaded_image(color=(0, 0, 255)))
    assert added.position == POSITION_MAX
    assert list(product.images.all()) == [last, added]  # by position, then in the order added


def test_files_stored_for_a_photo_whose_row_cannot_be_written_are_deleted(product, media_root):
    with pytest.raises(DataError), transaction.atomic():
        services.product_image_add(product=product, file=uploaded_image(size=(400, 300)), position=POSITION_MAX + 1)
    assert not ProductImage.objects.exists()
    assert not any(p.is_file() for p in media_root.rglob("*"))


def test_files_stored_for_a_replaced_photo_whose_row_cannot_be_written_are_deleted(product, media_root):
    image = services.product_image_add(product=product, file=uploaded_image(size=(400, 300)))
    kept = {p for p in media_root.rglob("*") if p.is_file()}
    with pytest.raises(DataError), transaction.atomic():
        services.product_image_update(image=image, file=uploaded_image(size=(300, 400)), position=POSITION_MAX + 1)
    image.refresh_from_db()
    assert (image.width, image.height) == (400, 300)
    assert {p for p in media_root.rglob("*") if p.is_file()} == kept


def test_a_replaced_photo_whose_queueing_fails_after_the_commit_still_loses_its_old_files(
    product, media_root, monkeypatch, django_capture_on_commit_callbacks
):
    """The queueing hook (it also writes when each photo was queued) ran before the old files' deletion, and a
    database error there skipped that deletion and made a committed change a 500."""
    from django.db import OperationalError

    from search import services as search_services

    image = services.product_image_add(product=product, file=uploaded_image(size=(400, 300)))
    old_files = [media_root / image.file.name, media_root / image.thumbnail.name]

    def fails(**kwargs):
        raise OperationalError("the connection was lost")

    monkeypatch.setattr(search_services, "image_embedding_enqueue", fails)
    with django_capture_on_commit_callbacks(execute=True):
        services.product_image_update(image=image, file=uploaded_image(color=(0, 0, 255)))
    assert not any(path.exists() for path in old_files)
    image.refresh_from_db()
    assert (media_root / image.file.name).is_file() and image.embedding_status == EmbeddingStatus.PENDING


def test_a_photo_replaced_by_one_without_a_thumbnail_shows_its_new_file(product, media_root,
                                                                       django_capture_on_commit_callbacks):
    """The old thumbnail is deleted with the old file: the row kept its name, and cards showed a missing file."""
    from dataclasses import replace

    image = services.product_image_add(product=product, file=uploaded_image(size=(400, 300)))
    prepared = replace(services.image_prepare(uploaded_image(size=(224, 224))), thumbnail=None)
    with django_capture_on_commit_callbacks(execute=True):
        services.product_image_update(image=image, prepared=prepared)
    image.refresh_from_db()
    assert not image.thumbnail and image.card_url == image.file.url and (media_root / image.file.name).is_file()


@pytest.mark.parametrize("change", ["replace", "delete", "delete-product"])
def test_files_a_change_replaces_or_deletes_stay_when_it_rolls_back(
    product, media_root, change, django_capture_on_commit_callbacks
):
    """They are deleted once the change commits: a change rolled back (the admin's save failing after it) leaves
    the photo's row, which must still find its files."""
    image = services.product_image_add(product=product, file=uploaded_image(size=(400, 300)))
    files = [media_root / image.file.name, media_root / image.thumbnail.name]
    write = {
        "replace": lambda: services.product_image_update(image=image, file=uploaded_image(color=(0, 0, 255))),
        "delete": lambda: services.product_image_delete(image=image),
        "delete-product": lambda: services.products_delete(products=[product]),
    }[change]
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        write()
        raise RuntimeError("the rest of the request fails")
    image.refresh_from_db()
    assert all(path.is_file() for path in files) and (image.width, image.height) == (400, 300)
    with django_capture_on_commit_callbacks(execute=True):
        write()
    assert not any(path.is_file() for path in files)


@pytest.mark.parametrize(
    "upload",
    [
        pytest.param(lambda: __import__("django.core.files.uploadedfile", fromlist=["x"]).SimpleUploadedFile(
            "empty.jpg", b""), id="empty"),
        pytest.param(lambda: __import__("django.core.files.uploadedfile", fromlist=["x"]).SimpleUploadedFile(
            "page.jpg", b"<html><body>not an image</body></html>"), id="html-named-jpg"),
        pytest.param(lambda: uploaded_image(size=(7, 40)), id="too-small"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_written(product, upload, media_root):
    with pytest.raises(ValidationError):
        services.product_image_add(product=product, file=upload())
    assert not ProductImage.objects.exists()
    assert not any(p.is_file() for p in media_root.rglob("*"))


def test_truncated_jpeg_is_refused(product):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.factories import image_bytes

    data = image_bytes(size=(640, 480))
    with pytest.raises(ValidationError, match="not a readable image"):
        services.product_image_add(product=product, file=SimpleUploadedFile("cut.jpg", data[: len(data) // 2]))


def test_heic_photos_from_phones_are_accepted_and_embedded(product):
    import io

    from PIL import Image

    from search.services import images_embed

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(buffer, format="HEIF")
    from django.core.files.uploadedfile import SimpleUploadedFile

    image = services.product_image_add(product=product, file=SimpleUploadedFile("IMG_0001.HEIC", buffer.getvalue()))
    assert (image.width, image.height) == (640, 480)
    assert images_embed(image_ids=[image.pk])["embedded"] == 1


def test_photos_browsers_cannot_show_are_shown_by_their_webp_copy(product, client):
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900), (30, 120, 200)).save(buffer, format="HEIF")
    heic = services.product_image_add(product=product, file=SimpleUploadedFile("IMG_0002.HEIC", buffer.getvalue()))
    jpeg = services.product_image_add(product=product, file=uploaded_image(size=(800, 600)))
    assert heic.file.name.endswith(".heic") and heic.display_url == heic.thumbnail.url  # only Safari shows HEIC
    assert jpeg.display_url == jpeg.file.url
    page = client.get(product.get_absolute_url()).content.decode()
    assert f'data-gallery-main src="{heic.thumbnail.url}"' in page and f'href="{jpeg.file.url}"' in page
    assert heic.file.url not in page
    api = client.get(f"/api/v1/products/{product.sku}/").json()
    assert api["image_url"].endswith(heic.thumbnail.url) and api["images"][1]["url"].endswith(jpeg.file.url)


def test_image_add_makes_a_small_upright_webp_thumbnail_for_cards(product):
    from PIL import Image

    image = services.product_image_add(product=product, file=uploaded_image(size=(1600, 1067)))
    with image.thumbnail.open("rb") as handle, Image.open(handle) as thumb:
        assert thumb.format == "WEBP"
        assert max(thumb.size) == 640 and abs(thumb.size[0] / thumb.size[1] - 1600 / 1067) < 0.01
    assert image.card_url == image.thumbnail.url != image.file.url


@pytest.mark.django_db(transaction=True)
def test_two_photos_uploaded_at_once_without_a_position_go_one_after_the_other():
    """Both uploads read the same last position and went there both, so the gallery's order was left to chance."""
    from tests.support import held_in_another_transaction

    product = services.product_create(sku="P-1", title="Chair", category=Category.objects.create(name="Chairs",
                                      slug="chairs"), price="10")
    second = services.image_prepare(uploaded_image(color=(0, 0, 200)))  # ready before the first one holds its lock
    # The first upload is held uncommitted until the other one waits for its lock.
    with held_in_another_transaction(
        lambda: services.product_image_add(product=product, file=uploaded_image(color=(200, 0, 0)))
    ) as first:
        services.product_image_add(product=product, prepared=second)
    assert first.waited  # the second upload waited for the first's lock: the two really overlapped
    assert sorted(ProductImage.objects.filter(product=product).values_list("position", flat=True)) == [0, 1]


@pytest.mark.django_db(transaction=True)
def test_a_product_deleted_while_a_photo_is_added_goes_with_that_photo(media_root):
    """The delete locked the product's photos before the product: the photo added meanwhile was unseen, and the
    delete failed at its commit (the photo still pointed at the product), an error page with nothing deleted."""
    from tests.support import held_in_another_transaction

    product = services.product_create(sku="P-1", title="Chair", category=Category.objects.create(name="Chairs",
                                      slug="chairs"), price="10")
    services.product_image_add(product=product, file=uploaded_image(color=(0, 0, 200)))
    with held_in_another_transaction(
        lambda: services.product_image_add(product=product, file=uploaded_image(color=(200, 0, 0)))
    ) as upload:
        services.products_delete(products=[product])
    assert upload.waited  # the delete waited for the upload's lock on the product: they overlapped
    assert not Product.objects.exists() and not ProductImage.objects.exists()
    assert not [path for path in media_root.rglob("*") if path.is_file()]


@pytest.mark.django_db(transaction=True)
def test_a_photo_moved_off_a_product_being_deleted_keeps_its_files(media_root):
    """The delete saw the photo on the product, waited for the move to commit, and deleted the moved photo's files,
    which its new product still showed."""
    from tests.support import held_in_another_transaction

    chairs = Category.objects.create(name="Chairs", slug="chairs")
    old, new = (services.product_create(sku=sku, title=sku, category=chairs, price="10") for sku in ("OLD", "NEW"))
    photo = services.product_image_add(product=old, file=uploaded_image(color=(0, 0, 200)))
    with held_in_another_transaction(lambda: services.product_image_update(image=photo, product=new)) as move:
        services.products_delete(products=[old])
    assert move.waited
    photo.refresh_from_db()
    assert photo.product == new
    assert (media_root / photo.file.name).is_file() and (media_root / photo.thumbnail.name).is_file()


@pytest.mark.django_db(transaction=True)
def test_one_category_name_in_two_cases_created_at_once_is_one_category():
    """Both found none and both created one: their slugs differ (a digest of the Cyrillic name) and the database's
    unique name is in one case only, so "Обувь" and "ОБУВЬ" stood side by side and products were split between them."""
    from tests.support import held_in_another_transaction

    with held_in_another_transaction(lambda: services.category_get_or_create_path(path="Обувь")) as first:
        second = services.category_get_or_create_path(path="ОБУВЬ")
    assert first.waited  # the second waited for the first's turn: they overlapped
    assert list(Category.objects.values_list("name", flat=True)) == ["Обувь"] and second.name == "Обувь"


@pytest.mark.django_db(transaction=True)
def test_one_photo_sent_twice_at_once_is_stored_once(media_root):
    """A client's retry while its first upload is still being saved: the second waits for the first, then finds it."""
    from tests.support import held_in_another_transaction

    chairs = Category.objects.create(name="Chairs", slug="chairs")
    product = services.product_create(sku="CHAIR-1", title="Chair", category=chairs, price="10")
    sent = []
    with held_in_another_transaction(lambda: sent.append(services.product_image_add_once(
            product=product, file=uploaded_image("a.jpg", color=(0, 90, 0))))) as first:
        again, created = services.product_image_add_once(product=product, file=uploaded_image("a.jpg", color=(0, 90, 0)))
    assert first.waited and sent[0][1] is True
    assert (again, created) == (sent[0][0], False)
    assert ProductImage.objects.filter(product=product).count() == 1


def test_a_photo_the_product_has_already_is_refused_wherever_it_would_join_it():
    """The admin stored a second copy of a photo the product showed (its gallery showed it twice), and a photo could
    be replaced with, or moved beside, a copy of another of its product's."""
    chairs = Category.objects.create(name="Chairs", slug="chairs")
    product = services.product_create(sku="CHAIR-1", title="Chair", category=chairs, price="10")
    other = services.product_create(sku="CHAIR-2", title="Chair", category=chairs, price="10")
    red = services.product_image_add(product=product, file=uploaded_image("red.jpg", color=(200, 0, 0)))
    green = services.product_image_add(product=product, file=uploaded_image("green.jpg", color=(0, 200, 0)))
    elsewhere = services.product_image_add(product=other, file=uploaded_image("red.jpg", color=(200, 0, 0)))

    refused = [
        lambda: services.product_image_add(product=product, file=uploaded_image("again.jpg", color=(200, 0, 0))),
        lambda: services.product_images_add(product=product, prepared=[
            services.image_prepare(uploaded_image("blue.jpg", color=(0, 0, 200))) for _ in range(2)]),
        lambda: services.product_image_update(image=green, file=uploaded_image("red.jpg", color=(200, 0, 0))),
        lambda: services.product_image_update(image=elsewhere, product=product),
    ]
    for write in refused:
        with pytest.raises(ValidationError) as refusal, transaction.atomic():
            write()
        assert refusal.value.messages == [services.PHOTO_ON_PRODUCT]
    assert sorted(product.images.values_list("pk", flat=True)) == [red.pk, green.pk]
    assert ProductImage.objects.count() == 3 and green.content_hash == ProductImage.objects.get(pk=green.pk).content_hash

    # Its own bytes again, and a copy on another product, are no copy on the product.
    services.product_image_update(image=red, file=uploaded_image("red.jpg", color=(200, 0, 0)))
    services.product_image_update(image=elsewhere, file=uploaded_image("green.jpg", color=(0, 200, 0)))
    assert ProductImage.objects.count() == 3


def test_a_photo_renumbered_or_moved_to_a_position_another_holds_goes_before_it():
    chairs = Category.objects.create(name="Chairs", slug="chairs")
    product = services.product_create(sku="CHAIR-1", title="Chair", category=chairs, price="10")
    other = services.product_create(sku="CHAIR-2", title="Chair", category=chairs, price="10")
    a, b, c = (services.product_image_add(product=product, file=uploaded_image(color=(80 * n, 0, 0))) for n in range(3))
    services.product_image_update(image=c, position=0)
    assert list(product.images.values_list("pk", "position")) == [(c.pk, 0), (a.pk, 1), (b.pk, 2)]
    services.product_image_update(image=a, position=1)  # where it is: nothing moves
    assert list(product.images.values_list("pk", "position")) == [(c.pk, 0), (a.pk, 1), (b.pk, 2)]

    d = services.product_image_add(product=other, file=uploaded_image(color=(0, 0, 200)))
    services.product_image_update(image=d, product=product, position=0)
    assert list(product.images.values_list("pk", "position")) == [(d.pk, 0), (c.pk, 1), (a.pk, 2), (b.pk, 3)]


@pytest.mark.django_db(transaction=True)
def test_a_photo_renumbered_while_another_is_uploaded_leaves_no_two_at_one_position():
    """A renumber took no lock on the product: an upload beside it read the last position before the renumber moved
    a photo there, and the two shared it."""
    from tests.support import held_in_another_transaction

    product = services.product_create(sku="P-1", title="Chair", category=Category.objects.create(name="Chairs",
                                      slug="chairs"), price="10")
    a, b, c = (services.product_image_add(product=product, file=uploaded_image(color=(80 * n, 0, 0))) for n in range(3))
    added = services.image_prepare(uploaded_image(color=(0, 0, 200)))
    with held_in_another_transaction(lambda: services.product_image_update(image=a, position=1)) as renumber:
        services.product_image_add(product=product, prepared=added)
    assert renumber.waited
    positions = list(ProductImage.objects.filter(product=product).values_list("position", flat=True))
    assert len(set(positions)) == 4 == len(positions), positions
