"""CSV catalog import (catalog.importer, manage.py import_catalog) and the Fashion-MNIST demo (catalog.fashion)."""

import codecs
import csv
import gzip
import hashlib
import io
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from catalog.fashion import CLASSES, fashion_dataset_dir, fashion_price
from catalog.importer import CatalogImportError, catalog_csv_import
from catalog.models import Category, EmbeddingStatus, Product, ProductImage
from catalog.services import product_image_add
from catalog.spreadsheet import spreadsheet_csv_writer
from tests.factories import uploaded_file
from tests.support import embedding_dispatches, embedding_queue, until_someone_waits_for_a_lock, wait_for

HEADER = "sku,title,category,price,description,images\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stored_files(media_root: Path) -> list[Path]:
    return sorted(path for path in media_root.rglob("*") if path.is_file())


@pytest.fixture
def shop(tmp_path, test_images):
    """A folder as a shop exports it: catalog CSV files beside a photos/ folder."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in test_images.glob("*.jpg"):
        shutil.copy(path, photos / path.name)
    return tmp_path


def _write(folder: Path, text: str, name: str = "catalog.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = (
    HEADER
    + 'CH-1,Black shell chair,Home > Furniture > Chairs,70.00,"A black shell chair.\n'
    + 'Stackable.",photos/chair-shell-black.jpg\n'
    + "TS-1,Turquoise T-shirt,Clothing > Tops > T-shirts,12.5,,photos/tshirt-turquoise-front.jpg"
    + " | photos/tshirt-turquoise-back.jpg\n"
)


def test_good_rows_create_products_categories_and_photos(db, shop):
    summary = catalog_csv_import(path=_write(shop, GOOD))

    assert (summary.rows, summary.created, summary.updated, summary.unchanged, summary.images_added) == (2, 2, 0, 0, 3)
    assert summary.failed == []
    chair = Product.objects.get(sku="CH-1")
    assert (chair.title, chair.price, chair.currency, chair.description) == (
        "Black shell chair", Decimal("70.00"), "USD", "A black shell chair.\nStackable."
    )
    assert [chair.category.parent.parent.name, chair.category.parent.name, chair.category.name] == [
        "Home", "Furniture", "Chairs"
    ]
    tee = Product.objects.get(sku="TS-1")
    assert tee.price == Decimal("12.50")
    views = list(tee.images.order_by("position"))
    assert [image.position for image in views] == [0, 1]
    assert [image.content_hash for image in views] == [
        _sha256(shop / "photos/tshirt-turquoise-front.jpg"), _sha256(shop / "photos/tshirt-turquoise-back.jpg")
    ]
    assert all(image.embedding_status == EmbeddingStatus.PENDING for image in views)
    assert views[0].file.read() == (shop / "photos/tshirt-turquoise-front.jpg").read_bytes()


def test_a_spreadsheet_export_with_byte_order_mark_and_crlf_line_ends_imports(db, shop):
    text = "\ufeffSKU,Title,Category,Price,Description,Images,Currency,Stock\r\n" + (
        'CH-1,Chair,Home > Chairs,70,"Line one\r\nline two",photos/chair-shell-black.jpg,eur,4\r\n'
        "CH-2,Chair,Home > Chairs,80,,photos/chair-cafe-pair.jpg,,0\r\n"
    )
    path = shop / "export.csv"
    path.write_bytes(text.encode("utf-8"))

    summary = catalog_csv_import(path=path)

    assert (summary.created, summary.failed, summary.ignored_columns) == (2, [], ("stock",))
    first = Product.objects.get(sku="CH-1")
    assert (first.currency, first.description) == ("EUR", "Line one\r\nline two")
    assert Product.objects.get(sku="CH-2").currency == "USD"


def test_importing_the_same_file_again_creates_nothing(db, shop, media_root, django_capture_on_commit_callbacks):
    path = _write(shop, GOOD)
    catalog_csv_import(path=path)

    def state():
        return (Product.objects.count(), ProductImage.objects.count(), Category.objects.count(),
                _stored_files(media_root))

    before = state()

    with django_capture_on_commit_callbacks() as callbacks:
        summary = catalog_csv_import(path=path)

    assert (summary.created, summary.updated, summary.unchanged, summary.images_added) == (0, 0, 2, 0)
    assert state() == before
    assert embedding_dispatches(callbacks) == []  # nothing new to embed


def test_reimport_updates_changed_fields_adds_new_photos_and_keeps_the_others(db, shop, test_images):
    catalog_csv_import(path=_write(shop, GOOD))
    tee = Product.objects.get(sku="TS-1")
    product_image_add(product=tee, file=uploaded_file(test_images / "plant-cactus.jpg"))  # an admin's upload
    changed = (
        "sku,title,category,price,description,images,currency\n"
        "TS-1,Turquoise tee,Clothing > Tops > Tees,9.99,Soft cotton.,"
        "photos/tshirt-turquoise-front.jpg|photos/shoe-running-1.jpg,eur\n"
    )

    summary = catalog_csv_import(path=_write(shop, changed, "changed.csv"))

    assert (summary.created, summary.updated, summary.unchanged, summary.images_added) == (0, 1, 0, 1)
    tee.refresh_from_db()
    assert (tee.title, tee.price, tee.currency, tee.description, tee.category.name) == (
        "Turquoise tee", Decimal("9.99"), "EUR", "Soft cotton.", "Tees"
    )
    assert sorted(tee.images.values_list("content_hash", flat=True)) == sorted(
        _sha256(test_images / name)
        for name in ("tshirt-turquoise-front.jpg", "tshirt-turquoise-back.jpg", "plant-cactus.jpg",
                     "shoe-running-1.jpg")
    )
    assert tee.images.get(content_hash=_sha256(test_images / "shoe-running-1.jpg")).position == 3


def test_a_photo_imported_goes_after_the_products_last_wherever_an_admin_moved_it(db, shop, test_images):
    """Numbered by how many photos the product had, it landed between them, or before a photo moved to the end."""
    from catalog.services import product_image_update

    catalog_csv_import(path=_write(shop, GOOD))
    tee = Product.objects.get(sku="TS-1")
    back = tee.images.get(position=1)
    product_image_update(image=back, position=5)  # an admin moved it to the end of the gallery
    more = HEADER + "TS-1,Turquoise T-shirt,Clothing > Tops > T-shirts,12.5,,photos/shoe-running-1.jpg\n"

    catalog_csv_import(path=_write(shop, more, "more.csv"))

    assert tee.images.get(content_hash=_sha256(test_images / "shoe-running-1.jpg")).position == 6


def test_bad_rows_are_reported_with_their_line_numbers_and_the_good_rows_land(db, shop, media_root):
    (shop / "photos" / "notes.jpg").write_text("this is a text file, not a photo\n")
    (shop / "photos" / "folder.jpg").mkdir()
    (shop / "photos" / "link.jpg").symlink_to("/etc/hostname")
    text = (
        HEADER
        + "OK-1,Cafe chairs,Home > Furniture > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # line 2
        + "BAD-1,Armchair,Ghost > Price,abc,,photos/chair-armchair-blue.jpg\n"  # 3
        + "BAD-2,,Ghost > Title,10,,photos/chair-armchair-blue.jpg\n"  # 4
        + "BAD-3,Armchair,Ghost > Missing,10,,photos/no-such-photo.jpg\n"  # 5
        + 'BAD-4,Armchair,Ghost > Text,10,"two\nlines",photos/notes.jpg\n'  # 6-7
        + "BAD-5,Armchair,Ghost > Escape,10,,../../etc/passwd\n"  # 8
        + "BAD-6,Armchair,Ghost > Url,10,,https://example.com/armchair.jpg\n"  # 9
        + "BAD-7,Armchair,Ghost > Negative,-5,,photos/chair-armchair-blue.jpg\n"  # 10
        + "BAD-8,Armchair,Ghost > Dir,10,,photos/folder.jpg\n"  # 11
        + "BAD-9,Armchair,Ghost > Link,10,,photos/link.jpg\n"  # 12: a symbolic link out of the folder
        + "BAD-10,Armchair,Ghost > Fields,10,,photos/chair-armchair-blue.jpg,surplus\n"  # 13
        + "BAD-11,Armchair,Ghost > Currency,10,,photos/chair-armchair-blue.jpg\n".replace(",10,", ",1.005,")  # 14
        + "\n"  # 15: blank lines are skipped
        + "OK-2,Blue armchair,Home > Furniture > Chairs,120,,photos/chair-armchair-blue.jpg\n"  # 16
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.line, failure.sku, failure.message) for failure in summary.failed] == [
        (3, "BAD-1", "price 'abc' is not a number; write it like 12.50"),
        (4, "BAD-2", "title is empty"),
        (5, "BAD-3", f"image 'photos/no-such-photo.jpg' not found (looked for {shop / 'photos/no-such-photo.jpg'})"),
        (6, "BAD-4", "image 'photos/notes.jpg': The file is not a readable image."),
        (8, "BAD-5", f"image '../../etc/passwd' is outside the images folder {shop}"),
        (9, "BAD-6", "image 'https://example.com/armchair.jpg': URLs are not fetched; download the file and give "
                     "its path"),
        (10, "BAD-7", "price '-5' is negative"),
        (11, "BAD-8", "image 'photos/folder.jpg' is not a regular file"),
        (12, "BAD-9", f"image 'photos/link.jpg' is outside the images folder {shop}"),
        (13, "BAD-10", "expected 6 fields like the header, found 7"),
        (14, "BAD-11", "price '1.005' has more than 2 decimal places"),
    ]
    assert (summary.rows, summary.created, summary.images_added) == (13, 2, 2)
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["OK-1", "OK-2"]
    # Failed rows left nothing behind: no category, no stored file.
    assert not Category.objects.filter(name="Ghost").exists()
    assert len(_stored_files(media_root)) == 2 * ProductImage.objects.count() == 4  # photos and their thumbnails


def test_a_price_with_trailing_zeros_is_its_value_for_a_new_product_as_for_an_existing_one(db, shop):
    """"12.500" passed the import's check, then failed the model's three decimal places for a new product or one at
    another price, and counted as unchanged for one at 12.50: the same cell, told apart by what was stored."""
    catalog_csv_import(path=_write(shop, HEADER + "OLD-1,Chair,Home,9,,photos/chair-cafe-pair.jpg\n", "old.csv"))
    text = (HEADER + "NEW-1,Chair,Home,12.500,,photos/chair-cafe-pair.jpg\n"
            + "OLD-1,Chair,Home,12.500,,photos/chair-cafe-pair.jpg\n" + "ZERO-1,Chair,Home,0.000000000,,\n")

    summary = catalog_csv_import(path=_write(shop, text))

    assert summary.failed == []
    assert dict(Product.objects.values_list("sku", "price")) == {
        "NEW-1": Decimal("12.50"), "OLD-1": Decimal("12.50"), "ZERO-1": Decimal("0.00")}


@pytest.mark.parametrize("on_disk, in_csv", [("NFD", "NFC"), ("NFC", "NFD")])
def test_a_photo_named_with_its_accents_encoded_otherwise_is_found(db, shop, on_disk, in_csv):
    """A Mac names "café.jpg" with a decomposed é, a spreadsheet writes it composed: the two look the same, and the
    photo was "not found"."""
    import unicodedata

    name = "photos/caf\u00e9 chair.jpg"
    (shop / "photos" / "chair-cafe-pair.jpg").rename(shop / unicodedata.normalize(on_disk, name))
    text = HEADER + f"CAFE-1,Cafe chair,Home,45,,{unicodedata.normalize(in_csv, name)}\n"

    summary = catalog_csv_import(path=_write(shop, text))

    assert summary.failed == [] and summary.images_added == 1


def test_a_currency_prices_are_not_in_fails_its_row(db, shop):
    text = ("sku,title,category,price,description,images,currency\n"
            "ZZ-1,Chair,Home,9,,,zzz\n" "CH-1,Chair,Home,9,,,chf\n")

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.sku, failure.message) for failure in summary.failed] == [
        ("ZZ-1", "currency: Enter the code of a currency prices are in (ISO 4217), such as USD.")]
    assert list(Product.objects.values_list("sku", "currency")) == [("CH-1", "CHF")]


def test_a_symbolic_link_loop_fails_its_row_and_the_import_goes_on(db, shop):
    """Path.resolve raises RuntimeError on a loop, which stopped the whole import with a traceback and no summary."""
    (shop / "photos" / "loop.jpg").symlink_to("loop.jpg")
    text = (
        HEADER
        + "LOOP-1,Armchair,Home > Chairs,10,,photos/loop.jpg\n"  # line 2
        + f"LOOP-2,Armchair,Home > Chairs,10,,{shop / 'photos' / 'loop.jpg'}\n"  # 3: absolute
        + "OK-1,Cafe chairs,Home > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # 4
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.line, failure.sku) for failure in summary.failed] == [(2, "LOOP-1"), (3, "LOOP-2")]
    assert all("cannot be followed" in failure.message for failure in summary.failed), summary.failed
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]


def test_category_cells_in_another_case_or_spacing_share_a_tree_and_a_deep_one_fails(db, shop):
    text = (
        HEADER
        + "A-1,Cafe chairs,Home > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # line 2
        + "A-2,Blue armchair,home  >  CHAIRS,120,,photos/chair-armchair-blue.jpg\n"  # 3
        + "A-3,Armchair,a>a>a>a>a>a>a>a>a>a>a,10,,photos/chair-shell-black.jpg\n"  # 4: 11 levels
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.line, failure.message) for failure in summary.failed] == [
        (4, "category 'a>a>a>a>a>a>a>a>a>a>a'... has 11 levels; the limit is 10")]
    assert list(Category.objects.values_list("name", flat=True).order_by("pk")) == ["Home", "Chairs"]


def test_a_file_with_carriage_returns_alone_for_line_ends_is_refused_with_the_fix(db, shop):
    """An old Mac export: read as one line, the whole file was held in memory, then failed with Python's words."""
    path = shop / "mac.csv"
    path.write_bytes(GOOD.replace("\n", "\r").encode())
    with pytest.raises(CatalogImportError, match="carriage return alone .* Windows or Unix line endings"):
        catalog_csv_import(path=path)
    # Past a line's limit it read "line 1 is longer than 1 MB", which did not say why.
    path.write_bytes((HEADER + "A,Chair,Home,1,,\n" * 80_000).replace("\n", "\r").encode())
    with pytest.raises(CatalogImportError, match="carriage return alone"):
        catalog_csv_import(path=path)
    assert not Product.objects.exists()


