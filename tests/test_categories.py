"""The category tree (catalog/categories.py): it stays a tree on every write path, and its walks end regardless.

A cycle (A under B, B under A) is refused by ``full_clean()`` in words and by the database's trigger for writes
that skip the model (bulk updates, raw SQL, a race of two transactions). The pages are checked against a cycle
forced in with the trigger disabled, under a statement timeout, so a walk that loops fails the test, never hangs it.
"""

from __future__ import annotations

import html
import re
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Value, When
from django.test import Client
from django.urls import reverse

from catalog.categories import category_ancestors, category_descendant_ids, category_paths, category_tree
from catalog.models import Category
from catalog.services import category_get_or_create_path
from tests.factories import CategoryFactory, ProductFactory
from tests.support import held_in_another_transaction

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.fixture
def chain():
    """Home > Furniture > Sofas."""
    home = CategoryFactory(name="Home", slug="home")
    furniture = CategoryFactory(name="Furniture", slug="furniture", parent=home)
    sofas = CategoryFactory(name="Sofas", slug="sofas", parent=furniture)
    return home, furniture, sofas


def _statement_timeout(seconds: int) -> None:
    # A walk that loops is cancelled (an error) instead of holding the test forever.
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL statement_timeout = '{seconds}s'")


def _force_cycle(a: Category, b: Category) -> None:
    """A under B and B under A, written with the tree's triggers off: what a hand edit could do before them."""
    with connection.cursor() as cursor:
        # Foreign keys are checked at commit: run the pending checks now, or the table cannot be altered.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE catalog_category DISABLE TRIGGER USER")
        cursor.execute("UPDATE catalog_category SET parent_id = %s WHERE id = %s", [b.pk, a.pk])
        cursor.execute("UPDATE catalog_category SET parent_id = %s WHERE id = %s", [a.pk, b.pk])
        cursor.execute("ALTER TABLE catalog_category ENABLE TRIGGER USER")


# --- refused on every write path ---


def test_full_clean_refuses_a_category_under_its_own_subcategory(chain):
    home, _, sofas = chain
    home.parent = sofas
    with pytest.raises(ValidationError) as refused:
        home.full_clean()
    assert refused.value.message_dict["parent"] == [
        "A category cannot be placed under itself or one of its own subcategories."
    ]


def test_full_clean_refuses_a_category_under_itself(chain):
    home, _, _ = chain
    home.parent = home
    with pytest.raises(ValidationError) as refused:
        home.full_clean()
    assert "A category cannot be placed under itself or one of its own subcategories." in refused.value.messages


@pytest.mark.parametrize(("name", "message"), [
    ("Tables > Outdoor", "A category name cannot contain '>', which separates the levels of a category path."),
    ("sofas", "There is already a category 'Sofas' here."),
])
def test_the_admin_refuses_a_name_an_import_would_read_otherwise(chain, admin_client, name, message):
    """'Tables > Outdoor' showed as a path of two levels, and an import of it built another branch; 'sofas' beside
    'Sofas' is that category to an import."""
    _, furniture, _ = chain
    response = admin_client.post(reverse("admin:catalog_category_add"),
                                 {"name": name, "slug": "new-one", "parent": furniture.pk})
    assert response.status_code == 200 and message in html.unescape(response.content.decode())
    assert not Category.objects.filter(slug="new-one").exists()


def test_the_admin_refuses_a_name_that_normalising_makes_too_long(chain, admin_client):
    """U+FB2C (a Hebrew presentation form) is three characters in NFC: 120 of them passed the form's 120-character
    check, became 360 once normalised, and the save's own check raised where the admin catches nothing: a 500."""
    _, furniture, _ = chain
    response = admin_client.post(reverse("admin:catalog_category_add"),
                                 {"name": "\ufb2c" * 120, "slug": "long-one", "parent": furniture.pk})
    assert response.status_code == 200
    message = "This name is 360 characters long as stored (Unicode NFC); the limit is 120."
    assert message in html.unescape(response.content.decode())
    assert not Category.objects.filter(slug="long-one").exists()


def test_a_name_written_in_the_admin_is_stored_as_an_import_spells_it(chain, admin_client):
    """'Outdoor  Sofas' (two spaces) or a decomposed 'Café' from the admin was another category to an import of the
    same path, which made a second sibling."""
    _, furniture, _ = chain
    response = admin_client.post(reverse("admin:catalog_category_add"),
                                 {"name": " Cafe\u0301  Sofas ", "slug": "cafe-sofas", "parent": furniture.pk})
    assert response.status_code == 302, response.content[:2000]
    added = Category.objects.get(slug="cafe-sofas")
    assert added.name == "Caf\u00e9 Sofas"
    assert category_get_or_create_path(path="Home > Furniture > Caf\u00e9 Sofas") == added


