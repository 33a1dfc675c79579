"""The catalog's own "nothing similar enough" cut-off, and the match score shoppers see.

A fixed cosine cut-off does not mean the same on every catalog: unrelated product photos of a varied shop score
near 0.3 against each other, while 64 px emoji of different kinds score 0.5 and more. So each embedding space derives
its cut-off from its own vectors. A photo of something the shop does not sell scores, against the catalog, about what
a product scores against the nearest product of *another* category: so the cut-off is a quantile of those
nearest-other-category similarities over a sample of products (``cutoff_from_neighbours``), and at most
``DEFAULT_CUTOFF``, which is also the cut-off of a catalog too small or with a single category. The quantile and the
default were fitted on the benchmark's domains, on queries its report does not measure (bench/splits.py
QUERY_SETS), each domain judged with them fitted on the other domains only (docs/relevance.md, docs/search.md).

Shoppers and API clients see a match score rather than the raw cosine: 1 for the same photo, 0.5 at the cut-off,
falling linearly to 0 below it, so "50% match" sits at the edge of "similar enough" on any catalog.
"""

from __future__ import annotations

import numpy as np

# The least match score a result needs by default: the calibrated cut-off itself.
MATCH_THRESHOLD = 0.5
# Until this many sampled products have a product of another category, the space uses DEFAULT_CUTOFF. Few samples
# give a rough quantile, but one bounded by LOWEST_CUTOFF and DEFAULT_CUTOFF, and a small shop of real photos is
# better served by it than by the default, which suits catalogs of look-alike drawings (docs/search.md).
MIN_PRODUCTS = 5
# The highest cut-off, and the cut-off of a space that cannot be calibrated (SEARCH_CUTOFF_DEFAULT overrides it).
DEFAULT_CUTOFF = 0.46
# The share of the nearest-other-category similarities that lies below the cut-off (SEARCH_CUTOFF_QUANTILE overrides
# it). Both overrides exist for the relevance benchmark, which passes the values it fitted without the measured domain.
NEIGHBOUR_QUANTILE = 1.0
# How many products the calibration samples (each costs one nearest-neighbour query).
SAMPLE_PRODUCTS = 500
# Recalibrate once the catalog has changed by this share since the last calibration: in its number of vectors, or
# in vectors added and products edited (one-for-one replacements and products moved to other categories keep the
# number).
RECALIBRATE_CHANGE = 0.1
# The cut-off never goes below this, whatever a strange catalog gives.
LOWEST_CUTOFF = 0.2


def neighbour_quantile() -> float:
    from django.conf import settings

    return NEIGHBOUR_QUANTILE if settings.SEARCH_CUTOFF_QUANTILE is None else settings.SEARCH_CUTOFF_QUANTILE


def default_cutoff() -> float:
    from django.conf import settings

    return DEFAULT_CUTOFF if settings.SEARCH_CUTOFF_DEFAULT is None else settings.SEARCH_CUTOFF_DEFAULT


def cutoff_from_neighbours(similarities, *, quantile: float, highest: float) -> float:
    """The cut-off for a catalog whose sampled products have these nearest-other-category similarities."""
    cutoff = float(np.quantile(np.asarray(similarities, dtype=np.float64), quantile))
    return float(np.clip(cutoff, LOWEST_CUTOFF, highest))


def space_cutoff(stored: float | None, *, default: float) -> float:
    """A space's cut-off: its calibration when it has one, else the default."""
    return default if stored is None else stored


def needs_calibration(*, calibrated_vectors: int, vectors: int, changed=lambda: 0) -> bool:
    """Whether the catalog has changed enough since the last calibration to compute it again. ``changed``: how
    many vectors were added and products edited since, asked only when the number of vectors alone says no."""
    if calibrated_vectors == 0:
        return vectors > 0
    enough = RECALIBRATE_CHANGE * calibrated_vectors
    return abs(vectors - calibrated_vectors) >= enough or changed() >= enough


def match_score(similarity: float, cutoff: float) -> float:
    """Cosine similarity -> match score in [0, 1]: 0.5 at ``cutoff``, 1 at 1, linear on each side."""
    similarity = min(max(similarity, 0.0), 1.0)
    if similarity >= cutoff:
        return 0.5 + 0.5 * (similarity - cutoff) / max(1.0 - cutoff, 1e-6)
    return 0.5 * similarity / max(cutoff, 1e-6)
