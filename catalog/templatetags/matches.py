"""How match scores read on the pages."""

import math

from django import template

register = template.Library()


@register.filter
def match_percent(score: float) -> int:
    """A match score (0.5 at the catalog's cut-off, 1 for the same photo) as a whole percentage, rounded down: a
    match just under the cut-off never reads "50%", nor one short of the same photo "100%"."""
    return math.floor(score * 100 + 1e-9)  # 0.57 * 100 is 56.99999...
