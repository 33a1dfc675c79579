"""Reads for the shopper pages and the API. Views and API modules call these; every list comes with what its
template or serializer needs prefetched."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import reduce

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import connection, connections, router
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Max, Prefetch, Q, QuerySet, Value, Window
from django.db.models.functions import Lower, RowNumber

# The tree's reads live in catalog.categories (with the check that keeps it a tree); callers find them here too.
from catalog.categories import (  # noqa: F401
    CategoryPaths,
    UnknownCategory,
    category_ancestors,
    category_by_slug,
    category_cards,
    category_children,
    category_descendant_ids,
    category_list,
    category_parents,
    category_tree_roots,
    kept_category_cards,
    kept_category_parents,
    lineage,
)
from catalog.models import DEFAULT_CURRENCY, Category, Product, ProductImage, Unaccented, sku_normalized
from catalog.page_cache import kept_per_catalog_version
from catalog.typos import MAX_WORDS, corrections

# By name as a reader orders names: "apple pie" beside "Apple", "Éclair" among the E's (the database's collation may
# be C, which put every capital before every small letter and accented letters last).
PRODUCT_SORTS = {"title": (Lower(Unaccented("title")), "title", "pk"), "newest": ("-created_at", "-pk")}
DEFAULT_SORT = "title"


def category_cover_images(*, categories: list[Category]) -> dict[int, ProductImage]:
    """For each given category, the first image of its newest active product anywhere below it.

    Two queries whatever the number of categories: the (id, parent) pairs of the whole tree, and one
    image per leaf-most category that has any (DISTINCT ON); the tree walk happens in Python.
    """
    parents = category_parents()
    wanted = {category.pk for category in categories}
    images = (
        ProductImage.objects.filter(product__active=True)
        .select_related("product")
        .order_by("product__category_id", "-product__created_at", "product_id", "position", "pk")
        .distinct("product__category_id")
    )
    covers: dict[int, ProductImage] = {}
    for image in sorted(images, key=lambda image: image.product.created_at, reverse=True):
        for category_id in lineage(parents, image.product.category_id):
            if category_id in wanted:
                covers.setdefault(category_id, image)
    return covers


def _with_card_image(queryset: QuerySet[Product]) -> QuerySet[Product]:
    """Attach ``card_images`` (a list holding the lowest-position image, or nothing) to each product."""
    first_images = ProductImage.objects.annotate(
        rank=Window(RowNumber(), partition_by=[F("product_id")], order_by=[F("position").asc(), F("pk").asc()])
    ).filter(rank=1)
    return queryset.prefetch_related(Prefetch("images", queryset=first_images, to_attr="card_images"))


# What cards show, and what search results are sorted by (price, created_at).
PRODUCT_CARD_FIELDS = ["id", "sku", "title", "price", "currency", "category_id", "active", "created_at"]
CATEGORY_CARD_FIELDS = ["id", "slug", "name", "parent_id"]
IMAGE_CARD_FIELDS = ["id", "product_id", "file", "thumbnail", "width", "height", "position"]


def _card_sql() -> str:
    """The cards statement, written once: the ORM took 2 ms a search to compile its equivalent (values, a join
    and a JSON subquery), four times what PostgreSQL takes to run it."""
    quote = connection.ops.quote_name

    def columns(model, names):  # attname -> quoted column
        return {name: quote(model._meta.get_field(name).column) for name in names}

    product, category, image = (columns(Product, PRODUCT_CARD_FIELDS), columns(Category, CATEGORY_CARD_FIELDS),
                                columns(ProductImage, IMAGE_CARD_FIELDS))
    image_json = ", ".join(f"'{name}', i.{column}" for name, column in image.items())
    return (
        f"SELECT {', '.join(f'p.{column}' for column in product.values())}, "
        f"{', '.join(f'c.{column}' for column in category.values())}, "
        f"(SELECT json_build_object({image_json}) FROM {quote(ProductImage._meta.db_table)} i"
        f" WHERE i.{image['product_id']} = p.{product['id']}"
        f" ORDER BY i.{image['id']} IS NOT DISTINCT FROM w.shown DESC, i.{image['position']}, i.{image['id']} LIMIT 1)"
        f" FROM unnest(%s::bigint[], %s::bigint[]) AS w(product_id, shown)"
        f" JOIN {quote(Product._meta.db_table)} p ON p.{product['id']} = w.product_id"
        f" JOIN {quote(Category._meta.db_table)} c ON c.{category['id']} = p.{product['category_id']}"
    )


CARD_SQL = _card_sql()


def product_cards(*, product_ids: list[int], shown_images: Mapping[int, int] | None = None) -> dict[int, Product]:
    """Products by id with what a card shows (category, and ``card_images``: the image ``shown_images`` names for
    the product, such as the one a search matched, else the lowest-position image, or nothing), in one statement:
    search results need no more, and building them costs less than the model. Unordered: the caller orders.

    The products are read-only stand-ins (no description or search document); use product_detail for a page.
    """
    product_ids = list(dict.fromkeys(product_ids))
    shown = [(shown_images or {}).get(product_id) for product_id in product_ids]
    alias = router.db_for_read(Product)  # a replica where there is one, as for any shopper read
    with connections[alias].cursor() as cursor:
        cursor.execute(CARD_SQL, [product_ids, shown])
        rows = cursor.fetchall()
    cards, categories = {}, {}
    products, category_end = len(PRODUCT_CARD_FIELDS), len(PRODUCT_CARD_FIELDS) + len(CATEGORY_CARD_FIELDS)
    for row in rows:
        product = _loaded(Product, alias, dict(zip(PRODUCT_CARD_FIELDS, row[:products])))
        if (category := categories.get(product.category_id)) is None:
            category = categories[product.category_id] = _loaded(
                Category, alias, dict(zip(CATEGORY_CARD_FIELDS, row[products:category_end])))
        product.category = category
        image = row[category_end]
        product.card_images = [_loaded(ProductImage, alias, image)] if image else []
        cards[product.pk] = product
    return cards


def _loaded(model, alias: str, values: dict):
    """An instance as the ORM would load it from these column values; the columns not given are deferred (reading
    one loads it, and save() writes only the loaded ones, so a partial instance never blanks a column)."""
    names = [field.attname for field in model._meta.concrete_fields if field.attname in values]
    return model.from_db(alias, names, [values[name] for name in names])


def product_list(*, category_ids: list[int] | None = None, sort: str = DEFAULT_SORT) -> QuerySet[Product]:
    """Active products, optionally within some categories, each with its card image prefetched."""
    queryset = Product.objects.filter(active=True).select_related("category")
    if category_ids is not None:
        queryset = queryset.filter(category_id__in=category_ids)
    return _with_card_image(queryset.order_by(*PRODUCT_SORTS.get(sort, PRODUCT_SORTS[DEFAULT_SORT])))


def product_search(*, query: str, include_inactive: bool = False) -> QuerySet[Product]:
    """Full-text search over title (weight A) and description (B), accents aside, forgiving typos (catalog.typos):
    the product whose SKU the query is comes first, then products that match the words as typed, then those that
    match only with corrected words; best match first within. Active products only, unless ``include_inactive``
    (staff)."""
    query = query.strip()
    if not query:
        return Product.objects.none()
    words_narrow, sku_named = _query_read(query, include_inactive=include_inactive)
    # "SAL-72" is no words a title holds: the product it names, by its primary key, which the full-text index's
    # scan can be OR-ed with (a condition on the SKU itself made PostgreSQL read every row).
    exact_sku = Q(pk=sku_named) if sku_named is not None else None
    groups = _query_terms(query)
    if not any(not term.excluded for group in groups for term in group) or not words_narrow:
        # "-red", "the -red", "sofa or -red": no word to find by, only words to exclude, which PostgreSQL reads as
        # every product but some: each ranked and counted, for anyone. Only the product it may name.
        if exact_sku is None:
            return Product.objects.none()
        searching, matches_as_typed, in_text, rank = exact_sku, Value(True), Value(False), Value(0.0)
    else:
        searching, matches_as_typed, in_text, rank = _search_by_words(query, groups)
        if exact_sku is not None:
            searching |= exact_sku
    is_sku = ExpressionWrapper(exact_sku, output_field=BooleanField()) if exact_sku is not None else Value(False)
    queryset = (
        Product.objects.filter(searching)
        .filter(**({} if include_inactive else {"active": True}))
        .select_related("category")
        .annotate(is_sku=is_sku, as_typed=matches_as_typed, in_text=in_text, rank=rank)
        .order_by("-is_sku", "-as_typed", "-in_text", "-rank", "title", "pk")
    )
    return _with_card_image(queryset)


def _search_by_words(query: str, groups: list[list[_Term]]):
    """What ``product_search`` filters by and orders by for a query with words to find by."""
    terms = list(dict.fromkeys(term for group in groups for term in group))  # "hodie hodie ...": one word
    as_typed = _words(query, search_type="websearch")
    searched, matches_as_typed, fixes = as_typed, Value(True), {}
    correctable = [term.words[0] for term in terms if term.correctable]
    if len(terms) <= MAX_WORDS and (fixes := corrections(words=correctable)):
        searched = as_typed | _tolerant_query(groups, fixes)
        matches_as_typed = ExpressionWrapper(Q(search_document=as_typed), output_field=BooleanField())
    in_text = Q(search_document=searched)
    # A category the query names ("sneakers") holds products whose own words do not say so: they come after the
    # products whose words match, as typed or, in the next tier, corrected ("sneakres").
    searching = in_text
    if named := _categories_named(searched):
        searching = in_text | Q(category_id__in=named)
        if searched is not as_typed:
            matches_as_typed = ExpressionWrapper(Q(search_document=as_typed)
                                                 | Q(category_id__in=_categories_named(as_typed)),
                                                 output_field=BooleanField())
    ranked_by = searched
    if len(terms) <= MAX_WORDS:  # more are searched as typed: thousands of query nodes nest too deep to compile
        # Words the query excludes exclude whatever holds them, and whatever is in a category they name ("shoes
        # -sneakers", "camera -lenses"), whichever way the rest matched: an "or" ("sofa or chair -leather") bound
        # the exclusion to its last word only, and the Camera Lens in Lenses matched "camera" by its own words.
        if unwanted := [term for term in terms if term.excluded]:
            unwanted_words = reduce(operator.or_, [term.query() for term in unwanted])
            searching &= ~Q(search_document=unwanted_words)
            if unwanted_categories := _categories_named(unwanted_words):
                searching &= ~Q(category_id__in=unwanted_categories)
        # Ranked by the words wanted alone: an excluded one in the ranked query put a cushion whose description says
        # "sofa" once above the sofas whose title does.
        ranked_by = reduce(operator.or_, [term.query(fixes) for term in terms if not term.excluded])
    return (searching, matches_as_typed, ExpressionWrapper(in_text, output_field=BooleanField()),
            SearchRank(F("search_document"), ranked_by))


def _words(text: str, *, search_type: str = "plain") -> SearchQuery:
    """``text`` as a query of the search document: English stems, accents off, as the document has them."""
    return SearchQuery(Unaccented(Value(text)), search_type=search_type, config="english")


def _query_read(query: str, *, include_inactive: bool) -> tuple[bool, int | None]:
    """In one round trip: whether PostgreSQL reads ``query`` as words a product must hold, not as none ("the") or as
    every product but some ("the -red", '-"red wine"', "sofa or -red": a query tree of T); and the product whose SKU
    it is, case and accents aside, as words are found ("cafe-2" is CAFÉ-2; the index of migration catalog/0014).
    Of two such products (SKUs differ in case), one the search may show: a hidden SOFA-1 hid the shown sofa-1."""
    table = Product._meta.db_table
    with connections[router.db_for_read(Product)].cursor() as cursor:
        cursor.execute(f"""
            SELECT querytree(websearch_to_tsquery('english', lookalike_unaccent(%s))) NOT IN ('', 'T'),
                   (SELECT id FROM {table} WHERE UPPER(lookalike_unaccent(sku)) = UPPER(lookalike_unaccent(%s))
                    AND (active OR %s) ORDER BY id LIMIT 1)
        """, [query, query, include_inactive])
        return cursor.fetchone()


def _categories_named(searched: SearchQuery) -> list[int]:
    """The categories whose name the query matches, and every category below them."""
    named = _categories_matching(searched)
    if not named:
        return []
    parents = kept_category_parents()
    if not named <= parents.keys():  # kept from before a category was added, had its version been lost
        parents = category_parents()
    return [category_id for category_id in parents if named.intersection(lineage(parents, category_id))]


def _categories_matching(searched: SearchQuery) -> set[int]:
    return set(Category.objects.annotate(words=SearchVector(Unaccented("name"), config="english"))
               .filter(words=searched).order_by().values_list("pk", flat=True))


@dataclass(frozen=True)
class _Term:
    """A word of a query, or a quoted phrase's words, and whether it is excluded (after a "-")."""

    words: tuple[str, ...]
    excluded: bool
    quoted: bool = False

    @property
    def correctable(self) -> bool:
        """A word typed as a word, wanted: what typo correction may read otherwise. A quoted one is meant as typed."""
        return not (self.excluded or self.quoted)

    def query(self, fixes: Mapping[str, list[str]] | None = None) -> SearchQuery:
        """The word, or one of its ``fixes``; a phrase's words in a row."""
        if len(self.words) > 1:
            return _words(" ".join(self.words), search_type="phrase")
        word = self.words[0]
        return reduce(operator.or_, [_words(w) for w in [word, *((fixes or {}).get(word, []))]])


