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
    """The ``floatformat`` argument for a price in ``currency``: its decimals, with thousands grouped."""
    return "0g" if currency in WHOLE_UNIT_CURRENCIES else "2g"
