"""Price filters and sort orders on visual matches: filtered in SQL on the vector rows' price copy, exact or through
HNSW like the category filter, and sorted only after the similarity cut-off."""

import re
from collections import Counter
from decimal import Decimal

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from search.models import ImageEmbedding
from search.refine import Refine
from search.forms import MAX_RESULTS
from search.selectors import SORTED_POOL, vector_matches
from search.serializers import MAX_LIMIT
from tests.factories import clustered_catalog

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.fixture
def priced():
    """300 clustered products priced 0.00 to 299.00 by position (prices set after the vectors: the trigger copies)."""
    model, categories, products, vectors = clustered_catalog(products=300, categories=10, clusters=6, seed=5)
    for index, product in enumerate(products):
        Product.objects.filter(pk=product.pk).update(price=Decimal(index))
        product.price = Decimal(index)
    return model, products, vectors


# Few enough that the rows read for them (OVERFETCH a product) are fewer than a 30-product price range: with 12, the
# HNSW scan could never find them all, and the exact fallback answered every "hnsw" case.
K = 5
EXACT = "OFFSET 0"  # what marks the exact statement (search.nearest)


def _exact_top(products, vectors, query, keep, k=K):
    scored = [(float(v @ query), p.pk) for p, v in zip(products, vectors) if keep(p)]
    return [pk for _, pk in sorted(scored, reverse=True)[:k]]


def _search(model, query, refine, **kwargs):
    with CaptureQueriesContext(connection) as queries:
        matches = vector_matches(vector=query, limit=K, model=model, refine=refine, **kwargs)
    return [r.product.pk for r in matches.results], [q["sql"] for q in queries.captured_queries]


def test_the_price_copy_follows_the_product(priced):
    model, products, _ = priced
    assert ImageEmbedding.objects.get(product=products[7]).price == Decimal("7.00")
    Product.objects.filter(pk=products[7].pk).update(price=Decimal("1234.50"))
    assert ImageEmbedding.objects.get(product=products[7]).price == Decimal("1234.50")


@pytest.mark.parametrize("exact_max, path", [(10_000, "exact"), (0, "hnsw")])
def test_a_narrow_price_range_still_returns_the_k_nearest_in_it(settings, priced, exact_max, path):
    settings.SEARCH_EXACT_MAX_VECTORS = exact_max
    model, products, vectors = priced
    refine = Refine(min_price=Decimal("100"), max_price=Decimal("129.99"))  # 30 of 300 products
    found, sql = _search(model, vectors[3], refine)
    assert found == _exact_top(products, vectors, vectors[3], lambda p: 100 <= p.price < 130)
    assert any("hnsw.iterative_scan" in statement for statement in sql) == (path == "hnsw")
    assert any(EXACT in statement for statement in sql) == (path == "exact")  # the index alone found them


def test_an_iterative_scan_that_gives_up_on_a_price_range_falls_back_to_exact(settings, priced):
    settings.SEARCH_EXACT_MAX_VECTORS = 0
    model, products, vectors = priced
    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")
        cursor.execute("SET hnsw.max_scan_tuples = 1")
    found, sql = _search(model, vectors[3], Refine(min_price=Decimal("280")))
    assert any(EXACT in statement for statement in sql)
    assert found == _exact_top(products, vectors, vectors[3], lambda p: p.price >= 280)


@pytest.mark.parametrize("sort", ["price", "-price", "newest"])
def test_sorting_reorders_the_matches_that_passed_the_cut_off_and_lets_no_weak_one_in(settings, priced, sort):
    model, products, vectors = priced
    # Exact searches (a price filter that keeps every product, over few rows): the two calls read the same matches,
    # whatever state earlier tests left the HNSW graph in.
    settings.SEARCH_EXACT_MAX_VECTORS = 10_000
    every_price = Decimal(0)
    # A cut-off that leaves some but not all of the pool: the real catalog's situation.
    best = vector_matches(vector=vectors[3], limit=300, model=model, cutoff=0.5, threshold=0.5, pool=48,
                          refine=Refine(min_price=every_price))
    assert 12 < len(best.results) < 300
    ordered = vector_matches(
        vector=vectors[3], limit=48, model=model, cutoff=0.5, threshold=0.5, pool=48,
        refine=Refine(min_price=every_price, sort=sort),
    )
    found = [r.product for r in ordered.results]
    keys = {
        "price": lambda p: (p.price, 0),
        "-price": lambda p: (-p.price, 0),
        "newest": lambda p: (-p.created_at.timestamp(), -p.pk),
    }[sort]
    # The first 48 of the best SORTED_POOL matches in that order: none weaker, none from beyond them.
    sorted_pool = sorted((r.product for r in best.results[:SORTED_POOL]), key=keys)
    assert [p.pk for p in found] == [p.pk for p in sorted_pool[:48]]
    assert all(r.score >= 0.5 for r in ordered.results)


