"""The shopper's search-by-photo form: every bad input becomes a message on the form, never a server error."""

from __future__ import annotations

from dataclasses import replace

from django import forms
from django.core.exceptions import ValidationError

from catalog.categories import UnknownCategory, category_by_slug, category_tree
from catalog.forms import CurrencyField
from catalog.models import PRICE_DIGITS, Category
from catalog.selectors import shop_currency
from search.query import Box, InvalidBox, QueryImage, query_image_read
from search.colours import FAMILIES
from search.refine import DEFAULT_SORT, SORTS, Refine

RESULTS_PER_PAGE = 12
MAX_RESULTS = 96  # "Show more" doubles the limit up to this
# Indents the category tree inside a native <select>, which ignores CSS padding on options.
INDENT = "\u00a0\u00a0\u00a0"


def category_choices() -> list[tuple[str, str]]:
    """("", "All categories") then every category as an indented tree, siblings by name (one query)."""
    return [("", "All categories"), *((c.slug, INDENT * depth + c.name) for c, depth in category_tree())]


class PhotoSearchForm(forms.Form):
    photo = forms.FileField(
        error_messages={
            "required": "Choose a photo to search with.",
            "empty": "The file is empty.",
            "invalid": "The upload did not arrive as a file; please choose it again.",
        },
    )
    category = forms.ChoiceField(
        required=False,
        widget=forms.Select(attrs={"class": "select", "data-category": ""}),
        error_messages={"invalid_choice": "That category does not exist (any more). Pick another one."},
    )
    # A region of the photo as "x0,y0,x1,y1" in the pixels of the upright (EXIF-rotated) original.
    box = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    limit = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_RESULTS, widget=forms.HiddenInput,
        error_messages={"max_value": f"At most {MAX_RESULTS} results can be shown."},
    )
    # The nearest products whatever their score (the empty state's way out), when the page searches the photo again
    # for a refinement of such results.
    closest = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = category_choices()
        self.query_image: QueryImage | None = None

    def clean_photo(self):
        photo = self.cleaned_data["photo"]
        if len(self.files.getlist(self.add_prefix("photo"))) > 1:  # the last would be searched, saying nothing
            raise forms.ValidationError("Choose one photo: a search looks for one thing.")
        # Decides by decoding (raises ValidationError with a message shoppers can read), and decodes only this once.
        self.query_image = query_image_read(photo)
        return photo

    def clean_category(self) -> Category | None:
        slug = self.cleaned_data["category"]
        if not slug:
            return None
        try:
            return category_by_slug(slug=slug)
        except UnknownCategory:  # deleted between rendering the choices and validating them
            raise ValidationError(
                self.fields["category"].error_messages["invalid_choice"], code="invalid_choice"
            ) from None

    def clean_limit(self) -> int:
        return self.cleaned_data["limit"] or RESULTS_PER_PAGE

    def clean(self):
        cleaned = super().clean()
        text = cleaned.get("box", "").strip()
        cleaned["box"] = None
        if text:
            try:
                box = Box.parse(text)
                if self.query_image is not None:
                    box = box.clipped(self.query_image.width, self.query_image.height)
            except InvalidBox as error:
                self.add_error("box", f"The selected area is not usable: {error}. Draw the box again.")
            else:
                cleaned["box"] = box
        return cleaned


# In a shopper's words: Django's ("Ensure that there are no more than 10 digits in total.") are a developer's.
_PRICE_BELOW = f"{10 ** (PRICE_DIGITS['max_digits'] - PRICE_DIGITS['decimal_places']):,}"
_PRICE_PLACES = PRICE_DIGITS["decimal_places"]
PRICE_MESSAGES = {
    "invalid": "Enter a price as a number, such as 25 or 19.99.",
    "min_value": "Enter a price of 0 or more.",
    # Django counts all the digits first: 1.23456789012 has too many, though below the highest price.
    "max_digits": f"Enter a price below {_PRICE_BELOW}, with at most {_PRICE_PLACES} decimals.",
    "max_whole_digits": f"Enter a price below {_PRICE_BELOW}.",
    "max_decimal_places": f"Enter a price with at most {_PRICE_PLACES} decimals, such as 19.99.",
}


class LowerCaseChoiceField(forms.ChoiceField):
    """A choice of lower-case words read in any case, as the API reads it: "?colour=RED" was an error here."""

    def to_python(self, value):
        return super().to_python(value).strip().lower()


class RefineForm(forms.Form):
    """Price range and order of visual matches, from a query string: the photo page and "More like this"."""

    min_price = forms.DecimalField(
        required=False, min_value=0, **PRICE_DIGITS, label="Min price", error_messages=PRICE_MESSAGES,
        widget=forms.NumberInput(attrs={"class": "input", "placeholder": "Min", "step": "any", "inputmode": "decimal"}),
    )
    max_price = forms.DecimalField(
        required=False, min_value=0, **PRICE_DIGITS, label="Max price", error_messages=PRICE_MESSAGES,
        widget=forms.NumberInput(attrs={"class": "input", "placeholder": "Max", "step": "any", "inputmode": "decimal"}),
    )
    sort = forms.ChoiceField(
        required=False, choices=list(SORTS.items()), label="Sort by", widget=forms.Select(attrs={"class": "select"}),
        error_messages={"invalid_choice": "Sort by best match, price or newest."},
    )
    # Set by the colour swatches (links); carried as a hidden field when the price or the order changes.
    colour = LowerCaseChoiceField(
        required=False, choices=[("", "Any colour"), *((family, family.title()) for family in FAMILIES)],
        widget=forms.HiddenInput, error_messages={"invalid_choice": "There is no such colour to filter by."},
    )

    # The currency of the price range and the price orders (links carry it: a page's meaning does not change when
    # the shop's does). Not given: the shop's.
    currency = CurrencyField(required=False, widget=forms.HiddenInput)

    def clean(self):
        cleaned = super().clean()
        low, high = cleaned.get("min_price"), cleaned.get("max_price")
        if low is not None and high is not None and low > high:
            self.add_error("max_price", "The highest price must not be below the lowest.")
            # Neither end applies: the lowest alone emptied the page under "nothing at that price" beside the error.
            cleaned.pop("min_price", None)
        return cleaned

    def refine(self) -> Refine:
        """The valid refinements (an invalid field counts as not given: the page still shows results)."""
        data = self.cleaned_data if self.is_bound and (self.is_valid() or True) else {}
        return Refine(
            min_price=data.get("min_price"), max_price=data.get("max_price"), sort=data.get("sort") or DEFAULT_SORT,
            colour=data.get("colour") or None, currency=data.get("currency") or None,
        )

    def price_currency(self) -> str:
        """The currency the price range is in, for its label."""
        return self.refine().currency or shop_currency()

    def query_items(self, *, colour: bool = True, price: bool = True) -> list[tuple[str, str]]:
        """The valid refinements as query-string pairs, for links that keep them (chips, "show more"); without
        the colour for the swatches, which set their own, or without the price range (and its currency) for the
        way out of an empty one."""
        refine = self.refine()
        if not price:
            refine = replace(refine, min_price=None, max_price=None, currency=None)
        items = [("min_price", refine.min_price), ("max_price", refine.max_price)]
        items.append(("sort", refine.sort if refine.sort != DEFAULT_SORT else None))
        items.append(("colour", refine.colour if colour else None))
        items.append(("currency", (refine.currency or shop_currency()) if refine.by_price else None))
        return [(key, str(value)) for key, value in items if value is not None]
