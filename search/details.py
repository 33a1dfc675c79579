"""Detail matching: the first matches of a photo search put in order by how well their details match as well.

The global vector of a photo (GeM-pooled, whitened) says what kind of thing it shows; among look-alikes (two grey
T-shirts, one bottle in three colours) the right product and its neighbours score within a few hundredths of each
other. The network's stride-16 map holds local descriptors (one per 16 px cell, 112 channels for EfficientNet-Lite0)
that tell the print on a T-shirt or the shape of a label apart. A search reads the stored descriptors of its first
``CANDIDATES`` products' best photos and compares them with the query photo's:

- *detail similarity*: a symmetric Chamfer similarity. Each query descriptor's best cosine among the product's,
  averaged with weights, and the same the other way round; the mean of the two. A query descriptor weighs its
  activation (the object, not the background) times how much its best cosine varies over the candidates (what tells
  them apart, not what they share); the product's weigh their activation. Crops, shifts and small rotations move
  descriptors between cells, not away.
- *the order*: the mean of the vector's cosine similarity and the detail similarity. Nothing is fitted; standardising
  the two over the candidates instead (z-scores) gained more on look-alike catalogs but let a product of another
  kind overtake a close match in a small, varied one (docs/relevance.md).

Only the order of those first products changes; every product keeps its own match score, and the cut-off, the
facets and the other sorts are as before. docs/relevance.md measures it on six held-out domains.

Stored per photo: the map 2x2 average-pooled to 7x7 (49 descriptors), each unit-length in int8, with its weight in
uint8: 5.5 KB beside the 768-byte vector, TOASTed out of line, never in the index. The query keeps its 14x14 map:
pooling both sides lost detail (docs/relevance.md).
"""

from __future__ import annotations

import numpy as np

CANDIDATES = 10  # the first products re-ordered: a right product found by the vector is almost always among them
STORED_GRID = 7  # catalog photos: the 14x14 stride-16 map pooled 2x2


def encode(descriptors: np.ndarray, weights: np.ndarray) -> bytes:
    """(p, c) unit descriptors and (p,) weights -> bytes: p (uint16), the weights as uint8 of their maximum, the
    descriptors as int8."""
    weights = np.asarray(weights, dtype=np.float32)
    scaled = np.round(255 * weights / max(float(weights.max()), 1e-12)).astype(np.uint8)
    quantised = np.clip(np.round(127 * descriptors), -127, 127).astype(np.int8)
    return np.uint16(len(weights)).tobytes() + scaled.tobytes() + quantised.tobytes()


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``encode``'s bytes -> ((p, c) float32 descriptors, (p,) float32 weights)."""
    positions = int(np.frombuffer(data, dtype=np.uint16, count=1)[0])
    weights = np.frombuffer(data, dtype=np.uint8, count=positions, offset=2).astype(np.float32)
    descriptors = np.frombuffer(data, dtype=np.int8, offset=2 + positions).astype(np.float32)
    return descriptors.reshape(positions, -1) / 127, weights


def descriptors(detail_map: np.ndarray, *, grid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A (c, h, w) stride-16 map -> ((p, c) unit descriptors, (p,) weights: their activation), average-pooled to
    ``grid`` x ``grid`` first when given."""
    channels, height, width = detail_map.shape
    cells = np.asarray(detail_map, dtype=np.float32)
    if grid is not None and (height, width) != (grid, grid):
        cells = cells[:, : height - height % grid, : width - width % grid]
        cells = cells.reshape(channels, grid, cells.shape[1] // grid, grid, cells.shape[2] // grid).mean(axis=(2, 4))
    cells = cells.reshape(channels, -1).T
    weights = np.linalg.norm(cells, axis=1)
    return cells / np.maximum(weights[:, None], 1e-6), weights


def stored(detail_map: np.ndarray) -> bytes:
    """What a catalog photo stores beside its vector."""
    return encode(*descriptors(detail_map, grid=STORED_GRID))


def similarities(query: tuple[np.ndarray, np.ndarray], photos: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """The symmetric, weighted Chamfer similarity of the query's descriptors to each candidate photo's.

    A query cell counts by its activation times the variance, over the candidates, of how well it is matched: a cell
    every look-alike matches equally (a sleeve, the background) cannot tell them apart, a cell some match and others
    do not (a print, a label) can. The photo's cells count by their activation."""
    q, q_weights = query
    cosines = [q @ descriptors.T for descriptors, _ in photos]
    best = np.stack([photo_cosines.max(axis=1) for photo_cosines in cosines])  # (photos, query cells)
    weights = q_weights * best.var(axis=0)
    if float(weights.sum()) <= 1e-12:  # one photo, or all alike: nothing to contrast
        weights = q_weights
    forward = best @ weights / max(float(weights.sum()), 1e-12)
    backward = [float(photo_cosines.max(axis=0) @ c_weights) / max(float(c_weights.sum()), 1e-12)
                for photo_cosines, (_, c_weights) in zip(cosines, photos, strict=True)]
    return [(float(f) + b) / 2 for f, b in zip(forward, backward, strict=True)]


def order(similarities: list[float], details: list[float]) -> list[int]:
    """Indices of the candidates, best first, by the mean of their vector and detail similarities."""
    merit = [(vector + detail) / 2 for vector, detail in zip(similarities, details, strict=True)]
    return sorted(range(len(merit)), key=lambda index: -merit[index])  # stable: ties keep the vector's order