@pytest.mark.parametrize("too_long", ["a quoted field over many lines", "one line"])
def test_a_row_too_long_to_read_fails_once_and_stops_the_reading(db, shop, too_long):
    """Past the csv module's 128 KB field limit the reader lost its place inside the quoted field: hundreds of
    false failures, one per line of it, and a good row swallowed. A line with no end was held whole in memory."""
    big = ('"' + "A long description line.\n" * 45_000 + '"') if too_long.startswith("a quoted") else "x" * 2_000_000
    text = (
        HEADER
        + "OK-1,Cafe chairs,Home > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # line 2
        + f"BIG-1,Armchair,Home > Chairs,10,{big},photos/chair-armchair-blue.jpg\n"  # 3
        + "OK-2,Shell chair,Home > Chairs,70,,photos/chair-shell-black.jpg\n"
    )

    summary = catalog_csv_import(path=_write(shop, text))

    if too_long.startswith("a quoted"):
        assert [(failure.line, failure.message) for failure in summary.failed] == [
            (3, "not valid CSV (field larger than field limit (131072)); the field that fails here spans lines, so "
                "the rest of the file was not read")]
    else:
        assert [(failure.line, failure.message) for failure in summary.failed] == [
            (3, "line 3 is longer than 1 MB; the rest of the file was not read")]
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]
    assert summary.unread_from == 3


