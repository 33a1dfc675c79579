"""Catalog import from a CSV file, a few rows per transaction, through catalog.services (photos prepared ahead).

Columns: ``sku,title,category,price,description,images`` and optionally ``currency`` and ``active``. ``category``
is a path (``Home > Furniture > Sofas``, created as needed); ``images`` holds paths or file names separated by ``|``.

Every row is all or nothing: a row fails as a whole (no product without its photos, no category left over,
no stored file left behind, no embedding queued) and the import goes on with the next one. Rows are written
WRITE_BATCH_ROWS to a transaction; when one of them fails the batch is rolled back and its rows are written again
one transaction each, so that only the failing row fails, with its own message. Rows are matched by
SKU, so importing the same file again changes nothing. The file is streamed, never read whole. See docs/import.md.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import logging
import random
import re
import stat
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO, TypeVar

import psycopg

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.files.base import ContentFile
from django.db import DataError, IntegrityError, InterfaceError, OperationalError

from catalog.models import (
    CATEGORY_DEPTH_MAX,
    CATEGORY_PATH_DISPLAY_SEPARATOR,
    CURRENCY_CODE,
    Category,
    Product,
    category_name_key,
    currency_code_read,
    sku_normalized,
)
from catalog.services import (
    CategoryDeleted,
    LoadSummary,
    PhotoRefused,
    PreparedImage,
    ProductWithPhotos,
    atomic_with_files,
    category_get_or_create_path,
    category_path_names,
    image_prepare,
    products_with_photos_upsert,
)
from catalog.selectors import product_photo_hashes
from catalog.signals import bulk_load_announced
from catalog.typos import edit_distance

T = TypeVar("T")
logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("sku", "title", "category", "price", "description", "images")
OPTIONAL_COLUMNS = ("currency", "active")
# What the ``active`` column may say (in any case); empty leaves a product as it is (a new one is shown).
ACTIVE_VALUES = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
IMAGE_SEPARATOR = "|"
# "http://...", "s3://...", "data:...": the importer reads local files only; fetching is the operator's job.
URL_PATTERN = re.compile(r"^([a-z][a-z0-9+.-]*://|data:)", re.IGNORECASE)
# A column this close to one the import reads (letters added, removed or changed) is taken for a misspelling of it.
MISSPELT_EDITS = 2
# A file argument that names an address (a path keeps one slash of "://").
ADDRESS_PATTERN = re.compile(r"^[a-z][a-z0-9+.-]*:/", re.IGNORECASE)
# Photos are checked and thumbnailed in this many threads, up to this many photos ahead of the row being written
# (each held in memory: at most UPLOAD_MAX_BYTES), reading this many rows ahead.
PREPARE_THREADS = 2
PREPARE_AHEAD_IMAGES = 8
PREPARE_AHEAD_ROWS = 16
# Rows (with at most this many photos together) written in one transaction: a row alone paid ~8 round trips,
# a commit and a cache bump (docs/import.md, "Speed"). Photos in memory: this many plus PREPARE_AHEAD_IMAGES.
WRITE_BATCH_ROWS = 8
# The longest line read (a field is at most the csv module's 128 KB; a description of a few pages is some KB).
LINE_MAX_BYTES = 1024 * 1024
# Tries of a transaction that PostgreSQL rolled back to break a deadlock with another import.
DEADLOCK_ATTEMPTS = 5
RETRYABLE_DATABASE_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
# Photos one row may list: a row's photos are all held until it commits, so this bounds the memory of a row with
# many photos (at most UPLOAD_MAX_BYTES each). A product with more takes further rows of the same product.
ROW_PHOTOS_MAX = 20

_SKU_MAX = Product._meta.get_field("sku").max_length
_TITLE_MAX = Product._meta.get_field("title").max_length
_CATEGORY_NAME_MAX = Category._meta.get_field("name").max_length
_PRICE_FIELD = Product._meta.get_field("price")
_PRICE_LIMIT = Decimal(10) ** (_PRICE_FIELD.max_digits - _PRICE_FIELD.decimal_places)
_PRICE_STEP = Decimal(1).scaleb(-_PRICE_FIELD.decimal_places)


class CatalogImportError(Exception):
    """The file cannot be imported at all (unreadable, columns missing); nothing was written."""


class RowError(Exception):
    """One row cannot be imported; the message says why in words a catalog manager understands."""


class FileUnreadable(RowError):
    """The file cannot be read on from this row: the rows after it were not read (a line too long, a quote that
    never closes)."""


@dataclass(frozen=True)
class FailedRow:
    line: int  # the physical line the row starts on; the header is line 1
    sku: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (sku {self.sku})" if self.sku else "")
        return _printable(f"{where}: {self.message}")


def _printable(text: str) -> str:
    """``text`` with control characters written as escapes: a file's cells, printed on the operator's terminal,
    must not move its cursor or change its colours."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@dataclass(frozen=True)