def _query_terms(query: str) -> list[list[_Term]]:
    """``query`` as PostgreSQL's websearch reads it: groups of terms joined by "or", the terms of a group all wanted
    (or excluded: after a "-", also one standing alone, "sofa - red"); each word of a term typed as one (sofa-bed:
    sofa, bed), each quoted phrase one term. An "or" was a word to find, and a phrase excluded ('-"red wine"')
    excluded its first word and wanted the others."""
    groups: list[list[_Term]] = [[]]
    negated = False  # a "-" standing alone: the next term is excluded
    for minus, phrase, chunk in re.findall(r'(-?)"([^"]*)"?|([^\s"]+)', query.lower()):
        if chunk == "-":
            negated = True
            continue
        if chunk in ("or", "or,"):
            if not negated:  # after a "-", a word (a stop word: nothing to find)
                groups.append([])
        elif chunk:
            excluded = negated or chunk.startswith("-")
            groups[-1].extend(_Term((word,), excluded) for word in re.findall(r"[^\W_]+", chunk))
        elif words := tuple(re.findall(r"[^\W_]+", phrase)):
            groups[-1].append(_Term(words, negated or bool(minus), quoted=True))
        negated = False
    return [list(dict.fromkeys(group)) for group in groups if group]


def _tolerant_query(groups: list[list[_Term]], fixes: dict[str, list[str]]) -> SearchQuery:
    """Either group: every wanted term of it (a word or one of its corrections), and none of its excluded ones."""
    return reduce(operator.or_, [
        reduce(operator.and_, [~term.query() if term.excluded else term.query(fixes) for term in group])
        for group in groups
    ])


