"""The reduction's fit (search/reduction.py): PCA, and learned whitening from pairs of photos of one product."""

import numpy as np

from search.reduction import Reduction

RNG_SEED = 7
DIMENSIONS = 16


def _shop(rng, products: int = 200, extent: int = 64):
    """Products that differ in 32 dimensions a little, photographed with a background that varies a lot in 8 others:
    the background dominates the catalog's variance, so PCA keeps it, though it says nothing of the product."""
    identity = np.zeros((products, extent))
    identity[:, :32] = rng.normal(0, 1.0, size=(products, 32))

    def photos() -> np.ndarray:
        backdrop = np.zeros((products, extent))
        backdrop[:, 32:40] = rng.normal(0, 4.0, size=(products, 8))
        return identity + backdrop + rng.normal(0, 0.05, size=(products, extent))

    return photos(), photos(), photos()  # the catalog, other photos for the fit, shoppers' photos


def _right_first(reduction: Reduction, catalog: np.ndarray, queries: np.ndarray) -> float:
    similarities = reduction.project(queries) @ reduction.project(catalog).T
    return float((similarities.argmax(axis=1) == np.arange(len(queries))).mean())


def test_learned_whitening_weighs_down_what_changes_between_photos_of_a_product():
    rng = np.random.default_rng(RNG_SEED)
    catalog, others, queries = _shop(rng)
    catalog_b, others_b, _ = _shop(rng)  # a second domain, weighted equally with the first
    pca = Reduction.fit([catalog, catalog_b], dimensions=DIMENSIONS, provenance={})
    whitened = Reduction.fit([catalog, catalog_b], pairs=[(catalog, others), (catalog_b, others_b)], shrinkage=0.1,
                             dimensions=DIMENSIONS, provenance={})

    assert whitened.provenance["method"] == "lw" and whitened.provenance["shrinkage"] == 0.1
    assert whitened.id.startswith("lw16-") and pca.id.startswith("pca16-")
    assert _right_first(whitened, catalog, queries) > 0.9
    assert _right_first(pca, catalog, queries) < 0.5
    projected = whitened.project(queries)
    assert projected.shape == (len(queries), DIMENSIONS) and projected.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)


def test_full_shrinkage_is_pca_and_a_refit_gives_the_same_file():
    rng = np.random.default_rng(RNG_SEED)
    catalog, others, queries = _shop(rng)
    pca = Reduction.fit([catalog], dimensions=DIMENSIONS, provenance={})
    shrunk = Reduction.fit([catalog], pairs=[(catalog, others)], shrinkage=1.0, dimensions=DIMENSIONS,
                           provenance={})
    np.testing.assert_allclose(shrunk.project(queries), pca.project(queries), atol=1e-5)
    again = Reduction.fit([catalog], pairs=[(catalog, others)], shrinkage=0.5, dimensions=DIMENSIONS, provenance={})
    assert again.digest == Reduction.fit([catalog], pairs=[(catalog, others)], shrinkage=0.5,
                                         dimensions=DIMENSIONS, provenance={}).digest


def test_pairs_of_identical_photos_leave_pca():
    rng = np.random.default_rng(RNG_SEED)
    catalog, _, queries = _shop(rng)
    pca = Reduction.fit([catalog], dimensions=DIMENSIONS, provenance={})
    same = Reduction.fit([catalog], pairs=[(catalog, catalog)], shrinkage=0.3, dimensions=DIMENSIONS, provenance={})
    np.testing.assert_allclose(same.project(queries), pca.project(queries), atol=1e-5)