class CatalogRow:
    """A row that passed every check that needs no database."""

    sku: str
    title: str
    category_path: str
    price: Decimal
    currency: str | None  # None: as it is (DEFAULT_CURRENCY, for a new product)
    description: str
    images: tuple[tuple[str, Path], ...]  # (as written in the CSV, resolved path)
    active: bool | None = None  # None: as it is (shown, for a new product)


# --- Reading --------------------------------------------------------------------------------------------


class _Lines:
    """A binary file as text lines for csv.reader, counting bytes read (progress) and lines that are not UTF-8.

    Splitting on b"\\n" is safe for UTF-8: that byte never occurs inside a multi-byte character.
    """

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.bytes_read = 0
        self.line = 0
        self.bad_lines: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        while raw := self.handle.readline(LINE_MAX_BYTES + 1):  # bounded: memory never follows a line's length
            self.bytes_read += len(raw)
            self.line += 1
            if len(raw) > LINE_MAX_BYTES:
                if self.line == 1:
                    _first_line_checked(raw)  # a whole old Mac export reads as one long line: say so
                raise _Unreadable(f"line {self.line} is longer than {LINE_MAX_BYTES // (1024 * 1024)} MB")
            if self.line == 1:
                raw = _first_line_checked(raw)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_lines.add(self.line)
                yield raw.decode("utf-8", "replace")