def test_no_path_makes_the_tree_deeper_than_an_import_may_name(chain, admin_client):
    """The ten levels were the import's rule only: in the admin a category could be added under the tenth level, or
    a branch moved under a deep one, and the products there could no longer be imported by their path."""
    _, furniture, sofas = chain  # Home > Furniture > Sofas
    levels = [f"Level {n}" for n in range(1, 11)]
    tenth = category_get_or_create_path(path=" > ".join(levels))
    ninth = tenth.parent
    message = "Placed here, categories would be more than 10 levels deep, the most a category path may have."

    added = admin_client.post(reverse("admin:catalog_category_add"),
                              {"name": "Eleventh", "slug": "eleventh", "parent": tenth.pk})
    assert added.status_code == 200 and message in html.unescape(added.content.decode())
    assert not Category.objects.filter(slug="eleventh").exists()
    furniture.parent = ninth  # with Sofas below it: eleven levels
    with pytest.raises(ValidationError) as refused:
        furniture.full_clean()
    assert refused.value.message_dict["parent"] == [message]
    # Up to ten levels, and a category deep already but left where it is, are fine.
    sofas.parent = ninth
    sofas.full_clean()
    tenth.name = "The tenth"
    tenth.full_clean()


def test_full_clean_accepts_a_move_within_the_tree(chain):
    home, furniture, sofas = chain
    sofas.parent = home
    sofas.full_clean()
    sofas.save()
    assert category_ancestors(category=sofas) == [home]
    assert sorted(category_descendant_ids(category=home)) == sorted([home.pk, furniture.pk, sofas.pk])


def test_database_refuses_a_cycle_made_by_raw_sql(chain):
    home, _, sofas = chain
    with pytest.raises(IntegrityError, match="cannot be placed under"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE catalog_category SET parent_id = %s WHERE id = %s", [sofas.pk, home.pk])
    home.refresh_from_db()
    assert home.parent_id is None


def test_database_refuses_a_cycle_made_by_one_bulk_update():
    # Both rows change in one statement: each is checked with the other already moved.
    a, b = CategoryFactory(), CategoryFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Category.objects.filter(pk__in=[a.pk, b.pk]).update(
            parent=Case(When(pk=a.pk, then=Value(b.pk)), When(pk=b.pk, then=Value(a.pk)))
        )


def test_database_refuses_a_category_as_its_own_parent_on_insert():
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO catalog_category (id, name, slug, parent_id) VALUES (%s, 'Loop', 'loop', %s)",
                [987_654, 987_654],
            )


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_moves_cannot_make_a_cycle_between_them():
    """A under B in one transaction, B under A in another: each alone is fine, together they are a cycle."""
    a, b = CategoryFactory(), CategoryFactory()
    errors = []
    # The first move is held uncommitted until the second one waits on the tree's lock (a bounded wait: without the
    # lock nothing ever waits, and the second move commits first).
    with held_in_another_transaction(lambda: Category.objects.filter(pk=a.pk).update(parent=b), locktype="advisory"):
        try:
            with transaction.atomic():
                Category.objects.filter(pk=b.pk).update(parent=a)
        except IntegrityError as error:
            errors.append(error)
    assert len(errors) == 1, "the second move made a cycle"
    b.refresh_from_db()
    assert b.parent_id is None




# --- the walks end even on a cycle forced past the trigger ---


def test_walks_end_on_a_forced_cycle(chain):
    home, furniture, sofas = chain
    _force_cycle(furniture, sofas)
    _statement_timeout(5)
    assert category_ancestors(category=sofas) == [furniture]
    assert sorted(category_descendant_ids(category=furniture)) == sorted([furniture.pk, sofas.pk])
    assert category_paths()[sofas.pk] == "Furniture > Sofas"
    assert [category for category, _ in category_tree()] == [home]  # a loop hangs from no root


@pytest.mark.parametrize("page", ["category", "product", "api-products", "api-category", "photo-search"])
def test_pages_answer_on_a_forced_cycle(chain, settings, page):
    settings.PAGE_CACHE_SECONDS = 0
    home, furniture, sofas = chain
    product = ProductFactory(category=sofas, sku="SOFA-1")
    _force_cycle(furniture, sofas)
    _statement_timeout(5)
    url, shows = {  # what each page holds, drawn past the loop
        "category": (f"/c/{sofas.slug}/", product.title),
        "product": (f"/p/{product.sku}/", product.title),
        "api-products": (f"/api/v1/products/?category={furniture.slug}", product.sku),
        "api-category": (f"/api/v1/categories/{sofas.slug}/", sofas.name),
        "photo-search": ("/search/photo/", f">{home.name}</option>"),  # "Look in", the loop left out
    }[page]
    response = Client().get(url)
    assert response.status_code == 200 and shows in response.content.decode()


