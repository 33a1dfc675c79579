"""factory_boy factories and real image files for tests."""

from __future__ import annotations

import io
from decimal import Decimal

import factory
import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog.models import Category, Product, ProductImage


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


def clustered_catalog(*, products: int, categories: int, clusters: int, seed: int):
    """``products`` products spread round-robin over ``categories`` new categories, one image each, whose vectors lie
    near one of ``clusters`` random centres (as real embeddings cluster by look), stored in the searched space.

    Returns (model, categories, products, vectors), ``vectors`` in the order of ``products``.
    """
    from search.models import ImageEmbedding
    from search.selectors import search_space_model

    model = search_space_model()
    rng = np.random.default_rng(seed)
    dims = ImageEmbedding._meta.get_field("vector").dimensions
    centres = rng.normal(size=(clusters, dims))
    created_categories = [CategoryFactory() for _ in range(categories)]
    created = [ProductFactory(category=created_categories[i % categories]) for i in range(products)]
    images = ProductImage.objects.bulk_create(
        [ProductImage(product=p, file=f"x/{p.pk}.jpg", width=1, height=1, content_hash="a" * 64) for p in created]
    )
    vectors = centres[rng.integers(0, clusters, size=products)] + rng.normal(scale=0.3, size=(products, dims))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ImageEmbedding.objects.bulk_create(
        [ImageEmbedding(image=i, product_id=i.product_id, model=model, vector=v) for i, v in zip(images, vectors)]
    )
    return model, created_categories, created, vectors


def image_bytes(*, size=(320, 240), color=(200, 40, 40), fmt="JPEG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def uploaded_image(name="photo.jpg", **kwargs) -> SimpleUploadedFile:
    fmt = kwargs.pop("fmt", "PNG" if name.endswith(".png") else "JPEG")
    return SimpleUploadedFile(name, image_bytes(fmt=fmt, **kwargs), content_type=f"image/{fmt.lower()}")


def copied(upload: SimpleUploadedFile, copy: int = 1) -> SimpleUploadedFile:
    """The same JPEG picture in other bytes, as a photo saved again is (a comment after its start marker): a product
    takes a picture once, however its file was saved."""
    data = upload.read()
    upload.seek(0)
    assert data[:2] == b"\xff\xd8", "a JPEG"
    comment = f"copy {copy}".encode()
    marker = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return SimpleUploadedFile(upload.name, data[:2] + marker + data[2:], content_type=upload.content_type)


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