def _first_line_checked(raw: bytes) -> bytes:
    """The file's first line without the byte-order mark spreadsheets write; raises _Unreadable for encodings and
    line endings the reader cannot take."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _Unreadable("the file is UTF-16 text; save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet)")
    if b"\r" in raw.rstrip(b"\r\n"):  # would be read as one line, the whole file
        raise _Unreadable("the lines end with a carriage return alone (an old Mac export); save the file with "
                          "Windows or Unix line endings")
    return raw


class _Unreadable(Exception):
    """The file cannot be read on from here (a line too long, line endings that are not lines)."""


def _header_read(reader) -> tuple[list[str], tuple[str, ...]]:
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogImportError("the file is empty; the first line must name the columns") from None
    except _Unreadable as error:
        raise CatalogImportError(str(error)) from None
    except csv.Error as error:
        raise CatalogImportError(f"line 1: the header is not valid CSV ({error})") from None
    columns = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        # A misspelt required column is missing too: name the column that may be it.
        close = {name: found for name in missing for found in columns
                 if found and edit_distance(found, name, limit=MISSPELT_EDITS) is not None}
        raise CatalogImportError(
            "missing column(s): " + ", ".join(f"{name} (is it {_printable(close[name])!r}?)" if name in close else name
                                              for name in missing) + ". The first line must name the columns "
            f"{','.join(REQUIRED_COLUMNS)} (optional: {','.join(OPTIONAL_COLUMNS)}); found: "
            + _printable(",".join(header))
        )
    duplicates = sorted({name for name in columns if name and columns.count(name) > 1})
    if duplicates:
        raise CatalogImportError(f"column(s) named twice in the header: {_printable(', '.join(duplicates))}")
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    ignored = tuple(_printable(name) for name in columns if name and name not in known)
    for name in ignored:
        # A misspelt column would be ignored for the whole file: "activ" would show every product it meant to hide.
        allowed = 1 if len(name) <= 4 else MISSPELT_EDITS  # "url" and "upc" are not "sku"
        if meant := next((column for column in known if edit_distance(name, column, limit=allowed) is not None
                          and not _variant_of(name, column)), None):
            raise CatalogImportError(f"the column {name!r} is not one this import reads; is it {meant!r}? Name it "
                                     "so, or give it a name further from the columns the import reads")
    return columns, ignored


def _variant_of(name: str, column: str) -> bool:
    """Whether ``name`` is another column built on ``column``, not a misspelling of it: "inactive" (renamed as
    asked, it would show every product meant to be hidden), "image2", "price_2"."""
    stem = name.rstrip("0123456789_- ")
    return column in name or (stem != name and stem in (column, column.rstrip("s")))


# --- Importing ------------------------------------------------------------------------------------------


def catalog_csv_import(
    *,
    path: Path,
    images_dir: Path | None = None,
    on_row: Callable[[int, LoadSummary], None] | None = None,
) -> LoadSummary:
    """Import every row of the CSV at ``path``; a bad row is recorded in the summary and the rest go on.

    Relative image paths are looked up in ``images_dir`` (default: the CSV's folder) and may not leave it.
    ``on_row(bytes_read, summary)`` is called after each row (progress). Raises CatalogImportError, before
    writing anything, when the file cannot be read or its header lacks a column.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # checked before opening: a FIFO would block
            raise CatalogImportError(f"{path} is not a regular file")
    except OSError as error:
        if ADDRESS_PATTERN.match(str(path)):  # https://... reaches here as https:/...
            raise CatalogImportError(f"{path} is an address, not a file: download the file first") from None
        raise CatalogImportError(f"cannot read {path}: {error.strerror}") from None
    images_dir = _images_folder(Path(images_dir or path.parent))
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise CatalogImportError(f"cannot read {path}: {error.strerror}") from None
    with handle, ThreadPoolExecutor(PREPARE_THREADS) as pool, bulk_load_announced():
        lines = _Lines(handle)
        # strict: a quote left open to the end of the file is an error, not one field holding every row after it
        reader = csv.reader(iter(lines), strict=True)
        columns, ignored = _header_read(reader)
        summary = LoadSummary(ignored_columns=ignored)
        categories: dict[str, Category] = {}
        rows = _rows_read(reader, lines, columns, images_dir=images_dir)
        for batch in _write_batches(_images_prepared_ahead(rows, pool)):
            _rows_write(batch, categories=categories, summary=summary, on_row=on_row)
    return summary


def _images_folder(folder: Path) -> Path:
    """The folder relative image paths are read from, resolved; CatalogImportError when it cannot be."""
    folder = folder.resolve()
    try:
        if folder.is_dir():
            return folder
        exists = folder.exists()
    except OSError as error:  # a name too long, a folder this user may not enter
        raise CatalogImportError(f"cannot read the images folder {folder}: {error.strerror}") from None
    raise CatalogImportError(f"the images folder {folder} {'is a file, not a folder' if exists else 'does not exist'}")


def _write_batches(rows: Iterator[_Row]) -> Iterator[list[_Row]]:
    """The rows in order, grouped for ``_rows_write``: at most WRITE_BATCH_ROWS rows to write and as many photos,
    never one SKU twice (its second row updates what the first wrote)."""
    batch: list[_Row] = []
    skus: set[str] = set()
    photos = 0
    for row in rows:
        count = len(row.item.images) if row.item is not None else 0
        if batch and row.item is not None and (
            row.item.sku in skus or len(skus) >= WRITE_BATCH_ROWS or photos + count > WRITE_BATCH_ROWS
        ):
            yield batch
            batch, skus, photos = [], set(), 0
        batch.append(row)
        if row.item is not None:
            skus.add(row.item.sku)
            photos += count
    if batch:
        yield batch


def _rows_write(
    batch: list[_Row],
    *,
    categories: dict[str, Category],
    summary: LoadSummary,
    on_row: Callable[[int, LoadSummary], None] | None,
) -> None:
    """Write the batch's rows in one transaction; if any of them fails, roll back and write each in its own, so the
    summary records exactly the rows that fail alone, with their messages, in file order."""
    writable = [row for row in batch if row.error is None]
    outcomes: list[tuple[str, int]] = []
    if len(writable) > 1:
        try:
            outcomes = _run_again_after_a_deadlock(lambda: catalog_rows_import(
                items=[row.item for row in writable], categories=categories,
                prepared=[row.prepared for row in writable],
            ))
        except (OperationalError, InterfaceError):
            raise  # the database is gone: every further row would fail the same way
        except Exception:  # noqa: BLE001 - which row, and why, is found by writing each alone below
            outcomes = []
    written = dict(zip((id(row) for row in writable), outcomes))
    for row in batch:
        summary.rows += 1
        try:
            if row.error is not None:
                raise row.error
            outcome, added = written.get(id(row)) or _run_again_after_a_deadlock(lambda: catalog_row_import(
                item=row.item, categories=categories, prepared=row.prepared
            ))
        except (RowError, ValidationError, IntegrityError, DataError, OSError) as error:
            summary.failed.append(FailedRow(line=row.line, sku=row.sku, message=_error_message(error)))
            if isinstance(error, FileUnreadable):
                summary.unread_from = row.line
        except (OperationalError, InterfaceError):
            raise
        except Exception as error:  # noqa: BLE001 - a cell nobody foresaw fails its row, never the import
            logger.exception("import of line %s failed unexpectedly", row.line)
            message = f"unexpected error ({type(error).__name__}: {error}); the log has the details"
            summary.failed.append(FailedRow(line=row.line, sku=row.sku, message=message))
        else:
            summary.count(outcome, added)
        summary.last_line = row.line
        if on_row is not None:
            on_row(row.bytes_read, summary)


def _run_again_after_a_deadlock(write: Callable[[], T]) -> T:
    """``write`` (a transaction), run again when PostgreSQL rolled it back to break a deadlock with another
    transaction (two imports creating the same new categories or SKUs in another order) or a serialization
    failure: the other then commits, and this one finds what it wrote. Also when a category the import kept for its
    rows was deleted meanwhile (by an admin): written again, the row creates it anew. Other errors propagate."""
    for attempt in range(DEADLOCK_ATTEMPTS):
        try:
            return write()
        except CategoryDeleted:
            if attempt == DEADLOCK_ATTEMPTS - 1:
                raise
        except OperationalError as error:
            if attempt == DEADLOCK_ATTEMPTS - 1 or not isinstance(error.__cause__, RETRYABLE_DATABASE_ERRORS):
                raise
            logger.warning("rows rolled back by the database (%s); writing them again", type(error.__cause__).__name__)
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))  # apart, so the two do not meet again
    raise AssertionError("unreachable")


