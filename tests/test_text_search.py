"""Typo-tolerant text search (catalog.typos, catalog.selectors.product_search) on the server the suite runs against:
the embedded one has no pg_trgm (the "variants" strategy), plain PostgreSQL's contrib has it ("trigram")."""

import io
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from catalog import services
from catalog.models import Product
from catalog.selectors import product_search
from catalog.typos import corrections, edit_distance, text_search_strategy
from config import embedded
from tests.services_support import ROOT
from tests.test_demo import _real_products
from tests.factories import CategoryFactory, ProductFactory

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


def server_has_pg_trgm() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_trgm')")
        return cursor.fetchone()[0]


@pytest.fixture
def shop():
    return {
        "hoodies": [
            ProductFactory(title="Grey zip hoodie", description="Brushed cotton, kangaroo pocket."),
            ProductFactory(title="Navy pullover", description="A warm hoodie for cold days."),
        ],
        "sneakers": [ProductFactory(title="White leather sneakers", description="Low-top, rubber sole.")],
        "chairs": [
            ProductFactory(title="Oak dining chair", description="Solid oak."),
            ProductFactory(title="Folding chairs, set of two", description="Steel frame."),
        ],
        "other": [
            ProductFactory(title="Walnut coffee table", description="Solid wood, oiled finish."),
            ProductFactory(title="Sweatshirt, plain", description="Heavy fleece."),
        ],
    }


@pytest.fixture(params=["variants", "trigram"])
def each_strategy(request):
    """The search as it runs with each strategy this server has: CI runs these tests on a server with pg_trgm only,
    and the embedded one developers run has none."""
    if request.param == "trigram" and not server_has_pg_trgm():
        pytest.skip("this server has no pg_trgm")
    before = getattr(connection, "lookalike_text_search_strategy", None)
    connection.lookalike_text_search_strategy = request.param  # where catalog.typos keeps what it found
    yield request.param
    connection.lookalike_text_search_strategy = before


def found(query: str) -> set[str]:
    return {product.title for product in product_search(query=query)}


def titles(products) -> set[str]:
    return {product.title for product in products}


def test_the_strategy_follows_the_servers_extensions():
    assert text_search_strategy() == ("trigram" if server_has_pg_trgm() else "variants")


@pytest.mark.parametrize("typed, meant", [("hodie", "hoodies"), ("sneakres", "sneakers"), ("chiar", "chairs")])
def test_a_typo_finds_what_was_meant(shop, typed, meant, each_strategy):
    assert found(typed) == titles(shop[meant])
    assert found(typed.upper()) == titles(shop[meant])


@pytest.mark.parametrize("strategy", ["variants", "trigram"])
def test_each_strategy_corrects_one_typo_per_word(shop, strategy):
    if strategy == "trigram" and not server_has_pg_trgm():
        pytest.skip("this server has no pg_trgm")
    assert corrections(words=["hodie", "sneakres", "chiar", "oiledd"], strategy=strategy) == {
        "hodie": ["hoodie"],
        "sneakres": ["sneakers"],
        "chiar": ["chair"],
        "oiledd": ["oiled"],
    }


def test_two_typos_in_a_long_word(shop):
    # A deletion on each side shares a variant: the variants find it too.
    assert corrections(words=["sweatshrtt"], strategy="variants") == {"sweatshrtt": ["sweatshirt"]}
    # Two extra letters share no variant, only trigrams.
    assert corrections(words=["sweattshirtt"], strategy="variants") == {}
    if server_has_pg_trgm():
        assert corrections(words=["sweattshirtt"], strategy="trigram") == {"sweattshirtt": ["sweatshirt"]}
        assert found("sweattshirtt") == {"Sweatshirt, plain"}


def test_words_as_typed_rank_above_corrections(shop):
    # Only in the description (weight B), where the corrected word is in titles (A): a rank alone would put it last.
    mug = ProductFactory(title="Latin mug", description="Printed with hodie, Latin for today.")
    results = list(product_search(query="hodie"))
    assert results[0] == mug
    assert set(results[1:]) == set(shop["hoodies"])


def test_every_word_must_match_as_typed_or_corrected(shop):
    assert found("grey hodie") == {"Grey zip hoodie"}
    assert found("oak chiar") == {"Oak dining chair"}
    assert found("hodie -grey") == {"Navy pullover"}


def test_short_words_are_not_corrected(shop):
    # "oka" is one swap from "oak", but words under five letters have too many neighbours to guess.
    assert found("oka") == set()


