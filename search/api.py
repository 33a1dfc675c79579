"""Search REST API: products that look like an uploaded photo, and "more like this" for a product.

Thin: validate with a serializer, call search.selectors, serialize. A broken model or vector store answers
503 with a JSON message rather than a 500 page.
"""

from __future__ import annotations

import logging
import time

from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors as catalog_selectors
from catalog.page_cache import cache_catalog_page
from config.api_responses import A_BODY, ANYONE
from search.kept_queries import query_vector_keep
from search.query import InvalidBox
from search.responses import photo_search_response, search_response
from search.selectors import photo_search, product_matches, search_space_model
from search.throttles import RefineAnonThrottle, SearchAnonThrottle
from search.serializers import (
    PhotoSearchSerializer,
    PhotoSearchResponseSerializer,
    SearchResponseSerializer,
    SimilarQuerySerializer,
)

logger = logging.getLogger(__name__)

UNAVAILABLE = {"detail": "Search is temporarily unavailable"}
RETRY_AFTER_SECONDS = 30  # told to clients of a 503: a database restart or a worker reloading the model
_ERROR = OpenApiResponse(description='`{"field": ["message"]}` or `{"detail": "message"}`')


class PhotoSearchView(APIView):
    permission_classes = [permissions.AllowAny]
    throttle_classes = [SearchAnonThrottle]
    parser_classes = [MultiPartParser, FormParser]

    def get_throttles(self):
        # A form that is no multipart carries no photo: a refinement by a `query` token (decided before the body is
        # read, as a throttle must be).
        if self.request.content_type.startswith("application/x-www-form-urlencoded"):
            return [RefineAnonThrottle()]
        return super().get_throttles()

    @extend_schema(
        operation_id="search_by_photo",
        summary="Find products that look like a photo",
        # A form without a file refines an earlier search by its `query` token.
        request={"multipart/form-data": PhotoSearchSerializer,
                 "application/x-www-form-urlencoded": PhotoSearchSerializer},
        responses={
            200: PhotoSearchResponseSerializer,
            400: _ERROR,
            **A_BODY,
            **ANYONE,
            429: OpenApiResponse(description="Too many anonymous searches from this client; see Retry-After"),
            503: OpenApiResponse(description="The search model or index cannot be used right now"),
        },
        examples=[
            OpenApiExample(
                "A result",
                response_only=True,
                value={
                    "results": [
                        {
                            "product": {
                                "id": 7, "sku": "SOFA-GREY", "title": "Grey sofa",
                                "url": "https://shop.example.com/p/SOFA-GREY/",
                                "image_url": "https://shop.example.com/media/products/2026/11/sofa.jpg",
                                "price": "499.00", "currency": "USD",
                                "category": {"slug": "home-furniture-sofas", "name": "Sofas",
                                             "path": "Home > Furniture > Sofas"},
                            },
                            "score": 0.8444,
                            "similarity": 0.86,
                            "duplicates": [],
                        }
                    ],
                    "facets": {"categories": [
                        {"slug": "home-furniture-sofas", "name": "Sofas", "path": "Home > Furniture > Sofas",
                         "count": 8},
                    ], "colours": [{"colour": "grey", "count": 6}, {"colour": "blue", "count": 2}]},
                    "query": "mH3v0d1wq8ZtY2kR5xJc4A",
                    "model": "efficientnet-lite0-v4-int8-12ba3bcdp5-lw384-421c8d24",
                    "took_ms": 38.2,
                    "threshold": 0.5,
                    "cutoff": 0.55,
                },
            )
        ],
    )
    def post(self, request):
        query = PhotoSearchSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        try:
            search = photo_search(
                image=params.get("image"),
                kept=params.get("query"),
                category=params.get("category"),
                limit=params["limit"],
                threshold=params.get("threshold"),
                box=params.get("box"),
                refine=query.refine(),
            )
            # A refinement answers with the token it came by: keeping its vector again under a new one would store
            # 24 KB more at every chip, price or order, up to the refinements' limit of 120 a minute.
            token = params["query"].token if "query" in params else query_vector_keep(
                model=search.model, vector=search.vector, query_details=search.details)
        except InvalidBox as error:  # only decidable against the photo: a box wholly outside it
            raise ValidationError({"box": [str(error)]}) from None
        except Exception:
            logger.exception("photo search failed")
            return _unavailable()
        # The shape PhotoSearchResponseSerializer documents, built without DRF's per-field cost (search/responses.py).
        return Response(photo_search_response(search, token=token, request=request))


class SimilarProductsView(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        operation_id="products_similar",
        summary="Products that look like this one",
        description="Uses the product's stored vectors (no model call); the product itself is never listed. In the "
        "default order every nearest product is listed; a price or colour filter, or another order, keeps only real "
        "matches (match score 0.5 or more).",
        parameters=[SimilarQuerySerializer],
        responses={200: SearchResponseSerializer, 400: _ERROR, 404: _ERROR, 503: _ERROR, **ANYONE},
    )
    @method_decorator(cache_catalog_page(reads=lambda: SimilarQuerySerializer().fields, api=True))
    def get(self, request, sku):
        product = catalog_selectors.product_detail(sku=sku)
        if product is None:
            raise NotFound("No such product.")
        query = SimilarQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        started = time.perf_counter()
        try:
            category_ids = catalog_selectors.similar_products_category_ids(
                product=product, category=query.validated_data.get("category"),
                whole_catalog=query.validated_data["scope"] == "all",
            )
            matches = product_matches(
                product=product, limit=query.validated_data["limit"], category_ids=category_ids, refine=query.refine()
            )
            model = search_space_model()
        except Exception:
            logger.exception("more-like-this failed for product %s", product.pk)
            return _unavailable()
        took_ms = (time.perf_counter() - started) * 1000
        return Response(search_response(matches, model=model, took_ms=took_ms, request=request))


def _unavailable() -> Response:
    return Response(UNAVAILABLE, status=status.HTTP_503_SERVICE_UNAVAILABLE,
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