# --- one lookup by slug, one message ---


@pytest.mark.parametrize(
    "method, url, data, status, field",
    [
        ("get", "/api/v1/products/?category=nope", None, 400, "category"),
        ("get", "/api/v1/categories/?parent=nope", None, 400, "parent"),
        ("get", "/api/v1/categories/nope/", None, 404, "detail"),
        ("post", "/api/v1/products/", {"sku": "X-1", "title": "X", "price": "1.00", "category": "nope"}, 400,
         "category"),
        ("get", "/api/v1/products/SOFA-1/similar/?category=nope", None, 400, "category"),
    ],
)
def test_an_unknown_category_slug_gets_one_message_everywhere(chain, admin_client, method, url, data, status, field):
    ProductFactory(category=chain[2], sku="SOFA-1")
    response = getattr(admin_client, method)(url, data, content_type="application/json")
    assert response.status_code == status
    message = response.json()[field]
    assert (message if isinstance(message, str) else message[0]) == "Unknown category 'nope'."


def test_a_slug_longer_than_any_is_unknown_and_shown_cut(chain, client, django_assert_num_queries):
    """A megabyte of slug was looked up in the database and echoed whole in the error."""
    from catalog.categories import SLUG_MAX_LENGTH, UnknownCategory, category_by_slug

    with django_assert_num_queries(0), pytest.raises(UnknownCategory) as raised:
        category_by_slug(slug="a" * 1_000_000)
    assert str(raised.value) == "Unknown category '" + "a" * SLUG_MAX_LENGTH + "…'."
    response = client.get("/api/v1/products/", {"category": "b" * 100_000})
    assert response.status_code == 400 and len(response.content) < 500


def test_the_admin_deletes_an_unused_category_and_keeps_one_in_use(chain, admin_client):
    home, furniture, sofas = chain
    ProductFactory(category=furniture)
    response = admin_client.post(reverse("admin:catalog_category_delete", args=[sofas.pk]), {"post": "yes"})
    assert response.status_code == 302
    response = admin_client.post(reverse("admin:catalog_category_delete", args=[furniture.pk]), {"post": "yes"})
    assert response.status_code == 200 and "would require deleting the following protected" in response.text
    assert sorted(Category.objects.values_list("name", flat=True)) == ["Furniture", "Home"]


def test_a_category_kept_by_its_products_names_them_not_their_photos_vectors(chain, admin_client, test_images):
    """The refusal listed every photo's vector row ("Image embedding: ... vector of image 101") before the product."""
    from catalog.services import product_image_add
    from search.services import images_embed
    from tests.factories import uploaded_file

    home, furniture, sofas = chain
    product = ProductFactory(category=sofas)
    images_embed(image_ids=[product_image_add(product=product, file=uploaded_file(test_images / name)).pk
                            for name in ("chair-shell-black.jpg", "plant-cactus.jpg")])
    for kept, keeping in ((sofas, f"Product: {product}"), (furniture, f"Category: {sofas}")):  # its own, or a sub
        response = admin_client.get(reverse("admin:catalog_category_delete", args=[kept.pk]))
        page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.unescape(response.content.decode())))
        assert "would require deleting the following protected" in page, kept
        assert keeping in page and "mbedding" not in page


# --- a category deleted while something is put in it ---


@pytest.mark.django_db(transaction=True)
def test_deleting_a_category_while_a_product_is_put_in_it_waits_and_refuses():
    """The delete found the category unused, deleted it, and the product's write failed at its commit (a 500)."""
    from catalog.services import categories_delete, product_update

    chairs, sofas = CategoryFactory(name="Chairs"), CategoryFactory(name="Sofas")
    product = ProductFactory(category=chairs)
    with held_in_another_transaction(lambda: product_update(product=product, category=sofas)) as held:
        with pytest.raises(ValidationError, match="Sofas: still has products or subcategories"):
            categories_delete(categories=[sofas])
    assert held.waited
    product.refresh_from_db()
    assert product.category == sofas


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("write", ["product moved", "product created", "subcategory", "import"])
def test_putting_something_in_a_category_being_deleted_is_refused_in_words(write):
    from catalog.services import (CategoryDeleted, ProductWithPhotos, categories_delete, category_save, product_create,
                                  product_update, products_with_photos_upsert)

    chairs, sofas = CategoryFactory(name="Chairs"), CategoryFactory(name="Sofas")
    product = ProductFactory(category=chairs)
    writes = {
        "product moved": lambda: product_update(product=product, category=sofas),
        "product created": lambda: product_create(sku="NEW-1", title="New", category=sofas, price="5"),
        "subcategory": lambda: category_save(category=Category(name="Corner sofas", slug="corner", parent=sofas)),
        "import": lambda: products_with_photos_upsert(stored=[], items=[ProductWithPhotos(
            sku="NEW-1", fields={"title": "New", "description": "", "price": Decimal(5), "category": sofas})]),
    }
    with held_in_another_transaction(lambda: categories_delete(categories=[sofas])):
        with pytest.raises(CategoryDeleted) as refused:
            writes[write]()
    field = "parent" if write == "subcategory" else "category"
    assert refused.value.message_dict == {field: ["This category was deleted meanwhile. Choose another one."]}
    assert not Category.objects.filter(pk=sofas.pk).exists()
    product.refresh_from_db()
    assert product.category == chairs