@pytest.mark.parametrize("query", ["xqzvbn", "plutonium", "chiarxx", "hoodiexyz"])
def test_a_query_with_no_plausible_correction_finds_nothing(shop, query):
    assert found(query) == set()


def test_injection_like_and_operator_characters_are_only_text(shop):
    assert found("hodie'); DROP TABLE catalog_product; --") == set()
    assert found("hodie & | ! :* ( ) \\ ' <-> \"") == titles(shop["hoodies"])
    assert Product.objects.count() == 7


def test_words_only_excluded_find_nothing_rather_than_everything(shop, each_strategy):
    """"-zzzz" matched every product, each ranked and counted: the whole catalog on demand, for anyone."""
    assert found("-zzzz") == set()
    assert found("-zzzz -yyyy") == set()
    assert found("hodie -zzzz") == titles(shop["hoodies"])
    # Read by PostgreSQL as every product but some: a word it drops, an excluded phrase, an "or" with an exclusion.
    for everything_but in ("the -zzzz", '-"zzzz yyyy"', "hoodie or -zzzz", "the"):
        assert found(everything_but) == set(), everything_but


def test_a_very_long_query_is_safe(shop):
    assert found("hodie " * 5000) == titles(shop["hoodies"])
    assert found(" ".join(f"hodie{i}" for i in range(2000))) == set()
    assert found("h" * 100_000) == set()


def test_the_vocabulary_follows_every_write_path(shop):
    category = CategoryFactory()
    Product.objects.bulk_create([Product(sku="LAMP-1", title="Brass floor lantern", price=10, category=category)])
    services.product_create(sku="RUG-1", title="Woollen carpet", price="20", category=category)
    services.product_update(product=shop["chairs"][0], description="Beech, lacquered.")
    Product.objects.filter(pk=shop["other"][0].pk).update(title="Walnut side table", description="Teak veneer.")

    assert found("lantren") == {"Brass floor lantern"}
    assert found("carpte") == {"Woollen carpet"}
    assert found("lacqered") == {"Oak dining chair"}
    assert found("vaneer") == {"Walnut side table"}


def test_edit_distance_counts_a_swap_as_one_edit_and_gives_up_past_the_limit():
    assert edit_distance("chiar", "chair", limit=1) == 1
    assert edit_distance("hodie", "hoodie", limit=1) == 1
    assert edit_distance("abc", "bca", limit=1) is None
    assert edit_distance("sweatshrtt", "sweatshirt", limit=2) == 2
    assert edit_distance("chair", "chair", limit=0) == 0


def test_the_page_says_where_the_products_found_with_a_close_spelling_begin(client, shop):
    """They were listed as "Results for “hodie”" with the rest, and nothing said why a hoodie was there."""
    mug = ProductFactory(title="Latin mug", description="Printed with hodie, Latin for today.")
    page = client.get(reverse("catalog:text_search"), {"q": "hodie"})
    html = page.content.decode()
    assert page.context["as_typed"] == [mug] and titles(page.context["close_spellings"]) == titles(shop["hoodies"])
    assert html.index("Latin mug") < html.index("Also found with a close spelling") < html.index("Grey zip hoodie")

    only_close = client.get(reverse("catalog:text_search"), {"q": "sneakres"}).content.decode()
    assert "Nothing matched “sneakres” as typed: found with a close spelling" in only_close


def test_a_later_page_of_close_spellings_alone_says_nothing_matched_as_typed(client, shop):
    for n in range(24):  # with the shop's two: two pages of them
        ProductFactory(title=f"Hoodie no. {n}")
    second = client.get(reverse("catalog:text_search"), {"q": "hodie", "page": 2}).content.decode()
    assert "Nothing matched “hodie” as typed: found with a close spelling" in second


def test_the_page_and_the_api_find_typos(client, shop):
    page = client.get(reverse("catalog:text_search"), {"q": "hodie"})
    api = client.get("/api/v1/products/", {"q": "sneakres"})

    assert page.status_code == 200 and titles(page.context["products"]) == titles(shop["hoodies"])
    assert api.status_code == 200
    assert {item["title"] for item in api.json()["results"]} == titles(shop["sneakers"])