def test_a_quote_left_open_to_the_end_of_the_file_fails_instead_of_swallowing_the_rows_after_it(db, shop):
    """Read leniently, the open quote made one description of every line after it: one product imported, the
    others neither imported nor reported."""
    text = (
        HEADER
        + "OK-1,Cafe chairs,Home > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # line 2
        + 'A-1,Armchair,Home > Chairs,10,"12 inch stone,photos/chair-armchair-blue.jpg\n'  # 3
        + "B-1,Shell chair,Home > Chairs,70,,photos/chair-shell-black.jpg\n"
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.line, failure.message) for failure in summary.failed] == [
        (3, "not valid CSV (unexpected end of data); the field that fails here spans lines, so the rest of the file "
            "was not read")]
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]


def test_a_quoted_word_followed_by_more_text_fails_its_row_alone(db, shop):
    text = (
        HEADER
        + 'A-1,"Big" sofa,Home > Chairs,10,,photos/chair-armchair-blue.jpg\n'  # line 2
        + 'B-1,12" chair,Home > Chairs,70,,photos/chair-shell-black.jpg\n'
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.line, failure.message) for failure in summary.failed] == [
        (2, "not valid CSV (',' expected after '\"')")]
    assert list(Product.objects.values_list("title", flat=True)) == ['12" chair']


def test_a_utf16_file_is_refused_with_the_fix(db, shop):
    path = shop / "utf16.csv"
    path.write_bytes(GOOD.encode("utf-16"))  # with its byte-order mark, as spreadsheets write "Unicode text"
    with pytest.raises(CatalogImportError, match="UTF-16 text; save it as UTF-8"):
        catalog_csv_import(path=path)


def test_a_failed_rows_cells_are_printed_without_their_control_characters(db, shop):
    """A SKU holding an escape sequence changed the operator's terminal when the failure was printed."""
    summary = catalog_csv_import(path=_write(shop, HEADER + "EVIL\x1b[2J\x1b[31m,Chair,Home,abc,,\n"))
    assert str(summary.failed[0]) == (
        "line 2 (sku EVIL\\x1b[2J\\x1b[31m): price 'abc' is not a number; write it like 12.50")


def test_header_cells_are_printed_without_their_control_characters(db, shop):
    evil = "\x1b]0;x\x07\x1b[2J"
    summary = catalog_csv_import(path=_write(shop, HEADER.strip() + f",{evil}\n"))
    assert summary.ignored_columns == ("\\x1b]0;x\\x07\\x1b[2j",)
    with pytest.raises(CatalogImportError) as raised:
        catalog_csv_import(path=_write(shop, HEADER.strip() + f",{evil},{evil}\n"))
    assert "\x1b" not in str(raised.value) and "\\x1b" in str(raised.value)


def test_a_sku_repeated_with_other_product_fields_fails_and_one_adding_photos_lands(db, shop):
    text = (
        HEADER
        + "CH-1,Black shell chair,Home > Chairs,70,,photos/chair-shell-black.jpg\n"  # line 2
        + "CH-1,Blue sofa,Home > Sofas,99,,photos/chair-armchair-blue.jpg\n"  # 3: contradicts line 2
        + "CH-1,Black shell chair,Home > Chairs,70.00,,photos/chair-cafe-pair.jpg\n"  # 4: the same product, a photo
        + "CH-1,Black shell chair,home > CHAIRS,70,,photos/chair-shell-black.jpg\n"  # 5: the same, in another case
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.line, failure.sku, failure.message) for failure in summary.failed] == [
        (3, "CH-1", "sku CH-1 is on line 2 too, with another title, category, price, currency, description or active: "
                    "give a product one row, its photos together in images"),
    ]
    chair = Product.objects.get(sku="CH-1")
    assert (chair.title, chair.price, chair.category.name) == ("Black shell chair", Decimal("70"), "Chairs")
    assert chair.images.count() == 2 and not Category.objects.filter(name="Sofas").exists()


def test_the_active_column_hides_and_shows_products_and_empty_keeps_them_as_they_are(db, shop):
    """Discontinuing products in bulk took an edit page each: the import can hide (and show) them now."""
    head = "sku,title,category,price,description,images,active\n"
    summary = catalog_csv_import(path=_write(shop, head + "A-1,Kite,Toys,5,,,no\nB-1,Ball,Toys,3,,,\n"))
    assert summary.created == 2
    assert dict(Product.objects.values_list("sku", "active")) == {"A-1": False, "B-1": True}

    catalog_csv_import(path=_write(shop, head + "A-1,Kite,Toys,5,,,\nB-1,Ball,Toys,3,,,FALSE\n"))
    assert dict(Product.objects.values_list("sku", "active")) == {"A-1": False, "B-1": False}

    summary = catalog_csv_import(path=_write(shop, head + "A-1,Kite,Toys,5,,,yes\nB-1,Ball,Toys,3,,,maybe\n"))
    assert [(failure.sku, failure.message) for failure in summary.failed] == [
        ("B-1", "active 'maybe' is not yes or no (true/false, 1/0); leave it empty to keep the product as it is")]
    assert dict(Product.objects.values_list("sku", "active")) == {"A-1": True, "B-1": False}


def test_an_empty_or_missing_currency_keeps_a_products_currency_and_a_new_one_takes_the_default(db, shop):
    """A price file without a currency column turned a shop's yen prices into dollars."""
    head = "sku,title,category,price,description,images,currency\n"
    catalog_csv_import(path=_write(shop, head + "A-1,Kite,Toys,1500,,,jpy\n"))
    catalog_csv_import(path=_write(shop, HEADER + "A-1,Kite,Toys,1400,,\nB-1,Ball,Toys,3,,\n"))
    catalog_csv_import(path=_write(shop, head + "A-1,Kite,Toys,1300,,,\n"))
    assert dict(Product.objects.values_list("sku", "currency")) == {"A-1": "JPY", "B-1": "USD"}
    assert Product.objects.get(sku="A-1").price == 1300
    # A product on two rows (more photos than a row holds): an empty currency agrees with the other row's.
    summary = catalog_csv_import(path=_write(shop, head + "A-1,Kite,Toys,1300,,,JPY\nA-1,Kite,Toys,1300,,,\n"
                                              + "B-1,Ball,Toys,3,,,\nB-1,Ball,Toys,3,,,EUR\n"
                                              + "B-1,Ball,Toys,3,,,GBP\n"))
    assert [(failure.line, failure.sku) for failure in summary.failed] == [(6, "B-1")]  # EUR, then GBP
    assert dict(Product.objects.values_list("sku", "currency")) == {"A-1": "JPY", "B-1": "EUR"}