@dataclass
class _Row:
    line: int
    sku: str
    bytes_read: int
    item: CatalogRow | None = None
    error: Exception | None = None  # why the row cannot be imported, found before touching the database
    prepared: dict[Path, Future] = field(default_factory=dict)  # photo -> _image_read running or done
    known: frozenset[str] = frozenset()  # content hashes of the photos the product had when the row was read


def _rows_read(reader, lines: _Lines, columns: list[str], *, images_dir: Path) -> Iterator[_Row]:
    """The file's rows, parsed and checked as far as that needs no database; blank lines skipped.

    A SKU on two rows is one product: the later row may add photos, but one that gives it another title, category,
    price, currency or description contradicts the earlier one and fails, instead of overwriting it unseen."""
    # hash of a SKU -> its first line, the hash of its product fields, and its currency and active as far as given
    first_rows: dict[int, tuple[int, int, str | None, bool | None]] = {}
    while True:
        start = lines.line + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _Unreadable as error:
            yield _Row(line=start, sku="", bytes_read=lines.bytes_read,
                       error=FileUnreadable(f"{error}; the rest of the file was not read"))
            return
        except csv.Error as error:
            if lines.line > start:
                # A quoted field over several lines broke off: where the next row starts cannot be told, and
                # reading on would fail every line of the field as a row.
                yield _Row(line=start, sku="", bytes_read=lines.bytes_read, error=FileUnreadable(
                    f"not valid CSV ({error}); the field that fails here spans lines, so the rest of the file was "
                    "not read"))
                return
            yield _Row(line=start, sku="", bytes_read=lines.bytes_read, error=RowError(f"not valid CSV ({error})"))
            continue
        if not any(value.strip() for value in fields):
            continue  # blank line
        row = dict(zip(columns, fields))
        result = _Row(line=start, sku=row.get("sku", "").strip(), bytes_read=lines.bytes_read)
        try:
            if lines.bad_lines.intersection(range(start, lines.line + 1)):
                raise RowError("the row is not valid UTF-8 text; save the file as UTF-8")
            if len(fields) != len(columns):
                raise RowError(f"expected {len(columns)} fields like the header, found {len(fields)}")
            item = catalog_row_parse(row=row, images_dir=images_dir)
            fields = hash((item.title, category_name_key(item.category_path), item.price, item.description))
            first_line, first_fields, currency, active = first_rows.setdefault(
                hash(item.sku), (start, fields, item.currency, item.active))
            # An empty currency or active says "as it is": it agrees with any other row's.
            if fields != first_fields or _contradict(currency, item.currency) or _contradict(active, item.active):
                raise RowError(
                    f"sku {item.sku} is on line {first_line} too, with another title, category, price, currency, "
                    "description or active: give a product one row, its photos together in images"
                )
            first_rows[hash(item.sku)] = (first_line, fields, item.currency if currency is None else currency,
                                          item.active if active is None else active)
            result.item = item
        except RowError as error:
            result.error = error
        yield result