def product_detail(*, sku: str) -> Product | None:
    """An active product with its category and all its images (in gallery order), or None."""
    return (
        Product.objects.filter(sku=sku_normalized(sku), active=True)
        .select_related("category")
        .prefetch_related(_all_images())
        .first()
    )


def similar_products_category_ids(
    *, product: Product, category: Category | None = None, whole_catalog: bool = False
) -> list[int] | None:
    """Where More like this looks: ``category`` and below when one is named; otherwise the product's own category and
    below (the default, on the product page and in the API), or, with ``whole_catalog``, everywhere (None)."""
    if category is None and not whole_catalog:
        category = product.category
    return category_descendant_ids(category=category) if category is not None else None


def _all_images() -> Prefetch:
    return Prefetch("images", queryset=ProductImage.objects.order_by("position", "pk"))


def product_detail_for_staff(*, sku: str) -> Product | None:
    """A product, active or not, with its category and all its images in gallery order, or None."""
    return (Product.objects.filter(sku=sku_normalized(sku)).select_related("category")
            .prefetch_related(_all_images()).first())


def product_api_list(
    *,
    category: Category | None = None,
    query: str = "",
    sort: str = DEFAULT_SORT,
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    currency: str | None = None,
    staff: bool = False,
    active: bool | None = None,
) -> QuerySet[Product]:
    """The API's product list: ranked by ``query`` when given, otherwise sorted.

    Shoppers see active products with their card image; ``staff`` see inactive ones too (optionally only
    ``active`` or inactive ones), with all their images unless ranked by ``query``. A price range keeps the
    products priced in ``currency`` (the shop's by default) within it.
    """
    category_ids = category_descendant_ids(category=category) if category is not None else None
    if query:
        products = product_search(query=query, include_inactive=staff)
        if category_ids is not None:
            products = products.filter(category_id__in=category_ids)
    elif staff:
        products = Product.objects.select_related("category").prefetch_related(_all_images())
        products = products.order_by(*PRODUCT_SORTS.get(sort, PRODUCT_SORTS[DEFAULT_SORT]))
        if category_ids is not None:
            products = products.filter(category_id__in=category_ids)
    else:
        products = product_list(category_ids=category_ids, sort=sort)
    if staff and active is not None:
        products = products.filter(active=active)
    if min_price is not None or max_price is not None:
        products = products.filter(currency=currency or shop_currency())
    if min_price is not None:
        products = products.filter(price__gte=min_price)
    if max_price is not None:
        products = products.filter(price__lte=max_price)
    return products


