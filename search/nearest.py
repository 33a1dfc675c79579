"""The statements that read the vectors nearest a query (search.selectors runs them), written by hand.

Every photo search and More like this runs one; the ORM compiled the same query afresh each time, 0.6 ms, a fifth of
the statement's own time at 1M vectors (docs/performance.md). The filters are copies of the product's fields on the
vector row (search.models.ImageEmbedding), so a statement reads one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pgvector import HalfVector

from catalog.models import ProductImage
from search.models import ImageEmbedding
from search.refine import NO_REFINE, Refine

TABLE = ImageEmbedding._meta.db_table
# product id, cosine distance, image id, the image's main colour, the product's category id, price and currency
Hit = tuple[int, float, int, str, int, Decimal, str]


@dataclass(frozen=True)
class VectorRows:
    """The searchable (active) vector rows of one space, narrowed by a search's filters."""

    model: str
    category_ids: tuple[int, ...] | None = None
    refine: Refine = NO_REFINE
    exclude_product_id: int | None = None
    exclude_category_id: int | None = None

    @property
    def filtered(self) -> bool:
        """Whether a filter narrows the rows (then an HNSW scan must keep scanning past the rows it drops)."""
        return self.category_ids is not None or self.refine.filtered

    def where(self) -> tuple[str, list]:
        clauses, params = ["active", "model = %s"], [self.model]
        if self.category_ids is not None:
            # The ids written out, as the ORM wrote them: the planner picks a category's own partial HNSW index
            # (search/category_indexes.py) by proving its predicate from them.
            clauses.append(f"category_id IN ({', '.join(str(int(i)) for i in self.category_ids) or 'NULL'})")
        if self.exclude_category_id is not None:
            clauses.append("category_id <> %s")
            params.append(self.exclude_category_id)
        if self.refine.min_price is not None:
            clauses.append("price >= %s")
            params.append(self.refine.min_price)
        if self.refine.max_price is not None:
            clauses.append("price <= %s")
            params.append(self.refine.max_price)
        if self.refine.priced and self.refine.currency is not None:
            clauses.append("currency = %s")
            params.append(self.refine.currency)
        if self.refine.colour is not None:
            clauses.append("colour = %s")
            params.append(self.refine.colour)
        if self.exclude_product_id is not None:
            clauses.append("product_id <> %s")
            params.append(self.exclude_product_id)
        return " AND ".join(clauses), params


def nearest_statement(rows: VectorRows, vector, wanted: int, *, exact: bool) -> tuple[str, list]:
    """The ``wanted`` rows nearest ``vector``, as ``Hit``s: by the HNSW index, or ``exact``: the filter's rows read
    (one range of a filter's index) and sorted, never a walk of the graph."""
    where, params = rows.where()
    select = (
        f"SELECT product_id, vector <=> %s AS distance, image_id, colour, category_id, price, currency FROM {TABLE}"
        f" WHERE {where}"
    )
    params = [_vector_param(vector), *params]
    if exact:  # OFFSET 0 keeps the ordering outside, where the HNSW index cannot serve it
        return f"SELECT * FROM ({select} OFFSET 0) AS filtered ORDER BY distance, image_id LIMIT {int(wanted)}", params
    return f"{select} ORDER BY distance LIMIT {int(wanted)}", params


def nearest_older_statement(model: str, vector, image_id: int) -> tuple[str, list]:
    """The image of space ``model`` nearest ``vector`` among those added before image ``image_id`` (a lower id), as
    (image id, cosine distance), searchable or not (a near-duplicate is flagged whichever product it belongs to)."""
    params = [_vector_param(vector), model, image_id]
    return (
        f"SELECT image_id, vector <=> %s AS distance FROM {TABLE} WHERE model = %s AND image_id < %s"
        " ORDER BY distance LIMIT 1",
        params,
    )


def nearest_newer_unflagged_statement(model: str, vector, image_id: int) -> tuple[str, list]:
    """The image of space ``model`` nearest ``vector`` among those added after image ``image_id`` (a higher id) that
    are flagged as no photo's copy, as (image id, cosine distance): a copy stored before its original (two workers)
    found nothing older to be a copy of."""
    photos = ProductImage._meta.db_table
    return (
        f"SELECT e.image_id, e.vector <=> %s AS distance FROM {TABLE} e JOIN {photos} p ON p.id = e.image_id"
        " WHERE e.model = %s AND e.image_id > %s AND p.near_duplicate_of_id IS NULL ORDER BY distance LIMIT 1",
        [_vector_param(vector), model, image_id],
    )


def _vector_param(vector) -> str:
    """A query vector (numpy, a list or a HalfVector) as the halfvec text the statements compare with."""
    return (vector if isinstance(vector, HalfVector) else HalfVector(vector)).to_text()


def count_statement(rows: VectorRows, limit: int) -> tuple[str, list]:
    """How many of ``rows`` there are, counting no further than ``limit`` + 1: deciding whether there are at most
    ``limit`` costs at most that many index entries (the partial category, price and colour indexes hold ``model``).
    Not so for a price range in a catalog of several currencies: the price index holds no currency, so the entries
    of the range in the other currencies are read too (such catalogs are rare; an index would weigh on every row)."""
    where, params = rows.where()
    return f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE {where} LIMIT {int(limit) + 1}) AS counted", params