def _contradict(first, later) -> bool:
    """Whether two rows of one SKU give a field different values (an empty one gives none)."""
    return first is not None and later is not None and first != later


def _images_prepared_ahead(rows: Iterator[_Row], pool: ThreadPoolExecutor) -> Iterator[_Row]:
    """The rows, their photos being read, checked and thumbnailed in ``pool`` ahead of the row being written (at
    most PREPARE_AHEAD_IMAGES at a time, which bounds memory): that work needs no database, and Pillow and libwebp
    release the GIL, so it runs on the other core while this thread waits for PostgreSQL (docs/import.md, "Speed").

    Photos a product already has (one query per PREPARE_AHEAD_ROWS rows) are only hashed, so a re-import stays
    cheap. The row's transaction still decides, by content hash under the row lock, what is added.
    """
    ahead: deque[_Row] = deque()
    exhausted = False
    while True:
        if not exhausted and len(ahead) <= PREPARE_AHEAD_ROWS // 2:
            batch = list(itertools.islice(rows, PREPARE_AHEAD_ROWS))
            exhausted = len(batch) < PREPARE_AHEAD_ROWS
            known = product_photo_hashes(skus=[row.item.sku for row in batch if row.item is not None])
            for row in batch:
                row.known = frozenset(known.get(row.item.sku, ()) if row.item is not None else ())
            ahead.extend(batch)
        budget = PREPARE_AHEAD_IMAGES - sum(len(row.prepared) for row in ahead)
        for row in ahead:
            for _, image_path in row.item.images if row.item is not None else ():
                if budget > 0 and image_path not in row.prepared:
                    row.prepared[image_path] = pool.submit(_image_read, image_path, row.known)
                    budget -= 1
        if not ahead:
            return
        yield ahead.popleft()


