"""API shapes for image search: what a search request may carry, and the results it returns."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from catalog.selectors import CategoryPaths
from catalog.serializers import (
    CategorySlugField,
    CurrencyCodeField,
    PriceRangeSerializer,
    ProductSummarySerializer,
    one_photo_sent,
)
from search.colours import FAMILIES
from search.query import Box, InvalidBox, QueryImage, query_image_read
from search.refine import DEFAULT_SORT, SORTS, Refine
from search.kept_queries import query_vector_kept

DEFAULT_LIMIT = 12
MAX_LIMIT = 100


class LowerCaseChoiceField(serializers.ChoiceField):
    """A choice of lower-case words read in any case, as a currency is: "Red" was refused beside "red"."""

    def to_internal_value(self, data):
        return super().to_internal_value(data.strip().lower() if isinstance(data, str) else data)


class _ScopeSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)
    category = CategorySlugField(required=False, help_text="Only products in this category or below it.")


class _RefineSerializer(_ScopeSerializer, PriceRangeSerializer):
    currency = CurrencyCodeField(
        required=False,
        help_text="The currency of the price range and of an order by price (ISO 4217): only products priced in it "
        "are in the range, and they come first in the order. By default the shop's: the one most of its shown "
        "products are priced in.",
    )
    sort = serializers.ChoiceField(
        choices=list(SORTS),
        default=DEFAULT_SORT,
        help_text="best: most similar first (default); price: cheapest first; -price: dearest first; newest: newest "
        "first. Sorting re-orders the best 100 matches that passed the cut-off, whatever the `limit` (so a larger "
        "`limit` keeps the first ones in place): it never lets a weaker match in.",
    )

    colour = LowerCaseChoiceField(
        choices=list(FAMILIES),
        required=False,
        help_text="Only products with a photo mainly of this colour family (computed from the product's own pixels, "
        "not its background), each scored by its best such photo.",
    )

    def refine(self) -> Refine:
        data = self.validated_data
        return Refine(
            min_price=data.get("min_price"), max_price=data.get("max_price"), sort=data["sort"],
            colour=data.get("colour"), currency=data.get("currency"),
        )


class SimilarQuerySerializer(_RefineSerializer):
    """Query parameters of "more like this": like the product page, the product's own category tree by default."""

    scope = serializers.ChoiceField(
        choices=["category", "all"],
        default="category",
        help_text="category: the product's category and below it (default); all: the whole catalog. "
        "An explicit `category` takes precedence.",
    )


class PhotoSearchSerializer(_RefineSerializer):
    """A photo to match (or an earlier search's `query` token), and what to match it against."""

    image = serializers.FileField(
        required=False,
        help_text="The photo to match (JPEG, PNG, WebP, ...); checked by decoding it. Required unless `query` is "
        "given.",
    )
    query = serializers.CharField(
        required=False,
        max_length=64,
        help_text="Instead of `image`: the `query` token an earlier answer returned, to refine that search (another "
        "category, price range or order) without uploading the photo again. Only the photo's vector and detail "
        "descriptors are kept, never the photo, for 30 minutes (SEARCH_QUERY_KEEP_SECONDS); an expired token is a "
        "400 on this field.",
    )
    threshold = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        help_text="Least match score in [0, 1] a result needs; 0 disables the cut-off. Default 0.5: the catalog's "
        "own cut-off for 'similar enough' (docs/search.md).",
    )
    box = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Search only this region: x0,y0,x1,y1 in the uploaded photo's pixels, after its EXIF rotation.",
    )

    def validate_image(self, file) -> QueryImage:
        one_photo_sent(self)
        try:
            return query_image_read(file)  # decided by decoding, and decoded only this once
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None

    def validate_query(self, token: str):
        kept = query_vector_kept(token=token)
        if kept is None:
            raise serializers.ValidationError("This search has expired or never existed: send the photo again.")
        return kept

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if "image" in attrs and "query" in attrs:
            raise serializers.ValidationError({"query": ["Send either image or query, not both."]})
        if "image" not in attrs and "query" not in attrs:
            raise serializers.ValidationError(
                {"image": ["No file was submitted: send a photo (image), or the query token of an earlier search."]}
            )
        if "query" in attrs and "box" in attrs:
            raise serializers.ValidationError({"box": ["A box needs the photo: send the image with it."]})
        return attrs

    def validate_threshold(self, value: float) -> float:
        if not math.isfinite(value):  # "nan" passes the range checks
            raise serializers.ValidationError("A valid number is required.")
        return value

    def validate_box(self, text: str) -> Box:
        try:
            return Box.parse(text)
        except InvalidBox as error:
            raise serializers.ValidationError(str(error)) from None


class FoldedResultSerializer(serializers.Serializer):
    product = ProductSummarySerializer()
    score = serializers.FloatField(
        help_text="Match score in [0, 1], calibrated to the catalog: 1 is the same photo, 0.5 the catalog's cut-off "
        "for 'similar enough'."
    )
    similarity = serializers.FloatField(help_text="Cosine similarity of the best-matching photo, in [0, 1].")


class SearchResultSerializer(FoldedResultSerializer):
    duplicates = FoldedResultSerializer(
        many=True,
        help_text="Lower-ranked matches whose best photo is a near-duplicate of this result's (cosine similarity at "
        "least NEAR_DUPLICATE_MIN_SCORE, the admin's near-duplicate cut-off): the same look listed again, folded "
        "here. They do not count towards `limit`.",
    )


class CategoryFacetSerializer(serializers.Serializer):
    slug = serializers.CharField(source="category.slug")
    name = serializers.CharField(source="category.name")
    path = serializers.SerializerMethodField(help_text="Ancestors and the category itself, root first.")
    count = serializers.IntegerField(help_text="Matches in this category or below it: what searching in it finds "
                                               "among them.")

    def get_path(self, facet) -> str:
        return self.context.setdefault("category_paths", CategoryPaths())[facet.category.pk]


class ColourFacetSerializer(serializers.Serializer):
    colour = serializers.ChoiceField(choices=list(FAMILIES))
    count = serializers.IntegerField(help_text="Matches with a matching photo mainly of this colour: what the colour "
                                               "filter finds among them.")


class FacetsSerializer(serializers.Serializer):
    categories = CategoryFacetSerializer(
        many=True,
        help_text="The categories of the matches, in the order of each one's best match: what the photo most likely "
        "shows first. Counted over "
        "the best matches that passed the cut-off and the price and colour filters (at most 48, or `limit` when "
        "larger), before `limit` is applied, a near-duplicate listing counted once as the chip's own search folds it; "
        "pass one's slug as `category` to search within it.",
    )
    colours = ColourFacetSerializer(
        many=True,
        help_text="The main colours of the same matches, most first; pass one as `colour` to keep only it. Photos "
        "whose colours are not computed yet are not counted.",
    )


class SearchResponseSerializer(serializers.Serializer):
    results = SearchResultSerializer(many=True, help_text="In the asked order: best match first by default.")
    facets = FacetsSerializer()
    model = serializers.CharField(help_text="The embedding space the search compared against.")
    took_ms = serializers.FloatField()


class PhotoSearchResponseSerializer(SearchResponseSerializer):
    query = serializers.CharField(
        allow_null=True,
        help_text="A token for this search's photo (its vector, never the photo, kept for 30 minutes from its last "
        "use): send it as `query` instead of `image` to refine the search; a refinement answers with the same token. "
        "Null while the cache that keeps it is down.",
    )
    threshold = serializers.FloatField(help_text="The least match score a result needed.")
    cutoff = serializers.FloatField(help_text="The cosine similarity that a match score of 0.5 stands for.")
