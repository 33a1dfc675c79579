"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis + Hypothesis).

Every operation of /api/v1/schema/ gets a bounded, derandomized set of generated requests, valid ("positive") and
invalid ("negative") by the schema, sent in-process through the WSGI app against a catalog of real embedded photos.
Anonymous clients try every operation; staff (token header) try every write. No request may end in a server error,
and every response must have the documented content type and headers (and body).
Valid requests often name a product or category that exists, so reads, updates and uploads get past the 404.

schemathesis' own pytest integration (`schema.parametrize()`) does not run under pytest 9.2 (it sets a private
`Item._nodeid` that pytest no longer has), so the operations are looped over here with plain Hypothesis `@given`.
"""

import functools
import io
import re

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import FailureGroup

pytestmark = [pytest.mark.system, pytest.mark.django_db, pytest.mark.either_servers]

load_all_checks()  # fills schemathesis.checks with the built-in checks

SCHEMA_URL = "/api/v1/schema/"
CLIENT_ADDRESS = "127.0.0.1"  # REMOTE_ADDR of schemathesis' WSGI client: the throttle's key
READS, WRITES = {"GET"}, {"POST", "PUT", "PATCH", "DELETE"}
FUZZ = settings(
    max_examples=25,  # per operation and generation mode
    derandomize=True,  # the same requests every run: a failure here is a bug, not bad luck
    database=None,
    deadline=None,
    # No shrinking: it has no time bound, and every failure below comes with a curl line to replay it.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),  # inside a test with function-scoped fixtures, on purpose
)
# Names whose values refer to rows: a random string is valid by the schema but nearly always unknown (404 or 400).
CATEGORY_NAMES, PRODUCT_NAMES = {"slug", "category", "parent"}, {"sku"}
PLAIN = re.compile(r"[A-Za-z0-9_-]+").fullmatch


@pytest.fixture
def api_schema(catalog, settings):
    from catalog.services import category_get_or_create_path, product_create
    from config.wsgi import application

    # A product without photos in a subcategory: list and detail answers with no image, and a deeper tree.
    product_create(sku="NO-PHOTO", title="Product without photos", price="1.00",
                   category=category_get_or_create_path(path="Home > Chairs > Stools"))
    # Anonymous photo searches are throttled per client; the fuzzer sends many, and 429s would hide the rest.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "100000/min"}}
    cache.delete(f"throttle_search_{CLIENT_ADDRESS}")
    # Each WSGI request would close the database connection as it starts and ends, and with it the test's
    # transaction; Django's own test client disconnects these handlers for the same reason.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi(SCHEMA_URL, application)
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)
        cache.delete(f"throttle_search_{CLIENT_ADDRESS}")


@pytest.fixture
def staff_token(django_user_model):
    from rest_framework.authtoken.models import Token

    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("fuzz-staff", password="unused-password", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="catalog"))  # every write allowed
    return Token.objects.create(user=staff).key


def _existing() -> dict[str, list[str]]:
    from catalog.models import Category, Product

    # Plain values only: fuzzed writes create SKUs like "a?b", which schemathesis would put in a URL unquoted.
    categories = [slug for slug in Category.objects.order_by("slug").values_list("slug", flat=True) if PLAIN(slug)]
    products = [sku for sku in Product.objects.order_by("sku").values_list("sku", flat=True) if PLAIN(sku)]
    return {**dict.fromkeys(CATEGORY_NAMES, categories), **dict.fromkeys(PRODUCT_NAMES, products)}


def _point_at_existing_rows(case, existing: dict[str, list[str]], choice: int) -> None:
    body = case.body if isinstance(case.body, dict) else {}
    # A SKU in a body creates a product: an existing one would only ever get "already exists".
    for values, names in ((case.path_parameters, existing.keys()), (case.query, existing.keys()), (body, CATEGORY_NAMES)):
        for name in set(values or ()) & set(names):
            if choice < len(existing[name]):
                values[name] = existing[name][choice]
    # Generated "binary" images are 1x1 pixels (always refused as too small): send a real photo half the time,
    # so that searches find products and uploads store images. Only in a multipart body: JSON cannot carry bytes.
    if "image" in body and choice % 2 == 0 and "multipart" in (case.media_type or ""):
        body["image"] = _photo()


@functools.cache
def _photo() -> bytes:
    from PIL import Image

    from tests.conftest import TEST_IMAGES

    buffer = io.BytesIO()
    with Image.open(TEST_IMAGES / "shoe-running-2.jpg") as image:
        image.convert("RGB").resize((160, 120)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def fuzz(
    schema, *, modes, methods: set[str], checks: list, headers: dict | None = None, skip: frozenset = frozenset()
) -> tuple[int, list[str]]:
    """Runs each operation with one of ``methods``; returns how many requests were sent and every failure."""
    sent, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() not in methods or operation.label in skip:
            continue
        for mode in modes:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode), choice=st.integers(min_value=0, max_value=9))
            def run(case, choice):
                nonlocal sent
                # Only valid requests get real SKUs and slugs: in an invalid one that could replace the very part
                # that made it invalid.
                if mode == GenerationMode.POSITIVE:  # (staff writes may have just renamed a product)
                    _point_at_existing_rows(case, _existing(), choice)
                sent += 1
                case.call_and_validate(headers=headers, checks=checks)

            try:
                run()
            except Unsatisfiable:
                pass  # no invalid request exists (e.g. a lone string path parameter): nothing to send
            except (Exception, FailureGroup) as error:  # collect them all: one report of every failing operation
                failures.append(f"{operation.label} [{mode.value}]\n{error}")
    return sent, failures


BOTH = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
SEARCH = frozenset({"POST /api/v1/search/"})
SAFETY_CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
]


def test_anonymous_requests_never_get_a_server_error(api_schema):
    sent, failures = fuzz(api_schema, modes=BOTH, methods=READS | WRITES, checks=SAFETY_CHECKS)
    assert not failures, "\n\n".join(failures)
    assert sent >= 8 * 25  # every operation of the API was really tried


def test_staff_writes_never_get_a_server_error(api_schema, staff_token):
    token = {"Authorization": f"Token {staff_token}"}
    # Searching is the same for staff (only not throttled); the anonymous test covers it.
    sent, failures = fuzz(api_schema, modes=BOTH, methods=WRITES, checks=SAFETY_CHECKS, headers=token, skip=SEARCH)
    assert not failures, "\n\n".join(failures)
    assert sent >= 4 * 25


def test_response_bodies_match_the_schema(api_schema, staff_token):
    token = {"Authorization": f"Token {staff_token}"}
    checks = [schemathesis.checks.response_schema_conformance]
    sent, failures = fuzz(api_schema, modes=[GenerationMode.POSITIVE], methods=READS | WRITES, checks=checks,
                          headers=token)
    assert not failures, "\n\n".join(failures)
    assert sent >= 8 * 25  # every operation's answers were really checked


def test_a_sku_with_a_slash_is_refused(client, admin_client):
    from catalog.models import Product
    from catalog.services import category_get_or_create_path

    chairs = category_get_or_create_path(path="Home > Chairs")
    response = admin_client.post(
        "/api/v1/products/", {"sku": "A/B", "title": "Slash", "price": "1.00", "category": chairs.slug},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert list(response.json()) == ["sku"] and "/" in response.json()["sku"][0]  # refused for the slash
    assert not Product.objects.filter(sku="A/B").exists()
    assert client.get("/").status_code == 200


def test_a_nul_character_gets_a_client_error_not_a_server_error(admin_user):
    from django.test import Client

    from catalog.services import category_get_or_create_path, product_create

    chairs = category_get_or_create_path(path="Home > Chairs")
    product_create(sku="CHAIR-1", title="Chair", category=chairs, price="10.00")
    anonymous, staff = Client(raise_request_exception=False), Client(raise_request_exception=False)
    staff.force_login(admin_user)
    answers = {
        url: anonymous.get(url).status_code
        for url in ["/api/v1/products/A%00B/", "/api/v1/categories/a%00b/", "/p/A%00B/", "/search/?q=a%00b"]
    }
    answers["PATCH category"] = staff.patch(
        "/api/v1/products/CHAIR-1/", {"category": "a\x00b"}, content_type="application/json"
    ).status_code
    answers["admin autocomplete"] = staff.get(
        "/admin/autocomplete/", {"app_label": "catalog", "model_name": "product", "field_name": "category", "term": "a\x00b"}
    ).status_code
    assert {what: status for what, status in answers.items() if status >= 500} == {}
