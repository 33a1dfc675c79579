"""Every error under /api/ is JSON with the right status, in development (DEBUG) and production settings alike.

Django answers some API requests itself, before or around DRF: a path no URL matches, a request it refuses while
parsing it (too many fields, parameters or files; a body over its memory limit), a crash. Those were HTML pages
(or, in development, a debug page, or no answer at all: DRF's DEBUG handling raised while reporting the first error).
The test client normally re-raises a view's exception; here it answers as a server would.
"""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from tests.factories import ProductFactory

pytestmark = [pytest.mark.django_db, pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])]

TOO_MANY = "The request has more than 1000 fields or query parameters."


@pytest.fixture
def client(settings, debug):
    settings.DEBUG = debug
    return Client(raise_request_exception=False)


def _json(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert int(response["Content-Length"]) == len(response.content)
    return response.json()


def test_an_unknown_api_path_is_a_json_404(client):
    assert _json(client.get("/api/v1/nope/"), 404) == {"detail": "Not found."}
    assert _json(client.post("/api/v1/nope/", {"a": "1"}), 404) == {"detail": "Not found."}


def test_an_api_path_without_its_slash_is_a_json_404_that_names_the_path(client):
    # Not a redirect: following one would drop the uploaded photo (and DEBUG refused to redirect a POST at all).
    expected = {"detail": "Not found. API paths end with a slash: /api/v1/search/"}
    assert _json(client.post("/api/v1/search", {"image": SimpleUploadedFile("photo.jpg", b"any bytes")}), 404) == expected
    assert _json(client.get("/api/v1/categories"), 404)["detail"].endswith("/api/v1/categories/")


def test_the_shop_still_adds_a_missing_slash(client, debug):
    response = client.get("/search/photo")
    assert response.status_code == 301 and response["Location"] == "/search/photo/"


def test_the_shop_keeps_its_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_too_many_query_parameters_is_a_json_400(client):
    query = "&".join(f"p{n}=1" for n in range(1001))
    assert _json(client.get(f"/api/v1/products/?{query}"), 400) == {"detail": TOO_MANY}
    assert _json(client.get(f"/api/v1/categories/?{query}"), 400) == {"detail": TOO_MANY}


def test_too_many_form_fields_is_a_json_400(client):
    fields = {f"f{n}": "1" for n in range(1001)}
    assert _json(client.post("/api/v1/search/", fields), 400) == {"detail": TOO_MANY}  # multipart
    body = "&".join(f"f{n}=1" for n in range(1001))
    urlencoded = client.post("/api/v1/search/", body, content_type="application/x-www-form-urlencoded")
    assert _json(urlencoded, 400) == {"detail": TOO_MANY}


def test_too_many_files_is_a_json_400(client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = {f"image{n}": SimpleUploadedFile(f"{n}.jpg", b"not a photo") for n in range(3)}
    assert _json(client.post("/api/v1/search/", files), 400) == {"detail": "The request has more than 2 files."}


def test_a_form_body_over_the_memory_limit_is_a_json_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = "threshold=" + "9" * 2000
    response = client.post("/api/v1/search/", body, content_type="application/x-www-form-urlencoded")
    assert _json(response, 413) == {"detail": "The request body is larger than 1000 bytes."}


def test_a_write_sent_in_chunks_without_a_length_is_a_json_411(client, product):
    """Django reads no body without a Content-Length: such a PATCH answered 200 and changed nothing."""
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""}
    for method in (client.patch, client.put, client.post):
        answer = _json(method(f"/api/v1/products/{product.sku}/", '{"price": "5.00"}',
                              content_type="application/json", **chunked), 411)
        assert answer["detail"].startswith("Send the request body with a Content-Length header")
    assert client.get(f"/api/v1/products/{product.sku}/").status_code == 200  # reads are not bodies


def test_a_crash_is_a_json_500(client):
    ProductFactory()
    with connection.cursor() as cursor:  # a broken schema, undone with the test's transaction
        cursor.execute("ALTER TABLE catalog_product RENAME TO catalog_product_gone")
    assert _json(client.get("/api/v1/products/"), 500) == {"detail": "A server error occurred."}


def test_drf_errors_stay_as_drf_words_them(client):
    assert _json(client.delete("/api/v1/search/"), 405) == {"detail": 'Method "DELETE" not allowed.'}
    assert _json(client.get("/api/v1/products/NOPE/"), 404) == {"detail": "No such product."}


def test_a_browser_gets_json_from_the_api_errors_included(client, product):
    browser = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    assert _json(client.get("/api/v1/products/NO-SUCH-SKU/", **browser), 404) == {"detail": "No such product."}
    assert _json(client.get("/api/v1/categories/?page=99", **browser), 404)["detail"] == "Invalid page."
    assert _json(client.post("/api/v1/products/", {}, **browser), 401)["detail"].startswith("Authentication")
    listed = client.get("/api/v1/products/", **browser)
    assert listed.status_code == 200 and listed["Content-Type"] == "application/json"
    assert listed.json()["results"][0]["sku"] == product.sku


def test_an_unknown_format_is_a_406_that_names_it(client, product):
    """DRF answered 404 "Not found." for a product that exists."""
    assert _json(client.get(f"/api/v1/products/{product.sku}/?format=xml"), 406)["detail"] == (
        "There is no format 'xml' here: ask for json, or leave format out.")
    assert _json(client.get("/api/v1/products/?format=" + "x" * 5000), 406)["detail"].startswith(
        "There is no format '" + "x" * 20 + "…' here")
    assert client.get(f"/api/v1/products/{product.sku}/?format=json").json()["sku"] == product.sku


def test_the_schema_and_docs_errors_are_json_with_drfs_words(client):
    """The schema and docs views render in YAML and HTML: their errors came back as YAML, HTML or the shop's 404."""
    assert _json(client.post("/api/v1/schema/"), 405) == {"detail": 'Method "POST" not allowed.'}
    assert _json(client.post("/api/v1/docs/"), 405) == {"detail": 'Method "POST" not allowed.'}
    assert _json(client.get("/api/v1/schema/?format=xml"), 406)["detail"] == (
        "There is no format 'xml' here: ask for json, yaml, or leave format out.")
    assert _json(client.get("/api/v1/schema/", HTTP_ACCEPT="application/xml"), 406)["detail"].startswith(
        "Could not satisfy the request Accept header")


def test_the_schema_ignores_the_version_and_language_a_query_names(client):
    """A version holding a line break went into the download's file name, an invalid header: a 500. Each language
    named stayed in memory for good."""
    from django.utils.translation import trans_real

    response = client.get("/api/v1/schema/?version=%0A&lang=xx-unheard-of")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'inline; filename="Lookalike API.yaml"'
    assert "xx-unheard-of" not in trans_real._translations


@pytest.mark.parametrize("root", ["/api/", "/api/v1/"])
def test_the_api_root_says_where_its_parts_and_docs_are(client, root):
    """It answered a bare 404: nothing led a developer from the address they guessed to the docs."""
    links = _json(client.get(root), 200)
    assert links["docs"] == "http://testserver/api/v1/docs/" and links["search"] == "http://testserver/api/v1/search/"
    assert all(client.get(url).status_code == 200 for name, url in links.items() if name != "search")


def test_the_api_docs_load_nothing_from_another_host(client):
    """Redoc's page asked a font host for its fonts: docs.md promises docs that work without internet access."""
    for page in ("/api/v1/docs/", "/api/v1/redoc/"):
        html = client.get(page).content.decode()
        assert not re.findall(r'(?:href|src)="(?:https?:)?//', html), page
