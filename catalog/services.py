"""Writes to the catalog. Views, admin, commands and the API call these; they never save models directly."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils.text import slugify

from catalog.images import ImageInfo, image_file_name, inspect_image
from catalog.models import Category, Product, ProductImage
from catalog.thumbnails import thumbnail_make

PATH_SEPARATOR = ">"


def category_get_or_create_path(*, path: str) -> Category:
    """Return the leaf of a path like ``Home > Furniture > Sofas``, creating missing levels."""
    names = [part.strip() for part in path.split(PATH_SEPARATOR) if part.strip()]
    if not names:
        raise ValueError("a category path needs at least one name")
    parent = None
    for depth, name in enumerate(names):
        category = Category.objects.filter(parent=parent, name=name).first()
        if category is None:
            slug_base = slugify("-".join(names[: depth + 1]))[:120] or "category"
            category = Category.objects.create(name=name, parent=parent, slug=_unique_slug(slug_base))
        parent = category
    return parent


def _unique_slug(base: str) -> str:
    slug, n = base, 2
    while Category.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def product_create(
    *,
    sku: str,
    title: str,
    category: Category,
    price: Decimal | str,
    currency: str = "USD",
    description: str = "",
    active: bool = True,
) -> Product:
    product = Product(
        sku=sku, title=title, category=category, price=Decimal(price), currency=currency,
        description=description, active=active,
    )
    product.full_clean()
    product.save()
    return product


def product_update(*, product: Product, **fields) -> Product:
    for name, value in fields.items():
        setattr(product, name, value)
    product.full_clean()
    product.save()
    return product


def product_upsert(*, sku: str, lock: bool = False, **fields) -> tuple[Product, str]:
    """Create the product with this SKU, or update the fields that differ (imports are idempotent by SKU).

    Returns the product and "created", "updated" or "unchanged". ``lock`` holds the row until the transaction
    ends, so two imports of one SKU cannot both add the same photo.
    """
    products = Product.objects.select_related("category")
    if lock:
        products = products.select_for_update(of=("self",))
    product = products.filter(sku=sku).first()
    if product is None:
        return product_create(sku=sku, **fields), "created"
    changed = {name: value for name, value in fields.items() if getattr(product, name) != value}
    if changed:
        product_update(product=product, **changed)
    return product, "updated" if changed else "unchanged"


@dataclass(frozen=True)
class PreparedImage:
    """An image checked and thumbnailed, ready to store: the part of adding a photo that needs no database, so
    the importer can do it for the next rows, in threads, while the current row is written."""

    file: File
    info: ImageInfo
    thumbnail: ContentFile


def image_prepare(file: File) -> PreparedImage:
    """Validate ``file`` (ValidationError with a message users can read) and make its thumbnail, decoding it once."""
    info = inspect_image(file, keep_image=True)  # at the thumbnail's size: see inspect_image
    thumbnail = thumbnail_make(file, name=file.name, image=info.image)
    return PreparedImage(file=file, info=replace(info, image=None), thumbnail=thumbnail)


@transaction.atomic
def product_image_add(
    *, product: Product, file: File | None = None, position: int | None = None, prepared: PreparedImage | None = None
) -> ProductImage:
    """Validate and store an image (``file``, or one ``image_prepare`` made); its embedding is queued once the
    transaction commits."""
    from search.services import image_embedding_dispatch

    prepared = prepared or image_prepare(file)
    file, info = prepared.file, prepared.info
    if position is None:
        position = product.images.count()
    image = ProductImage(
        product=product, position=position, width=info.width, height=info.height, content_hash=info.sha256
    )
    # Stored, and later served, under the extension of what it decodes as, never the name it came with.
    image.file.save(image_file_name(file.name, info.format), file, save=False)
    image.thumbnail.save(prepared.thumbnail.name, prepared.thumbnail, save=False)
    image.save()
    image_embedding_dispatch(image_ids=[image.pk])
    return image
