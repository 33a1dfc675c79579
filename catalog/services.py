"""Writes to the catalog. Views, admin, commands and the API call these; they never save models directly."""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import F, ProtectedError, Q, QuerySet
from django.db.models.functions import Least
from django.utils import timezone
from django.utils.text import slugify

from catalog.images import ImageInfo, image_file_name, inspect_image
from catalog.models import (
    CATEGORY_DEPTH_MAX,
    CATEGORY_PATH_SEPARATOR,
    DEFAULT_CURRENCY,
    POSITION_MAX,
    Category,
    Product,
    ProductImage,
    category_name_normalized,
    sku_normalized,
)
from catalog.page_cache import catalog_changed
from catalog.selectors import (
    category_parents,
    lineage,
    photo_files_held,
    photo_positions_last,
    product_photo_hashes,
)
from catalog.signals import photo_files_changed, photos_added
from catalog.thumbnails import thumbnail_make

logger = logging.getLogger(__name__)

# The first key of the advisory lock that names categories under one parent in turn (_sibling_names_lock).
SIBLING_NAMES_LOCK = 7_362_114
# The advisory lock every change of the tree takes (migration 0005's trigger, at a category's UPDATE): taken first by
# the services that save or delete categories, before any row, they go one at a time, whatever rows they then lock.
CATEGORY_TREE_LOCK = 7_362_113
# Tries of a get-or-create that lost a race (each loss means another transaction committed what it wanted).
CREATE_ATTEMPTS = 5


def category_get_or_create_path(*, path: str) -> Category:
    """Return the leaf of a path like ``Home > Furniture > Sofas``, creating missing levels.

    Safe while another transaction creates the same path (two imports at once): see ``_category_get_or_create``.
    """
    names = [name for name in category_path_names(path) if name]
    if not names:
        raise ValueError("a category path needs at least one name")
    if len(names) > CATEGORY_DEPTH_MAX:
        raise ValueError(f"a category path has at most {CATEGORY_DEPTH_MAX} levels")
    parent = None
    for depth, name in enumerate(names):
        joined = "-".join(names[: depth + 1])
        # Names of other scripts (Cyrillic, CJK) slugify to nothing: a short digest keeps their slugs apart.
        slug_base = slugify(joined)[:120] or f"category-{hashlib.sha256(joined.encode()).hexdigest()[:8]}"
        parent = _category_get_or_create(name=name, parent=parent, slug_base=slug_base)
    return parent


def category_path_names(path: str) -> list[str]:
    """The names of a path like ``Home > Furniture > Sofas``, each as it is stored (an empty level is an empty
    name)."""
    return [category_name_normalized(part) for part in path.split(CATEGORY_PATH_SEPARATOR)]


def _category_get_or_create(*, name: str, parent: Category | None, slug_base: str) -> Category:
    """The category ``name`` under ``parent``, created with a free slug if there is none.

    Two transactions may both find none: the one that creates takes its turn under the parent first
    (``_sibling_names_lock``), and the other then finds it. A slug taken meanwhile violates the slug's unique
    constraint; in a savepoint that costs only the attempt, and the next free slug is tried.
    """
    # "Sofas" and "sofas" are one category to a shopper: an import in another case finds the existing one.
    siblings = Category.objects.filter(parent=parent, name__iexact=name).order_by("pk")
    for attempt in range(CREATE_ATTEMPTS):
        if (category := siblings.first()) is not None:
            return category
        try:
            with transaction.atomic():
                _sibling_names_lock(parent.pk if parent else None)
                _categories_hold([parent.pk if parent else None])
                # Looked for again in turn: another transaction may have created it, in another case, meanwhile.
                return siblings.first() or Category.objects.create(name=name, parent=parent,
                                                                   slug=_unique_slug(slug_base))
        except IntegrityError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise  # not a race that looking again resolves


def _category_tree_lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CATEGORY_TREE_LOCK])


