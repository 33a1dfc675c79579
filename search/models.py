from django.db import models
from pgvector.django import HalfVectorField, HnswIndex

from search.embeddings import VECTOR_DIMENSIONS


class ImageEmbedding(models.Model):
    """One image's vector in one embedding space.

    Vectors are keyed by (image, model) so a new model can be filled in beside the active one and
    searches only ever compare vectors of a single space.
    """

    image = models.ForeignKey("catalog.ProductImage", on_delete=models.CASCADE, related_name="embeddings")
    # Denormalised from the image so that ANN queries and their filters read one table.
    product = models.ForeignKey("catalog.Product", on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=100)
    vector = HalfVectorField(dimensions=VECTOR_DIMENSIONS)
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
        ]

    def __str__(self):
        return f"{self.model} vector of image {self.image_id}"
