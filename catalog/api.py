"""Catalog REST API: products and categories to read for everyone, product writes for staff.

Thin: validate the request with a serializer, call catalog.selectors or catalog.services, serialize.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from catalog import selectors, services
from catalog.models import Category, Product
from catalog.serializers import (
    CategoryFilterSerializer,
    CategorySerializer,
    ProductFilterSerializer,
    ProductImageSerializer,
    ProductImageUploadSerializer,
    ProductListItemSerializer,
    ProductSerializer,
    ProductWriteSerializer,
)
from config.api_responses import A_BODY, A_PAGE, ANYONE

# What each write asks of the user, as the admin does: staff, with the model permission.
WRITE_PERMISSIONS = {
    "create": "catalog.add_product",
    "update": "catalog.change_product",
    "partial_update": "catalog.change_product",
    "images": "catalog.add_productimage",
}


class HasPermission(permissions.BasePermission):
    def __init__(self, permission: str):
        self.permission = permission

    def has_permission(self, request, view) -> bool:
        return request.user.has_perm(self.permission)


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        """A page that is no number is a bad request (400), not a page not found (404): past the last page is."""
        asked = request.query_params.get(self.page_query_param)
        # Eighteen digits at most: int() refuses over 4,300 (a 500), and no catalog has a billion billion pages.
        if asked is not None and asked not in self.last_page_strings and not (
                asked.isdecimal() and len(asked) <= 18 and int(asked) >= 1):
            raise ValidationError({self.page_query_param: ["Ensure this is a whole number of 1 or more (or last)."]})
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request) -> int:
        """DRF falls back to the default for a page size it cannot use; a client that asked for one is told, as
        search's ``limit`` is."""
        asked = request.query_params.get(self.page_size_query_param)
        if not asked:
            return self.page_size
        try:
            size = int(asked)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [
                f"Ensure this is a whole number from 1 to {self.max_page_size}."]})
        return size


def sees_inactive(request) -> bool:
    """Whether the user may see inactive products too: staff who may view or change products, as in the admin."""
    user = request.user
    return bool(user and user.is_staff and (user.has_perm("catalog.view_product")
                                            or user.has_perm("catalog.change_product")))


def api_validation_error(error: DjangoValidationError) -> ValidationError:
    """A model or service ValidationError as DRF's ``{"field": ["message"]}``."""
    if hasattr(error, "error_dict"):
        return ValidationError(
            {("non_field_errors" if field == NON_FIELD_ERRORS else field): messages
             for field, messages in error.message_dict.items()}
        )
    return ValidationError({"non_field_errors": error.messages})


# A product's ETag is the version of its fields: when it was last saved, in microseconds since the epoch.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def product_etag(product: Product) -> str:
    return f'"{(product.updated_at - _EPOCH) // _MICROSECOND:x}"'


def _if_match_versions(request) -> list[datetime] | None:
    """The ``updated_at`` values an If-Match header names (RFC 9110: a list of strong ETags, any of which matches);
    None without one, or with ``*`` (any version). An ETag compares as a string: one this API did not give out
    ("5F3", "0x5f3", unquoted, weak) names no version, and a header of none of them refuses the write as stale."""
    header = request.headers.get("If-Match", "").strip()
    if not header or header == "*":
        return None
    versions = []
    for weak, tag in re.findall(r'(W/)?"([^"]*)"', header):
        if not weak and re.fullmatch(r"0|[1-9a-f][0-9a-f]{0,15}", tag):
            try:
                versions.append(_EPOCH + int(tag, 16) * _MICROSECOND)
            except OverflowError:
                continue
    return versions


def _product_list(*, filters: dict, staff: bool):
    return selectors.product_api_list(
        category=filters.get("category"),
        query=filters.get("q") or "",
        sort=filters.get("sort") or selectors.DEFAULT_SORT,
        min_price=filters.get("min_price"),
        max_price=filters.get("max_price"),
        currency=filters.get("currency"),
        staff=staff,
        active=filters.get("active"),
    )


