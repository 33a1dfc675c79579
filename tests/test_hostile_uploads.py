"""Hostile and unusual uploads through every way a photo enters Lookalike.

The files are in tests/corpus (written by tests/corpus/make_corpus.py); the file over the size limit is made at
test time. Each case goes through all five entry points: the shopper's search form (POST /search/photo/), the
search API (POST /api/v1/search/), the staff image upload (POST /api/v1/products/{sku}/images/), the admin's
"add product" with a photo in its image inline, and ``manage.py import_catalog`` with a CSV row naming the file.

Policy, asserted below:

- The type of an upload is decided by decoding it, never by its name or the Content-Type it came with: every
  file is sent with a name and a header that lie (text as ``image/jpeg``, photos as ``text/plain``).
- Refused with a message a person can act on, no partial write (no product, image row or category, no file under
  MEDIA_ROOT, no embedding task sent) and never a 500 or a traceback:
  an empty file ("file is empty"); text or HTML named ``.jpg``, an SVG (a drawing, not a raster photo), a JPEG cut
  short ("not a readable image"); an EPS ("EPS images are not supported", refused before Pillow would run
  Ghostscript on it); a 1x1 image (below UPLOAD_MIN_SIDE: "each side needs at least 8"); 8000x7000 = 56 MP
  (over UPLOAD_MAX_PIXELS: "too many pixels (8000x7000); the limit is 50 megapixels"); a 20000x20000 = 400 MP
  image and a decompression bomb whose header claims 100000x100000, both refused from the header before any
  decoding ("too many pixels (400 megapixels); the limit is 50 megapixels"); files whose decoding costs far more
  than their pixels say, refused before it: a progressive JPEG of 160 scans (over 100) and a 64x64 TIFF in one
  2048x2048 tile.
- Refused answers: 400 with the message on the form (search page) or as ``{"image": ["..."]}`` (API); the admin
  shows its form again (200, Django's way) with the message at the photo; the import reports the row with its
  line number and exits 1.
- Over UPLOAD_MAX_BYTES (20 MB by default): a request whose Content-Length exceeds the limit plus 1 MB of room
  for the form around the file is answered 413 from the header alone, before the body is read (the admin's
  product form, which carries up to 5 photos, gets 5 times the limit); a file between the limit and that
  room is refused with the field message "larger than 20 MB"; the import refuses it from its size on disk.
- Accepted, embeddable by the real model, and found by search: an animated GIF (its first frame is searched),
  a CMYK JPEG, 16-bit PNGs (grey and colour), a grey TIFF with premultiplied alpha, a HEIC photo from a phone, a JPEG named ``.txt``, a progressive JPEG (ten scans), a 12x8 photo
  (the shorter side at UPLOAD_MIN_SIDE, enlarged for the model), and an
  EXIF-rotated JPEG (also with a malformed EXIF entry beside its orientation), which is searched upright (the same results as the upright photo; box coordinates are in
  upright pixels) and stored with its upright size. Every entry point stores a file under its decoded format's extension.
- Search parameters: an unknown ``category``, ``limit`` out of range or not a number, ``threshold`` not a number
  (API only: the search page has no threshold and ignores one), and a ``box`` that is malformed, inverted, not
  finite or wholly outside the (upright) photo are 400s naming the field; a box partly outside is clipped.
  In the admin an unknown category is a form error; the staff upload answers 404 for an unknown SKU and 400 for
  a bad position; the import creates a category path it does not know yet (by design, docs/import.md).
- A photo that breaks on disk after its upload fails to embed with a reason; the real worker goes on.
"""

from __future__ import annotations

import html
import http.client
import io
import json
import re
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from catalog import services as catalog_services
from catalog.images import inspect_image
from catalog.models import Category, EmbeddingStatus, Product, ProductImage
from search.models import ImageEmbedding
from search.services import images_embed
from tests.factories import copied
from tests.support import embedding_queue, wait_for