def test_the_bench_runs_in_smoke_mode():
    # On this session's server (embedded, or DATABASE_URL), in a database of the bench's own.
    env = {**os.environ, "LOOKALIKE_STATE_DIR": str(embedded.STATE_DIR)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.text_search", "--products", "300", "--repeats", "1", "--rebuild"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "300 products; vocabulary" in result.stdout
    assert "| corrections() alone (variants) |" in result.stdout
    assert ("| corrections() alone (trigram) |" in result.stdout) == server_has_pg_trgm()


def test_the_demo_catalog_forgives_typos():
    _real_products()  # skip when the demo's packages are unavailable
    call_command("load_demo", verbosity=0, stdout=io.StringIO())

    for typed, meant in [("hodie", "hoodie"), ("sneakres", "sneakers"), ("chiar", "chair")]:
        assert found(typed) == found(meant) != set()
    assert {"Mustard Hoodie", "White Hoodie", "Black Hoodie", "Blue Hoodie"} <= found("hodie")


def test_a_category_the_query_names_brings_its_products_after_those_whose_own_words_match(shop, each_strategy):
    """"sneakers" found 1 of the 4 products in Sneakers: a product's category was not among its words."""
    footwear = CategoryFactory(name="Footwear")
    sneakers = CategoryFactory(name="Sneakers", parent=footwear)
    low, high = (ProductFactory(title=title, description="Canvas upper.", category=sneakers)
                 for title in ("Chuck low", "Chuck high"))
    boot = ProductFactory(title="Desert boot", category=CategoryFactory(name="Boots", parent=footwear))
    speakers = ProductFactory(title="Bluetooth speakers", category=CategoryFactory(name="Audio"))
    results = [product.title for product in product_search(query="sneakers")]
    # Its own words as typed first, then the category's, then a product found only with a close spelling.
    assert results == [shop["sneakers"][0].title, high.title, low.title, speakers.title]
    assert set(found("footwear")) == {low.title, high.title, boot.title}  # a category and those below it
    # Excluded words exclude the category's products too.
    assert found("sneakers -high") == {shop["sneakers"][0].title, low.title, speakers.title}
    # A near word's category comes in the near words' tier, after what matches as typed.
    assert [product.title for product in product_search(query="speakers")][:1] == [speakers.title]
    # A word excluded excludes a category it names, and those below it ("shoes -sneakers"), the products in it that
    # match by their own words too, and whatever an "or" brought in.
    assert found("footwear -sneakers") == {boot.title}
    chuck_boot = ProductFactory(title="Chuck boot", category=sneakers)
    assert found("chuck -sneakers") == set() and chuck_boot.title in found("boot")
    assert found("chuck or boot -sneakers") == {boot.title}


def test_an_excluded_word_leaves_the_order_of_the_rest_as_it_was(shop, each_strategy):
    """"sofa -leather" put a cushion whose description says "sofa" once above the sofas whose title does: PostgreSQL
    ranks every match of a query with an excluded word alike (1e-20), and the name decided."""
    sofa = ProductFactory(title="Grey fabric sofa", description="Three seats.")
    cushion = ProductFactory(title="Bright parrot cushion", description="Brightens any sofa.")  # first by name
    assert [product.title for product in product_search(query="sofa")] == [sofa.title, cushion.title]
    assert [product.title for product in product_search(query="sofa -zzzz")] == [sofa.title, cushion.title]


def test_accents_are_neither_needed_nor_in_the_way(each_strategy):
    """"cafe chair" found nothing beside "Café chair", nor "creme brulee" the crème brûlée mug: phone keyboards
    type without accents, and a word under five letters is never corrected."""
    cafe = ProductFactory(title="Café chair", description="Bentwood.")
    mug = ProductFactory(title="Crème brûlée mug", description="For the Łódź café.")
    plain = ProductFactory(title="Cafe table", description="Zinc top.")
    assert found("cafe chair") == {cafe.title}
    assert found("café table") == {plain.title}
    assert found("creme brulee") == {mug.title}
    assert found("lodz") == {mug.title}
    assert found("cafe") == {cafe.title, mug.title, plain.title}
    vase = ProductFactory(title="Vase", category=CategoryFactory(name="Décor"))
    assert found("decor") == {vase.title}


def test_a_products_sku_finds_it_first(shop):
    """"SAL-72", read off a product page, found nothing: a SKU is no words a title holds."""
    sofa = ProductFactory(sku="SAL-72", title="Sofa", description="Grey hoodie fabric.")
    ProductFactory(sku="SAL-73", title="Armchair")
    assert [product.title for product in product_search(query="sal-72")] == [sofa.title]
    assert product_search(query="SAL-72 -sofa").count() == 0  # not the SKU as typed: words, which find none
    cafe = ProductFactory(sku="CAF\u00c9-2", title="Bistro chair")
    assert [product.title for product in product_search(query="cafe-2")] == [cafe.title]  # accents aside, as words


def test_a_sku_of_a_hidden_product_in_other_case_does_not_hide_the_shown_one(shop):
    """SKUs differ in case: the SKU looked up was the first product's of either case, a hidden one, which the shop's
    search then left out: the product shown in the shop under the SKU typed was not found."""
    hidden = ProductFactory(sku="SOFA-1", title="Old sofa", active=False)
    shown = ProductFactory(sku="sofa-1", title="Floor lamp")
    assert [product.title for product in product_search(query="sofa-1")] == [shown.title]
    assert hidden.title in {product.title for product in product_search(query="SOFA-1", include_inactive=True)}


def _titles(query: str) -> list[str]:
    return [product.title for product in product_search(query=query)]


def test_or_joins_a_corrected_word_as_it_joins_a_word_typed_right(shop, each_strategy):
    """Corrections read every word as wanted, "or" among them: "sofa or chiar" asked for a sofa that is a chair."""
    sofa = ProductFactory(title="Grey fabric sofa")
    assert set(_titles("sofa or chair")) == set(_titles("sofa or chiar")) >= {sofa.title, "Oak dining chair"}


def test_a_phrase_excluded_excludes_the_phrase_not_its_first_word(shop, each_strategy):
    """'-"red wine"' excluded every product saying "red", and wanted "wine" (ranked by it; required once a typo was
    corrected)."""
    velvet = ProductFactory(title="Red velvet sofa")
    stained = ProductFactory(title="Grey sofa", description="Shrugs off red wine.")
    blue = ProductFactory(title="Blue sofa")
    green = ProductFactory(title="Green sofa", description="Shrugs off white wine.")
    for query in ('sofa -"red wine"', 'sofaa -"red wine"', 'sofaa - "red wine"'):
        assert set(_titles(query)) == {velvet.title, blue.title, green.title}, query
    for query in ("sofaa - red", "sofaa -red"):  # a "-" standing alone excludes the next word, as PostgreSQL reads it
        assert set(_titles(query)) == {blue.title, green.title}, query
    assert set(_titles("sofaa or, velvet")) == set(_titles("sofa or velvet"))
    assert stained.title in _titles('"red wine"') and velvet.title not in _titles('"red wine"')


def test_a_typo_in_a_word_with_accents_is_corrected_however_the_accents_are_typed(shop, each_strategy):
    """The vocabulary kept "crème": "cremme" was two edits from it (the accent one), so nothing was found."""
    mug = ProductFactory(title="Cr\u00e8me br\u00fbl\u00e9e mug")
    for query in ("cremme brulee", "creme brullee", "cr\u00e8me brull\u00e9e", "cr\u00e9mme"):
        assert mug.title in _titles(query), query


def test_words_lose_their_accents_in_python_as_in_the_database(db):
    """The vocabulary is compared with typed words in Python, the search document built in SQL."""
    from catalog.typos import unaccented

    words = ["Crème", "brûlée", "Łódź", "Øresund", "ħalib", "Đakovo", "ıstanbul", "Ŀlavor", "naïve", "Ångström",
             "ﬁancé", "São", "ǅemal", "Ελληνικά", "Ђорђе"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT lookalike_unaccent(word) FROM unnest(%s::text[]) AS word", [words])
        assert [unaccented(word) for word in words] == [row[0] for row in cursor.fetchall()]


def test_a_query_too_long_for_the_page_is_cut_at_a_word_s_end(client, shop):
    """Cut at 200 characters inside a word, "chair chair ... ch" asked for products holding "ch": none."""
    page = client.get(reverse("catalog:text_search"), {"q": "chair " * 40})
    assert page.context["query"] == ("chair " * 33).strip()
    assert {product.title for product in page.context["products"]} == titles(shop["chairs"])
    one_word = client.get(reverse("catalog:text_search"), {"q": "x" * 300})
    assert one_word.context["query"] == "x" * 200


def test_a_query_cut_after_a_word_keeps_that_word(client, shop):
    query = "chair " * 33 + "x table"  # the 200th character starts "table", after "x" ended
    assert client.get(reverse("catalog:text_search"), {"q": query}).context["query"] == ("chair " * 33) + "x"
