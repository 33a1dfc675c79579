import unicodedata
from functools import lru_cache
from urllib.parse import quote

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, MinValueValidator, RegexValidator
from django.db import connections, models, router
from django.db.models import F, Q
from django.db.models.functions import Lower, Upper
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.http import RFC3986_SUBDELIMS

from catalog.currencies import ISO_4217
from catalog.images import BROWSER_EXTENSIONS


# A product's price: the model, the API's fields and the filters' (catalog and search) all take it so.
PRICE_DIGITS = {"max_digits": 10, "decimal_places": 2}

# A product's currency: an ISO 4217 code in capitals. The model, the API and the import all check it so.
DEFAULT_CURRENCY = "USD"
CURRENCY_CODE = RegexValidator(r"^[A-Z]{3}\Z", "Enter a three-letter ISO 4217 code in capitals, such as USD.")
# The same rule where any case is read (currency_code_read): "in capitals" would send a reader after the wrong fault.
CURRENCY_CODE_READ = RegexValidator(CURRENCY_CODE.regex, "Enter a three-letter ISO 4217 code, such as USD.")
CURRENCY_UNKNOWN = "Enter the code of a currency prices are in (ISO 4217), such as USD."


def currency_code_read(text: str) -> str:
    """A currency code as a filter or an import reads it, in any case ("eur" is EUR); CURRENCY_CODE then checks it.
    Only ASCII is put in capitals: "ß".upper() is "SS", and no letter may become two."""
    return text.upper() if text.isascii() else text

# What separates the levels of a category path ("Home > Furniture > Sofas") in imports and on pages.
CATEGORY_PATH_SEPARATOR = ">"
# Levels in a category path. Real shops use up to six or so; a path of thousands (a cell of "a>a>a>...") would
# create thousands of categories and make every page that shows a path walk them.
CATEGORY_DEPTH_MAX = 10
CATEGORY_PATH_DISPLAY_SEPARATOR = f" {CATEGORY_PATH_SEPARATOR} "


def category_name_normalized(name: str) -> str:
    """A category name as it is stored, however it is written (the admin, an import's path): Unicode NFC, runs of
    white space as one space, none around. Two spellings of a name then find the same category."""
    return " ".join(unicodedata.normalize("NFC", name).split())


class Unaccented(models.Func):
    """Text without its accents, in the database (migration 0013's ``lookalike_unaccent``): what text search and the
    order by name compare, so that "cafe" finds "Café" and "Éclair" sorts among the E's. Immutable, as a generated
    column needs: PostgreSQL's unaccent extension is not on every server (not the embedded one)."""

    function = "lookalike_unaccent"
    output_field = models.TextField()


def sku_normalized(sku: str) -> str:
    """A SKU as it is stored and looked up: Unicode NFC. "CAFÉ-1" typed on a Mac (a decomposed É) was another
    product to an import, and its address found the other one."""
    return unicodedata.normalize("NFC", sku)


def category_name_key(name: str) -> str:
    """What two spellings of one category name share, as the lookups compare them (``name__iexact``: PostgreSQL's
    UPPER) once normalised: "Sofas" and "sofas" are one category."""
    return category_name_normalized(name).upper()


