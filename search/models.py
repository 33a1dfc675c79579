from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from pgvector.django import HalfVectorField, HnswIndex

from catalog.models import PRICE_DIGITS
from search.embeddings import VECTOR_DIMENSIONS


class EmbeddingSpace(models.Model):
    """A model's vector space. Search reads exactly one active space; a new model's space is built beside it.

    Switching ``EMBEDDING_MODEL`` (or its runtime, reduction or version) creates a *building* space; workers fill it
    in the background while search keeps answering from the active one (docs/embeddings.md "Changing things" says
    when a photo search cannot), and the switch happens in one transaction once every searchable image has a vector
    in it.
    """

    class State(models.TextChoices):
        BUILDING = "building", "Building"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    model = models.CharField(max_length=100, unique=True)
    state = models.CharField(max_length=10, choices=State.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # The catalog's own "nothing similar enough" cut-off, a cosine similarity computed from this space's vectors
    # (search/calibration.py); null until there are enough vectors. Recomputed by the sweep when the number of
    # vectors has changed enough since ``calibrated_vectors``.
    min_score = models.FloatField(null=True, blank=True)
    calibrated_vectors = models.PositiveIntegerField(default=0)
    calibrated_at = models.DateTimeField(null=True, blank=True)
    # When a process configured for this model last synced the spaces. A build is given up (the model set back)
    # only once none has for a while: in a rolling deploy the old model's workers sync beside the new ones.
    configured_seen_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["state"], condition=Q(state="active"), name="embeddingspace_one_active"),
            models.CheckConstraint(condition=Q(state__in=["building", "active", "retired"]), name="embeddingspace_state"),
        ]

    def __str__(self):
        return f"{self.model} ({self.state})"


class ImageEmbedding(models.Model):
    """One image's vector in one embedding space (``model`` is the embedder's id).

    Keyed by (image, model) so a new model is filled in beside the active one and a search only ever
    compares vectors of a single space.
    """

    image = models.ForeignKey("catalog.ProductImage", on_delete=models.CASCADE, related_name="embeddings")
    # Denormalised from the image and its product so that ANN queries and their filters read one table: an HNSW
    # scan checks a candidate's category on the row it already has instead of joining the product, and an exact
    # search of a small category is one range of an index. ``product`` is kept equal to the image's, and
    # ``category``, ``active``, ``price`` and ``currency`` to the product's, by PostgreSQL triggers (migrations 0002,
    # 0003, 0005, 0008), so no write path, bulk updates and photos moved to another product included, leaves them
    # stale.
    product = models.ForeignKey("catalog.Product", on_delete=models.CASCADE, related_name="+")
    category = models.ForeignKey("catalog.Category", on_delete=models.PROTECT, related_name="+")
    active = models.BooleanField(default=True)
    price = models.DecimalField(**PRICE_DIGITS)
    currency = models.CharField(max_length=3, default="")  # the price's (migration 0008)
    # The photo's main colour family (its ``colours[1]``; "" until computed), kept by the triggers of migration 0006.
    colour = models.CharField(max_length=12, blank=True, default="")
    model = models.CharField(max_length=100)
    vector = HalfVectorField(dimensions=VECTOR_DIMENSIONS)
    # The photo's detail descriptors (search/details.py), which re-order a photo search's first matches; 5.5 KB,
    # stored out of line. Null where a row was stored without them (the benchmarks' catalogs of vectors alone).
    details = models.BinaryField(null=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "model"], name="imageembedding_one_per_model")]
        indexes = [
            HnswIndex(
                name="imageembedding_vector_hnsw",
                fields=["vector"],
                m=16,
                ef_construction=64,
                opclasses=["halfvec_cosine_ops"],
            ),
            models.Index(fields=["model", "product"], name="imageembedding_model_product"),
            # Exact search within small categories, and counting them: one range scan of the searchable rows.
            models.Index(
                fields=["category", "model"], name="imageembedding_category_model", condition=Q(active=True)
            ),
            # Exact search within a narrow price range: one range scan of the searchable rows of one space.
            models.Index(fields=["model", "price"], name="imageembedding_model_price", condition=Q(active=True)),
            models.Index(fields=["model", "colour"], name="imageembedding_model_colour", condition=Q(active=True)),
        ]

    def __str__(self):
        return f"{self.model} vector of image {self.image_id}"