_INVALID = OpenApiResponse(description='Invalid fields: `{"field": ["message"]}`')
_NOT_FOUND = OpenApiResponse(
    description="No such product (a hidden one too, but for staff who may view or change products): "
                '`{"detail": "No such product."}`')
_REFUSED = {
    401: OpenApiResponse(description="Not signed in (a token or the admin's session)"),
    403: OpenApiResponse(description="Not staff, or without the model permission the write needs"),
}
_IF_MATCH = OpenApiParameter(
    "If-Match", location=OpenApiParameter.HEADER, required=False,
    description="The ETag of the product as read: the change is refused (412) if another writer has changed it since.",
)
_STALE = {412: OpenApiResponse(description="The product changed since the version named in If-Match")}



@extend_schema_view(
    list=extend_schema(
        summary="List products",
        description="Active products (staff who may view or change products also see inactive ones), filterable; "
        "paginated.",
        parameters=[ProductFilterSerializer],
        responses={200: ProductListItemSerializer(many=True), **A_PAGE, **ANYONE},
    ),
    retrieve=extend_schema(summary="One product with its images",
                           responses={200: ProductSerializer, 404: _NOT_FOUND, **ANYONE}),
    create=extend_schema(
        summary="Create a product (staff)",
        request=ProductWriteSerializer,
        responses={201: ProductSerializer, 400: _INVALID, **_REFUSED, **A_BODY},
    ),
    update=extend_schema(summary="Set a product's fields (staff)", request=ProductWriteSerializer,
                         description="The required fields are sent; an optional one left out keeps its value.",
                         parameters=[_IF_MATCH],
                         responses={200: ProductSerializer, 400: _INVALID, **_REFUSED, 404: _NOT_FOUND, **_STALE,
                                    **A_BODY}),
    partial_update=extend_schema(summary="Change some of a product's fields (staff)", request=ProductWriteSerializer,
                                 parameters=[_IF_MATCH],
                                 responses={200: ProductSerializer, 400: _INVALID, **_REFUSED, 404: _NOT_FOUND,
                                            **_STALE, **A_BODY}),
)
class ProductViewSet(viewsets.GenericViewSet):
    lookup_field = "sku"
    lookup_value_regex = "[^/]+"
    pagination_class = Pagination
    serializer_class = ProductSerializer
    queryset = Product.objects.none()  # reads go through catalog.selectors; this only names the model for the schema

    def get_permissions(self):
        action = self._described_action()
        if action in WRITE_PERMISSIONS:
            return [permissions.IsAdminUser(), HasPermission(WRITE_PERMISSIONS[action])]
        return [permissions.AllowAny()]

    def _described_action(self) -> str | None:
        """The view's action; for OPTIONS, which DRF asks again as a POST and a PUT to describe what the user may
        send, the action that method runs on this route (create, update, images)."""
        if self.action == "metadata":
            return self.action_map.get(self.request.method.lower())
        return self.action

    def get_serializer_class(self):
        # Only OPTIONS asks (the views pick their serializers): what a POST or PUT takes.
        action = self._described_action()
        if action == "images":
            return ProductImageUploadSerializer
        return ProductWriteSerializer if action in WRITE_PERMISSIONS else ProductSerializer

    def get_object(self) -> Product:
        # Only OPTIONS asks, to describe a PUT: DRF's own lookup read the empty queryset and left the PUT out.
        return self._product(self.kwargs[self.lookup_field])

    def _product(self, sku: str, *, inactive_too: bool = False) -> Product:
        if inactive_too or sees_inactive(self.request):
            product = selectors.product_detail_for_staff(sku=sku)
        else:
            product = selectors.product_detail(sku=sku)
        if product is None:
            raise NotFound("No such product.")
        return product

    def list(self, request):
        filters = ProductFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(_product_list(filters=filters.validated_data, staff=sees_inactive(request)))
        items = ProductListItemSerializer(page, many=True, context={"request": request})
        return self.get_paginated_response(items.data)

    def retrieve(self, request, sku):
        return self._product_response(self._product(sku))

    def _product_response(self, product: Product, **kwargs) -> Response:
        data = ProductSerializer(product, context={"request": self.request}).data
        return Response(data, headers={"ETag": product_etag(product), **kwargs.pop("headers", {})}, **kwargs)

    def create(self, request):
        serializer = ProductWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            product = services.product_create(**serializer.validated_data)
        except DjangoValidationError as error:
            raise api_validation_error(error) from None
        # As stored, with its images; the product created, should another writer have renamed or deleted it since
        product = selectors.product_detail_for_staff(sku=product.sku) or product
        location = request.build_absolute_uri(reverse("api:product-detail", kwargs={"sku": product.sku}))
        return self._product_response(product, status=status.HTTP_201_CREATED, headers={"Location": location})

    def update(self, request, sku, partial=False):
        product = self._product(sku)
        serializer = ProductWriteSerializer(product, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        try:
            services.product_update(product=product, unchanged_since=_if_match_versions(request),
                                    **serializer.validated_data)
        except services.ProductChanged:
            return Response({"detail": "The product has changed since the version named in If-Match: read it again "
                                       "(its ETag) and send your change on that."},
                            status=status.HTTP_412_PRECONDITION_FAILED)
        except DjangoValidationError as error:
            raise api_validation_error(error) from None
        except Product.DoesNotExist:  # deleted since it was read above
            raise NotFound("No such product.") from None
        return self._product_response(self._product(product.sku))

    def partial_update(self, request, sku):
        return self.update(request, sku, partial=True)

    @extend_schema(
        summary="Add an image to a product (staff)",
        description="The photo is checked by decoding it and stored; its embedding is queued for the workers. A photo "
        "the product has already (the same bytes: a retried upload) is not stored again: 200 with that photo.",
        request={"multipart/form-data": ProductImageUploadSerializer},
        responses={201: ProductImageSerializer, 200: ProductImageSerializer,
                   400: OpenApiResponse(description="Not an acceptable image"),
                   **_REFUSED, 404: _NOT_FOUND, **A_BODY},
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def images(self, request, sku):
        # Staff who may add photos add them to hidden products too, as in the admin (the permission is checked)
        product = self._product(sku, inactive_too=True)
        serializer = ProductImageUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data
        try:
            image, created = services.product_image_add_once(product=product, file=upload["image"],
                                                             position=upload.get("position"))
        except DjangoValidationError as error:
            raise ValidationError({"image": error.messages}) from None
        except Product.DoesNotExist:  # deleted while its photo was checked
            raise NotFound("No such product.") from None
        data = ProductImageSerializer(image, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema_view(
    list=extend_schema(summary="List categories", parameters=[CategoryFilterSerializer],
                       responses={200: CategorySerializer(many=True), **A_PAGE, **ANYONE}),
    retrieve=extend_schema(summary="One category", responses={
        200: CategorySerializer,
        404: OpenApiResponse(description='No such category: `{"detail": "Unknown category \'slug\'."}`'), **ANYONE}),
)
class CategoryViewSet(viewsets.GenericViewSet):
    lookup_field = "slug"
    serializer_class = CategorySerializer
    pagination_class = Pagination
    permission_classes = [permissions.AllowAny]
    queryset = Category.objects.none()  # reads go through catalog.selectors; this only names the model for the schema

    def list(self, request):
        filters = CategoryFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        categories = selectors.category_list(
            parent=filters.validated_data.get("parent"), root=filters.validated_data.get("root")
        )
        page = self.paginate_queryset(categories)
        return self.get_paginated_response(CategorySerializer(page, many=True, context={"request": request}).data)

    def retrieve(self, request, slug):
        try:
            category = selectors.category_by_slug(slug=slug)
        except selectors.UnknownCategory as error:
            raise NotFound(str(error)) from None
        return Response(CategorySerializer(category, context={"request": request}).data)