def test_the_limit_applies_after_sorting_the_pool(settings, priced):
    settings.SEARCH_EXACT_MAX_VECTORS = 10_000  # exact, as above
    model, products, vectors = priced
    every_price = Decimal(0)
    pool = vector_matches(vector=vectors[3], limit=SORTED_POOL, model=model, pool=48,
                          refine=Refine(min_price=every_price)).results
    cheapest = vector_matches(vector=vectors[3], limit=5, model=model, pool=48,
                              refine=Refine(min_price=every_price, sort="price")).results
    assert [r.product.pk for r in cheapest] == [r.product.pk for r in sorted(pool, key=lambda r: r.product.price)[:5]]


def test_show_more_keeps_a_sorted_page_in_place_and_its_counts(settings, priced):
    """Sorted within max(limit, 48), "Show more" (96) sorted twice as many matches: a cheaper one ranked 70th came
    first and the 48 seen before moved; and the chips counted what the order read, not the best matches."""
    settings.SEARCH_EXACT_MAX_VECTORS = 10_000  # exact, as above
    model, products, vectors = priced
    asked = dict(vector=vectors[3], model=model, pool=48, refine=Refine(min_price=Decimal(0), sort="price"))
    page, more = vector_matches(limit=48, **asked), vector_matches(limit=96, **asked)
    assert [r.product.pk for r in more.results[:48]] == [r.product.pk for r in page.results]
    best = vector_matches(limit=48, **{**asked, "refine": Refine(min_price=Decimal(0))})
    assert page.categories == best.categories  # the same chips whatever the order
    assert SORTED_POOL >= max(MAX_LIMIT, MAX_RESULTS)  # every limit a caller may ask


def test_show_more_keeps_a_sorted_page_in_place_when_near_duplicates_fold(settings, priced):
    """Folding near-duplicate listings shortened a sorted page of 96, so twice the pool was read and sorted: cheaper
    matches from beyond the best SORTED_POOL came first, and the 48 already seen moved."""
    settings.SEARCH_EXACT_MAX_VECTORS = 10_000  # exact, as above
    settings.NEAR_DUPLICATE_MIN_SCORE = 0.92  # a few pairs of the same cluster (about 0.9 alike) fold
    model, products, vectors = priced
    asked = dict(vector=vectors[3], model=model, pool=48, fold=True, refine=Refine(min_price=Decimal(0), sort="price"))
    page, more = vector_matches(limit=48, **asked), vector_matches(limit=96, **asked)
    assert any(r.duplicates for r in more.results)
    assert [r.product.pk for r in more.results[:48]] == [r.product.pk for r in page.results]
    best = {r.product.pk for r in vector_matches(vector=vectors[3], model=model, limit=SORTED_POOL,
                                                 refine=Refine(min_price=Decimal(0))).results}
    shown = {listing.product.pk for r in more.results for listing in (r, *r.duplicates)}
    assert shown <= best


def test_an_unfiltered_search_of_a_small_catalog_whose_scan_gives_up_reads_it_exactly(priced):
    """A graph full of dead entries (here: 290 of 300 products' vectors deleted, not yet vacuumed) must not lose a
    small catalog's matches to a walk that stopped early."""
    model, products, vectors = priced
    kept = products[:10]
    ImageEmbedding.objects.exclude(product__in=kept).delete()
    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")
        cursor.execute("SET hnsw.max_scan_tuples = 1")
    query = vectors[200]  # near deleted vectors: the walk meets dead entries first
    found = [m.product.pk for m in vector_matches(vector=query, limit=12, model=model).results]
    assert found == _exact_top(kept, vectors[:10], query, lambda p: True, k=12)


