"""API shapes for catalog data. Output serializers read prefetched objects; input serializers only validate."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers
from rest_framework.fields import empty

from catalog.categories import CategoryPaths, UnknownCategory, category_by_slug
from catalog.models import (
    CURRENCY_CODE_READ,
    POSITION_MAX,
    PRICE_DIGITS,
    Category,
    Product,
    ProductImage,
    currency_code_read,
)
from catalog.selectors import PRODUCT_SORTS


def absolute_url(request, url: str) -> str:
    """``url`` made absolute for the request (as DRF does for file fields); as it is without a request."""
    return request.build_absolute_uri(url) if request is not None else url


class CategorySummarySerializer(serializers.ModelSerializer):
    path = serializers.SerializerMethodField(help_text="Ancestors and the category itself, root first.")

    class Meta:
        model = Category
        fields = ["slug", "name", "path"]

    def get_path(self, category: Category) -> str:
        return self.context.setdefault("category_paths", CategoryPaths())[category.pk]


class CategorySerializer(CategorySummarySerializer):
    parent = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True, help_text="Slug of the parent; null for a top category."
    )
    url = serializers.SerializerMethodField(help_text="The category's page in the shop.")

    class Meta(CategorySummarySerializer.Meta):
        fields = ["id", "slug", "name", "path", "parent", "url"]

    def get_url(self, category: Category) -> str:
        return absolute_url(self.context.get("request"), category.get_absolute_url())


class OutputSerializer(serializers.ModelSerializer):
    """An answer's shape: every field read-only, so the schema marks each as always present (a model field with a
    default, such as a product's currency, was optional to clients generated from it)."""

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            field.read_only = True
        return fields