@pytest.mark.django_db(transaction=True)
def test_the_admin_says_a_category_given_a_product_while_it_was_deleted_is_still_used(admin_client):
    from catalog.services import product_update

    chairs, sofas = CategoryFactory(name="Chairs"), CategoryFactory(name="Sofas")
    product = ProductFactory(category=chairs)
    url = reverse("admin:catalog_category_delete", args=[sofas.pk])
    with held_in_another_transaction(lambda: product_update(product=product, category=sofas)):
        response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert "Nothing was deleted: Sofas: still has products or subcategories" in html.unescape(
        response.content.decode())
    assert Category.objects.filter(pk=sofas.pk).exists()


def test_an_import_that_kept_a_category_deleted_since_creates_it_again():
    """The import keeps each path's category for its later rows; one deleted meanwhile failed every such row."""
    from catalog.importer import CatalogRow, _run_again_after_a_deadlock, catalog_row_import
    from catalog.services import categories_delete

    sofas = category_get_or_create_path(path="Home > Sofas")
    kept = {"Home > Sofas": sofas}
    categories_delete(categories=[sofas])  # by an admin, between two of the import's rows
    row = CatalogRow(sku="SOFA-1", title="Sofa", category_path="Home > Sofas", price=Decimal(5), currency=None,
                     description="", images=())
    # How the import writes a row (alone, or again after its batch failed).
    assert _run_again_after_a_deadlock(lambda: catalog_row_import(item=row, categories=kept)) == ("created", 0)
    assert kept["Home > Sofas"].products.get().sku == "SOFA-1"


@pytest.mark.django_db(transaction=True)
def test_a_refused_delete_selected_leaves_no_deletion_in_the_admins_history(admin_client):
    """Django's action logs the deletions before it deletes: refused, the log said the categories were deleted."""
    from django.contrib.admin.models import DELETION, LogEntry

    from catalog.services import product_update

    chairs, sofas = CategoryFactory(name="Chairs"), CategoryFactory(name="Sofas")
    product = ProductFactory(category=chairs)
    with held_in_another_transaction(lambda: product_update(product=product, category=sofas)):
        response = admin_client.post(reverse("admin:catalog_category_changelist"), {
            "action": "delete_selected", "_selected_action": [sofas.pk], "post": "yes"}, follow=True)
    assert "Nothing was changed: Sofas: still has products or subcategories" in html.unescape(
        response.content.decode())
    assert Category.objects.filter(pk=sofas.pk).exists()
    assert not LogEntry.objects.filter(object_id=str(sofas.pk), action_flag=DELETION).exists()


def test_a_category_and_its_subcategory_selected_together_are_deleted_together(admin_client, chain):
    """The subcategory, selected too, was named as what kept its parent: refused, both kept."""
    home, furniture, sofas = chain  # Home > Furniture > Sofas, empty
    selected = {"action": "delete_selected", "_selected_action": [furniture.pk, sofas.pk]}
    confirm = admin_client.post(reverse("admin:catalog_category_changelist"), selected)
    assert "Are you sure you want to delete the selected categories?" in confirm.content.decode()
    response = admin_client.post(reverse("admin:catalog_category_changelist"), {**selected, "post": "yes"},
                                 follow=True)
    assert "Successfully deleted 2 categories" in response.content.decode()
    assert list(Category.objects.all()) == [home]

    ProductFactory(category=CategoryFactory(name="Lamps", parent=home))  # a product keeps its category, and up
    refused = admin_client.post(reverse("admin:catalog_category_changelist"), {
        "action": "delete_selected", "_selected_action": [home.pk]}).content.decode()
    assert "Cannot delete" in refused and "Lamps" in refused