def test_the_facets_count_the_whole_pool_and_only_the_shown_products_cards_are_read(settings, priced):
    settings.SEARCH_EXACT_MAX_VECTORS = 10_000  # exact, as above
    model, products, vectors = priced
    every_price = Refine(min_price=Decimal(0))
    pool = vector_matches(vector=vectors[3], limit=48, model=model, pool=48, refine=every_price).results
    with CaptureQueriesContext(connection) as queries:
        shown = vector_matches(vector=vectors[3], limit=5, model=model, pool=48, refine=every_price)

    assert [r.product.pk for r in shown.results] == [r.product.pk for r in pool[:5]]
    counted = Counter(r.product.category.slug for r in pool)
    assert {facet.category.slug: facet.count for facet in shown.categories} == counted
    # In the order of each category's best match: the photo most likely shows what it matches best.
    assert [f.category.slug for f in shown.categories] == list(dict.fromkeys(r.product.category.slug for r in pool))
    card_reads = [re.search(r"unnest\('\{([0-9,]*)\}'", q["sql"]) for q in queries.captured_queries
                  if "json_build_object" in q["sql"]]
    assert [sorted(map(int, read[1].split(","))) for read in card_reads] == [sorted(r.product.pk for r in pool[:5])]


def test_each_chip_counts_what_a_click_on_it_finds(settings):
    """A category chip counted the products directly in it while its click searched below it too, and a colour chip
    the main colour of each product's best photo while its click finds a product by any photo of that colour."""
    from catalog.categories import category_descendant_ids
    from catalog.models import ProductImage
    from search.selectors import search_space_model
    from tests.factories import CategoryFactory, ProductFactory

    settings.SEARCH_EXACT_MAX_VECTORS = 10_000  # exact: every photo near the query is read
    model = search_space_model()
    furniture = CategoryFactory(name="Furniture")
    sofas = CategoryFactory(name="Sofas", parent=furniture)
    dims = ImageEmbedding._meta.get_field("vector").dimensions
    rng = np.random.default_rng(11)
    query = rng.normal(size=dims)
    query /= np.linalg.norm(query)

    def near(distance):
        vector = query + distance * rng.normal(size=dims) / np.sqrt(dims)
        return vector / np.linalg.norm(vector)

    photos = {  # product category -> its photos' (colour, how far from the query)
        "A": (furniture, [("grey", 0.3)]),
        "D": (furniture, [("blue", 0.2), ("red", 0.4)]),  # its best photo is blue, another red
        "B": (sofas, [("grey", 0.3)]),
        "C": (sofas, [("red", 0.5)]),
    }
    for name, (category, shots) in photos.items():
        product = ProductFactory(title=name, category=category)
        for position, (colour, distance) in enumerate(shots):
            image = ProductImage.objects.create(product=product, file=f"x/{name}{position}.jpg", width=1, height=1,
                                                content_hash="a" * 64, position=position, colours=[colour])
            ImageEmbedding.objects.create(image=image, product=product, model=model, vector=near(distance))

    matches = vector_matches(vector=query, limit=12, model=model, pool=48, cutoff=0.0)
    chips = {facet.category.name: facet.count for facet in matches.categories}
    assert chips == {"Furniture": 4, "Sofas": 2}
    for category in (furniture, sofas):
        clicked = vector_matches(vector=query, limit=12, model=model, cutoff=0.0,
                                 category_ids=category_descendant_ids(category=category))
        assert len(clicked.results) == chips[category.name]
    swatches = {facet.colour: facet.count for facet in matches.colours}
    assert swatches == {"grey": 2, "blue": 1, "red": 2}
    for colour, count in swatches.items():
        clicked = vector_matches(vector=query, limit=12, model=model, cutoff=0.0, refine=Refine(colour=colour))
        assert len(clicked.results) == count, colour

    # The same photo listed again in Sofas: the answers fold it under B ("+1 similar listing"), and so do the chips
    settings.NEAR_DUPLICATE_MIN_SCORE = 0.999  # the photos above are all near the query, so near each other too
    again = ProductFactory(title="B again", category=sofas)
    b_photo = ProductImage.objects.get(product__title="B")
    image = ProductImage.objects.create(product=again, file="x/again.jpg", width=1, height=1, content_hash="a" * 64,
                                        colours=["grey"])
    ImageEmbedding.objects.create(image=image, product=again, model=model,
                                  vector=ImageEmbedding.objects.get(image=b_photo).vector)
    matches = vector_matches(vector=query, limit=12, model=model, pool=48, cutoff=0.0, fold=True)
    chips = {facet.category.name: facet.count for facet in matches.categories}
    assert chips == {"Furniture": 4, "Sofas": 2}
    for category in (furniture, sofas):
        clicked = vector_matches(vector=query, limit=12, model=model, cutoff=0.0, fold=True,
                                 category_ids=category_descendant_ids(category=category))
        assert len(clicked.results) == chips[category.name]
    assert {facet.colour: facet.count for facet in matches.colours}["grey"] == 2