class ProductImageSerializer(OutputSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = ProductImage
        fields = ["id", "url", "width", "height", "position", "embedding_status"]

    def get_url(self, image: ProductImage) -> str:
        return absolute_url(self.context.get("request"), image.display_url)


class ProductSummarySerializer(OutputSerializer):
    """A product as listed and as a search result: enough to draw a card."""

    url = serializers.SerializerMethodField(help_text="The product's page in the shop.")
    image_url = serializers.SerializerMethodField(
        help_text="The product's first image, if it has one; in a search result, its image that matched.")
    category = CategorySummarySerializer(read_only=True)

    class Meta:
        model = Product
        fields = ["id", "sku", "title", "url", "image_url", "price", "currency", "category"]

    def get_url(self, product: Product) -> str:
        return absolute_url(self.context.get("request"), product.get_absolute_url())

    def get_image_url(self, product: Product) -> str | None:
        # Lists carry the first image, search results the one that matched (card_images); details prefetch all.
        images = getattr(product, "card_images", None)
        if images is None:
            images = product.images.all()
        first = next(iter(images), None)
        return absolute_url(self.context.get("request"), first.display_url) if first is not None else None


class ProductListItemSerializer(ProductSummarySerializer):
    """A product in the product list: its card, and whether shoppers see it (staff lists hold hidden ones too)."""

    class Meta(ProductSummarySerializer.Meta):
        fields = [*ProductSummarySerializer.Meta.fields, "active"]


class ProductSerializer(ProductListItemSerializer):
    images = ProductImageSerializer(many=True, read_only=True)

    class Meta(ProductListItemSerializer.Meta):
        fields = [*ProductListItemSerializer.Meta.fields, "description", "images", "created_at", "updated_at"]


# --- Input ----------------------------------------------------------------------------------------------


class CategorySlugField(serializers.SlugRelatedField):
    """A category given by its slug: looked up by catalog.categories.category_by_slug, which words the error."""

    def __init__(self, **kwargs):
        # Names the model for the OpenAPI schema only: to_internal_value looks the slug up.
        super().__init__(slug_field="slug", queryset=Category.objects.none(), **kwargs)

    def to_internal_value(self, data) -> Category:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return category_by_slug(slug=data)
        except UnknownCategory as error:
            raise serializers.ValidationError(str(error)) from None


class _OmittableBoolean(serializers.BooleanField):
    """A boolean that, left out of a form-encoded body, is left out, as in JSON. DRF's own reads a missing form
    field as an unticked box, False: a product created, or replaced with PUT, as form data came out inactive."""

    default_empty_html = empty


class CurrencyCodeField(serializers.CharField):
    """An ISO 4217 code, read in any case (``currency_code_read``) and checked (``CURRENCY_CODE_READ``)."""

    default_validators = [CURRENCY_CODE_READ]

    def to_internal_value(self, data):
        return currency_code_read(super().to_internal_value(data))


class ProductWriteSerializer(serializers.ModelSerializer):
    """What staff send to create or change a product; catalog.services does the writing."""

    category = CategorySlugField(help_text="The category's slug.")
    active = _OmittableBoolean(required=False, help_text="Shown to shoppers; true when a new product leaves it out.")
    price = serializers.DecimalField(**PRICE_DIGITS, min_value=0)
    currency = CurrencyCodeField(required=False, help_text="ISO 4217 code, e.g. USD (any case).")

    class Meta:
        model = Product
        fields = ["sku", "title", "description", "price", "currency", "category", "active"]

    def to_internal_value(self, data):
        # A field this write does not take ("is_active", "Price", or "updated_at" of the answer sent back) was dropped
        # without a word: the client took the product for changed. Named with the other fields' errors, if any. A
        # form post's CSRF token travels in the body too.
        names = set(data) if isinstance(data, Mapping) else set()  # anything else: DRF's "Expected a dictionary"
        unknown = {name: [f"Unknown field; a product takes {', '.join(self.Meta.fields)}."]
                   for name in sorted(names - set(self.fields) - {"csrfmiddlewaretoken"})}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as error:
            raise serializers.ValidationError({**error.detail, **unknown}) from None
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


def one_photo_sent(serializer: serializers.Serializer, field: str = "image") -> None:
    """Refuse a request carrying several files under ``field``: DRF reads the last, and the others went unsaid."""
    data = serializer.initial_data
    sent = len(data.getlist(field)) if hasattr(data, "getlist") else 1
    if sent > 1:
        raise serializers.ValidationError(f"Send one photo: this request has {sent}.")


class ProductImageUploadSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="A photo (JPEG, PNG, WebP, ...); checked by decoding it. One a request.")
    position = serializers.IntegerField(
        required=False, min_value=0, max_value=POSITION_MAX, help_text="Gallery position; appended when omitted."
    )

    def validate_image(self, file):
        one_photo_sent(self)
        return file


class PriceRangeSerializer(serializers.Serializer):
    """A price range in one currency: the product list's and the visual searches'."""

    min_price = serializers.DecimalField(
        required=False, **PRICE_DIGITS, min_value=0, help_text="Only products at this price or more.")
    max_price = serializers.DecimalField(
        required=False, **PRICE_DIGITS, min_value=0, help_text="Only products at this price or less.")
    currency = CurrencyCodeField(
        required=False,
        help_text="The currency of the price range (ISO 4217): only products priced in it are in the range. By "
        "default the shop's: the one most of its shown products are priced in.",
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        low, high = attrs.get("min_price"), attrs.get("max_price")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"max_price": ["max_price must not be below min_price."]})
        return attrs


class ProductFilterSerializer(PriceRangeSerializer):
    """Query parameters of the product list."""

    category = CategorySlugField(required=False, help_text="A category slug; includes its subcategories.")
    q = serializers.CharField(
        required=False, max_length=200,
        help_text="Full-text search in titles and descriptions, forgiving typos (\"hodie\" finds hoodies); products "
        "that match the words as typed come first.",
    )
    active = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Staff only: filter by active flag (default: all)."
    )
    sort = serializers.ChoiceField(choices=list(PRODUCT_SORTS), required=False, help_text="Ignored when q is given.")


class CategoryFilterSerializer(serializers.Serializer):
    parent = CategorySlugField(required=False, help_text="Only the direct children of this category.")
    root = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="true: only top-level categories; false: only others."
    )
