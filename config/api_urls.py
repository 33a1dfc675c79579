"""Version 1 of the REST API, mounted at /api/v1/: catalog reads and staff writes, photo search, schema and docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from catalog.api import CategoryViewSet, ProductViewSet
from search.api import PhotoSearchView, SimilarProductsView

app_name = "api"

router = SimpleRouter()
router.register("products", ProductViewSet, basename="product")
router.register("categories", CategoryViewSet, basename="category")

urlpatterns = [
    path("search/", PhotoSearchView.as_view(), name="search"),
    path("products/<str:sku>/similar/", SimilarProductsView.as_view(), name="product-similar"),
    *router.urls,
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
]
