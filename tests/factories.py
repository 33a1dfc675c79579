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


def jpeg_upload(image: Image.Image, name="query.jpg", **save) -> SimpleUploadedFile:
    """A Pillow image as an uploaded JPEG (``save`` passes e.g. ``exif=`` to Pillow)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **save)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/jpeg")


def collage(test_images) -> Image.Image:
    """A 1000x500 photo of two things: a chair on the left half, a T-shirt on the right half."""
    chair = Image.open(test_images / "chair-shell-black.jpg").convert("RGB")
    shirt = Image.open(test_images / "tshirt-turquoise-back.jpg").convert("RGB")
    canvas = Image.new("RGB", (1000, 500), "white")
    canvas.paste(chair.resize((480, 480)), (10, 10))
    canvas.paste(shirt.resize((480, 480)), (510, 10))
    return canvas