class Category(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=140, unique=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["parent", "name"], name="category_unique_name_per_parent"),
            # Two roots may not share a name either (NULL parents are distinct in a plain unique constraint).
            models.UniqueConstraint(fields=["name"], condition=Q(parent__isnull=True), name="category_unique_root_name"),
            models.CheckConstraint(condition=~Q(parent=F("pk")), name="category_not_own_parent"),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("catalog:category", kwargs={"slug": self.slug})

    def clean(self):
        super().clean()
        written = self.name or ""
        self.name = category_name_normalized(written)
        # Normalising can lengthen a name (U+FB2C is three characters in NFC) that passed the field's length check:
        # said here, at the name, rather than by that check when the save runs it again, which no form catches.
        name_max = self._meta.get_field("name").max_length
        if len(self.name) > name_max >= len(written):
            raise ValidationError({"name": f"This name is {len(self.name)} characters long as stored (Unicode NFC); "
                                           f"the limit is {name_max}."}, code="name_too_long")
        # A name with the separator reads as two levels ("Tables > Outdoor"), and an import of that path would
        # build another branch beside it; one differing from a sibling's in case only is that sibling to an import.
        if CATEGORY_PATH_SEPARATOR in (self.name or ""):
            raise ValidationError({"name": f"A category name cannot contain '{CATEGORY_PATH_SEPARATOR}', which "
                                           "separates the levels of a category path."}, code="separator")
        siblings = Category.objects.filter(parent_id=self.parent_id, name__iexact=self.name).exclude(pk=self.pk)
        if self.name and siblings.exists():
            raise ValidationError({"name": f"There is already a category {siblings.first().name!r} here."},
                                  code="duplicate_name")
        # The database refuses a cycle too (migration 0005's trigger); this says so in words, on the form.
        if self.parent_id is not None and self.pk is not None:
            if category_is_below(category_id=self.parent_id, ancestor_id=self.pk):
                raise ValidationError(
                    {"parent": "A category cannot be placed under itself or one of its own subcategories."},
                    code="category_cycle",
                )
        # The import's limit, kept by every path: a tree made deeper in the admin held paths no import could name.
        if self.parent_id is not None and self._parent_changed():
            if category_depth_under(parent_id=self.parent_id, category_id=self.pk) > CATEGORY_DEPTH_MAX:
                raise ValidationError({"parent": f"Placed here, categories would be more than {CATEGORY_DEPTH_MAX} "
                                                 "levels deep, the most a category path may have."},
                                      code="category_depth")

    def _parent_changed(self) -> bool:
        return self.pk is None or not Category.objects.filter(pk=self.pk, parent_id=self.parent_id).exists()


def category_is_below(*, category_id: int, ancestor_id: int) -> bool:
    """Whether ``ancestor_id`` is ``category_id`` itself or one of its ancestors (one query; UNION drops repeats, so
    the walk ends even on a cycle). Here rather than in catalog/categories.py because ``Category.clean`` needs it."""
    table = Category._meta.db_table
    sql = f"""
        WITH RECURSIVE up(id) AS (
            SELECT %s::bigint
            UNION
            SELECT c.parent_id FROM {table} c JOIN up ON c.id = up.id WHERE c.parent_id IS NOT NULL
        )
        SELECT EXISTS (SELECT 1 FROM up WHERE id = %s)
    """
    with connections[router.db_for_read(Category)].cursor() as cursor:
        cursor.execute(sql, [category_id, ancestor_id])
        return cursor.fetchone()[0]


def category_depth_under(*, parent_id: int, category_id: int | None) -> int:
    """The levels a path to the deepest category of ``category_id``'s subtree (itself, when new) would have with
    the category placed under ``parent_id`` (one query; each walk bounded, so that it ends on any tree)."""
    table = Category._meta.db_table
    sql = f"""
        WITH RECURSIVE up(id, levels) AS (
            SELECT %s::bigint, 1
            UNION ALL
            SELECT c.parent_id, up.levels + 1 FROM {table} c JOIN up ON c.id = up.id
            WHERE c.parent_id IS NOT NULL AND up.levels <= %s
        ), down(id, levels) AS (
            SELECT %s::bigint, 1
            UNION ALL
            SELECT c.id, down.levels + 1 FROM {table} c JOIN down ON c.parent_id = down.id WHERE down.levels <= %s
        )
        SELECT (SELECT max(levels) FROM up) + (SELECT max(levels) FROM down)
    """
    with connections[router.db_for_read(Category)].cursor() as cursor:
        cursor.execute(sql, [parent_id, CATEGORY_DEPTH_MAX, category_id, CATEGORY_DEPTH_MAX])
        return cursor.fetchone()[0]


# The longest product description, a few dozen pages of text.
DESCRIPTION_MAX_CHARS = 100_000