def _sibling_names_lock(parent_id: int | None) -> None:
    """Take, until the transaction ends, the turn to name a category under this parent. Sibling names are unique in
    any case, which the database's constraint, in one case, cannot hold: two imports of "Обувь" and "ОБУВЬ" (whose
    slugs differ) both found none and both created one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SIBLING_NAMES_LOCK, (parent_id or 0) % 2**31])


@transaction.atomic
def category_save(*, category: Category, changed: Collection[str] | None = None) -> Category:
    """Create or change a category as the admin edits it: checked by ``Category.clean`` first (the name stored as
    an import spells it, no path separator in it, no sibling of the same name, no cycle). ``changed``: the fields the
    caller changed, the only ones written; the others stay as stored now (``category`` gets them): a page that sent
    back what it showed undid another admin's rename saved meanwhile."""
    _category_tree_lock()
    if changed is not None and category.pk is not None:
        stored = Category.objects.filter(pk=category.pk).first()
        if stored is None:
            raise ValidationError("This category was deleted meanwhile.", code="deleted")
        for name in ("name", "slug", "parent"):
            if name not in changed:
                setattr(category, name, getattr(stored, name))
    _sibling_names_lock(category.parent_id)
    # The category and its parent in one statement, in pk order as categories_delete locks them: the parent held
    # first and the category's row then written met a delete of both halfway.
    try:
        _categories_hold([category.parent_id, category.pk])
    except CategoryDeleted as gone:
        if category.pk in gone.category_ids:
            raise ValidationError("This category was deleted meanwhile.", code="deleted") from None
        raise CategoryDeleted(gone.category_ids, field="parent") from None
    category.full_clean()
    if category.pk is not None and Category.objects.filter(
            pk=category.pk, name=category.name, slug=category.slug, parent_id=category.parent_id).exists():
        return category  # unchanged: a save would retire every cached page for nothing
    try:
        with transaction.atomic():
            category.save()
    except IntegrityError:  # another admin's save committed between the check and this one: say which rule it broke
        category.full_clean()
        raise
    return category


