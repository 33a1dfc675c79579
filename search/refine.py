"""How a shopper narrows and orders visual matches: price range, sort order, and the folding of near-duplicate
listings. Pure functions over matches already read (search.selectors reads them); no queries here."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# The orders a shopper may ask for; "best" (most similar first) is the default.
SORTS = {
    "best": "Best match",
    "price": "Price: low to high",
    "-price": "Price: high to low",
    "newest": "Newest",
}
DEFAULT_SORT = "best"


@dataclass(frozen=True)
class Refine:
    """Filters and order applied to the products that passed the similarity cut-off (never instead of it)."""

    min_price: Decimal | None = None
    max_price: Decimal | None = None
    sort: str = DEFAULT_SORT

    @property
    def filtered(self) -> bool:
        """Whether any filter narrows the vector rows in SQL (the ANN query must then keep scanning)."""
        return self.min_price is not None or self.max_price is not None

    def rows(self, queryset):
        """``queryset`` of vector rows narrowed to these filters (the rows carry copies of the product's fields)."""
        if self.min_price is not None:
            queryset = queryset.filter(price__gte=self.min_price)
        if self.max_price is not None:
            queryset = queryset.filter(price__lte=self.max_price)
        return queryset


NO_REFINE = Refine()


def sorted_matches(matches: list, sort: str) -> list:
    """``matches`` (best first, each with ``.product``) in the shopper's order; ties keep the best match first."""
    if sort == "price":
        return sorted(matches, key=lambda match: match.product.price)
    if sort == "-price":
        return sorted(matches, key=lambda match: -match.product.price)
    if sort == "newest":
        return sorted(matches, key=lambda match: (match.product.created_at, match.product.pk), reverse=True)
    return list(matches)
