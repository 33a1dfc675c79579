"""The relevance benchmark: its numpy measures, and its smoke run through the API of a real instance."""

import os
import subprocess
import sys

import numpy as np
import pytest

from bench.relevance import shown
from bench.retrieval import auc, class_precision, query_scores
from config import embedded
from tests.services_support import ROOT


def test_query_scores_rank_products_by_their_best_image():
    catalog = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    products = np.array(["a", "a", "b"])
    scores = query_scores(catalog=catalog, products=products, instance=np.array([[0.6, 0.8], [1, 0.1]]),
                          instance_products=np.array(["a", "b"]), absent=np.array([[-1, 0]]))
    assert list(scores.instance_rank) == [0, 1]  # a's second photo is nearest the first query; b is second for the other
    assert scores.instance_top[0] == pytest.approx(0.96)
    assert scores.absent_top[0] == pytest.approx(0.0)


def test_auc_counts_pairs_ordered_and_ties_half():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9]) == 0.0
    assert auc([0.5], [0.5]) == 0.5


def test_class_precision_skips_the_query_product_itself():
    vectors = np.array([[1, 0], [0.99, 0.1], [0.9, 0.2], [0, 1]], dtype=np.float32)
    products = np.array(["p", "p", "q", "r"])
    groups = np.array(["shoes", "shoes", "shoes", "chairs"])
    assert class_precision(vectors, products, groups, queries=np.array([0]), k=1) == 1.0  # q, not p's own photo
    assert class_precision(vectors, products, groups, queries=np.array([0]), k=2) == 0.5


def test_answers_are_read_in_the_order_a_shopper_sees_them():
    def result(sku, *duplicates):
        return {"product": {"sku": sku}, "duplicates": [{"product": {"sku": d}} for d in duplicates]}

    answer = {"results": [result("a", "a-red", "a-blue"), result("b"), result("c", "c-grey")]}
    assert [r["product"]["sku"] for r in shown(answer)] == ["a", "a-red", "a-blue", "b", "c", "c-grey"]
    assert [r["product"]["sku"] for r in shown(answer, count=4)] == ["a", "a-red", "a-blue", "b"]
    assert shown({"results": []}) == []


@pytest.mark.network  # the domain's photos are fetched from the package registries once
@pytest.mark.worker
@pytest.mark.system
def test_the_benchmark_runs_through_the_api_of_a_running_instance(tmp_path):
    output = tmp_path / "relevance.md"
    env = {**os.environ, "LOOKALIKE_STATE_DIR": str(embedded.STATE_DIR)}
    env.pop("DATABASE_URL", None)  # the benchmark makes its shops on the embedded server
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, "-m", "bench.relevance", "--quick", "--write", str(output)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)

    assert result.returncode == 0, result.stderr[-3000:]
    page = output.read_text()
    (measured, curve) = [line for line in page.splitlines() if line.startswith("| saleor |")]
    assert measured.count("→") == 5  # baseline → shipped for R@10, P@10 and AUC; for R@1 the vectors alone between
    assert curve.count(" / ") == 7  # found / absent-empty at each match threshold of the trade-off table
    assert "shipped (three query views, detail order)" in page and "Targets missed" in page


