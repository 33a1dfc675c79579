"""Measure the similarity threshold and the near-duplicate score on the demo catalog's real photos.

    .venv/bin/python -m bench.search_threshold          (needs `manage.py load_demo` and `manage.py reindex` first)

For every catalog photo, as if a shopper had uploaded it:
- "same kind": its best score against *other* products of its leaf category (what a good answer scores);
- "absent kind": its best score when its whole top-level category is missing from the catalog (what junk scores).
A threshold should keep most of the first and reject most of the second. For near-duplicates, the test photos
(re-encoded, downscaled copies of catalog photos) against their source, versus other views of the same product.
"""

import os
from pathlib import Path

import django
import numpy as np

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
django.setup()

from catalog.models import Category  # noqa: E402
from search.models import ImageEmbedding  # noqa: E402
from search.query import query_image_read, query_vector  # noqa: E402
from search.selectors import search_space_model  # noqa: E402


def _root_of(category_id, parents):
    while parents[category_id] is not None:
        category_id = parents[category_id]
    return category_id


def main():
    model = search_space_model()
    parents = dict(Category.objects.values_list("pk", "parent_id"))
    rows = list(
        ImageEmbedding.objects.filter(model=model).values_list("image_id", "product_id", "product__category_id", "vector")
    )
    vectors = np.array([np.asarray(r[3], dtype=np.float32) for r in rows])
    products = np.array([r[1] for r in rows])
    leaves = np.array([r[2] for r in rows])
    roots = np.array([_root_of(r[2], parents) for r in rows])
    scores = np.clip(vectors @ vectors.T, 0, 1)

    same_kind, absent_kind, same_product_views = [], [], []
    for i in range(len(rows)):
        other_product = products != products[i]
        same_leaf = other_product & (leaves == leaves[i])
        if same_leaf.any():
            same_kind.append(scores[i, same_leaf].max())
        absent_kind.append(scores[i, roots != roots[i]].max())
        views = (products == products[i]) & (np.arange(len(rows)) != i)
        if views.any():
            same_product_views.append(scores[i, views].max())
    same_kind, absent_kind = np.array(same_kind), np.array(absent_kind)

    print(f"space {model}; {len(rows)} photos")
    print("\n| threshold | same kind kept | absent kind rejected |\n|---|---|---|")
    for threshold in np.arange(0.15, 0.61, 0.05):
        kept = (same_kind >= threshold).mean()
        rejected = (absent_kind < threshold).mean()
        print(f"| {threshold:.2f} | {kept:.0%} | {rejected:.0%} |")
    print("\nscore percentiles (10/50/90):")
    for name, values in [("same kind", same_kind), ("absent kind", absent_kind)]:
        print(f"- {name}: " + " / ".join(f"{np.percentile(values, q):.2f}" for q in (10, 50, 90)))

    copies = []
    for path in sorted((Path(__file__).resolve().parent.parent / "tests" / "images").glob("*.jpg")):
        with path.open("rb") as handle:
            copies.append(float(np.clip(vectors @ query_vector(image=query_image_read(handle), model=model), 0, 1).max()))
    print("\nnear-duplicates: re-encoded downscaled copy vs its source (min/median): "
          f"{min(copies):.2f} / {np.median(copies):.2f}")
    print("other views of the same product (median/max): "
          f"{np.median(same_product_views):.2f} / {max(same_product_views):.2f}")


if __name__ == "__main__":
    main()