def test_a_row_with_more_photos_than_a_row_may_hold_fails_and_one_file_named_twice_is_one_photo(db, shop):
    many = "|".join(["photos/chair-shell-black.jpg"] * 21)
    text = (
        HEADER
        + f"CH-1,Black shell chair,Home > Chairs,70,,{many}\n"  # line 2
        + "CH-2,Cafe chairs,Home > Chairs,45,,photos/chair-cafe-pair.jpg|./photos/chair-cafe-pair.jpg\n"  # 3
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(failure.line, failure.message) for failure in summary.failed] == [
        (2, "21 images in one row; the limit is 20: list the others on another row of the same product (the same "
            "title, category, price and description)"),
    ]
    assert list(Product.objects.values_list("sku", flat=True)) == ["CH-2"]
    assert ProductImage.objects.get().product.sku == "CH-2"


def test_skus_that_are_path_segments_are_reported_rows(db, shop):
    """/p/./ and /p/../ resolve to other pages, so such a product's page could never be reached."""
    text = (
        HEADER
        + ".,Dot chair,Home > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # line 2
        + "..,Dot dot chair,Home > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # 3
        + "OK-1,Cafe chairs,Home > Chairs,45,,photos/chair-cafe-pair.jpg\n"  # 4
    )

    summary = catalog_csv_import(path=_write(shop, text))

    message = "sku: A SKU cannot be '.' or '..': its page address would lead elsewhere."
    assert [(failure.line, failure.sku, failure.message) for failure in summary.failed] == [
        (2, ".", message), (3, "..", message),
    ]
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]


def test_relative_paths_are_looked_up_in_the_images_dir_and_may_not_leave_it(db, shop):
    text = (
        HEADER
        + "OK-1,Cafe chairs,Home,45,,chair-cafe-pair.jpg\n"
        + f"OK-2,Armchair,Home,45,,{shop / 'photos' / 'chair-armchair-blue.jpg'}\n"  # absolute: taken as given
        + "BAD-1,Armchair,Home,45,,../catalog.csv\n"  # inside the CSV's folder, but outside --images-dir
    )

    summary = catalog_csv_import(path=_write(shop, text), images_dir=shop / "photos")

    assert [(f.line, f.message) for f in summary.failed] == [
        (4, f"image '../catalog.csv' is outside the images folder {shop / 'photos'}")
    ]
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["OK-1", "OK-2"]


def test_a_row_whose_second_photo_is_broken_fails_as_a_whole(db, shop, media_root, django_capture_on_commit_callbacks):
    (shop / "photos" / "broken.jpg").write_bytes((shop / "photos" / "chair-cafe-pair.jpg").read_bytes()[:2000])
    text = (
        HEADER
        + "SOFA-1,Sofa,Home > Sofas,300,,photos/chair-cafe-pair.jpg|photos/broken.jpg\n"
        + "CH-1,Chair,Home > Chairs,30,,photos/chair-shell-black.jpg\n"
    )
    with django_capture_on_commit_callbacks() as callbacks:
        summary = catalog_csv_import(path=_write(shop, text))

    assert [(f.line, f.message) for f in summary.failed] == [
        (2, "image 'photos/broken.jpg': The file is not a readable image.")
    ]
    assert not Product.objects.filter(sku="SOFA-1").exists()
    assert not Category.objects.filter(name="Sofas").exists()
    chair = ProductImage.objects.get()
    # The sofa's first photo and its thumbnail were removed again.
    assert _stored_files(media_root) == sorted([media_root / chair.file.name, media_root / chair.thumbnail.name])
    # Only the chair's photo is queued: the sofa's was rolled back with its row.
    assert len(embedding_dispatches(callbacks)) == 1


