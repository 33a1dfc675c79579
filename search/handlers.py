"""Search's answers to what the catalog announces (catalog/signals.py, catalog/hooks.py); connected once, in
``SearchConfig.ready()``. The catalog never imports search: this is the only bridge, and it points one way."""

from __future__ import annotations

from django.db.models.signals import post_save

from catalog import hooks, signals
from catalog.page_cache import catalog_changed
from search.forms import RefineForm
from search.refine import NO_REFINE
from search.selectors import other_colour_products, similar_products_to_product
from search.services import image_embedding_batched, image_embedding_dispatch, image_embedding_mark_pending


def photos_added(sender, *, image_ids, on_not_queued=None, **kwargs) -> None:
    image_embedding_dispatch(image_ids=image_ids, on_not_queued=on_not_queued)


def photo_files_changed(sender, *, image_ids, on_not_queued=None, **kwargs) -> None:
    image_embedding_mark_pending(image_ids=image_ids, on_not_queued=on_not_queued)


def bulk_load(sender, **kwargs):
    return image_embedding_batched()


def _similar_products(*, product, limit, category_ids, form: RefineForm | None = None):
    refine = form.refine() if form is not None else NO_REFINE
    return similar_products_to_product(
        product=product, limit=limit, category_ids=category_ids, refine=refine, fold=True
    )


def _space_saved(sender, **kwargs) -> None:
    # "More like this" on cached product pages reads the active space. Vectors are stored in bulk, with no signal:
    # services.image_embeddings_store retires the pages itself.
    catalog_changed()


def connect() -> None:
    signals.photos_added.connect(photos_added, dispatch_uid="search-photos-added")
    signals.photo_files_changed.connect(photo_files_changed, dispatch_uid="search-photo-files-changed")
    signals.bulk_load.connect(bulk_load, dispatch_uid="search-bulk-load")
    hooks.similar_products_register(_similar_products, form=RefineForm, other_colours=other_colour_products)
    # Not post_delete of vectors: retired ones are deleted in bulk and no page shows them; an image's deletion
    # cascades (and the image's own deletion retires the pages).
    post_save.connect(_space_saved, sender="search.EmbeddingSpace", dispatch_uid="page-cache-save-space")
