"""Version 1 of the REST API, mounted at /api/v1/: catalog reads and staff writes, photo search, schema and docs."""

from django.urls import path, reverse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework import permissions
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from catalog.api import CategoryViewSet, ProductViewSet
from search.api import PhotoSearchView, SimilarProductsView

app_name = "api"

router = SimpleRouter()
router.register("products", ProductViewSet, basename="product")
router.register("categories", CategoryViewSet, basename="category")


class SchemaView(SpectacularAPIView):
    """The API's one schema, in English and unversioned whatever the query says. drf-spectacular read ``lang`` and
    ``version`` from it: each new ``lang`` stayed in memory for good (Django keeps every translation it is asked
    for), and a ``version`` holding a line break made the download's file name an invalid header, a 500."""

    @extend_schema(exclude=True)  # as SERVE_INCLUDE_SCHEMA says
    def get(self, request, *args, **kwargs):
        return self._get_schema_response(request)

    def _get_version_parameter(self, request):
        return None


class ApiRootView(APIView):
    """Where the API's parts are: /api/ and /api/v1/ answered a bare 404, with nothing to say where the docs are."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(exclude=True)
    def get(self, request):
        links = {"docs": "api:docs", "redoc": "api:redoc", "schema": "api:schema", "products": "api:product-list",
                 "categories": "api:category-list", "search": "api:search"}
        return Response({name: request.build_absolute_uri(reverse(url)) for name, url in links.items()})


urlpatterns = [
    path("", ApiRootView.as_view(), name="root"),
    path("search/", PhotoSearchView.as_view(), name="search"),
    path("products/<str:sku>/similar/", SimilarProductsView.as_view(), name="product-similar"),
    *router.urls,
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
]
