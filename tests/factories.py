"""factory_boy factories and real image files for tests."""

from __future__ import annotations

import io
from decimal import Decimal

import factory
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog.models import Category, Product


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category

    name = factory.Sequence(lambda n: f"Category {n}")
    slug = factory.Sequence(lambda n: f"category-{n}")
    parent = None


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    title = factory.Sequence(lambda n: f"Product {n}")
    description = "A product used in tests."
    price = Decimal("19.99")
    currency = "USD"
    category = factory.SubFactory(CategoryFactory)


def image_bytes(*, size=(320, 240), color=(200, 40, 40), fmt="JPEG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def uploaded_image(name="photo.jpg", **kwargs) -> SimpleUploadedFile:
    fmt = kwargs.pop("fmt", "PNG" if name.endswith(".png") else "JPEG")
    return SimpleUploadedFile(name, image_bytes(fmt=fmt, **kwargs), content_type=f"image/{fmt.lower()}")


def uploaded_file(path) -> SimpleUploadedFile:
    """A real photo from tests/images as an upload."""
    from pathlib import Path

    path = Path(path)
    return SimpleUploadedFile(path.name, path.read_bytes())