@transaction.atomic
def categories_delete(*, categories: Iterable[Category]) -> None:
    """Delete categories that no product or subcategory uses; ValidationError naming one that is still used.

    Locked first, in pk order: a product or subcategory being put in one meanwhile holds it (``_categories_hold``),
    so this waits for that write and then sees it, where it passed the check, deleted, and failed the other write
    at its commit."""
    ids = [category.pk for category in categories]
    _category_tree_lock()
    list(Category.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk"))
    parents = category_parents()
    try:
        # The deepest first: a subcategory deleted with its parent kept the parent (a protected reference) while both
        # were still there.
        for pk in sorted(ids, key=lambda pk: len(lineage(parents, pk)), reverse=True):
            Category.objects.filter(pk=pk).delete()
    except ProtectedError:
        used = Category.objects.filter(pk__in=ids).filter(Q(products__isnull=False) | Q(children__isnull=False))
        names = ", ".join(sorted(set(used.values_list("name", flat=True))))
        raise ValidationError(f"{names}: still has products or subcategories; move or delete them first.",
                              code="category_used") from None


class CategoryDeleted(ValidationError):
    """A category a write puts something in was deleted meanwhile."""

    def __init__(self, category_ids: set[int], *, field: str = "category"):
        super().__init__({field: ["This category was deleted meanwhile. Choose another one."]})
        self.category_ids = category_ids


def _categories_hold(category_ids: Iterable[int | None]) -> None:
    """Keep these categories from being deleted until the transaction ends (a product or subcategory is being put
    in them: ``categories_delete`` waits for it). FOR KEY SHARE: their own edits go on. Raises CategoryDeleted if
    one is gone. A product's save takes it after the product's own lock, the reverse of the loaders' order, which
    is safe: categories_delete never waits for a product's row (it reads them; foreign keys are checked at commit)."""
    ids = sorted({pk for pk in category_ids if pk is not None})
    if not ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {Category._meta.db_table} WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE", [ids])
        if missing := set(ids) - {pk for (pk,) in cursor.fetchall()}:
            raise CategoryDeleted(missing)


def _unique_slug(base: str) -> str:
    """``base``, or the first of base-2, base-3, ... that no category has: found in one query."""
    taken = set(Category.objects.filter(slug__regex=rf"^{base}(-[0-9]+)?$").values_list("slug", flat=True))
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


def product_create(
    *,
    sku: str,
    title: str,
    category: Category,
    price: Decimal | str,
    currency: str = DEFAULT_CURRENCY,
    description: str = "",
    active: bool = True,
) -> Product:
    product = Product(
        sku=sku, title=title, category=category, price=Decimal(price), currency=currency,
        description=description, active=active,
    )
    product.full_clean()
    _product_saved(product)
    return product


class ProductChanged(Exception):
    """The product was changed by another writer since the version the caller's change was based on."""


def product_update(*, product: Product, unchanged_since: Collection[datetime] | None = None, **fields) -> Product:
    """Change these fields of ``product``, and only these: its row is locked and read afresh, so a field another
    writer changed meanwhile (an import's new price) is not written back as it was when ``product`` was read.
    Fields given their stored values are not written: a save retires every cached page (a client that sends the
    whole product again, unchanged, would keep the shop's cache cold). With ``unchanged_since`` (the ``updated_at``
    values the caller read, any of which will do), raises ProductChanged if the product was saved since: the caller's
    whole view of it is stale."""
    with transaction.atomic():
        current = Product.objects.select_for_update().get(pk=product.pk)
        if unchanged_since is not None and current.updated_at not in unchanged_since:
            raise ProductChanged(product.sku)
        fields = {name: value for name, value in fields.items() if getattr(current, name) != value}
        if not fields:
            return current
        for name, value in fields.items():
            setattr(current, name, value)
        current.full_clean()
        _product_saved(current, fields=[*fields, "updated_at"])
    for name in (*fields, "updated_at"):
        setattr(product, name, getattr(current, name))
    return current


def _product_saved(product: Product, *, fields: list[str] | None = None) -> None:
    """Save, a SKU taken since full_clean checked it (another request, an import) being a field error too, and a
    category deleted meanwhile too (CategoryDeleted)."""
    try:
        with transaction.atomic():
            if fields is None or "category" in fields:
                _categories_hold([product.category_id])
            product.save(update_fields=fields)
    except IntegrityError:
        if Product.objects.filter(sku=product.sku).exclude(pk=product.pk).exists():
            raise ValidationError({"sku": ["Product with this SKU already exists."]}) from None
        raise


@dataclass
class LoadSummary:
    """What a load of products with photos did: the CSV import, the demo and the Fashion-MNIST loaders."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    images_added: int = 0
    categories: set[int] = field(default_factory=set)  # the leaf categories the products went to
    failed: list = field(default_factory=list)  # rows that were not loaded (the importer's FailedRow)
    ignored_columns: tuple[str, ...] = ()  # CSV columns the importer does not know
    last_line: int = 0  # the CSV line of the last row counted
    unread_from: int = 0  # the CSV line the importer could not read past (0: it read to the end)

    def count(self, outcome: str, images_added: int = 0) -> None:
        """Count one product's ``outcome`` ("created", "updated" or "unchanged") and the photos it gained."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.images_added += images_added

    @property
    def outcomes(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"

    @property
    def embedding_note(self) -> str:
        """What a command says after a load: new photos are searchable only once the worker has embedded them."""
        if not self.images_added:
            return ""
        return "New images are embedded by the Celery worker; search finds them once it has run."


class PhotoSource(Protocol):
    """A photo to give a product, read lazily: loaders know their files (paths, bytes read ahead in threads)."""

    name: str  # as the source wrote it, for messages

    def sha256(self) -> str: ...

    def prepare(self) -> PreparedImage: ...


class PhotoRefused(Exception):
    """A photo of a product with photos cannot be stored; ``error`` (a ValidationError) says why."""

    def __init__(self, photo: PhotoSource, error: ValidationError):
        super().__init__(f"image {photo.name!r}: {' '.join(error.messages)}")
        self.photo, self.error = photo, error


@dataclass(frozen=True)
class ProductWithPhotos:
    """A product as a loader describes it: its SKU, the fields it should have, and photos it should have."""

    sku: str
    fields: dict  # title, description, price, currency, category
    photos: Sequence[PhotoSource] = ()

    def __post_init__(self):
        # As Product.clean stores it: the products are looked up, and the batch keyed, by the SKU as stored.
        object.__setattr__(self, "sku", sku_normalized(self.sku))


@dataclass(frozen=True)
class Upserted:
    product: Product
    outcome: str  # "created", "updated" (a field changed, or a photo was added) or "unchanged"
    images_added: int


@transaction.atomic
def products_with_photos_upsert(*, items: Sequence[ProductWithPhotos], stored: list[str]) -> list[Upserted]:
    """Create or update products by SKU and add the photos each lacks (compared by content hash): the one write
    path of the CSV import (up to importer.WRITE_BATCH_ROWS rows at a time), the photo demo (a product at a time)
    and Fashion-MNIST (500 at a time). Photos are never removed, so ones an admin added survive; loading again
    changes nothing.

    Set-based, so a batch costs a few queries rather than a few per product. The products' rows stay locked
    until the caller's transaction ends, so two loads of one SKU cannot both add a photo; one that another
    transaction creates meanwhile is updated instead (see ``_products_lock_or_create``). The photos are
    announced together (``photos_added``: one embedding task per 32). Appends the names of the files it stores
    to ``stored``, which callers take from ``atomic_with_files``, their transaction. Raises
    PhotoRefused, ValidationError.
    """
    _categories_hold(item.fields["category"].pk for item in items)
    products, created = _products_lock_or_create(items)
    changed = _products_update(items, products, created)
    have = product_photo_hashes(skus=[item.sku for item in items if item.sku not in created])
    last = photo_positions_last(product_ids=[products[sku].pk for sku in have])

    results, images = [], []
    for item in items:
        product = products[item.sku]
        known = set(have.get(item.sku, []))
        position = last.get(product.pk, -1) + 1  # after the last photo, wherever an admin put it
        added = 0
        for photo in item.photos:
            try:
                digest = photo.sha256()
                if digest in known:  # already on the product (a re-load) or twice in this item
                    continue
                prepared = photo.prepare()
            except ValidationError as error:
                raise PhotoRefused(photo, error) from None
            image = ProductImage(product=product, position=min(position + added, POSITION_MAX))
            _image_file_store(image, prepared, stored)
            images.append(image)
            known.add(digest)
            added += 1
        outcome = "created" if item.sku in created else "updated" if added or item.sku in changed else "unchanged"
        results.append(Upserted(product=product, outcome=outcome, images_added=added))
    ProductImage.objects.bulk_create(images)
    if created or changed or images:
        catalog_changed()  # bulk writes send no signals
    if images:
        photos_added.send(sender=ProductImage, image_ids=[image.pk for image in images], on_not_queued=None)
    return results


def _products_lock_or_create(items: Sequence[ProductWithPhotos]) -> tuple[dict[str, Product], set[str]]:
    """The items' products by SKU, locked (in pk order, as every loader locks them), the missing ones inserted;
    and the SKUs inserted.

    Another transaction may insert one of the missing SKUs first: our insert then waits for it to commit and
    violates the SKU's unique constraint. In a savepoint that costs only the attempt: the products are locked
    again, now including that one, which is updated instead of created.
    """
    wanted = {item.sku: item.fields for item in items}
    if len(wanted) != len(items):
        raise ValueError("a batch names a SKU twice")
    for attempt in range(CREATE_ATTEMPTS):
        products = {
            product.sku: product
            for product in Product.objects.select_related("category").select_for_update(of=("self",))
            .filter(sku__in=wanted).order_by("pk")
        }
        missing = [Product(sku=sku, **fields) for sku, fields in wanted.items() if sku not in products]
        for product in missing:
            _product_fields_check(product)
        try:
            with transaction.atomic():
                Product.objects.bulk_create(missing)  # PostgreSQL returns the new primary keys
        except IntegrityError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise  # not a race that looking again resolves
            continue
        products.update((product.sku, product) for product in missing)
        return products, {product.sku for product in missing}
    raise AssertionError("unreachable")


def _product_fields_check(product: Product) -> None:
    """Field checks with messages people can read. Uniqueness and constraints are the database's to keep, and the
    category was read or created in the caller's transaction: checking that it exists would cost a query per product
    (0.3 ms of the import's CPU per row)."""
    product.full_clean(exclude=["category"], validate_unique=False, validate_constraints=False)


def _products_update(
    items: Sequence[ProductWithPhotos], products: dict[str, Product], created: set[str]
) -> set[str]:
    """Give the existing products the fields that differ; returns their SKUs."""
    changed, names = [], set()
    for item in items:
        if item.sku in created:
            continue
        product = products[item.sku]
        differ = [name for name, value in item.fields.items() if getattr(product, name) != value]
        if differ:
            for name in differ:
                setattr(product, name, item.fields[name])
            _product_fields_check(product)
            changed.append(product)
            names.update(differ)
    if changed:
        now = timezone.now()
        for product in changed:
            product.updated_at = now
        Product.objects.bulk_update(changed, [*sorted(names), "updated_at"])
    return {product.sku for product in changed}


@dataclass(frozen=True)
class PreparedImage:
    """An image checked and thumbnailed, ready to store: the part of adding a photo that needs no database, so
    the importer can do it for the next rows, in threads, while the current row is written."""

    file: File
    info: ImageInfo
    thumbnail: ContentFile | None  # None: the photo serves as its own (Fashion-MNIST's 224 px PNGs)


def image_prepare(file: File) -> PreparedImage:
    """Validate ``file`` (ValidationError with a message users can read) and make its thumbnail, decoding it once."""
    info = inspect_image(file, keep_image=True)  # at the thumbnail's size: see inspect_image
    # Named after the photo as stored, whose stem is cut to fit a file system's names.
    thumbnail = thumbnail_make(file, name=image_file_name(file.name, info.format), image=info.image)
    return PreparedImage(file=file, info=replace(info, image=None), thumbnail=thumbnail)


def product_image_add(
    *,
    product: Product,
    file: File | None = None,
    position: int | None = None,
    prepared: PreparedImage | None = None,
    on_not_queued: Callable[[int], None] | None = None,
) -> ProductImage:
    """Validate and store an image (``file``, or one ``image_prepare`` made) with its thumbnail; apps that derive
    data from photos hear of it (``photos_added``: search queues its embedding once the transaction commits)."""
    (image,) = product_images_add(
        product=product, prepared=[prepared or image_prepare(file)],
        positions=None if position is None else [position], on_not_queued=on_not_queued,
    )
    return image


def product_image_add_once(*, product: Product, file: File, position: int | None = None) -> tuple[ProductImage, bool]:
    """``product_image_add``, unless the product has a photo with the same bytes already: that one is returned, as it
    is (``position`` aside), with False. A client that sends its upload again (a retry after a timeout) stored a second
    copy each time."""
    prepared = image_prepare(file)  # seconds for a large photo: before the transaction, as product_image_add does
    with transaction.atomic():
        _product_lock(product)  # a copy sent twice at once: the second waits for the first, then finds it
        if copy := product.images.filter(content_hash=prepared.info.sha256).order_by("pk").first():
            return copy, False
        return product_image_add(product=product, prepared=prepared, position=position), True


@transaction.atomic
def product_images_add(
    *,
    product: Product,
    prepared: Sequence[PreparedImage],
    positions: Sequence[int | None] | None = None,
    on_not_queued: Callable[[int], None] | None = None,
) -> list[ProductImage]:
    """Store several prepared images on one product, announced together (one embedding task for all).

    A photo without a position (``positions`` None, or None in it) goes after the product's current photos, in
    turn (at the highest position, after the photos already there: the gallery orders by position, then by
    upload). The files stored are deleted again if storing the rows fails. ``on_not_queued``: see
    catalog/signals.py.
    """
    # The product's row locked first: two uploads at once both read the same last position, and went there both.
    _product_lock(product)
    if positions and any(position is not None for position in positions):
        _photos_where_lock(Q(product=product))  # those the positions may move down, at once (``_position_take``)
    _copies_refuse(product.pk, [item.info.sha256 for item in prepared])
    last = photo_positions_last(product_ids=[product.pk]).get(product.pk, -1)
    following = (min(position, POSITION_MAX) for position in itertools.count(last + 1))
    images = []
    with atomic_with_files() as stored:
        for item, position in zip(prepared, positions or [None] * len(prepared), strict=True):
            if position is not None:
                _position_take(product.pk, position)
            image = ProductImage(product=product, position=next(following) if position is None else position)
            _image_file_store(image, item, stored)
            image.save()
            images.append(image)
    photos_added.send(sender=ProductImage, image_ids=[image.pk for image in images], on_not_queued=on_not_queued)
    return images


def _position_take(product_id: int, position: int, *, besides: int | None = None) -> None:
    """Make room at ``position`` in the product's gallery for a photo put there: where a photo holds it, that one and
    those after it move one down. The gallery orders a tie by upload, so a photo added at 0 stayed behind the cover it
    was meant to replace, the API answering "position": 0 for both."""
    photos = ProductImage.objects.filter(product_id=product_id).exclude(pk=besides)
    if photos.filter(position=position).exists():  # the caller locked them all (the order every writer takes)
        photos.filter(position__gte=position).update(position=Least(F("position") + 1, POSITION_MAX))


# Said when a photo would join a product that has the same picture (the same bytes) already: its gallery showed it
# twice. The import and the API's upload skip such a photo instead (the same photo loaded again is no error there).
PHOTO_ON_PRODUCT = "this photo is on the product already"


def _copies_refuse(product_id: int, digests: list[str], *, besides: int | None = None) -> None:
    """Refuse photos (by content hash) that repeat each other or one of the product's, photo ``besides`` aside."""
    on_product = ProductImage.objects.filter(product_id=product_id, content_hash__in=digests).exclude(pk=besides)
    if len(set(digests)) < len(digests) or on_product.exists():
        raise ValidationError(PHOTO_ON_PRODUCT, code="photo_on_product")


def _product_lock(product: Product) -> None:
    """Lock the product's row, which photos are about to join. Raises Product.DoesNotExist if it was deleted
    meanwhile: the photo rows would be refused only at the commit, after their files were stored."""
    if not _products_lock([product.pk]):
        raise Product.DoesNotExist(f"product {product.pk} was deleted")


def _products_lock(product_ids: list[int]) -> list[int]:
    """Lock these products' rows, in pk order (as a worker storing vectors share-locks them), before any of their
    photos': the order every writer takes. Returns the ids of those that exist."""
    return list(Product.objects.select_for_update().filter(pk__in=product_ids).order_by("pk")
                .values_list("pk", flat=True))


# Said when a photo a page showed on one product was moved to another before the page's change was saved: the
# change would have deleted, or replaced the picture of, another product's photo.
PHOTO_MOVED = ("a photo on this page was moved to another product meanwhile: reload the page to see the product's "
               "photos as they are now")


@transaction.atomic
def product_image_update(
    *,
    image: ProductImage,
    file: File | None = None,
    prepared: PreparedImage | None = None,
    product: Product | None = None,
    position: int | None = None,
    of_product: Product | None = None,
    on_not_queued: Callable[[int], None] | None = None,
) -> ProductImage:
    """Replace a photo's file (a new thumbnail; ``photo_files_changed`` makes search drop and recompute its
    vectors), move it to another product, or renumber it. What is not given stays. ``of_product``: the product the
    caller found the photo on; refused if another writer has moved it since (PHOTO_MOVED).

    A photo's vector rows follow it to another product in the database itself (search migration 0003), so bulk
    updates are as safe as this. Replaced files are deleted once the transaction commits; new ones at once if the
    row cannot be written.
    """
    # Products, then photos, as every writer locks them: the product it moves to; where it takes a position, the
    # one whose photos that may move down (``_position_take``).
    galleries = {product.pk} if product is not None else set()
    if position is not None:
        galleries.update(ProductImage.objects.filter(pk=image.pk).values_list("product_id", flat=True))
    locked = _products_lock(sorted(galleries)) if galleries else []
    if product is not None and product.pk not in locked:
        raise Product.DoesNotExist(f"product {product.pk} was deleted")
    photos = Q(pk=image.pk)
    if position is not None:
        photos |= Q(product_id__in=galleries)
    if file is not None or prepared is not None:
        photos |= Q(near_duplicate_of=image.pk)  # the copies whose flags a new file clears
    _photos_where_lock(photos)
    image = ProductImage.objects.select_for_update().get(pk=image.pk)  # as stored, whatever a form set on ``image``
    moved_meanwhile = position is not None and image.product_id not in galleries  # its new gallery is not held
    if moved_meanwhile or (of_product is not None and image.product_id != of_product.pk):
        raise ValidationError(PHOTO_MOVED, code="photo_moved")
    moved = product is not None and product.pk != image.product_id
    renumbered = position is not None and position != image.position
    replaced = [image.file.name, image.thumbnail.name] if file is not None or prepared is not None else []
    if not (moved or renumbered or replaced):
        return image  # a save would retire every cached page for nothing (the admin saves unchanged forms too)
    if moved:
        image.product = product
    if renumbered or (moved and position is not None):
        _position_take(image.product_id, position, besides=image.pk)
        image.position = position
    if replaced:
        prepared = prepared or image_prepare(file)
    if moved or replaced:
        _copies_refuse(image.product_id, [prepared.info.sha256 if replaced else image.content_hash], besides=image.pk)
    with atomic_with_files() as stored:
        if replaced:
            _image_file_store(image, prepared, stored)
            # Flags that said the old picture was a copy of another, or another a copy of it, no longer hold (its
            # own is found again when it is embedded).
            image.near_duplicate_of, image.near_duplicate_score = None, None
            ProductImage.objects.filter(near_duplicate_of=image).update(near_duplicate_of=None,
                                                                        near_duplicate_score=None)
        image.save()
    if replaced:
        photo_files_changed.send(sender=ProductImage, image_ids=[image.pk], on_not_queued=on_not_queued)
        _files_delete_on_commit(replaced)
    return image


def product_image_delete(*, image: ProductImage, of_product: Product | None = None) -> None:
    """Delete a photo (its vectors go with it: a cascade) and, once the transaction commits, its files."""
    product_images_delete(image_ids=[image.pk], of_product=of_product)


@transaction.atomic
def product_images_delete(*, image_ids: Iterable[int], of_product: Product | None = None) -> None:
    """Delete photos (their vectors go with them: a cascade) and, once the transaction commits, their files: locked
    together in pk order, where one at a time in another order (the admin's list) met a worker halfway.
    ``of_product``: the product the caller found them on; refused if another writer has moved one since."""
    # The names the rows hold, not the objects': an admin form that also picked a new file for the photo it deletes
    # puts that upload's bare name on the object, and another admin may have replaced the file since.
    photos = ProductImage.objects.filter(pk__in=list(image_ids))
    files = _photos_lock(photos)
    if of_product is not None and photos.exclude(product=of_product).exists():
        raise ValidationError(PHOTO_MOVED, code="photo_moved")
    photos.delete()
    _files_delete_on_commit(files)


def products_delete(*, products: Iterable[Product]) -> int:
    """Delete products with their photos (their vectors go with them: a cascade) and, once the transaction commits,
    the photos' files; returns how many products were deleted."""
    product_ids = _product_ids(products)
    with transaction.atomic():
        # The products first: a photo added meanwhile is then either committed before, and deleted with them, or
        # its upload finds the product gone. Unseen, it made the delete fail at its commit.
        _products_lock(product_ids)
        files = _photos_lock(ProductImage.objects.filter(product_id__in=product_ids))
        _, deleted = Product.objects.filter(pk__in=product_ids).delete()
        _files_delete_on_commit(files)
    return deleted.get(Product._meta.label, 0)


def product_photos_hold(*, product: Product) -> None:
    """Lock, until the transaction ends, every photo of ``product`` (whose row the caller locked) and their copies,
    for a save that deletes, changes and adds several one after another (the product page's): together, in pk order,
    as every writer locks photos. One by one, a worker could hold one the save had still to come to (a photo a new
    position moves down, too), and wait for one it had taken."""
    _photos_lock(ProductImage.objects.filter(product=product))


def _photos_where_lock(photos: Q) -> None:
    """Lock the photos ``photos`` selects in one statement, in pk order, as a worker storing their vectors does."""
    list(ProductImage.objects.select_for_update().filter(photos).order_by("pk").values_list("pk"))


def _photos_lock(photos) -> list[str]:
    """Lock the photos about to be deleted or given a new file (in pk order, as a worker storing their vectors does)
    and return their file names. The cascade deletes a photo's vectors before the photo: without the lock, a worker
    that stored a vector in between had its row refused at the delete's commit, and the admin got an error (nothing
    deleted). The photos flagged as their copies are locked in the same statement: the delete, or the new file,
    clears their flags, and locking them afterwards, in the order an update's scan meets them, met the sweep's update
    of every photo halfway (a deadlock)."""
    own = list(photos.values_list("pk", flat=True))
    _photos_where_lock(Q(pk__in=own) | Q(near_duplicate_of__in=own))
    # Read again under the lock: a photo moved to another product meanwhile is not the caller's any more.
    return [name for pair in photos.values_list("file", "thumbnail") for name in pair]


def _product_ids(products: Iterable[Product]) -> list[int]:
    """The products' ids; of a queryset not read yet (the admin's "select all", with its photos prefetched), read
    alone. One read already (the admin's delete confirmation logged its rows) gives those rows, not a new read."""
    if isinstance(products, QuerySet) and products._result_cache is None:
        return list(products.order_by().values_list("pk", flat=True))
    return [product.pk for product in products]


def products_set_active(*, products: Iterable[Product], active: bool) -> int:
    """Show the products in the shop (``active``) or hide them, all at once: their pages, search and More like this
    follow (the vector rows copy the flag by trigger, search migration 0002). Returns how many changed."""
    with transaction.atomic():
        product_ids = _product_ids(products)
        _products_lock(product_ids)  # the update alone locks them in the order its scan meets them
        changed = (Product.objects.filter(pk__in=product_ids).exclude(active=active)
                   .update(active=active, updated_at=timezone.now()))
        if changed:
            catalog_changed()  # a bulk update sends no signal
    return changed


def product_images_reembed(*, image_ids: Iterable[int], on_not_queued: Callable[[int], None] | None = None) -> int:
    """An admin asks for the photos' derived data (vectors) to be computed afresh; returns how many photos."""
    with transaction.atomic():
        image_ids = list(ProductImage.objects.filter(pk__in=list(image_ids)).values_list("pk", flat=True))
        if image_ids:
            photo_files_changed.send(sender=ProductImage, image_ids=image_ids, on_not_queued=on_not_queued)
    return len(image_ids)


def _image_file_store(image: ProductImage, prepared: PreparedImage, stored: list[str]) -> None:
    """Store the photo's file and thumbnail (the row is not saved), appending their names to ``stored``."""
    info = prepared.info
    image.width, image.height, image.content_hash = info.width, info.height, info.sha256
    # Stored, and later served, under the extension of what it decodes as, never the name it came with.
    image.file.save(image_file_name(prepared.file.name, info.format), prepared.file, save=False)
    stored.append(image.file.name)
    if prepared.thumbnail is not None:
        image.thumbnail.save(prepared.thumbnail.name, prepared.thumbnail, save=False)
        stored.append(image.thumbnail.name)
    else:  # a replaced photo's old thumbnail is deleted: cards show the new file itself
        image.thumbnail = ""


# The files stored by atomic_with_files blocks nested in a caller's transaction (files_deleted_if_it_fails).
_stored_in_outer_transaction: ContextVar[list[str] | None] = ContextVar("stored_in_outer_transaction", default=None)


@contextmanager
def files_deleted_if_it_fails() -> Iterator[None]:
    """For a caller whose own transaction holds several writes with files (the admin's save of a product and its
    photos): if it fails after some of them stored theirs, those files no row holds are deleted. Django has no hook
    for a rollback, and their savepoints had been released: a photo's new file stayed on disk when the next photo's
    save was refused and the whole change undone."""
    names: list[str] = []
    token = _stored_in_outer_transaction.set(names)
    try:
        yield
    except BaseException:
        stored_files_delete(_files_unreferenced(names))
        raise
    finally:
        _stored_in_outer_transaction.reset(token)


@contextmanager
def atomic_with_files() -> Iterator[list[str]]:
    """A transaction, and a list for the names of the files its writes store. They are deleted again if it fails
    (a refused photo, the database, Ctrl-C): its rows are gone, so must their files be. Once it has committed they
    are its rows' files and stay, even if something its commit sets off fails afterwards (queueing the embeddings,
    a Ctrl-C then): Django runs the commit's hooks after the COMMIT, inside ``atomic``'s exit. Nested in an outer
    transaction, it is a savepoint: a failure of the outer transaction leaves the files, unless its caller deletes
    them (``files_deleted_if_it_fails``); ``prune_media`` removes what is left."""
    stored: list[str] = []
    written = False
    try:
        with transaction.atomic():
            transaction.on_commit(stored.clear)  # the first of its hooks: it runs before any other can fail
            yield stored
            written = True
        if (outer := _stored_in_outer_transaction.get()) is not None and stored:
            outer.extend(stored)  # a savepoint released: the caller's transaction may still fail
    except BaseException:
        # Raised by the writes: their rows rolled back. Raised by the COMMIT itself (a Ctrl-C while PostgreSQL
        # commits: psycopg waits for the COMMIT, then re-raises): the rows may have committed, so only files no
        # row holds are deleted.
        stored_files_delete(_files_unreferenced(stored) if written else stored)
        raise


def _files_unreferenced(names: list[str]) -> list[str]:
    """Of ``names``, those no photo row holds; none when the database cannot tell (``prune_media`` finds them)."""
    try:
        held = photo_files_held(names)
    except Exception:  # noqa: BLE001 - the connection an interrupted COMMIT left; keeping files loses nothing
        logger.warning("could not tell which files a failed commit left in use; prune_media removes those unused",
                       exc_info=True)
        return []
    return [name for name in names if name not in held]


def stored_files_delete(names: Iterable[str]) -> None:
    """Delete photo files from storage: those of a failed write (``atomic_with_files``), or those a committed
    change replaced or deleted."""
    storage = ProductImage._meta.get_field("file").storage
    for name in names:
        storage.delete(name)


def _files_delete_on_commit(names: list[str]) -> None:
    names = [name for name in names if name]  # bound now; images loaded in bulk may have no thumbnail
    transaction.on_commit(lambda: stored_files_delete(names), robust=True)
