"""Detail matching (search/details.py): a photo search's first matches put in order by their details as well."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from search import details

LOOK_ALIKES = Path(__file__).parent / "images" / "look-alikes"
SNAPSHOT = LOOK_ALIKES / "snapshot-of-test-00435.jpg"  # a shopper's photo of the coat test-00435


def _map(seed: int, shape=(112, 14, 14)) -> np.ndarray:
    return np.random.default_rng(seed).gamma(1.0, size=shape).astype(np.float32)  # activations are >= 0


def test_stored_details_pool_the_map_to_seven_by_seven_in_int8():
    data = details.stored(_map(1))
    assert len(data) == 2 + 49 + 49 * 112  # 5.5 KB beside a 768-byte vector
    descriptors, weights = details.decode(data)
    assert descriptors.shape == (49, 112) and weights.shape == (49,)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1, atol=0.02)
    assert weights.max() == 255


def test_a_photo_matches_its_own_details_best():
    photo, other = _map(1), _map(2)
    query = details.descriptors(photo)  # the query keeps its 14 x 14 map
    own, others = details.similarities(query, [details.decode(details.stored(p)) for p in (photo, other)])
    assert own > others + 0.05
    assert details.similarities(query, [query])[0] == pytest.approx(1.0, abs=1e-5)


def _unit(*values: float) -> np.ndarray:
    cell = np.zeros(8, dtype=np.float32)
    cell[: len(values)] = values
    return cell / np.linalg.norm(cell)


def test_query_cells_that_every_candidate_matches_alike_do_not_decide_the_order():
    # The query: a strongly activated cell that both look-alikes share (channel 0: a sleeve) and a weaker one that
    # tells them apart (channel 1: a print). The look-alike matches the sleeve a little better (1.0 against 0.9), the
    # right product matches the print much better (1.0 against 0.75).
    shared, told_apart = _unit(1), _unit(0, 1)
    weights = np.array([1.0, 0.3], dtype=np.float32)
    query = (np.stack([shared, told_apart]), weights)
    right = (np.stack([_unit(0.9, 0, np.sqrt(0.19)), told_apart]), weights)
    look_alike = (np.stack([shared, _unit(0, 0.75, np.sqrt(1 - 0.75**2))]), weights)
    right_score, look_alike_score = details.similarities(query, [right, look_alike])
    assert right_score > look_alike_score + 0.03
    # Weighed by activation alone, the shared cell would decide, for the look-alike.
    assert _by_activation(query, right) < _by_activation(query, look_alike)


def _by_activation(query, photo) -> float:
    (q, q_weights), (c, c_weights) = query, photo
    cosines = q @ c.T
    return (cosines.max(axis=1) @ q_weights / q_weights.sum() + cosines.max(axis=0) @ c_weights / c_weights.sum()) / 2


def test_candidates_with_nothing_to_tell_them_apart_are_compared_by_activation():
    query, photo = details.descriptors(_map(4)), details.descriptors(_map(3))
    first, second = details.similarities(query, [photo, photo])
    assert first == second == pytest.approx(_by_activation(query, photo), abs=1e-6)


def test_the_order_is_the_mean_of_the_two_similarities_and_keeps_ties_in_the_vectors_order():
    assert details.order([0.80, 0.78, 0.70], [0.50, 0.60, 0.90]) == [2, 1, 0]
    assert details.order([0.8, 0.8], [0.5, 0.5]) == [0, 1]


@pytest.fixture
def look_alikes(db, settings):
    """Ten Fashion-MNIST tops, shirts, coats and dresses (MIT), the ten nearest by vector to the snapshot of the
    coat test-00435; by vector alone the shirt test-00092 comes first (docs/relevance.md)."""
    from catalog import services as catalog_services
    from search.services import images_embed
    from search.sweep import embedding_sweep
    from tests.factories import uploaded_file

    tops = catalog_services.category_get_or_create_path(path="Clothing > Tops")
    images = []
    for path in sorted(LOOK_ALIKES.glob("test-*.png")):
        product = catalog_services.product_create(sku=path.stem, title=path.stem, category=tops, price="20")
        images.append(catalog_services.product_image_add(product=product, file=uploaded_file(path)).pk)
    images_embed(image_ids=images)
    embedding_sweep()


def _search(client, **fields) -> dict:
    response = client.post("/api/v1/search/", {"threshold": 0, **fields})
    assert response.status_code == 200, response.content[:300]
    return response.json()


@pytest.mark.servers
def test_details_put_the_photographed_item_before_a_look_alike(client, settings, look_alikes):
    answer = _search(client, image=SimpleUploadedFile(SNAPSHOT.name, SNAPSHOT.read_bytes()))
    results = answer["results"]
    assert results[0]["product"]["sku"] == "test-00435"
    # Each keeps its own match: the vector's, by which the shirt scores a little higher.
    scores = {result["product"]["sku"]: result["similarity"] for result in results}
    assert scores["test-00092"] > scores["test-00435"]
    # A refinement by the kept query orders its matches the same way, without the photo.
    assert _search(client, query=answer["query"])["results"][0]["product"]["sku"] == "test-00435"

    settings.SEARCH_DETAIL_ORDER = False  # the vectors alone
    alone = _search(client, image=SimpleUploadedFile(SNAPSHOT.name, SNAPSHOT.read_bytes()))
    assert alone["results"][0]["product"]["sku"] == "test-00092"


@pytest.mark.servers
def test_vectors_stored_without_details_are_ordered_by_the_vectors_alone(client, look_alikes):
    from search.models import ImageEmbedding

    ImageEmbedding.objects.filter(product__sku="test-00301").update(details=None)  # as a benchmark catalog's rows
    answer = _search(client, image=SimpleUploadedFile(SNAPSHOT.name, SNAPSHOT.read_bytes()))
    assert answer["results"][0]["product"]["sku"] == "test-00092"
