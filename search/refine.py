"""How a shopper narrows and orders visual matches: price range, colour, sort order, and the folding of
near-duplicate listings. Pure functions over matches already read (search.selectors reads them); no queries here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
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


def fold_duplicates(matches: list, close_pairs: Mapping[tuple[int, int], float], *, min_similarity: float) -> list:
    """``matches`` (each with ``.image_id`` and ``.duplicates``) in their order, each one whose best image has a
    cosine similarity of at least ``min_similarity`` to an earlier kept match's best image folded into that
    match's ``duplicates`` instead (the most similar such match's, the first on a tie): the same photo listed twice
    shows once, "+1 similar listing".

    ``close_pairs``: (lower image id, higher image id) -> the cosine similarity of the two best images, for the pairs
    at ``min_similarity`` or more (any others are ignored). Each match looks only at its own close images, not at
    every kept match: a pool of 48 compared 1,128 pairs to find the few. Compared with the kept matches only, so a
    chain of small differences does not fold a different-looking product.
    """
    return duplicate_folding(close_pairs, min_similarity=min_similarity)(matches)


def duplicate_folding(close_pairs: Mapping[tuple[int, int], float], *, min_similarity: float
                      ) -> Callable[[list], list]:
    """``fold_duplicates`` with these pairs, their lookup built once: for folding several lists of matches (each
    chip's, to count what its click lists)."""
    close: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (first, second), value in close_pairs.items():
        if value >= min_similarity:
            close[first].append((second, value))
            close[second].append((first, value))

    def folded(matches: list) -> list:
        kept: list = []
        kept_at: dict[int, int] = {}  # a kept match's best image id -> its index in ``kept``
        for match in matches:
            # The most similar kept match, the first kept on a tie.
            near = [(-value, kept_at[image_id]) for image_id, value in close.get(match.image_id, ())
                    if image_id in kept_at]
            if near:
                index = min(near)[1]
                kept[index] = replace(kept[index], duplicates=(*kept[index].duplicates, match))
            else:
                if match.image_id is not None:
                    kept_at.setdefault(match.image_id, len(kept))
                kept.append(match)
        return kept

    return folded
