"""How prices read on the pages."""

from django import template

register = template.Library()

# ISO 4217 currencies without minor units: a yen price has no cents to show.
WHOLE_UNIT_CURRENCIES = frozenset({
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
    "XPF",
})


@register.filter
def price_format(currency: str) -> str:
    """The ``floatformat`` argument for a price in ``currency``: its decimals, with thousands grouped. A whole-unit
    currency shows decimals only where a price has them (a yen price of 1500.50 is not rounded away)."""
    return "-2g" if currency in WHOLE_UNIT_CURRENCIES else "2g"