def product_photo_hashes(*, skus: Iterable[str]) -> dict[str, list[str]]:
    """The content hashes of each product's photos, by SKU (products without photos left out): what an import
    or a load compares a photo with, to add none twice."""
    hashes: dict[str, list[str]] = {}
    for sku, content_hash in (ProductImage.objects.filter(product__sku__in=list(skus))
                              .order_by("product_id", "position", "pk").values_list("product__sku", "content_hash")):
        hashes.setdefault(sku, []).append(content_hash)
    return hashes


def photo_positions_last(*, product_ids: Iterable[int]) -> dict[int, int]:
    """Each product's highest photo position (products without photos left out): a photo added goes after it."""
    return dict(ProductImage.objects.filter(product_id__in=list(product_ids)).values("product_id")
                .annotate(last=Max("position")).values_list("product_id", "last"))


def photo_files_held(names: Iterable[str]) -> set[str]:
    """Of these stored file names, those a photo row holds as its file or its thumbnail."""
    names = list(names)
    held = ProductImage.objects.filter(Q(file__in=names) | Q(thumbnail__in=names)).values_list("file", "thumbnail")
    return {name for pair in held for name in pair} & set(names)


def product_currencies() -> list[str]:
    """The currencies the active products are priced in, the most used first (ties by code).

    Found by skipping through the index of their currencies, one probe each: a shop is nearly always in one, and
    counting its products at every change of the catalog read them all. Only several are counted."""
    table = Product._meta.db_table
    sql = f"""
        WITH RECURSIVE found(currency) AS (
            (SELECT currency FROM {table} WHERE active ORDER BY currency LIMIT 1)
            UNION ALL
            SELECT (SELECT p.currency FROM {table} p WHERE p.active AND p.currency > found.currency
                    ORDER BY p.currency LIMIT 1)
            FROM found WHERE found.currency IS NOT NULL
        )
        SELECT currency FROM found WHERE currency IS NOT NULL
    """
    with connections[router.db_for_read(Product)].cursor() as cursor:
        cursor.execute(sql)
        currencies = [row[0] for row in cursor.fetchall()]
    if len(currencies) < 2:
        return currencies
    counts = Product.objects.filter(active=True).values("currency").annotate(products=Count("id"))
    return [row["currency"] for row in counts.order_by("-products", "currency")]


# The same, read once per catalog version: every price range and price order of a search asks for it.
kept_product_currencies = kept_per_catalog_version(product_currencies)


def shop_currency() -> str:
    """The currency prices are compared in unless another is asked: the one most active products are priced in."""
    return next(iter(kept_product_currencies()), DEFAULT_CURRENCY)
