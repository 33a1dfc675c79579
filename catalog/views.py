# Placeholder views; the shopper pages replace these.
from django.http import HttpResponse
from django.shortcuts import get_object_or_404

from catalog.models import Category, Product


def home(request):
    return HttpResponse("Lookalike")


def text_search(request):
    return HttpResponse("search")


def category_detail(request, slug):
    return HttpResponse(get_object_or_404(Category, slug=slug).name)


def product_detail(request, sku):
    return HttpResponse(get_object_or_404(Product, sku=sku).title)