def test_a_category_created_by_a_failed_row_is_created_again_for_the_next_row(db, shop):
    (shop / "photos" / "notes.jpg").write_text("not a photo")
    text = (
        HEADER
        + "BAD-1,Sofa,Home > Sofas,300,,photos/notes.jpg\n"
        + "SOFA-1,Sofa,Home > Sofas,300,,photos/chair-cafe-pair.jpg\n"
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [f.line for f in summary.failed] == [2]
    sofa = Product.objects.get(sku="SOFA-1")
    assert Category.objects.filter(pk=sofa.category_id, name="Sofas", parent__name="Home").exists()


def test_embeddings_are_queued_after_the_rows_commit(db, shop, settings, django_capture_on_commit_callbacks):
    sent = embedding_queue(settings.CELERY_BROKER_URL)
    text = GOOD + "BAD-1,Broken,Home > Broken,1,,photos/missing.jpg\n"

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        summary = catalog_csv_import(path=_write(shop, text))

    assert len(summary.failed) == 1
    images = list(ProductImage.objects.order_by("pk"))
    # The two good rows were written in one transaction (importer.WRITE_BATCH_ROWS), their photos announced together
    # once it committed; the failed row queued nothing.
    assert len(images) == 3 and len(embedding_dispatches(callbacks)) == 1
    assert sorted(pk for batch in sent() for pk in batch) == [image.pk for image in images]
    assert all(image.embedding_queued_at is not None for image in images)


@pytest.mark.django_db(transaction=True)
def test_an_imports_photos_are_queued_32_to_a_task_as_their_rows_commit(shop, settings):
    """A task per committed batch of rows paid the per-task costs for a few photos each; an id lost or sent twice
    between the batches would leave a photo unsearchable until the sweep, or embed it twice."""
    from search.services import TASK_BATCH_SIZE

    sent = embedding_queue(settings.CELERY_BROKER_URL)
    rows = "".join(f"Q-{n},Chair {n},Home,{n}.00,,photos/chair-cafe-pair.jpg\n" for n in range(TASK_BATCH_SIZE + 8))

    summary = catalog_csv_import(path=_write(shop, HEADER + rows))

    assert summary.created == TASK_BATCH_SIZE + 8 and not summary.failed
    batches = sent()
    assert sorted(len(batch) for batch in batches) == [8, TASK_BATCH_SIZE]
    assert sorted(pk for batch in batches for pk in batch) == sorted(ProductImage.objects.values_list("pk", flat=True))


def test_images_over_the_size_limit_and_undecodable_text_are_row_errors(db, shop, settings):
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    noise = np.random.default_rng(0).integers(0, 256, size=(800, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(shop / "photos" / "noise.png")  # about 2 MB: noise does not compress
    path = shop / "catalog.csv"
    path.write_bytes(
        HEADER.encode()
        + b"BIG-1,Big,Home,1,,photos/noise.png\n"
        + "LAT-1,Caf\xe9 chair,Home,1,,\n".encode("latin-1")
        + b"OK-1,Small,Home,1,,photos/chair-cafe-pair.jpg\n"
    )

    summary = catalog_csv_import(path=path)

    assert [(f.line, f.message) for f in summary.failed] == [
        (2, "image 'photos/noise.png': The file is larger than 1 MB."),
        (3, "the row is not valid UTF-8 text; save the file as UTF-8"),
    ]
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]


def test_progress_is_reported_per_row_up_to_the_file_size(db, shop):
    path = _write(shop, GOOD)
    seen = []

    catalog_csv_import(path=path, on_row=lambda bytes_read, summary: seen.append((bytes_read, summary.rows)))

    assert seen[-1] == (path.stat().st_size, 2)
    assert seen[0][0] < seen[-1][0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sku,title,category,price,images\nA,B,C,1,x.jpg\n", "missing column(s): description"),
        ("", "the file is empty"),
        ("sku,title,category,price,description,images,price\n", "named twice in the header: price"),
        ("sku,title,category,price,description,images,activ\nA,B,C,1,,,no\n", "is it 'active'"),
        ("sku,titel,category,price,description,images,title\n", "is it 'title'"),
        ("sku,title,category,price,description,image\n", "missing column(s): images (is it 'image'"),
    ],
)
def test_a_bad_header_fails_before_anything_is_written(db, shop, text, message):
    with pytest.raises(CatalogImportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        catalog_csv_import(path=_write(shop, text))
    assert not Product.objects.exists() and not Category.objects.exists()


# --- The command ----------------------------------------------------------------------------------------


def test_command_exits_3_when_the_file_cannot_be_read_to_its_end(db, shop):
    """It said "1 of 2 rows failed (listed above); the other rows were imported" (exit 1) with the rows after the
    line it could not read past neither imported nor listed."""
    path = _write(shop, HEADER + "OK-1,Chair,Home,1,,\n" + "LONG-1,Sofa,Home,1," + "x" * 2_000_000 + ",\n"
                  + "AFTER-1,Chair,Home,1,,\n")
    with pytest.raises(CommandError) as raised:
        call_command("import_catalog", str(path), verbosity=0, stdout=io.StringIO(), stderr=io.StringIO())
    assert raised.value.returncode == 3
    assert str(raised.value).startswith("Stopped before the end of the file: it cannot be read past line 3 (listed "
                                        "above); the rows before it were imported, 0 of them failing.")
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]


def test_command_prints_a_summary_and_exits_1_listing_the_failed_rows(db, shop, tmp_path):
    path = _write(shop, GOOD + "BAD-1,Chair,Home,abc,,\n" + " \n" + "BAD-2,,Home,1,,\n")
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="2 of 4 rows failed") as raised:
        call_command("import_catalog", str(path), "--errors", str(tmp_path / "errors.csv"),
                     verbosity=0, stdout=out, stderr=err)

    assert raised.value.returncode == 1
    assert "4 rows: 2 created, 0 updated, 0 unchanged, 2 failed; 3 images added" in out.getvalue()
    assert err.getvalue().splitlines() == [
        "line 5 (sku BAD-1): price 'abc' is not a number; write it like 12.50",
        "line 7 (sku BAD-2): title is empty",
    ]
    assert (tmp_path / "errors.csv").read_bytes().startswith(codecs.BOM_UTF8)  # spreadsheets read it as UTF-8
    with open(tmp_path / "errors.csv", newline="", encoding="utf-8-sig") as handle:
        assert list(csv.reader(handle)) == [
            ["line", "sku", "error"],
            ["5", "BAD-1", "price 'abc' is not a number; write it like 12.50"],
            ["7", "BAD-2", "title is empty"],
        ]


def test_command_succeeds_quietly_when_every_row_is_imported(db, shop):
    out = io.StringIO()
    call_command("import_catalog", str(_write(shop, GOOD)), verbosity=0, stdout=out)
    assert "2 rows: 2 created" in out.getvalue()


def test_command_with_a_missing_column_exits_2_and_names_it(db, shop):
    path = _write(shop, "sku,title,price,description,images\nA,B,1,,\n")
    with pytest.raises(CommandError, match=r"missing column\(s\): category.*Nothing was imported") as raised:
        call_command("import_catalog", str(path), verbosity=0)
    assert raised.value.returncode == 2
    assert not Product.objects.exists()


def test_an_import_stopped_by_sigterm_leaves_no_photo_file_without_its_row(db, shop, media_root, monkeypatch):
    """docker stop sends SIGTERM, whose default ended the process on the spot: the photos the batch under way had
    stored stayed on disk with no row. The command now ends as after Ctrl-C, and the rollback deletes them."""
    import os
    import signal

    from catalog import services

    class TestsOwnHandler(BaseException):
        pass

    def tests_own_handler(signum, frame):  # had the command set none, this would end it (not the test run)
        raise TestsOwnHandler

    store, calls = services._image_file_store, []

    def terminated_at_the_second_photo(image, prepared, stored):
        calls.append(image)
        if len(calls) == 2:  # the batch's first photo and its thumbnail lie on disk
            os.kill(os.getpid(), signal.SIGTERM)
        store(image, prepared, stored)

    previous = signal.signal(signal.SIGTERM, tests_own_handler)
    monkeypatch.setattr(services, "_image_file_store", terminated_at_the_second_photo)
    try:
        with pytest.raises(CommandError, match=r"\(interrupted\) before any row was counted") as raised:
            call_command("import_catalog", str(_write(shop, GOOD)), verbosity=0)
        assert raised.value.returncode == 3
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert signal.getsignal(signal.SIGTERM) is previous  # the command put the handler back
    assert not Product.objects.exists()
    assert _stored_files(media_root) == []


@pytest.mark.django_db(transaction=True)
def test_a_ctrl_c_while_a_commit_runs_its_hooks_keeps_the_committed_photos(shop, media_root, monkeypatch):
    """Django runs a transaction's on-commit hooks (retiring cached pages, queueing embeddings) after its COMMIT,
    inside ``atomic``'s exit. A Ctrl-C or an error in one of them reached the clean-up around the transaction,
    which deleted the photo files of rows just committed: broken images that importing again did not mend, since
    the photos were already known by their hash."""
    from catalog import page_cache

    new_version = page_cache._new_version

    def interrupted_once_committed(*, committed: bool = True) -> None:
        if committed:
            raise KeyboardInterrupt
        new_version(committed=committed)

    monkeypatch.setattr(page_cache, "_new_version", interrupted_once_committed)
    with pytest.raises(CommandError, match="the rows being written then may have been imported too"):
        call_command("import_catalog", str(_write(shop, GOOD)), verbosity=0)
    images = list(ProductImage.objects.all())
    assert len(images) == 3  # the batch of both rows committed
    assert sorted(media_root / name for image in images for name in (image.file.name, image.thumbnail.name)) == (
        _stored_files(media_root))