@pytest.fixture
def two_currencies(priced):
    """The priced catalog with every third product priced in euros (copied onto the vector rows by the trigger)."""
    model, products, vectors = priced
    euro = {product.pk for product in products[::3]}
    Product.objects.filter(pk__in=euro).update(currency="EUR")
    for product in products:
        product.currency = "EUR" if product.pk in euro else "USD"
    return model, products, vectors


def test_the_currency_copy_follows_the_product(two_currencies):
    model, products, _ = two_currencies
    assert ImageEmbedding.objects.get(product=products[3]).currency == "EUR"
    assert ImageEmbedding.objects.get(product=products[4]).currency == "USD"
    Product.objects.filter(pk=products[4].pk).update(currency="GBP")
    assert ImageEmbedding.objects.get(product=products[4]).currency == "GBP"


@pytest.mark.parametrize("exact_max, path", [(10_000, "exact"), (0, "hnsw")])
def test_a_price_range_is_in_one_currency_the_shops_unless_another_is_asked(settings, two_currencies, exact_max,
                                                                             path):
    """"Up to 130" kept products at 129 euros and at 129 dollars alike, as if they were one currency."""
    settings.SEARCH_EXACT_MAX_VECTORS = exact_max
    model, products, vectors = two_currencies
    dollars = Refine(min_price=Decimal("100"), max_price=Decimal("129.99"))  # the shop's: most products are in USD
    found, _ = _search(model, vectors[3], dollars)
    assert found == _exact_top(products, vectors, vectors[3],
                               lambda p: 100 <= p.price < 130 and p.currency == "USD")
    euros = Refine(min_price=Decimal("100"), max_price=Decimal("129.99"), currency="EUR")
    found, _ = _search(model, vectors[3], euros)
    assert found == _exact_top(products, vectors, vectors[3],
                               lambda p: 100 <= p.price < 130 and p.currency == "EUR")


def test_an_order_by_price_lists_the_shops_currency_first_and_compares_no_two_currencies(settings, two_currencies):
    settings.SEARCH_EXACT_MAX_VECTORS = 10_000
    model, products, vectors = two_currencies
    by_pk = {product.pk: product for product in products}
    for asked, first in ((None, "USD"), ("EUR", "EUR")):
        found = vector_matches(vector=vectors[3], limit=96, model=model, pool=48,
                               refine=Refine(sort="price", currency=asked)).results
        listed = [(by_pk[r.product.pk].currency, by_pk[r.product.pk].price) for r in found]
        currencies = [currency for currency, _ in listed]
        assert currencies[0] == first and currencies == sorted(currencies, key=lambda c: c != first)
        for currency in set(currencies):
            prices = [price for c, price in listed if c == currency]
            assert prices == sorted(prices)


def test_a_shop_in_one_currency_other_than_the_default_filters_by_price_as_before(settings, priced):
    settings.SEARCH_EXACT_MAX_VECTORS = 10_000
    model, products, vectors = priced
    Product.objects.update(currency="EUR")
    found, sql = _search(model, vectors[3], Refine(min_price=Decimal("100"), max_price=Decimal("129.99")))
    assert found == _exact_top(products, vectors, vectors[3], lambda p: 100 <= p.price < 130)
    assert not any("currency =" in statement for statement in sql)  # nothing to tell apart


def test_a_result_card_shows_the_photo_that_matched(settings):
    """Cards showed each product's first photo: a product found by its red photo under the red filter was shown by
    its blue one, and a lamp found by a box drawn round it by the photo of the whole room."""
    from catalog.models import ProductImage
    from search.selectors import search_space_model
    from tests.factories import ProductFactory

    settings.SEARCH_EXACT_MAX_VECTORS = 10_000
    model = search_space_model()
    dims = ImageEmbedding._meta.get_field("vector").dimensions
    query = np.zeros(dims)
    query[0] = 1
    product = ProductFactory()
    photos = {}
    for position, (colour, closeness) in enumerate([("blue", 0.5), ("red", 0.9)]):  # the first photo matches less
        photos[colour] = ProductImage.objects.create(product=product, file=f"x/{colour}.jpg", width=1, height=1,
                                                     content_hash="a" * 64, position=position, colours=[colour])
        vector = np.zeros(dims)
        vector[0], vector[position + 1] = closeness, (1 - closeness**2) ** 0.5
        ImageEmbedding.objects.create(image=photos[colour], product=product, model=model, vector=vector)

    for refine, shown in ((Refine(), "red"), (Refine(colour="blue"), "blue")):
        (result,) = vector_matches(vector=query, limit=12, model=model, cutoff=0.0, refine=refine).results
        assert result.image_id == photos[shown].pk
        assert [image.pk for image in result.product.card_images] == [photos[shown].pk]
