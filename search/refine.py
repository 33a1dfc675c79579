"""How a shopper narrows and orders visual matches: price range, colour, sort order, and the folding of
near-duplicate listings. Pure functions over matches already read (search.selectors reads them); no queries here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

# The orders a shopper may ask for; "best" (most similar first) is the default.
SORTS = {
    "best": "Best match",
    "price": "Price: low to high",
    "-price": "Price: high to low",
    "newest": "Newest",
}
DEFAULT_SORT = "best"
PRICE_SORTS = ("price", "-price")
# How a results page says the order it shows.
SORT_NOTES = {
    "best": "best match first", "price": "cheapest first", "-price": "dearest first", "newest": "newest first",
}


@dataclass(frozen=True)
class Refine:
    """Filters and order applied to the products that passed the similarity cut-off (never instead of it)."""

    min_price: Decimal | None = None
    max_price: Decimal | None = None
    sort: str = DEFAULT_SORT
    colour: str | None = None  # a family of search.colours.FAMILIES: matches need a photo mainly of it
    # The currency of the price range and the price orders: a range keeps only products priced in it, an order puts
    # them first. None: the shop's (search.selectors decides, and leaves it None where every product is in it).
    currency: str | None = None

    @property
    def filtered(self) -> bool:
        """Whether any filter narrows the vector rows in SQL (the ANN query must then keep scanning)."""
        return self.priced or self.colour is not None

    @property
    def priced(self) -> bool:
        """Whether a price range narrows the matches (what an empty answer then blames)."""
        return self.min_price is not None or self.max_price is not None

    @property
    def narrows_or_reorders(self) -> bool:
        """Whether a filter or another order than the best match applies (a currency alone changes nothing)."""
        return self.filtered or self.sort != DEFAULT_SORT

    @property
    def by_price(self) -> bool:
        """Whether prices are compared: a price range, or an order by price."""
        return self.priced or self.sort in PRICE_SORTS


NO_REFINE = Refine()


def sorted_matches(matches: list, sort: str, *, currency: str | None = None) -> list:
    """``matches`` (best first, each with ``.price``, ``.currency``, ``.product_id`` and, for "newest",
    ``.created_at``) in the shopper's order; a tie in price keeps the best match first, one in "newest" (a bulk
    import's products share a moment) puts the later product first. With ``currency``, an order by price lists the
    matches priced in it first, then each other currency's together: prices in two currencies are not compared."""
    def in_currency(match) -> tuple:
        return (match.currency != currency, match.currency) if currency is not None else ()

    if sort == "price":
        return sorted(matches, key=lambda match: (*in_currency(match), match.price))
    if sort == "-price":
        return sorted(matches, key=lambda match: (*in_currency(match), -match.price))
    if sort == "newest":
        return sorted(matches, key=lambda match: (match.created_at, match.product_id), reverse=True)
    return list(matches)


def fold_duplicates(matches: list, similarity: Callable[[int, int], float], *, min_similarity: float) -> list:
    """``matches`` (each with ``.image_id`` and ``.duplicates``) in their order, each one whose best image has a
    cosine similarity of at least ``min_similarity`` to an earlier kept match's best image folded into that
    match's ``duplicates`` instead (the most similar such match's, the first on a tie): the same photo listed twice
    shows once, "+1 similar listing".

    ``similarity(image_id, image_id)``: the cosine similarity of two best images; it need only be right for pairs at
    ``min_similarity`` or more. Compared with the kept matches only, so a chain of small differences does not fold
    a different-looking product.
    """
    kept: list = []
    for match in matches:
        nearest, best = None, min_similarity
        if match.image_id is not None:
            for index, keeper in enumerate(kept):
                if keeper.image_id is None:
                    continue
                value = similarity(keeper.image_id, match.image_id)
                if value > best or (nearest is None and value == best):
                    nearest, best = index, value
        if nearest is None:
            kept.append(match)
        else:
            kept[nearest] = replace(kept[nearest], duplicates=(*kept[nearest].duplicates, match))
    return kept