@pytest.mark.django_db(transaction=True)
def test_a_ctrl_c_while_postgresql_commits_keeps_the_committed_photos(shop, media_root, monkeypatch):
    """A Ctrl-C during the COMMIT: psycopg waits for it to finish, then re-raises, so Django's commit raised before
    it set the commit's hooks going, and the clean-up deleted the files of rows that had committed."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    commit = DatabaseWrapper._commit

    def interrupted_once_committed(self):
        commit(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(DatabaseWrapper, "_commit", interrupted_once_committed)
    with pytest.raises(CommandError, match="the rows being written then may have been imported too"):
        call_command("import_catalog", str(_write(shop, GOOD)), verbosity=0)
    monkeypatch.undo()
    images = list(ProductImage.objects.all())
    assert len(images) == 3  # the batch of both rows committed
    assert sorted(media_root / name for image in images for name in (image.file.name, image.thumbnail.name)) == (
        _stored_files(media_root))


@pytest.mark.parametrize("extra", ["url", "inactive", "image2", "price_2"])
def test_columns_that_are_no_misspelling_are_ignored_and_said_so_at_once(db, shop, capsys, extra):
    """Said at the start, above the progress bar, not only after hours of rows. "inactive" is no misspelling of
    "active": renamed as the refusal would have asked, every product it meant to hide would be shown."""
    err = io.StringIO()
    text = GOOD.replace("images\n", f"images,{extra}\n", 1).replace(".jpg\n", ".jpg,x\n")
    call_command("import_catalog", str(_write(shop, text)), verbosity=1, stdout=io.StringIO(), stderr=err)
    assert f"Ignored column(s): {extra}" in capsys.readouterr().err  # above the bar, at the start
    assert f"Ignored column(s): {extra}" in err.getvalue()  # and in the summary
    assert Product.objects.count() == 2


def test_an_import_that_loses_the_database_says_how_far_it_got_writes_its_errors_and_exits_3(
    db, shop, tmp_path, monkeypatch
):
    """The database lost (or Ctrl-C) ended the import with a traceback: no summary, the failures found so far lost
    with an empty --errors file, and status 1, which says "some rows failed, all the others were imported"."""
    from django.db import OperationalError

    from catalog import importer

    rows = "".join(f"ROW-{n},Chair {n},Home,{n}.00,,photos/chair-shell-black.jpg\n" for n in range(20))
    path = _write(shop, HEADER + "BAD-1,Chair,Home,abc,,\n" + rows)
    write, batches = importer.catalog_rows_import, []

    def lost_at_the_third_batch(**kwargs):
        batches.append(kwargs)
        if len(batches) == 3:
            raise OperationalError("server closed the connection unexpectedly")
        return write(**kwargs)

    monkeypatch.setattr(importer, "catalog_rows_import", lost_at_the_third_batch)
    errors, out, err = tmp_path / "errors.csv", io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="a database error: server closed the connection") as raised:
        call_command("import_catalog", str(path), "--errors", str(errors), verbosity=0, stdout=out, stderr=err)
    assert raised.value.returncode == 3
    imported = Product.objects.count()
    assert imported == sum(len(batch["items"]) for batch in batches[:2])
    assert f"after line {imported + 2}, with {imported} row(s) imported and 1 failed up to it" in str(raised.value)
    assert f"{imported + 1} rows: {imported} created" in out.getvalue()
    assert "line 2 (sku BAD-1)" in err.getvalue()
    with open(errors, newline="", encoding="utf-8-sig") as handle:
        assert [row[:2] for row in csv.reader(handle)] == [["line", "sku"], ["2", "BAD-1"]]


@pytest.mark.parametrize("kind", ["a folder", "a file in a folder that does not exist"])
def test_an_errors_file_that_cannot_be_written_is_refused_before_the_import(db, shop, tmp_path, kind):
    """A folder was found only once the import had run, for hours: a traceback, a temporary file left beside it."""
    errors = tmp_path if kind == "a folder" else tmp_path / "no" / "errors.csv"
    with pytest.raises(CommandError, match="--errors") as raised:
        call_command("import_catalog", str(_write(shop, GOOD)), "--errors", str(errors), verbosity=0)
    assert raised.value.returncode == 2 and not Product.objects.exists()


def test_the_errors_file_is_readable_as_a_file_the_command_made_and_may_be_a_pipe(db, shop, tmp_path):
    """Written beside its place and moved there, it kept a temporary file's owner-only mode."""
    import os
    import stat

    errors = tmp_path / "errors.csv"
    call_command("import_catalog", str(_write(shop, GOOD)), "--errors", str(errors), verbosity=0,
                 stdout=io.StringIO())
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(errors.stat().st_mode) == 0o666 & ~umask
    assert errors.read_text(encoding="utf-8-sig") == "line,sku,error\n"
    # A pipe (as /dev/stdout may be) is written, not replaced by a file.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    read = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so that writing it does not wait for one
    try:
        call_command("import_catalog", str(_write(shop, GOOD)), "--errors", str(pipe), verbosity=0,
                     stdout=io.StringIO())
        assert stat.S_ISFIFO(pipe.stat().st_mode)
        assert os.read(read, 100).decode("utf-8-sig") == "line,sku,error\r\n"
    finally:
        os.close(read)


def test_an_import_that_reads_nothing_leaves_the_last_runs_errors_file_as_it_was(db, tmp_path):
    (tmp_path / "out").mkdir()
    errors = tmp_path / "out" / "errors.csv"
    errors.write_text("line,sku,error\n5,BAD-1,price 'abc' is not a number\n", encoding="utf-8")
    with pytest.raises(CommandError) as raised:
        call_command("import_catalog", str(tmp_path / "nope.csv"), "--errors", str(errors), verbosity=0)
    assert raised.value.returncode == 2
    assert errors.read_text(encoding="utf-8") == "line,sku,error\n5,BAD-1,price 'abc' is not a number\n"
    assert sorted(path.name for path in errors.parent.iterdir()) == ["errors.csv"]  # nothing left beside it


@pytest.mark.parametrize(("argument", "message"), [
    ("https://shop.example/products.csv", "is an address, not a file: download the file first"),
    ("x" * 300 + ".csv", "File name too long"),
])
def test_a_file_argument_that_cannot_be_a_file_exits_2_with_why(db, argument, message):
    with pytest.raises(CommandError, match=message) as raised:
        call_command("import_catalog", argument, verbosity=0)
    assert raised.value.returncode == 2


def test_an_images_folder_with_a_name_too_long_exits_2(db, shop):
    with pytest.raises(CommandError, match="cannot read the images folder") as raised:
        call_command("import_catalog", str(_write(shop, GOOD)), "--images-dir", str(shop / ("x" * 300)),
                     verbosity=0)
    assert raised.value.returncode == 2


def test_an_images_folder_that_is_a_file_exits_2_saying_so(db, shop):
    """It said the folder "does not exist", next to the file it named."""
    path = _write(shop, GOOD)
    with pytest.raises(CommandError, match=f"the images folder {path} is a file, not a folder") as raised:
        call_command("import_catalog", str(path), "--images-dir", str(path), verbosity=0)
    assert raised.value.returncode == 2


def test_command_with_a_missing_file_exits_2(db, tmp_path):
    with pytest.raises(CommandError, match="No such file") as raised:
        call_command("import_catalog", str(tmp_path / "nope.csv"), verbosity=0)
    assert raised.value.returncode == 2


@pytest.mark.parametrize("where", ["a folder that does not exist", "the CSV file itself"])
def test_command_with_an_errors_file_it_cannot_write_exits_2_before_importing(db, shop, where):
    """It was opened after the import, which may take hours: then a traceback and no summary, or the input
    truncated when --errors named it."""
    path = _write(shop, GOOD)
    errors = shop / "no" / "such" / "errors.csv" if where.startswith("a folder") else path
    with pytest.raises(CommandError, match="--errors") as raised:
        call_command("import_catalog", str(path), "--errors", str(errors), verbosity=0)
    assert raised.value.returncode == 2
    assert not Product.objects.exists() and path.read_text(encoding="utf-8") == GOOD


