from django.urls import path

from catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.home, name="home"),
    path("search/", views.text_search, name="text_search"),
    path("c/<slug:slug>/", views.category_detail, name="category"),
    path("p/<str:sku>/", views.product_detail, name="product"),
]