class Product(models.Model):
    # A SKU is part of product URLs (/p/<sku>/), so it may not contain "/", nor be "." or ".." (path segments
    # that browsers and proxies resolve away: /p/../ is /, so such a product's page could never be reached).
    sku = models.CharField(
        "SKU", max_length=64, unique=True, validators=[
            RegexValidator(r"^[^/]+\Z", "A SKU cannot contain '/'."),
            RegexValidator(r"^\.\.?\Z", "A SKU cannot be '.' or '..': its page address would lead elsewhere.",
                           inverse_match=True),
        ],
    )
    title = models.CharField(max_length=200)
    # Bounded: PostgreSQL refuses a search document (tsvector) over 1 MB, which a few MB of text would make.
    description = models.TextField(blank=True, validators=[MaxLengthValidator(DESCRIPTION_MAX_CHARS)])
    price = models.DecimalField(**PRICE_DIGITS, validators=[MinValueValidator(0)])
    currency = models.CharField(max_length=3, default=DEFAULT_CURRENCY, validators=[CURRENCY_CODE])
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Maintained by PostgreSQL itself, so no code path can leave it stale.
    search_document = models.GeneratedField(
        expression=SearchVector(Unaccented("title"), weight="A", config="english")
        + SearchVector(Unaccented("description"), weight="B", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["title", "pk"]
        indexes = [
            GinIndex(fields=["search_document"], name="product_search_document_gin"),
            models.Index(fields=["category", "active"], name="product_category_active_idx"),
            # The currencies the shop's products are in, found a probe each (catalog.selectors.product_currencies).
            models.Index(fields=["currency"], name="product_active_currency_idx", condition=Q(active=True)),
            # A page of products by name (catalog.selectors.PRODUCT_SORTS) read in order, not the whole catalog sorted
            # by an expression: 84 against 0.07 ms at 50,000 products.
            models.Index(Lower(Unaccented("title")), F("title"), F("id"), name="product_active_name_idx",
                         condition=Q(active=True)),
            # A SKU typed into text search, case and accents aside (catalog.selectors._query_read).
            models.Index(Upper(Unaccented("sku")), name="product_sku_upper_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
            models.CheckConstraint(condition=Q(currency__regex=r"^[A-Z]{3}$"), name="product_currency_iso_4217"),
            models.CheckConstraint(condition=~Q(sku=""), name="product_sku_not_empty"),
            models.CheckConstraint(condition=~Q(sku__contains="/"), name="product_sku_no_slash"),
            models.CheckConstraint(condition=~Q(sku__in=[".", ".."]), name="product_sku_not_dot_segment"),
            models.CheckConstraint(condition=~Q(title=""), name="product_title_not_empty"),
        ]

    def validate_constraints(self, exclude=None):
        """Nothing to ask the database: each check constraint above has a field rule that says the same to people
        (a validator, or a non-blank field, run by ``clean_fields``), where Django would test every constraint again
        with a query of its own, 13 ms a product. PostgreSQL still enforces them on every write."""

    @classmethod
    def from_db(cls, db, field_names, values):
        product = super().from_db(db, field_names, values)
        product._currency_stored = product.__dict__.get("currency")
        return product

    def clean(self):
        super().clean()
        # Any three capitals were taken ("ZZZ": shown in the shop, and out of every price filter in the shop's
        # currency). Checked when set, not on every save: a product stored before keeps its code until it changes.
        if self.currency != getattr(self, "_currency_stored", None) and self.currency not in ISO_4217:
            raise ValidationError({"currency": CURRENCY_UNKNOWN}, code="currency_unknown")
        written, self.sku = self.sku or "", sku_normalized(self.sku or "")
        if len(self.sku) > (sku_max := self._meta.get_field("sku").max_length) >= len(written):
            raise ValidationError({"sku": f"This SKU is {len(self.sku)} characters long as stored (Unicode NFC); "
                                          f"the limit is {sku_max}."}, code="sku_too_long")

    def __str__(self):
        return f"{self.title} ({self.sku})"

    def get_absolute_url(self):
        head, tail = _product_url_around_sku(get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)
        # As reverse() quotes it (the pchar of RFC 3986 kept), which cost 0.1 ms a card: 1.3 ms a photo search.
        return head + quote(self.sku, safe=RFC3986_SUBDELIMS + "/~:@") + tail


_SKU_MARK = "lookalike-sku"


@lru_cache(maxsize=16)
def _product_url_around_sku(script_prefix: str, urlconf) -> tuple[str, str]:
    """A product page's address before and after its SKU, for this script prefix and URLconf (the arguments only
    key the cache: ``reverse`` reads both, and a test may change either)."""
    head, _, tail = reverse("catalog:product", kwargs={"sku": _SKU_MARK}).rpartition(_SKU_MARK)
    return head, tail


class EmbeddingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


# The highest gallery position (the column is a PostgreSQL smallint).
POSITION_MAX = 32767


class ProductImage(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    # Width and height are set from the validated upload (catalog.images.inspect_image), not via
    # ImageField(width_field=...), which re-opens the file whenever the field is reassigned.
    file = models.ImageField(upload_to="products/%Y/%m/")
    # A small WebP copy for cards and thumbnails (catalog/thumbnails.py); empty where the loader stores a photo
    # already smaller than one, in a format every browser shows (Fashion-MNIST's 224 px PNG articles).
    thumbnail = models.ImageField(upload_to="products/thumbs/%Y/%m/", blank=True, editable=False)
    position = models.PositiveSmallIntegerField(default=0)
    width = models.PositiveIntegerField(editable=False)
    height = models.PositiveIntegerField(editable=False)
    content_hash = models.CharField(max_length=64, editable=False, help_text="SHA-256 of the file's bytes.")
    # State of this image's vector in the configured embedding space (vectors live in search.ImageEmbedding). During
    # a model switch that is the space being built, while search still reads the complete old one.
    embedding_status = models.CharField(
        max_length=10, choices=EmbeddingStatus.choices, default=EmbeddingStatus.PENDING, db_index=True
    )
    embedding_error = models.TextField(blank=True)
    embedding_model = models.CharField(max_length=100, blank=True)
    embedded_at = models.DateTimeField(null=True, blank=True)
    # When a task for this image was last sent: the pending sweep re-sends only long-unanswered ones.
    embedding_queued_at = models.DateTimeField(null=True, blank=True)
    # The most similar other image when it looks like the same photo (set after embedding; shown in the admin).
    near_duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    near_duplicate_score = models.FloatField(null=True, blank=True, editable=False)
    # The product's dominant colour families in this photo, most pixels first ("black", "white"), set when the photo
    # is embedded (search/colours.py); null until then, and for photos from before colours were computed until the
    # sweep reaches them.
    colours = ArrayField(models.CharField(max_length=12), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "pk"]
        indexes = [
            models.Index(fields=["content_hash"], name="productimage_content_hash_idx"),
            # The sweep's backfill of colours: the photos that have none yet.
            models.Index(fields=["id"], name="productimage_no_colours_idx", condition=Q(colours__isnull=True)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(embedding_status__in=EmbeddingStatus.values), name="productimage_status_valid"
            ),
            models.CheckConstraint(condition=Q(width__gt=0, height__gt=0), name="productimage_size_positive"),
            models.CheckConstraint(
                condition=Q(content_hash__regex=r"^[0-9a-f]{64}$"), name="productimage_content_hash_sha256"
            ),
            models.CheckConstraint(
                condition=~Q(embedding_status=EmbeddingStatus.READY)
                | (Q(embedded_at__isnull=False) & ~Q(embedding_model="")),
                name="productimage_ready_has_model",
            ),
            models.CheckConstraint(
                condition=~Q(embedding_status=EmbeddingStatus.FAILED) | ~Q(embedding_error=""),
                name="productimage_failed_has_error",
            ),
        ]

    def __str__(self):
        return f"{self.product.sku} image {self.position}"

    @property
    def card_url(self) -> str:
        """The URL to show in grids: the thumbnail when there is one."""
        return (self.thumbnail or self.file).url

    @property
    def display_url(self) -> str:
        """The URL to show the photo itself: the original where every browser can show it, else (an iPhone's HEIC,
        a TIFF: only Safari shows those) its WebP copy."""
        if self.thumbnail and not self.file.name.lower().endswith(BROWSER_EXTENSIONS):
            return self.thumbnail.url
        return self.file.url
