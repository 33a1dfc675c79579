"""The shopper's search-by-photo pages, through the test client: real photos, real model, real pgvector."""

from __future__ import annotations

import base64
import io
import re

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from catalog.models import Category
from search.models import EmbeddingSpace
from tests.factories import collage, jpeg_upload, uploaded_file, uploaded_image
from tests.support import page_links

pytestmark = pytest.mark.django_db

URL = "/search/photo/"


def _post(client, photo, **fields):
    return client.post(URL, {"photo": photo, **fields})


def _skus(response) -> list[str]:
    return [item.product.sku for item in response.context["search"].results]


def _files_under(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def test_the_search_page_offers_upload_camera_and_a_category_tree(client, catalog):
    response = client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'enctype="multipart/form-data"' in html
    assert re.search(r'<input[^>]+type="file"[^>]+name="photo"[^>]+accept="image/\*"', html)
    assert 'capture="environment"' in html
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', html)
    assert options[0] == ("", "All categories")
    labels = [label for _, label in options]
    # Children follow their parent, indented one step further.
    assert labels.index("Clothing") < labels.index("\u00a0\u00a0\u00a0Shoes")
    assert labels.index("Home") < labels.index("\u00a0\u00a0\u00a0Chairs")
    assert '<option value="" selected>All categories</option>' in html


def test_every_page_links_to_the_photo_search(client):
    html = client.get(reverse("catalog:home")).content.decode()
    assert f'href="{reverse("search:photo")}"' in html
    assert reverse("search:photo") == URL


def test_a_head_request_of_the_photo_search_page_is_answered_like_its_get(client):
    """Uptime checks and link checkers ask HEAD: it was a 405."""
    head, get = client.head(URL), client.get(URL)
    assert head.status_code == 200 and head.content == b""
    assert head["Content-Type"] == get["Content-Type"] and head["Content-Length"] == get["Content-Length"]


def test_a_category_can_be_preselected(client, catalog):
    html = client.get(URL, {"category": "clothing-shoes"}).content.decode()
    assert re.search(r'<option value="clothing-shoes" selected>', html)


def test_a_photo_finds_similar_products_with_match_badges(client, catalog, test_images, media_root):
    before = _files_under(media_root)

    response = _post(client, uploaded_file(test_images / "shoe-running-3.jpg"))

    assert response.status_code == 200
    assert _skus(response)[0] == "RUN-3"
    html = response.content.decode()
    assert "Title of RUN-3" in html
    assert re.search(r"\d+% match", html)
    assert "match-badge-weak" not in html  # every result passed the cut-off: none is greyed
    assert "$65.00" in html  # RUN-3, the best match, with its price
    # The query photo comes back inline: there is no stored copy to link to.
    assert 'src="data:image/jpeg;base64,' in html
    assert _files_under(media_root) == before


def test_the_query_photos_preview_is_made_from_the_pixels_the_search_decoded(client, catalog, test_images,
                                                                             monkeypatch):
    """The preview decoded the upload a second time (a phone's HEIC or PNG at full size), outside the page's
    handling of a failed search."""
    from search import views

    png = io.BytesIO()
    Image.open(test_images / "shoe-running-3.jpg").convert("RGB").save(png, "PNG")
    opened, open_image = [], Image.open
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(args) or open_image(*args, **kwargs))
    upload = SimpleUploadedFile("shoe.png", png.getvalue(), content_type="image/png")

    response = _post(client, upload)

    assert response.status_code == 200 and len(opened) == 1  # the upload's check, which decodes it for the search
    monkeypatch.undo()
    data_uri = re.search(r'src="data:image/jpeg;base64,([^"]+)"', response.content.decode())[1]
    preview = Image.open(io.BytesIO(base64.b64decode(data_uri)))
    assert max(preview.size) <= views.PREVIEW_MAX_SIDE and preview.format == "JPEG"