def _image_read(path: Path, known: frozenset[str]) -> PreparedImage | str:
    """The photo at ``path`` prepared for storing, or only its SHA-256 when the product has it already.

    The bytes are read once and kept: what is stored is exactly what was checked.
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest in known:
        return digest
    return image_prepare(ContentFile(data, name=path.name))


def catalog_row_import(
    *,
    item: CatalogRow,
    categories: dict[str, Category],
    prepared: dict[Path, Future] | None = None,
) -> tuple[str, int]:
    """Create or update one product from a parsed CSV row; returns ("created"|"updated"|"unchanged", images
    added).

    All or nothing: on any error the transaction rolls back and the files this row stored are deleted.
    ``categories`` caches committed categories by path across rows. ``prepared``: the row's photos as
    ``_image_read`` gave them, by path (the rest are read here).
    """
    (result,) = catalog_rows_import(items=[item], categories=categories, prepared=[prepared or {}])
    return result


def catalog_rows_import(
    *, items: list[CatalogRow], categories: dict[str, Category], prepared: list[dict[Path, Future]]
) -> list[tuple[str, int]]:
    """``catalog_row_import`` for several rows of distinct SKUs in one transaction: all of them or none (then no
    stored file is left behind). Raises RowError for a refused photo, without saying which row it was."""
    found: dict[str, Category] = {}
    try:
        with atomic_with_files() as stored:
            products = []
            for item, photos_ahead in zip(items, prepared, strict=True):
                category_path = item.category_path
                category = (categories.get(category_path) or found.get(category_path)
                            or category_get_or_create_path(path=category_path))
                found[category_path] = category
                fields = {
                    "title": item.title, "description": item.description, "price": item.price, "category": category,
                    **({"currency": item.currency} if item.currency is not None else {}),
                    **({"active": item.active} if item.active is not None else {}),
                }
                photos = [_CsvPhoto(name=written, path=path, ahead=photos_ahead.get(path))
                          for written, path in item.images]
                products.append(ProductWithPhotos(sku=item.sku, fields=fields, photos=photos))
            results = products_with_photos_upsert(items=products, stored=stored)
    except PhotoRefused as error:
        raise RowError(str(error)) from None
    except CategoryDeleted as error:  # by an admin meanwhile: forgotten, so that the rows written again create it
        for path in [path for path, category in categories.items() if category.pk in error.category_ids]:
            del categories[path]
        raise
    categories.update(found)  # only now: a rolled-back category must not be reused
    return [(result.outcome, result.images_added) for result in results]


@dataclass
class _CsvPhoto:
    """A row's photo for products_with_photos_upsert, as ``_image_read`` gives it: read ahead (``ahead``) or here."""

    name: str  # as written in the CSV
    path: Path
    ahead: Future | None = None
    _read: PreparedImage | str | None = None

    def _image(self) -> PreparedImage | str:
        if self._read is None:
            self._read = self.ahead.result() if self.ahead is not None else _image_read(self.path, frozenset())
        return self._read

    def sha256(self) -> str:
        image = self._image()
        return image if isinstance(image, str) else image.info.sha256

    def prepare(self) -> PreparedImage:
        image = self._image()
        # Only hashed when read ahead, because the product had it; it no longer has: read it whole now.
        return _image_read(self.path, frozenset()) if isinstance(image, str) else image


# --- Checking a row -------------------------------------------------------------------------------------


def catalog_row_parse(*, row: dict[str, str], images_dir: Path) -> CatalogRow:
    """Check a row's values without touching the database. Raises RowError naming the first problem."""
    for column, value in row.items():
        # PostgreSQL text cannot hold one, and the OS refuses it in a path: caught here, before any query sees it.
        if "\x00" in value:
            raise RowError(f"{column} contains a NUL character")
    sku = sku_normalized(row["sku"].strip())
    if not sku:
        raise RowError("sku is empty")
    if len(sku) > _SKU_MAX:
        raise RowError(f"sku is {len(sku)} characters long; the limit is {_SKU_MAX}")
    title = row["title"].strip()
    if not title:
        raise RowError("title is empty")
    if len(title) > _TITLE_MAX:
        raise RowError(f"title is {len(title)} characters long; the limit is {_TITLE_MAX}")
    currency = currency_code_read((row.get("currency") or "").strip()) or None
    if currency is not None and not CURRENCY_CODE.regex.match(currency):  # which one is the product's to check
        raise RowError(f"currency {currency!r} is not a three-letter ISO 4217 code such as USD")
    active = (row.get("active") or "").strip().lower()
    if active and active not in ACTIVE_VALUES:
        raise RowError(f"active {active!r} is not yes or no (true/false, 1/0); leave it empty to keep the product "
                       "as it is")
    written_images = [part.strip() for part in row["images"].split(IMAGE_SEPARATOR) if part.strip()]
    if len(written_images) > ROW_PHOTOS_MAX:
        raise RowError(
            f"{len(written_images)} images in one row; the limit is {ROW_PHOTOS_MAX}: list the others on another "
            "row of the same product (the same title, category, price and description)"
        )
    images: dict[Path, str] = {}  # one file named twice ("p.jpg|./p.jpg") is one photo
    for written in written_images:
        images.setdefault(image_path_resolve(written=written, images_dir=images_dir), written)
    return CatalogRow(
        sku=sku,
        title=title,
        category_path=_category_path_parse(row["category"]),
        price=_price_parse(row["price"]),
        currency=currency,
        description=row["description"].strip(),
        images=tuple((written, path) for path, written in images.items()),
        active=ACTIVE_VALUES.get(active),
    )