# --- Fashion-MNIST demo ---------------------------------------------------------------------------------

needs_fashion_mnist = pytest.mark.skipif(
    not (fashion_dataset_dir() / "train-labels-idx1-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist",
)


@needs_fashion_mnist
def test_fashion_demo_loads_the_first_images_as_products_once(db, settings, django_capture_on_commit_callbacks):
    with gzip.open(fashion_dataset_dir() / "train-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)[:20]
    sent = embedding_queue(settings.CELERY_BROKER_URL)
    out = io.StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_demo", "--fashion", "--fashion-limit", "20", verbosity=0, stdout=out)

    assert "20 products (20 created, 0 updated, 0 unchanged), 20 images added" in out.getvalue()
    products = list(Product.objects.order_by("sku").select_related("category__parent"))
    assert [p.sku for p in products] == [f"FMNIST-train-{i:05d}" for i in range(20)]
    for product, label in zip(products, labels):
        kind = CLASSES[label]
        assert product.title == f"{kind.title} #{int(product.sku[-5:]) + 1}"
        path = [product.category.name]
        parent = product.category.parent
        while parent is not None:
            path.insert(0, parent.name)
            parent = parent.parent
        assert " > ".join(path) == kind.category_path
        assert product.price == fashion_price(sku=product.sku, label=int(label))
        assert kind.price_range[0] <= product.price <= kind.price_range[1] + 1
    assert CLASSES[labels[0]].title == "Ankle boot"  # the first training image, as published

    images = list(ProductImage.objects.order_by("pk"))
    assert len(images) == 20 and all(i.embedding_status == EmbeddingStatus.PENDING for i in images)
    assert sorted(pk for batch in sent() for pk in batch) == [i.pk for i in images]
    with Image.open(images[0].file.path) as photo:
        pixels = np.asarray(photo.convert("L"))
    assert photo.size == (224, 224) and (images[0].width, images[0].height) == (224, 224)
    assert pixels[:8, :8].min() >= 250  # white background (the raw data is light-on-black)
    assert pixels[90:130, 90:130].mean() < 200  # a dark article in the middle

    out = io.StringIO()
    with django_capture_on_commit_callbacks() as callbacks:
        call_command("load_demo", "--fashion", "--fashion-limit", "20", verbosity=0, stdout=out)
    assert "(0 created, 0 updated, 20 unchanged), 0 images added" in out.getvalue()
    assert embedding_dispatches(callbacks) == [] and ProductImage.objects.count() == 20


@needs_fashion_mnist
def test_fashion_demo_adds_a_missing_photo_back_and_corrects_a_changed_price(db):
    call_command("load_demo", "--fashion", "--fashion-limit", "3", verbosity=0, stdout=io.StringIO())
    first = Product.objects.get(sku="FMNIST-train-00000")
    first.images.all().delete()
    Product.objects.filter(sku="FMNIST-train-00001").update(price=Decimal("1.00"))
    out = io.StringIO()

    call_command("load_demo", "--fashion", "--fashion-limit", "3", verbosity=0, stdout=out)

    assert "(0 created, 2 updated, 1 unchanged), 1 images added" in out.getvalue()
    assert first.images.count() == 1
    assert Product.objects.get(sku="FMNIST-train-00001").price != Decimal("1.00")


def test_fashion_demo_without_the_dataset_says_how_to_install_it(db, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(CommandError, match="apt-get install -y dataset-fashion-mnist"):
        call_command("load_demo", "--fashion", "--fashion-limit", "5", verbosity=0)
    assert not Product.objects.exists()


def test_fashion_limit_needs_fashion(db):
    with pytest.raises(CommandError, match="--fashion-limit needs --fashion"):
        call_command("load_demo", "--fashion-limit", "5", verbosity=0)


# --- Through the real queue -----------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@needs_fashion_mnist
def test_a_real_worker_embeds_what_the_import_and_the_fashion_demo_add(celery_worker_process, shop):
    from search.models import ImageEmbedding

    call_command("import_catalog", str(_write(shop, GOOD)), verbosity=0, stdout=io.StringIO())
    call_command("load_demo", "--fashion", "--fashion-limit", "10", verbosity=0, stdout=io.StringIO())

    def none_pending():
        return not ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).exists()

    wait_for(none_pending, timeout=120, message="the worker to embed every imported image")
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.READY}
    assert ImageEmbedding.objects.count() == ProductImage.objects.count() == 13


# --- Hostile cells (issue 13) ---------------------------------------------------------------------------

HOSTILE = [  # (row bytes after the sku, the message its row gets)
    # Exponents, underscores and other scripts' digits are no price as docs/import.md asks for one (Decimal read them).
    (b"Chair,Home,1e26,,photos/chair-cafe-pair.jpg", "price '1e26' is not a number; write it like 12.50"),
    (b"Chair,Home,1e-999999999,,photos/chair-cafe-pair.jpg", "price '1e-999999999' is not a number; write it like "
                                                             "12.50"),
    (b"Chair,Home,1_000,,photos/chair-cafe-pair.jpg", "price '1_000' is not a number; write it like 12.50"),
    ("Chair,Home,\u0663\u0664,,photos/chair-cafe-pair.jpg".encode(), "price '\u0663\u0664' is not a number; write "
                                                                     "it like 12.50"),
    (b"Chair,Home," + b"9" * 400 + b",,photos/chair-cafe-pair.jpg", f"price '{'9' * 400}' is too large; the limit is "
                                                                   "99999999.99"),
    (b"Chair,Home,-5,,photos/chair-cafe-pair.jpg", "price '-5' is negative"),
    (b"Chair,Home,1.999,,photos/chair-cafe-pair.jpg", "price '1.999' has more than 2 decimal places"),
    (b"Chair,Home,NaN,,photos/chair-cafe-pair.jpg", "price 'NaN' is not a number; write it like 12.50"),
    (b"Chair,Home,sNaN,,photos/chair-cafe-pair.jpg", "price 'sNaN' is not a number; write it like 12.50"),
    (b"Chair,Home,-Infinity,,photos/chair-cafe-pair.jpg", "price '-Infinity' is not a number; write it like 12.50"),
    (b"Chair,Home,1,,photos/chair-cafe-pair.jpg\x00.jpg", "images contains a NUL character"),
    (b"Ch\x00air,Home,1,,photos/chair-cafe-pair.jpg", "title contains a NUL character"),
    (b"Chair,Ho\x00me,1,,photos/chair-cafe-pair.jpg", "category contains a NUL character"),
    (b"Chair,Home,1,a\x00b,photos/chair-cafe-pair.jpg", "description contains a NUL character"),
    (b"Chair,Home,1\x00,,photos/chair-cafe-pair.jpg", "price contains a NUL character"),
    (b"Chair,Home,1,,photos/chair-cafe-pair.jpg\xff", "the row is not valid UTF-8 text; save the file as UTF-8"),
    (b"C" * 300 + b",Home,1,,", "title is 300 characters long; the limit is 200"),
    (b"Chair," + b"Home > " * 2 + b"H" * 500 + b",1,,", "category name 'HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH'... "
                                                          "is longer than 120 characters"),
    (b"Chair,Home,1," + b"d" * 200_000 + b",", "not valid CSV (field larger than field limit (131072))"),
]


def test_hostile_cells_are_reported_rows_and_the_import_goes_on(db, shop):
    """Issue 13: a price of 1e26 or 1e309 (InvalidOperation), a NUL in an image path (ValueError) or in a SKU (a
    DataError from the read-ahead query) aborted the whole import with a traceback."""
    lines = [f"BAD-{n},".encode() + cells for n, (cells, _) in enumerate(HOSTILE)]
    lines.insert(3, b"NUL\x00SKU,Chair,Home,1,,photos/chair-cafe-pair.jpg")
    path = shop / "catalog.csv"
    path.write_bytes(HEADER.encode() + b"\n".join(lines) + b"\nOK-1,Chair,Home,1,,photos/chair-cafe-pair.jpg\n")

    summary = catalog_csv_import(path=path)

    messages = [message for _, message in HOSTILE]
    messages.insert(3, "sku contains a NUL character")
    assert [f.message for f in summary.failed] == messages
    assert [f.line for f in summary.failed] == list(range(2, 2 + len(messages)))
    assert summary.rows == len(messages) + 1
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]