CORPUS = Path(__file__).resolve().parent / "corpus"
SEARCH_PAGE = "/search/photo/"
SEARCH_API = "/api/v1/search/"
SKU = "HOSTILE-1"  # the product the staff upload adds photos to, and the one the admin and the import create
ENTRY_POINTS = ["search-page", "search-api", "image-api", "admin", "import"]
SEARCHES = ["search-page", "search-api"]
STORES = ["image-api", "admin", "import"]
SHOES = {"RUN-1", "RUN-3"}  # neighbours in the `catalog` fixture of the shoe photo most of the corpus is made from
CHAIRS = {"CHAIR-1", "CHAIR-2"}


@pytest.fixture(autouse=True)
def generous_throttle(settings):
    """Anonymous API searches are throttled; this module sends many."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "10000/min"}}


@dataclass(frozen=True)
class Refused:
    file: str
    message: str  # part of what the person reads, whatever the entry point


@dataclass(frozen=True)
class Accepted:
    file: str
    format: str
    size: tuple[int, int]  # width, height as shown (after EXIF rotation)
    neighbours: set[str] | None  # the best search result is one of these (None: any answer, even none)


TOO_MANY = "too many pixels"
REFUSED = {
    "empty": Refused("empty.jpg", "file is empty"),
    "text-named-jpg": Refused("text.jpg", "The file is not a readable image."),
    "html-named-jpg": Refused("page.jpg", "The file is not a readable image."),
    "svg": Refused("drawing.svg", "The file is not a readable image."),
    "eps": Refused("drawing.eps", "EPS images are not supported."),
    "truncated-jpeg": Refused("truncated.jpg", "The file is not a readable image."),
    "bomb": Refused("bomb.png", "too many pixels (10000 megapixels); the limit is 50 megapixels."),
    "20000x20000": Refused("huge-20000x20000.png", "too many pixels (400 megapixels); the limit is 50 megapixels."),
    "56-megapixels": Refused("over-limit-8000x7000.png", "too many pixels (8000x7000); the limit is 50 megapixels."),
    "1x1": Refused("tiny-1x1.png", "The image is 1x1 pixels; each side needs at least 8."),
    # Decoded once per scan: 3,000 scans of a 7000x7000 picture (318 KB) held a worker for 12 s.
    "many-scans": Refused("many-scans.jpg", "The JPEG is stored in 160 passes; the limit is 100."),
    # One tile of 2048x2048 for 64x64 pixels, inflated whole by libtiff (32768x32768: 1 GB from a 1 MB file).
    "tiled-tiff": Refused("tiled.tif", "stored in tiles of 2048x2048 pixels, larger than its 64x64 picture"),
}
ACCEPTED = {
    "animated-gif": Accepted("animated.gif", "GIF", (160, 107), SHOES),  # frame 1 a shoe, frame 2 a cactus
    "cmyk-jpeg": Accepted("cmyk.jpg", "JPEG", (240, 160), SHOES),
    "16-bit-rgb-png": Accepted("rgb-16bit.png", "PNG", (160, 107), SHOES),
    "16-bit-grey-png": Accepted("grey-16bit.png", "PNG", (80, 120), CHAIRS),
    # Pillow's mode "La" (grey, premultiplied alpha) converts to no colour mode directly: it was a 500 everywhere.
    "grey-premultiplied-tiff": Accepted("grey-premultiplied.tif", "TIFF", (80, 120), CHAIRS),
    "heic": Accepted("phone.heic", "HEIF", (240, 160), SHOES),
    "exif-rotated": Accepted("exif-rotated.jpg", "JPEG", (240, 160), SHOES),  # stored 160x240
    # The same with a malformed camera-model entry in its EXIF, which Pillow cannot write back.
    "exif-malformed": Accepted("exif-malformed.jpg", "JPEG", (240, 160), SHOES),
    "jpeg-named-txt": Accepted("jpeg-named.txt", "JPEG", (240, 160), SHOES),
    "progressive-jpeg": Accepted("progressive.jpg", "JPEG", (240, 160), SHOES),  # ten scans
    # Enlarged for the model; 12x8 pixels hold too little of the shoe to promise what it finds.
    "small-12x8": Accepted("small-12x8.png", "PNG", (12, 8), None),
}
EXTENSIONS = {"GIF": ".gif", "JPEG": ".jpg", "PNG": ".png", "HEIF": ".heic", "TIFF": ".tif"}


def corpus_upload(name: str, *, content_type: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, (CORPUS / name).read_bytes(), content_type=content_type)


@dataclass
class Answer:
    status: int  # HTTP status; for the import, the command's exit status
    text: str  # what the person reads: the page (unescaped), the JSON's messages, the command's output
    response: object = None


def _json_text(data) -> str:
    if isinstance(data, dict):
        return " ".join(f"{key}: {_json_text(value)}" for key, value in data.items())
    if isinstance(data, list):
        return " ".join(_json_text(item) for item in data)
    return str(data)


class EntryPoints:
    """Sends one upload through one entry point, the way a shopper, a client program or a staff member would."""

    def __init__(self, *, client, admin_client, staff_api, tmp_path, category):
        self.client, self.admin_client, self.staff_api = client, admin_client, staff_api
        self.tmp_path, self.category = tmp_path, category

    def send(self, entry: str, upload: SimpleUploadedFile, **params) -> Answer:
        send = {"search-page": self.search_page, "search-api": self.search_api, "image-api": self.image_api,
                "admin": self.admin, "import": self.import_csv}[entry]
        answer = send(upload, **params)
        assert answer.status != 500 and "Traceback" not in answer.text
        return answer

    def search_page(self, upload, **params) -> Answer:
        response = self.client.post(SEARCH_PAGE, {"photo": upload, **params})
        return Answer(response.status_code, html.unescape(response.content.decode()), response)

    def search_api(self, upload, **params) -> Answer:
        response = APIClient().post(SEARCH_API, {"image": upload, **params}, format="multipart")
        return Answer(response.status_code, _api_text(response), response)

    def image_api(self, upload, sku=SKU, **params) -> Answer:
        response = self.staff_api.post(f"/api/v1/products/{sku}/images/", {"image": upload, **params})
        return Answer(response.status_code, _api_text(response), response)

    def admin(self, upload, **fields) -> Answer:
        data = {
            "sku": SKU, "title": "Hostile upload", "category": self.category.pk, "price": "10.00",
            "currency": "USD", "active": "on", "description": "",
            "images-TOTAL_FORMS": "1", "images-INITIAL_FORMS": "0", "images-MIN_NUM_FORMS": "0",
            "images-MAX_NUM_FORMS": "1000", "images-0-position": "0", "images-0-file": upload,
            **fields,
        }
        response = self.admin_client.post(reverse("admin:catalog_product_add"), data)
        return Answer(response.status_code, html.unescape(response.content.decode()), response)

    def import_csv(self, upload) -> Answer:
        photos = self.tmp_path / "photos"
        photos.mkdir(exist_ok=True)
        (photos / upload.name).write_bytes(upload.read())
        csv_path = self.tmp_path / "catalog.csv"
        csv_path.write_text(
            f"sku,title,category,price,description,images\n{SKU},Hostile upload,Imported > Hostile,10.00,,"
            f"photos/{upload.name}\n",
            encoding="utf-8",
        )
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command("import_catalog", str(csv_path), verbosity=0, stdout=out, stderr=err)
            status = 0
        except CommandError as error:
            status, err = error.returncode, io.StringIO(err.getvalue() + str(error))
        return Answer(status, out.getvalue() + err.getvalue())


def _api_text(response) -> str:
    try:
        return _json_text(json.loads(response.content))
    except ValueError:
        return response.content.decode(errors="replace")


@pytest.fixture
def entry_points(client, admin_client, admin_user, tmp_path, db):
    staff_api = APIClient()
    staff_api.force_login(admin_user)
    category = catalog_services.category_get_or_create_path(path="Tests > Hostile")
    return EntryPoints(
        client=client, admin_client=admin_client, staff_api=staff_api, tmp_path=tmp_path, category=category
    )


@pytest.fixture
def shelf(db, entry_points):
    """The state an entry point starts from: the staff upload needs a product to add the photo to."""

    def prepare(entry: str) -> None:
        if entry == "image-api":
            catalog_services.product_create(
                sku=SKU, title="Hostile upload", category=entry_points.category, price="10.00"
            )

    return prepare


@pytest.fixture
def sent(settings):
    """The embedding tasks sent to the broker during the test (read after the request's commit callbacks ran)."""
    return embedding_queue(settings.CELERY_BROKER_URL)


def _files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def _counts() -> tuple[int, int, int]:
    return Product.objects.count(), ProductImage.objects.count(), Category.objects.count()


def _assert_nothing_written(*, before, media_root, sent):
    assert _counts() == before  # no product, photo row or category
    assert _files_under(media_root) == []  # no stored file
    assert sent() == []  # no embedding task


def _assert_refused(entry: str, answer: Answer, message: str):
    if entry == "search-page":
        assert answer.status == 400 and 'name="photo"' in answer.text  # the form again, to try another photo
    elif entry in ("search-api", "image-api"):
        assert answer.status == 400, answer.text[:500]
        assert list(answer.response.json()) == ["image"]  # the field is named
    elif entry == "admin":
        assert answer.status == 200 and "Please correct the error" in answer.text  # the form again
    else:
        assert answer.status == 1  # the import: some rows failed
        assert f"line 2 (sku {SKU}): image 'photos/" in answer.text
    assert message in answer.text, answer.text[:2000]


# --- Refused files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [*REFUSED.values(), *ACCEPTED.values()], ids=[*REFUSED, *ACCEPTED])
def test_checking_a_file_without_keeping_its_pixels_leaves_the_callers_file_open(case):
    """Pillow closed the caller's file with the image it had opened on it, so the check's own rewind raised
    "I/O operation on closed file" in place of its verdict, even for a good 16-bit PNG."""
    upload = corpus_upload(case.file, content_type="image/jpeg")
    if isinstance(case, Refused):
        with pytest.raises(DjangoValidationError, match=re.escape(case.message)):
            inspect_image(upload)
    else:
        info = inspect_image(upload)
        assert (info.width, info.height, info.format) == (*case.size, case.format) and info.image is None
    assert not upload.closed and upload.tell() == 0


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_file_gets_a_readable_4xx_and_writes_nothing(
    entry, case, entry_points, shelf, sent, media_root, django_capture_on_commit_callbacks
):
    shelf(entry)
    before = _counts()
    upload = corpus_upload(case.file, content_type="image/jpeg")  # the header lies too

    with django_capture_on_commit_callbacks(execute=True):
        answer = entry_points.send(entry, upload)

    _assert_refused(entry, answer, case.message)
    _assert_nothing_written(before=before, media_root=media_root, sent=sent)


@pytest.fixture(scope="session")
def oversized(tmp_path_factory):
    """A real JPEG padded with zeros after its end marker (it still decodes) to just over the limit and well over."""
    from django.conf import settings

    folder = tmp_path_factory.mktemp("oversized")
    photo = (CORPUS / "jpeg-named.txt").read_bytes()
    files = {}
    for name, size in [("over-limit.jpg", settings.UPLOAD_MAX_BYTES + 256 * 1024),
                       ("over-body-limit.jpg", settings.UPLOAD_MAX_BYTES + 2 * 1024 * 1024)]:
        path = folder / name
        with open(path, "wb") as handle:
            handle.write(photo)
            handle.truncate(size)  # zero bytes up to the size, without building them in memory
        files[name] = path
    return files


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_file_just_over_the_size_limit_is_refused_with_the_limit(
    entry, entry_points, shelf, sent, media_root, oversized, settings, django_capture_on_commit_callbacks
):
    assert settings.UPLOAD_MAX_BYTES == 20 * 1024 * 1024  # the default is what this test exercises
    shelf(entry)
    before = _counts()
    path = oversized["over-limit.jpg"]
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")

    with django_capture_on_commit_callbacks(execute=True):
        answer = entry_points.send(entry, upload)

    _assert_refused(entry, answer, "larger than 20 MB")
    _assert_nothing_written(before=before, media_root=media_root, sent=sent)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_request_over_the_body_limit_is_413_or_a_field_error(
    entry, entry_points, shelf, sent, media_root, oversized, django_capture_on_commit_callbacks
):
    shelf(entry)
    before = _counts()
    path = oversized["over-body-limit.jpg"]
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")

    with django_capture_on_commit_callbacks(execute=True):
        answer = entry_points.send(entry, upload)

    if entry in ("admin", "import"):  # the admin's budget is five photos; the import checks the file's size
        _assert_refused(entry, answer, "larger than 20 MB")
    else:
        assert answer.status == 413
        if entry == "search-page":  # a page in the shopper's words, with the limit the form names
            assert "The photo is larger than 20 MB." in answer.text and "Back to the photo search" in answer.text
            assert answer.response["Content-Type"].startswith("text/html")
            assert "script-src 'self'" in answer.response["Content-Security-Policy"]
        else:
            assert "The request is larger than 21 MB." in answer.text
            assert answer.response["Content-Type"] == "application/json"
    _assert_nothing_written(before=before, media_root=media_root, sent=sent)


# --- Accepted files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", SEARCHES)
@pytest.mark.parametrize("case", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_an_accepted_photo_is_searched(entry, case, entry_points, catalog, sent, media_root):
    stored = _files_under(media_root)  # the catalog's photos
    answer = entry_points.send(entry, corpus_upload(case.file, content_type="text/plain"))

    assert answer.status == 200, answer.text[:2000]
    if entry == "search-page":
        skus = [result.product.sku for result in answer.response.context["search"].results]
        query_photo = answer.response.context["query_photo"]
        assert (query_photo.width, query_photo.height) == case.size  # the preview is upright too
    else:
        skus = [result["product"]["sku"] for result in answer.response.json()["results"]]
    assert case.neighbours is None or (skus and skus[0] in case.neighbours), skus
    assert _files_under(media_root) == stored and sent() == []  # a query photo is never stored


@pytest.mark.parametrize("entry", STORES)
@pytest.mark.parametrize("case", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_an_accepted_photo_is_stored_queued_and_embeddable(
    entry, case, entry_points, shelf, sent, django_capture_on_commit_callbacks
):
    shelf(entry)
    with django_capture_on_commit_callbacks(execute=True):
        answer = entry_points.send(entry, corpus_upload(case.file, content_type="text/plain"))

    assert answer.status == {"image-api": 201, "admin": 302, "import": 0}[entry], answer.text[:2000]
    image = ProductImage.objects.get(product__sku=SKU)
    assert (image.width, image.height) == case.size
    assert image.file.storage.exists(image.file.name)
    assert image.file.name.endswith(EXTENSIONS[case.format])  # stored and served as what it decodes as
    assert sent() == [[image.pk]]  # one task, after the commit, for exactly this photo

    assert images_embed(image_ids=[image.pk])["embedded"] == 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.READY
    assert ImageEmbedding.objects.filter(image=image).count() == 1


@pytest.mark.parametrize("entry", ["search-page", "search-api", "image-api", "admin"])
def test_a_photo_with_a_long_extension_spooled_to_disk_is_accepted(entry, entry_points, shelf, catalog, settings):
    """Django names an upload's temporary file after its extension: one of 250 characters made a name too long for
    the file system, and reading the request failed (a 500) before any view could answer."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every file to a temporary file, as a photo over 2.5 MB goes
    shelf(entry)
    upload = SimpleUploadedFile("photo." + "x" * 250, (CORPUS / "exif-upright.jpg").read_bytes(), "image/jpeg")

    answer = entry_points.send(entry, upload)

    assert answer.status == {"image-api": 201, "admin": 302}.get(entry, 200), answer.text[:2000]


@pytest.mark.parametrize("entry", SEARCHES)
def test_an_exif_rotated_photo_is_searched_upright(entry, entry_points, catalog):
    """The same products in the same order, with similarities within JPEG noise (0.02); searched sideways, the
    shoe would score 0.07 lower on its best match and 0.1 higher on the next."""

    def search(name, **params):
        if entry == "search-api":
            params["threshold"] = "0"  # the whole ranking
        answer = entry_points.send(entry, corpus_upload(name, content_type="image/jpeg"), **params)
        assert answer.status == 200, answer.text[:2000]
        if entry == "search-page":
            return [(r.product.sku, r.similarity) for r in answer.response.context["search"].results]
        return [(r["product"]["sku"], r["similarity"]) for r in answer.response.json()["results"]]

    def assert_same(rotated, upright):
        # Each product within the noise of its similarity, so in the same order but for products whose similarities
        # differ by less than twice it (near the floor of 0 they differ by less than that, and int8 kernels of
        # some CPUs swapped two of them).
        before, after = dict(upright), dict(rotated)
        assert upright and after.keys() == before.keys(), (rotated, upright)
        assert all(abs(after[sku] - before[sku]) < 0.02 for sku in before), (rotated, upright)
        position = {sku: index for index, (sku, _) in enumerate(rotated)}
        apart = [(a, b) for (a, x), (b, y) in combinations(upright, 2) if x - y >= 0.04]
        assert apart and all(position[a] < position[b] for a, b in apart), (rotated, upright)

    upright = search("exif-upright.jpg")
    assert upright[0][0] in SHOES
    assert_same(search("exif-rotated.jpg"), upright)
    assert_same(search("exif-malformed.jpg"), upright)  # a malformed entry beside the orientation changes nothing
    # A box is measured on the upright photo (240x160), also when the file is stored sideways (160x240).
    assert_same(search("exif-rotated.jpg", box="0,0,160,160"), search("exif-upright.jpg", box="0,0,160,160"))


# --- Search parameters ------------------------------------------------------------------------------------

# (params, {entry point: message}); an entry point missing from the dict accepts the request.
PARAMETERS = {
    "unknown-category": ({"category": "no-such-category"},
                         {"search-page": "That category does not exist", "search-api": "Unknown category"}),
    "limit-zero": ({"limit": "0"}, {"search-page": "greater than or equal to 1",
                                    "search-api": "greater than or equal to 1"}),
    "limit-too-big": ({"limit": "1000"},
                      {"search-page": "At most 96 results", "search-api": "less than or equal to 100"}),
    "limit-not-a-number": ({"limit": "ten"}, {"search-page": "Enter a whole number", "search-api": "valid integer"}),
    "threshold-not-a-number": ({"threshold": "high"}, {"search-api": "threshold: A valid number is required."}),
    "threshold-nan": ({"threshold": "nan"}, {"search-api": "threshold: A valid number is required."}),
    "threshold-out-of-range": ({"threshold": "1.5"}, {"search-api": "less than or equal to 1"}),
    "box-malformed": ({"box": "1,2,3"}, {"search-page": "four numbers", "search-api": "box: box must be four numbers"}),
    "box-not-numbers": ({"box": "a,b,c,d"}, {"search-page": "four numbers", "search-api": "four numbers"}),
    "box-inverted": ({"box": "100,10,50,200"}, {"search-page": "x1 > x0", "search-api": "x1 > x0"}),
    "box-infinite": ({"box": "0,0,inf,50"}, {"search-page": "finite", "search-api": "finite"}),
    # Inside the stored 160x240 pixels but outside the upright 240x160 photo.
    "box-outside": ({"box": "10,170,100,230"},
                    {"search-page": "outside the 240x160 photo", "search-api": "outside the 240x160 photo"}),
    "box-partly-outside": ({"box": "-50,-50,300,120"}, {}),
}


@pytest.mark.parametrize("entry", SEARCHES)
@pytest.mark.parametrize("params, messages", PARAMETERS.values(), ids=PARAMETERS.keys())
def test_search_parameters_are_checked(entry, params, messages, entry_points, catalog):
    answer = entry_points.send(entry, corpus_upload("exif-rotated.jpg", content_type="image/jpeg"), **params)

    if entry in messages:
        assert answer.status == 400
        assert messages[entry] in answer.text, answer.text[:3000]
        if entry == "search-page":
            assert answer.response.context.get("search") is None and 'name="photo"' in answer.text
        else:
            assert set(answer.response.json()) == {next(iter(params))}  # the field is named
    else:
        assert answer.status == 200, answer.text[:2000]
        if entry == "search-page" and "box" in params:
            assert answer.response.context["query_photo"].box_text == "0,0,240,120"  # clipped to the photo


def test_admin_refuses_an_unknown_category_and_writes_nothing(entry_points, sent, media_root,
                                                               django_capture_on_commit_callbacks):
    before = _counts()
    with django_capture_on_commit_callbacks(execute=True):
        upload = corpus_upload("exif-upright.jpg", content_type="image/jpeg")
        answer = entry_points.send("admin", upload, category="999999")
    _assert_refused("admin", answer, "Select a valid choice")
    _assert_nothing_written(before=before, media_root=media_root, sent=sent)


@pytest.mark.parametrize(
    "sku, params, status, message",
    [
        ("NO-SUCH-SKU", {}, 404, "No such product."),
        (SKU, {"position": "first"}, 400, "position: A valid integer is required."),
        (SKU, {"position": "-1"}, 400, "position: Ensure this value is greater than or equal to 0."),
    ],
    ids=["unknown-sku", "position-not-a-number", "position-negative"],
)
def test_image_upload_refuses_bad_parameters(sku, params, status, message, entry_points, shelf, sent, media_root,
                                             django_capture_on_commit_callbacks):
    shelf("image-api")
    before = _counts()
    with django_capture_on_commit_callbacks(execute=True):
        answer = entry_points.image_api(corpus_upload("exif-upright.jpg", content_type="image/jpeg"), sku=sku, **params)
    assert answer.status == status and message in answer.text, answer.text
    _assert_nothing_written(before=before, media_root=media_root, sent=sent)


# --- Through the real HTTP server -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, declared",
    [
        (SEARCH_PAGE, 200 * 1024 * 1024),
        (SEARCH_API, 200 * 1024 * 1024),
        (f"/api/v1/products/{SKU}/images/", 200 * 1024 * 1024),
        ("/admin/catalog/product/add/", 1024 * 1024 * 1024),
    ],
    ids=["search-page", "search-api", "image-api", "admin"],
)
def test_an_oversized_body_is_refused_from_its_header_before_it_is_sent(live_server, path, declared):
    """A client declares a huge body and sends a few bytes: the 413 must come back without waiting for the rest."""
    address = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "multipart/form-data; boundary=lookalike")
        connection.putheader("Content-Length", str(declared))
        connection.endheaders(
            b'--lookalike\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n\xff\xd8\xff'
        )
        response = connection.getresponse()  # a server waiting for 200 MB would time out here (10 s)
        body = response.read().decode()
    finally:
        connection.close()

    assert response.status == 413
    assert ("The request is larger than" in body or "The photo is larger than" in body) and "Traceback" not in body
    if path.startswith("/api/"):
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(body)["detail"].startswith("The request is larger than 21 MB")

    # The server goes on answering.
    healthy = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        healthy.request("GET", "/api/v1/categories/")
        assert healthy.getresponse().status == 200
    finally:
        healthy.close()


# --- The real worker --------------------------------------------------------------------------------------


@pytest.mark.worker
def test_the_worker_embeds_accepted_files_fails_a_corrupted_one_and_stays_up(celery_worker_process, media_root):
    category = catalog_services.category_get_or_create_path(path="Tests > Hostile")
    product = catalog_services.product_create(sku=SKU, title="Hostile upload", category=category, price="10.00")
    for case in ACCEPTED.values():
        catalog_services.product_image_add(product=product, file=corpus_upload(case.file, content_type="text/plain"))
    with transaction.atomic():  # the file breaks on disk after it was checked and stored, before the task runs
        broken = catalog_services.product_image_add(
            product=product, file=corpus_upload("exif-upright.jpg", content_type="image/jpeg")
        )
        Path(broken.file.path).write_bytes((CORPUS / "truncated.jpg").read_bytes())

    def none_pending():
        return not ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).exists()

    try:
        wait_for(none_pending, timeout=120, message="the worker to process every image")
    except AssertionError as error:
        pytest.fail(f"{error}; the worker's log:\n{(media_root / 'worker.log').read_text()[-5000:]}")
    broken.refresh_from_db()
    assert broken.embedding_status == EmbeddingStatus.FAILED
    assert "truncated" in broken.embedding_error  # the reason, for the admin's status badge
    others = ProductImage.objects.exclude(pk=broken.pk)
    assert sorted(others.values_list("embedding_status", flat=True)) == [EmbeddingStatus.READY] * len(ACCEPTED)
    assert celery_worker_process.poll() is None  # the worker process is still alive

    # ... and still working: a photo added now is embedded too.
    after = catalog_services.product_image_add(  # in other bytes: the product has this picture already
        product=product, file=copied(corpus_upload("cmyk.jpg", content_type="image/jpeg"))
    )
    wait_for(lambda: ProductImage.objects.get(pk=after.pk).embedding_status == EmbeddingStatus.READY, timeout=60,
             message="the worker to embed a photo sent after the broken one")
    assert celery_worker_process.poll() is None


def test_start_of_scan_bytes_outside_the_pictures_scans_are_not_counted_as_scans():
    """Every 0xFF 0xDA pair of the file was counted: a phone's motion photo (a video after the picture), or a comment
    holding such bytes, was refused as "stored in 113 passes"."""
    photo = (CORPUS / "exif-upright.jpg").read_bytes()
    noise = b"\xff\xda\x00\x0c" * 300
    comment = b"\xff\xfe" + (len(noise) + 2).to_bytes(2, "big") + noise
    for name, data in {"after its end": photo + noise, "in a comment": photo[:2] + comment + photo[2:]}.items():
        info = inspect_image(SimpleUploadedFile("photo.jpg", data))
        assert (info.format, info.width) == ("JPEG", 240), name


@pytest.mark.parametrize("disguise", ["a junk byte", "an empty comment", "an empty comment before a scan",
                                      "fill before a marker", "empty comments", "zeros before a marker",
                                      "fill to the end", "restart markers"])
def test_a_jpeg_costing_far_more_than_its_pixels_is_refused_however_its_parts_are_dressed(disguise):
    """The scans were counted by walking the segments, which stopped at a byte that was no marker (junk, an empty
    segment's length) where the decoder reads on and decodes every scan; and Pillow reads what comes before the
    first scan byte by byte in Python (19 MB of 0xFF fill: 15 s, a million empty comments: 7 s)."""
    scans = (CORPUS / "many-scans.jpg").read_bytes()
    photo = (CORPUS / "exif-upright.jpg").read_bytes()
    second_scan = scans.index(b"\xff\xda", scans.index(b"\xff\xda") + 2)
    data, message = {
        "a junk byte": (scans[:20] + b"\x00" + scans[20:], "stored in 160 passes"),
        "an empty comment": (scans[:2] + b"\xff\xfe\x00\x00" + scans[2:], "stored in 160 passes"),
        "an empty comment before a scan": (scans[:second_scan] + b"\xff\xfe\x00\x00" + scans[second_scan:],
                                           "stored in 160 passes"),
        "fill before a marker": (photo[:2] + b"\xff" * 2000 + photo[2:], "more than 1024 bytes of no picture"),
        "empty comments": (photo[:2] + b"\xff\xfe\x00\x02" * 1001 + photo[2:], "made of more than 1000 parts"),
        "zeros before a marker": (photo[:2] + bytes(2000) + photo[2:], "more than 1024 bytes of no picture"),
        # No marker after it: the walk found none and checked nothing (a regex over 0xFF runs took 21 s for 64 KB).
        "fill to the end": (b"\xff\xd8" + b"\xff" * 8192, "more than 1024 bytes of no picture"),
        "restart markers": (photo[:2] + b"\xff\xd0" * 1001 + photo[2:], "made of more than 1000 parts"),
    }[disguise]
    with pytest.raises(DjangoValidationError, match=message):
        inspect_image(SimpleUploadedFile("photo.jpg", data))