def _category_path_parse(text: str) -> str:
    names = category_path_names(text)
    if not any(names):
        raise RowError("category is empty")
    if len(names) > CATEGORY_DEPTH_MAX:
        raise RowError(f"category {text.strip()[:60]!r}... has {len(names)} levels; the limit is {CATEGORY_DEPTH_MAX}")
    if not all(names):
        raise RowError(f"category {text.strip()!r} has an empty level; write it like Home > Furniture > Sofas")
    for name in names:
        if len(name) > _CATEGORY_NAME_MAX:
            raise RowError(f"category name {name[:40]!r}... is longer than {_CATEGORY_NAME_MAX} characters")
    return CATEGORY_PATH_DISPLAY_SEPARATOR.join(names)


_PRICE_WRITTEN = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # digits 0-9, a decimal point, no more


def _price_parse(text: str) -> Decimal:
    text = text.strip()
    if not text:
        raise RowError("price is empty")
    # As docs/import.md asks: Decimal also read 1_000, 1e2 and other scripts' digits.
    if not _PRICE_WRITTEN.fullmatch(text):
        raise RowError(f"price {text!r} is not a number; write it like 12.50")
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise RowError(f"price {text!r} is not a number; write it like 12.50") from None
    if not price.is_finite():  # NaN, sNaN, Infinity: before any comparison (sNaN raises on one)
        raise RowError(f"price {text!r} is not a number; write it like 12.50")
    if price < 0:
        raise RowError(f"price {text!r} is negative")
    # The size before the decimal places: quantizing 1e26 or 1e309 exceeds the context's precision and raises.
    if price >= _PRICE_LIMIT:
        raise RowError(f"price {text!r} is too large; the limit is {_PRICE_LIMIT - Decimal('0.01')}")
    if price.as_tuple().exponent < -_PRICE_FIELD.decimal_places and price != price.quantize(_PRICE_STEP):
        raise RowError(f"price {text!r} has more than {_PRICE_FIELD.decimal_places} decimal places")
    # "12.500" has three places by the model's count: refused for a new product, taken as unchanged for one at 12.50.
    return price.quantize(_PRICE_STEP)


def image_path_resolve(*, written: str, images_dir: Path) -> Path:
    """The local file an ``images`` entry names. Relative paths must stay inside ``images_dir`` (a resolved path),
    also through symbolic links; absolute paths are taken as given. Raises RowError."""
    if URL_PATTERN.match(written):
        raise RowError(f"image {written!r}: URLs are not fetched; download the file and give its path")
    # The name as written, then its accents composed or decomposed: a Mac stores "café.jpg" decomposed, and a
    # spreadsheet writes it composed; the two look the same and were "not found".
    spellings = dict.fromkeys([written, unicodedata.normalize("NFC", written), unicodedata.normalize("NFD", written)])
    looked_for = None
    for spelling in spellings:
        candidate = Path(spelling)
        try:
            resolved = (candidate if candidate.is_absolute() else images_dir / candidate).resolve()
        except (OSError, RuntimeError) as error:  # RuntimeError: a symbolic link loop (Python 3.11)
            raise RowError(f"image {written!r} cannot be followed: {getattr(error, 'strerror', None) or error}") \
                from None
        if not candidate.is_absolute() and not resolved.is_relative_to(images_dir):
            raise RowError(f"image {written!r} is outside the images folder {images_dir}")
        looked_for = looked_for or resolved
        try:
            status = resolved.stat()
            break
        except FileNotFoundError:
            continue
        except OSError as error:
            raise RowError(f"image {written!r} cannot be read: {error.strerror}") from None
    else:
        raise RowError(f"image {written!r} not found (looked for {looked_for})")
    if not stat.S_ISREG(status.st_mode):
        raise RowError(f"image {written!r} is not a regular file")
    if status.st_size == 0:
        raise RowError(f"image {written!r}: The file is empty.")
    if status.st_size > settings.UPLOAD_MAX_BYTES:
        raise RowError(f"image {written!r}: The file is larger than {settings.UPLOAD_MAX_BYTES // (1024 * 1024)} MB.")
    return resolved


def _error_message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        if hasattr(error, "error_dict"):
            return "; ".join(
                " ".join(messages) if name == NON_FIELD_ERRORS else f"{name}: {' '.join(messages)}"
                for name, messages in error.message_dict.items()
            )
        return " ".join(error.messages)
    if isinstance(error, (IntegrityError, DataError)):
        return f"the database refused the row: {str(error).splitlines()[0]}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error)
