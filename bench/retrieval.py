"""Retrieval measures computed in numpy, as the search computes them: a product's score is its best image's cosine.

Used where the relevance benchmark works offline: the raw-feature baseline, and fitting on the domains that are not
held out (bench/fit_reduction.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def product_scores(queries: np.ndarray, catalog: np.ndarray, products: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct products, (queries x products) best cosine of each product's images)."""
    names, owner = np.unique(products, return_inverse=True)
    similarities = unit(queries) @ unit(catalog).T
    best = np.full((len(queries), len(names)), -1.0, dtype=np.float32)
    np.maximum.at(best.T, owner, similarities.T)
    return names, best


@dataclass(frozen=True)
class Scores:
    """What a domain's queries got: the right product's rank and the best score, per query."""

    instance_rank: np.ndarray  # 0 = the right product came first
    instance_right: np.ndarray  # the right product's score of each instance query
    instance_top: np.ndarray  # best product score of each instance query
    absent_top: np.ndarray  # best product score of each absent query


def query_scores(*, catalog: np.ndarray, products: np.ndarray, instance: np.ndarray, instance_products: np.ndarray,
                 absent: np.ndarray) -> Scores:
    names, scores = product_scores(instance, catalog, products)
    right = scores[np.arange(len(instance)), np.searchsorted(names, instance_products)]
    rank = (scores > right[:, None]).sum(axis=1)
    _, absent_scores = product_scores(absent, catalog, products)
    return Scores(instance_rank=rank, instance_right=right, instance_top=scores.max(axis=1),
                  absent_top=absent_scores.max(axis=1))


def auc(positives, negatives) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positives, negatives = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    if not len(positives) or not len(negatives):
        return float("nan")
    above = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(above + ties / 2)


def class_precision(vectors: np.ndarray, products: np.ndarray, groups: np.ndarray, *, queries: np.ndarray,
                    k: int = 10) -> float:
    """Mean share of the same group among the k nearest other products of each query image (by its index)."""
    names, scores = product_scores(vectors[queries], vectors, products)
    product_group = dict(zip(products, groups, strict=True))
    name_groups = np.array([product_group[name] for name in names])
    shares = []
    for row, index in enumerate(queries):
        ranked = np.argsort(-scores[row])
        others = [column for column in ranked if names[column] != products[index]][:k]
        shares.append(float((name_groups[others] == groups[index]).mean()))
    return float(np.mean(shares))
