"""Form fields of catalog concepts, for the admin's forms and for apps built on the catalog."""

from django import forms

from catalog.models import CURRENCY_CODE_READ, currency_code_read


class CurrencyField(forms.CharField):
    """An ISO 4217 code, read in any case (``currency_code_read``) and checked (``CURRENCY_CODE_READ``)."""

    default_validators = [CURRENCY_CODE_READ]

    def to_python(self, value):
        return currency_code_read(super().to_python(value))