def test_query_photos_are_not_kept_even_when_spooled_to_disk(client, catalog, test_images, settings, tmp_path):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # every upload goes through a temporary file
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)

    response = _post(client, uploaded_file(test_images / "chair-cafe-pair.jpg"))

    assert response.status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_category_filter_includes_descendants(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0  # rank everything, so the filter alone decides what is listed

    response = _post(client, uploaded_file(test_images / "chair-cafe-pair.jpg"), category="clothing")

    assert response.status_code == 200
    assert set(_skus(response)) == {"RUN-1", "RUN-3", "TEE-1"}  # shoes and tops, never the chairs
    assert "in Clothing" in response.content.decode()


def test_another_category_chosen_under_the_results_without_a_new_photo_searches_the_same_photo_there(
    client, catalog, test_images, settings
):
    """Without a script the form under the results posted no photo, and the page answered "Choose a photo"."""
    settings.SEARCH_MIN_SCORE = 0
    first = _post(client, uploaded_file(test_images / "chair-cafe-pair.jpg"))
    token = first.context["token"]
    assert f'<input type="hidden" name="query" value="{token}">' in first.content.decode()

    response = client.post(URL, {"query": token, "category": "clothing"})
    assert response.status_code == 302
    assert response["Location"] == f"{URL}?query={token}&category=clothing"
    assert set(_skus(client.get(response["Location"]))) == {"RUN-1", "RUN-3", "TEE-1"}


def test_nothing_similar_in_a_category_says_so_and_offers_all_categories(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0.9

    response = _post(client, uploaded_file(test_images / "chair-cafe-pair.jpg"), category="clothing")

    assert response.status_code == 200
    html = response.content.decode()
    assert "No similar products in Clothing" in html
    # The whole catalog again, by the kept query vector: no new upload.
    token = response.context["token"]
    assert re.search(rf'<a[^>]+href="{URL}\?query={token}"[^>]+data-refine>', html)
    assert "Search all categories" in html
    assert "% match" not in html


def test_nothing_similar_anywhere_says_so_plainly(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0.9

    response = _post(client, uploaded_file(test_images / "plant-cactus.jpg"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Nothing similar enough in our catalog" in html
    assert "product-card" not in html


def test_the_empty_state_shows_the_closest_products_on_request(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0.9
    empty = _post(client, uploaded_file(test_images / "plant-cactus.jpg"))
    assert "Nothing similar enough in our catalog" in empty.content.decode()
    # Nothing found, nothing narrowed: no price or order to set, the way out is what the shopper sees first.
    assert b"data-refine-form" not in empty.content

    # The kept query vector: no new upload.
    closest = client.get(page_links(empty, "data-refine")["Show the closest products anyway"])

    assert closest.status_code == 200
    html = closest.content.decode()
    assert "Closest products" in html and "similar enough or not" in html
    results = closest.context["search"].results
    assert len(results) == len(catalog)  # the nearest products though none passed the cut-off, each with its own match
    assert all(result.score < 0.5 for result in results)
    assert html.count("match-badge match-badge-weak") == len(catalog)  # shown greyed: below the cut-off
    # Refining keeps the mode; "Only similar enough" leads back to the empty state.
    assert closest.context["chips"] and all("closest=1" in chip["url"] for chip in closest.context["chips"])
    back = client.get(page_links(closest, "data-refine")["Only similar enough"])
    assert "Nothing similar enough in our catalog" in back.content.decode() and not _skus(back)


def test_the_photo_searched_again_for_closest_results_stays_in_that_mode(client, catalog, test_images, settings):
    """When the kept search has expired, the page sends the photo again with what the link asked: "closest" was
    not among it, and "Show more" on the closest products answered "No lookalikes found"."""
    settings.SEARCH_MIN_SCORE = 0.9
    again = _post(client, uploaded_file(test_images / "plant-cactus.jpg"), closest="1")
    assert again.status_code == 200 and "Closest products" in again.content.decode()
    assert len(again.context["search"].results) == len(catalog)
    assert again.context["chips"] and all("closest=1" in chip["url"] for chip in again.context["chips"])


def test_an_empty_category_offers_its_closest_products(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0.9
    empty = _post(client, uploaded_file(test_images / "chair-cafe-pair.jpg"), category="clothing")
    assert "No similar products in Clothing" in empty.content.decode()

    closest = client.get(page_links(empty, "data-refine")["Show the closest anyway"])

    assert closest.context["search"].category.slug == "clothing"
    assert set(_skus(closest)) == {"RUN-1", "RUN-3", "TEE-1"}  # shoes and tops, never the chairs


def test_show_more_asks_for_twice_as_many(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0

    first = _post(client, uploaded_file(test_images / "shoe-running-1.jpg"), limit="2")
    link = re.search(r'href="([^"]+)" data-refine="more"', first.content.decode())
    more = client.get(link.group(1).replace("&amp;", "&"))  # no photo: the kept query vector

    assert len(_skus(first)) == 2
    assert link.group(1) == f"{URL}?query={first.context['token']}&amp;limit=4"
    assert _skus(more)[:2] == _skus(first) and len(_skus(more)) == 4


def test_a_new_order_or_colour_after_show_more_shows_as_many(client, catalog, test_images, settings):
    """The refine form and the swatches dropped the limit "Show more" had reached: sorted, 48 results showed 12."""
    settings.SEARCH_MIN_SCORE = 0
    first = _post(client, uploaded_file(test_images / "shoe-running-1.jpg"), limit="2")
    more = client.get(page_links(first, "data-refine")["Show more"])
    assert len(_skus(more)) == 4

    form = re.search(r"<form[^>]*data-refine-form.*?</form>", more.content.decode(), re.S)[0]
    kept = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    sorted_page = client.get(URL, {**kept, "sort": "-price"})
    assert len(_skus(sorted_page)) == 4
    swatch = next(iter(more.context["swatches"]))["url"]
    assert "limit=4" in swatch

    chip = next(chip for chip in more.context["chips"] if not chip["current"])["url"]  # another set of matches
    assert "limit=" not in chip


@pytest.mark.parametrize("limit", ["12", "5"])  # 5: exactly as many as match, where "Show more" showed nothing new
def test_no_show_more_when_everything_is_listed(client, catalog, test_images, settings, limit):
    settings.SEARCH_MIN_SCORE = 0
    response = _post(client, uploaded_file(test_images / "shoe-running-1.jpg"), limit=limit)
    assert len(_skus(response)) == 5
    assert 'data-refine="more"' not in response.content.decode()


@pytest.mark.parametrize(("box", "expected"), [("0,0,500,500", "CHAIR"), ("500,0,1000,500", "TEE-1")])
def test_region_search_finds_what_is_inside_the_box(client, catalog, test_images, box, expected):
    response = _post(client, jpeg_upload(collage(test_images)), box=box)

    assert response.status_code == 200
    assert _skus(response)[0].startswith(expected)
    html = response.content.decode()
    assert "Searched the boxed area" in html
    assert f'data-box="{box}"' in html
    assert 'data-width="1000" data-height="500"' in html  # the size the box is measured in


def test_a_phone_photo_on_its_side_is_measured_upright(client, catalog, test_images):
    # Stored rotated with EXIF orientation 6, as phones write them: the page must report the upright size
    # (the preview is shown upright) so that boxes drawn on the preview mean the same pixels to the server.
    stored = collage(test_images).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=90, exif=exif)

    response = _post(client, SimpleUploadedFile("phone.jpg", buffer.getvalue()), box="500,0,1000,500")

    assert 'data-width="1000" data-height="500"' in response.content.decode()
    assert _skus(response)[0] == "TEE-1"
    preview = re.search(r'src="data:image/jpeg;base64,([^"]+)"', response.content.decode()).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(preview))).size == (800, 400)  # upright, downscaled


def test_a_box_partly_outside_is_clipped_to_the_photo(client, catalog, test_images):
    response = _post(client, jpeg_upload(collage(test_images)), box="500,-100,1400,900")
    assert _skus(response)[0] == "TEE-1"
    assert 'data-box="500,0,1000,500"' in response.content.decode()


def _text_file():
    return SimpleUploadedFile("holiday.jpg", b"This is a text file, whatever its name says.", content_type="image/jpeg")


@pytest.mark.parametrize(
    ("make_photo", "fields", "message"),
    [
        (_text_file, {}, "not a readable image"),
        (lambda: SimpleUploadedFile("empty.jpg", b"", content_type="image/jpeg"), {}, "The file is empty."),
        (None, {}, "Choose a photo to search with."),
        (lambda: uploaded_image("a.jpg", size=(64, 64)), {"category": "no-such-category"}, "does not exist"),
        (lambda: uploaded_image("a.jpg", size=(64, 64)), {"box": "1,2,3"}, "four numbers"),
        (lambda: uploaded_image("a.jpg", size=(64, 64)), {"box": "10,10,5,20"}, "x1 &gt; x0"),
        (lambda: uploaded_image("a.jpg", size=(64, 64)), {"box": "200,200,300,300"}, "outside the 64x64 photo"),
        (lambda: uploaded_image("a.jpg", size=(64, 64)), {"limit": "100000"}, "At most 96 results"),
    ],
    ids=["text-named-jpg", "empty", "missing", "unknown-category", "malformed-box", "inverted-box", "box-outside",
         "limit"],
)
def test_bad_input_is_a_form_error_not_a_server_error(client, catalog, make_photo, fields, message):
    data = {**fields}
    if make_photo is not None:
        data["photo"] = make_photo()

    response = client.post(URL, data)

    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert "search" not in response.context or response.context.get("search") is None
    assert 'name="photo"' in html  # the form is there to try again


def test_too_big_a_file_is_refused(client, catalog, test_images, settings):
    settings.UPLOAD_MAX_BYTES = 10_000
    response = _post(client, uploaded_file(test_images / "chair-cafe-pair.jpg"))
    assert response.status_code == 400
    assert "larger than" in response.content.decode()


def test_too_many_pixels_are_refused(client, catalog, settings):
    settings.UPLOAD_MAX_PIXELS = 100 * 100
    response = _post(client, uploaded_image("big.png", size=(200, 200)))
    assert response.status_code == 400
    assert "too many pixels" in response.content.decode() or "megapixels" in response.content.decode()


def test_a_photo_in_any_decodable_format_is_accepted_whatever_its_name(client, catalog, test_images):
    # A PNG named .jpg with no useful content type: decoding decides.
    buffer = io.BytesIO()
    Image.open(test_images / "shoe-running-3.jpg").save(buffer, format="PNG")
    photo = SimpleUploadedFile("photo.jpg", buffer.getvalue(), content_type="application/octet-stream")

    response = _post(client, photo)

    assert response.status_code == 200
    assert _skus(response)[0] == "RUN-3"


def test_an_unusable_model_gives_a_friendly_503(client, catalog, test_images):
    # The active space belongs to a model this installation does not have: the query cannot be embedded.
    EmbeddingSpace.objects.update_or_create(state=EmbeddingSpace.State.ACTIVE, defaults={"model": "retired-model-v0"})

    shoes = Category.objects.get(name="Shoes")
    response = client.post(URL, {"photo": uploaded_file(test_images / "chair-cafe-pair.jpg"), "category": shoes.slug})

    assert response.status_code == 503
    assert "Photo search is unavailable right now" in response.content.decode()
    assert response.context["form"]["category"].value() == shoes.slug  # kept for the next try


def test_other_methods_are_refused(client):
    assert client.put(URL).status_code == 405


def test_the_page_shares_the_apis_limit_on_anonymous_photo_searches(client, settings):
    """Each photo search runs the model: the page is no way around the API's per-client limit, nor the reverse.
    Refinements (no model run) have a looser limit of their own, shared the same way: counted as photo searches, a
    shopper clicking through chips met the photo searches' limit and lost the results."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "3/min",
                                                                                     "refine": "5/min"}}
    address = "198.51.100.9"
    cache.delete(f"throttle_search_{address}")
    try:
        assert client.post("/api/v1/search/", {}, REMOTE_ADDR=address).status_code == 400
        codes = [client.post(URL, {}, REMOTE_ADDR=address).status_code for _ in range(3)]
        assert codes == [400, 400, 429]  # an empty form still counts: the limit comes before the photo is read
        throttled = client.post(URL, {"photo": uploaded_image()}, REMOTE_ADDR=address)
        assert throttled.status_code == 429
        assert 0 < int(throttled["Retry-After"]) <= 60
        assert b"data-throttled" in throttled.content and b"Please wait" in throttled.content
        assert b'name="photo"' in throttled.content  # the form again, to try later
        assert client.post("/api/v1/search/", {}, REMOTE_ADDR=address).status_code == 429
        # Refinements have their own count: over the photo searches' limit, a shopper still refines the results
        # (an expired token answers 410: the search it asked for was counted), the page and the API alike.
        codes = [client.get(URL, {"query": "A" * 22}, REMOTE_ADDR=address).status_code for _ in range(3)]
        codes += [client.post("/api/v1/search/", "query=" + "A" * 22, content_type="application/x-www-form-urlencoded",
                              REMOTE_ADDR=address).status_code for _ in range(3)]
        assert codes == [410, 410, 410, 400, 400, 429]
        refined = client.get(URL, {"query": "A" * 22}, REMOTE_ADDR=address)
        assert refined.status_code == 429 and b"data-throttled" in refined.content
        assert client.post(URL, {}, REMOTE_ADDR="198.51.100.10").status_code == 400  # another shopper
    finally:
        cache.delete_many([f"throttle_search_{address}", f"throttle_refine_{address}",
                           "throttle_search_198.51.100.10"])


def test_two_photos_in_one_search_are_refused_with_a_message(client, catalog, test_images):
    response = client.post(URL, {"photo": [uploaded_file(test_images / "tshirt-turquoise-front.jpg"),
                                           uploaded_file(test_images / "chair-shell-black.jpg")]})
    assert response.status_code == 400
    assert "Choose one photo: a search looks for one thing." in response.content.decode()


def test_an_empty_query_token_is_the_page_to_start_a_search_not_an_expired_one(client):
    response = client.get(URL, {"query": ""})
    assert response.status_code == 200
    assert "expired" not in response.content.decode()