def test_the_errors_file_neutralises_cells_a_spreadsheet_would_run(db, shop, tmp_path):
    """Issue 13: cells starting with = + - @ (or a tab or CR) went into --errors as they came: formula injection."""
    formulas = ["=HYPERLINK(A1)", "+1+1", "-2+3", "@SUM(A1)"]
    rows = "".join(f'"{sku}",Chair,Home,abc,,\n' for sku in formulas)
    path = _write(shop, HEADER + rows)

    with pytest.raises(CommandError):
        call_command("import_catalog", str(path), "--errors", str(tmp_path / "errors.csv"),
                     verbosity=0, stdout=io.StringIO(), stderr=io.StringIO())

    with open(tmp_path / "errors.csv", newline="", encoding="utf-8-sig") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert [row for row in cells if row.lstrip("'").startswith(tuple("=+-@\t\r"))]  # the rows are all there
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'=HYPERLINK(A1)" in cells and "'-2+3" in cells


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@A1", "\t=1", "\r=1"])
def test_a_cell_a_spreadsheet_would_run_is_written_as_text(cell):
    buffer = io.StringIO()
    spreadsheet_csv_writer(buffer).writerow([cell, 7, "plain", ""])
    assert next(csv.reader(io.StringIO(buffer.getvalue()))) == ["'" + cell, "7", "plain", ""]


@pytest.mark.django_db(transaction=True)
def test_two_imports_of_the_same_file_at_once_both_succeed(shop):
    """Issue 13: two imports at once reported dozens of false failures (unique violations on category slug and
    product sku) from their get-then-create races, though the data ended right."""
    import threading

    from django.db import connection

    photos = sorted(path.name for path in (shop / "photos").glob("*.jpg"))[:4]
    rows = [
        f"RACE-{n},Racer {n},Race > Kind {n % 7} > Sub {n % 3},{n}.50,,"
        + (f"photos/{photos[n]}|photos/{photos[(n + 1) % 4]}" if n < len(photos) else "")
        for n in range(40)
    ]
    path = _write(shop, HEADER + "\n".join(rows) + "\n")
    start = threading.Barrier(2)
    summaries, errors = [], []

    def run():
        try:
            start.wait()
            summaries.append(catalog_csv_import(path=path))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert [[str(failure) for failure in summary.failed] for summary in summaries] == [[], []]
    assert sorted(summary.created + summary.updated + summary.unchanged for summary in summaries) == [40, 40]
    assert Product.objects.count() == 40
    assert Category.objects.filter(name="Race").count() == 1
    assert Category.objects.filter(parent__name="Race").count() == 7
    assert Category.objects.filter(parent__parent__name="Race").count() == 21
    with_photos = Product.objects.filter(images__isnull=False).distinct()
    assert len(photos) == 4 and with_photos.count() == len(photos)
    assert sum(summary.images_added for summary in summaries) == 2 * len(photos)  # each photo added once
    for product in with_photos:
        hashes = list(product.images.values_list("content_hash", flat=True))
        assert len(hashes) == len(set(hashes)) == 2, product.sku


@pytest.mark.django_db(transaction=True)
def test_an_import_that_deadlocks_with_another_writer_runs_its_rows_again(shop, caplog):
    """Another transaction creates the import's second SKU, then names a category at the top, where the import has
    just named its two (its turn at naming them held to its commit): each waits for the other, and PostgreSQL breaks
    the deadlock by rolling one back. The import, rolled back, stopped with a traceback and no summary; it now runs
    again."""
    import threading

    from django.db import connections, transaction

    from catalog import services

    misc = services.category_get_or_create_path(path="Misc")
    path = _write(shop, HEADER + "T-1,Kite,Toys,5,,photos/plant-cactus.jpg\n"
                  + "B-1,Atlas,Books,9,,photos/chair-cafe-pair.jpg\n")  # one batch: Toys and Books, then T-1, B-1
    import_waited, errors, b1_held = [], [], threading.Event()

    def b1_then_a_category():
        try:
            with transaction.atomic():
                services.product_create(sku="B-1", title="Atlas", category=misc, price="9")
                b1_held.set()
                # The import, holding its new categories, waits for this B-1.
                import_waited.append(until_someone_waits_for_a_lock(timeout=20))
                services.category_get_or_create_path(path="Games")  # waits for the import: a deadlock
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    other = threading.Thread(target=b1_then_a_category)
    other.start()
    assert b1_held.wait(30)  # the other transaction holds its B-1 first (a sleep lost the race on a busy machine)
    summary = catalog_csv_import(path=path)
    other.join(30)

    assert import_waited == [True] and not errors  # PostgreSQL rolled the import back, not the other
    assert "rows rolled back by the database (DeadlockDetected); writing them again" in caplog.text
    assert [str(failure) for failure in summary.failed] == [] and (summary.created, summary.updated) == (1, 1)
    assert sorted(Category.objects.values_list("name", flat=True)) == ["Books", "Games", "Misc", "Toys"]


def test_a_row_failing_inside_a_batch_fails_alone_and_leaves_no_files(db, shop, media_root):
    (shop / "photos" / "notes.jpg").write_text("not a photo")  # refused only when decoded, inside the transaction
    text = (
        HEADER
        + "OK-1,Chair,Home > Chairs,70,,photos/chair-shell-black.jpg\n"
        + "BAD-1,Notes,Home > Notes,1,,photos/notes.jpg\n"
        + "OK-2,T-shirt,Clothing > Tops,12,,photos/tshirt-turquoise-front.jpg\n"
    )

    summary = catalog_csv_import(path=_write(shop, text))

    assert [(f.line, f.sku) for f in summary.failed] == [(3, "BAD-1")]
    assert "not a readable image" in summary.failed[0].message
    assert (summary.rows, summary.created, summary.images_added) == (3, 2, 2)
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["OK-1", "OK-2"]
    assert not Category.objects.filter(name="Notes").exists()
    stored = {image.file.path for image in ProductImage.objects.all()} | {
        image.thumbnail.path for image in ProductImage.objects.all()
    }
    assert {str(path) for path in _stored_files(media_root)} == stored  # the rolled-back batch's files are gone