def _domain(name: str, rng, *, nuisance: float, products: int = 60):
    """A benchmark domain in miniature: products of 4 groups, shoppers' photos of them, photos of a 5th group."""
    from bench.splits import PAIRS_PER_PHOTO, DomainFeatures

    extent = 24
    groups = np.repeat(np.arange(5), products // 4 + 1)[: products + 20]
    identity = rng.normal(0, 1.0, size=(len(groups), extent)) + 1.5 * np.eye(extent)[groups * 3]

    def photos(rows):
        backdrop = np.zeros((len(rows), extent))
        backdrop[:, -4:] = rng.normal(0, nuisance, size=(len(rows), 4))
        return identity[rows] + backdrop + rng.normal(0, 0.2, size=(len(rows), extent))

    sold = np.flatnonzero(groups < 4)[:products]
    absent = np.flatnonzero(groups == 4)
    return DomainFeatures(
        name=name, catalog=photos(sold), products=sold.astype(str), groups=groups[sold].astype(str),
        instance=photos(sold), instance_products=sold.astype(str), absent=photos(absent),
        other_photos=photos(np.tile(sold, PAIRS_PER_PHOTO)),
    )


def test_the_shrinkage_is_chosen_on_held_out_domains_and_whitens_what_photos_of_a_product_change(monkeypatch):
    from bench import fit_reduction
    from bench.fit_reduction import SHRINKAGES, choose_shrinkage

    monkeypatch.setattr(fit_reduction, "VECTOR_DIMENSIONS", 16)  # of the miniature domains' 24
    rng = np.random.default_rng(3)
    domains = [_domain(name, rng, nuisance=4.0) for name in "abc"]
    chosen = choose_shrinkage(domains[:2])
    assert chosen in SHRINKAGES and chosen < 1.0  # the backdrop hides the products from PCA

    def right_first(shrinkage: float) -> float:  # on the third domain, which chose nothing
        scores, _ = fit_reduction.simulate(domains[2], fit_reduction._fit(domains[:2], shrinkage, {}))
        return float((scores.instance_rank == 0).mean())

    assert right_first(chosen) > right_first(1.0) + 0.2


def test_the_calibration_is_fitted_to_the_targets_where_a_cut_off_meets_them():
    from bench.fit_reduction import EMPTY_TARGET, FOUND_TARGET, cutoff, fit_calibration, simulate
    from search.reduction import Reduction

    rng = np.random.default_rng(5)
    domains = [_domain(name, rng, nuisance=0.3) for name in "abc"]
    identity = Reduction._build(np.zeros(24, np.float32), np.eye(24, dtype=np.float32), {"method": "none"})
    quantile, default = fit_calibration(domains, identity)
    for domain in domains:
        scores, neighbours = simulate(domain, identity)
        threshold = cutoff(neighbours, quantile, default)
        assert ((scores.instance_right >= threshold) & (scores.instance_rank < 10)).mean() >= FOUND_TARGET
        assert (scores.absent_top < threshold).mean() >= EMPTY_TARGET


def test_the_fits_other_photos_are_decodable_repeatable_and_of_the_whole_product(test_images):
    import io

    from PIL import Image

    from bench.training_pairs import other_photo

    with Image.open(test_images / "shoe-running-1.jpg") as photo:
        first = other_photo(photo, np.random.default_rng(11))
        assert first == other_photo(photo, np.random.default_rng(11))  # the same on every machine
        assert first != other_photo(photo, np.random.default_rng(12))
    tiny = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    tiny.paste((200, 30, 30, 255), (8, 8, 20, 20))  # a red square on transparency, as an emoji or a drawing
    with Image.open(io.BytesIO(other_photo(tiny, np.random.default_rng(3)))) as made:
        assert min(made.size) >= 100  # enlarged first, as a photo of a small picture is
        pixels = np.asarray(made.convert("RGB"), dtype=np.int16)
    reddish = (pixels[..., 0] - pixels[..., 1:].max(axis=2)) > 60
    assert reddish.mean() > 0.05  # the product is still in the photo


def test_a_fit_held_out_from_an_emoji_set_sees_neither_emoji_set():
    """The two emoji domains draw the same emoji in the same groups: a fit without one that saw the other would
    have seen the held-out domain's products and its absent groups."""
    from types import SimpleNamespace

    from bench.domains import DOMAINS
    from bench.fit_reduction import without_family

    domains = [SimpleNamespace(name=name) for name in DOMAINS]
    assert [d.name for d in without_family(domains, "emoji-noto")] == [
        "fashion-mnist", "vendure", "saleor", "openclipart"]
    assert [d.name for d in without_family(domains, "vendure")] == [
        "fashion-mnist", "saleor", "emoji-noto", "emoji-fluent-3d", "openclipart"]


def test_the_fit_counts_a_query_found_only_when_its_own_product_clears_the_cut_off():
    """A query whose right product ranks second, under the cut-off, behind a wrong one above it, is not found at
    the defaults: the fit counted it found because the best score cleared the cut-off."""
    from bench.retrieval import query_scores

    catalog = np.array([[1.0, 0.0], [0.8, 0.6]])  # product "wrong" along the query, product "right" beside it
    scores = query_scores(catalog=catalog, products=np.array(["wrong", "right"]), instance=np.array([[1.0, 0.1]]),
                          instance_products=np.array(["right"]), absent=np.array([[0.0, 1.0]]))
    assert scores.instance_rank[0] == 1 and scores.instance_top[0] > 0.99
    assert 0.8 < scores.instance_right[0] < 0.9
