"""API shapes for image search: what a search request may carry, and the results it returns."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from catalog.serializers import CategorySlugField, ProductSummarySerializer
from search.query import Box, InvalidBox, QueryImage, query_image_read

DEFAULT_LIMIT = 12
MAX_LIMIT = 100


class _ScopeSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)
    category = CategorySlugField(
        required=False, help_text="Only products in this category or below it (default: the whole catalog)."
    )


class SimilarQuerySerializer(_ScopeSerializer):
    """Query parameters of "more like this": like the product page, the product's own category tree by default."""

    scope = serializers.ChoiceField(
        choices=["category", "all"],
        default="category",
        help_text="category: the product's category and below it (default); all: the whole catalog. "
        "An explicit `category` takes precedence.",
    )


class PhotoSearchSerializer(_ScopeSerializer):
    """A photo to match, and what to match it against."""

    image = serializers.FileField(help_text="The photo to match (JPEG, PNG, WebP, ...); checked by decoding it.")
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
        try:
            return query_image_read(file)  # decided by decoding, and decoded only this once
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None

    def validate_threshold(self, value: float) -> float:
        if not math.isfinite(value):  # "nan" passes the range checks
            raise serializers.ValidationError("A valid number is required.")
        return value

    def validate_box(self, text: str) -> Box:
        try:
            return Box.parse(text)
        except InvalidBox as error:
            raise serializers.ValidationError(str(error)) from None


class SearchResultSerializer(serializers.Serializer):
    product = ProductSummarySerializer()
    score = serializers.FloatField(
        help_text="Match score in [0, 1], calibrated to the catalog: 1 is the same photo, 0.5 the catalog's cut-off "
        "for 'similar enough'."
    )
    similarity = serializers.FloatField(help_text="Cosine similarity of the best-matching photo, in [0, 1].")


class SearchResponseSerializer(serializers.Serializer):
    results = SearchResultSerializer(many=True, help_text="Best match first.")
    model = serializers.CharField(help_text="The embedding space the search compared against.")
    took_ms = serializers.FloatField()


class PhotoSearchResponseSerializer(SearchResponseSerializer):
    threshold = serializers.FloatField(help_text="The least match score a result needed.")
    cutoff = serializers.FloatField(help_text="The cosine similarity that a match score of 0.5 stands for.")
