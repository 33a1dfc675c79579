"""Retrieval relevance: raw features vs the shipped vectors, and centre-crop vs pad-to-square.

    .venv/bin/python -m bench.relevance [--model efficientnet-lite0] [--quick]

Fashion-MNIST TEST images (10,000, never used for fitting), dark-on-white: for each image, the share
of its 1 and 10 nearest other images (cosine) that are of the same class. Also on the first 3,000
(the size of the earlier reference measurement). Centre-crop and no-trim are measured on the first
--model only. Out of domain, the 45 Saleor demo renders: P@1 by
product type, and self@1 (a random crop/mirror/re-encode of each render finds its own render first).
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import cached_raw_features, embedder, machine, precision_at, table, unit
from bench.datasets import augment, fashion_mnist, fashion_mnist_pil, saleor_renders


def scores(model, project, *, test: int, quick: bool) -> list:
    images, labels = fashion_mnist("test", limit=test)
    raw = cached_raw_features(model, f"fm-test-{test}", lambda: fashion_mnist_pil(images))
    full = precision_at(project(raw), labels)
    first = precision_at(project(raw[:3000]), labels[:3000]) if not quick else {1: float("nan"), 10: float("nan")}
    renders = saleor_renders()
    render_images = [model.load_image(path) for path, _ in renders]
    render_raw = cached_raw_features(model, "saleor", lambda: render_images)
    views_raw = cached_raw_features(
        model, "saleor-views", lambda: [augment(image, np.random.default_rng(i)) for i, image in enumerate(render_images)]
    )
    by_type = precision_at(project(render_raw), np.array([label for _, label in renders]), ks=(1,))[1]
    self_at_1 = float(
        (np.argmax(unit(project(views_raw)) @ unit(project(render_raw)).T, axis=1) == np.arange(len(renders))).mean()
    )
    return [full[1], full[10], first[1], first[10], by_type, self_at_1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="repeatable; default efficientnet-lite0")
    parser.add_argument("--quick", action="store_true", help="smoke test: 300 test images")
    args = parser.parse_args()
    test = 300 if args.quick else 10_000
    rows = []
    names = args.model or ["efficientnet-lite0"]
    for name in names:
        model = embedder(name)
        stored = lambda raw: model.reduction.project(raw).astype(np.float16).astype(np.float32)  # noqa: E731
        variants = [("pad", True, "raw", lambda raw: raw), ("pad", True, "shipped", stored)]
        if not args.quick and name == names[0]:  # framing compared on the first model only (CPU time)
            variants += [("crop", True, "raw", lambda raw: raw), ("pad", False, "raw", lambda raw: raw)]
        for fit, trim, vectors, project in variants:
            model.fit, model.trim = fit, trim
            bytes_ = 2 * (model.dimensions if vectors == "shipped" else model.raw_dimensions)
            label = f"{vectors} ({model.reduction.id})" if vectors == "shipped" else "raw 1280-d"
            rows.append([name, label, bytes_, f"{'trim + ' if trim else ''}{fit}",
                         *scores(model, project, test=test, quick=args.quick)])  # fmt: skip
    print(f"Relevance on Fashion-MNIST test[:{test}] and the Saleor renders ({machine()})\n")
    print(table(["model", "vectors", "bytes/image (halfvec)", "framing", "FM P@1", "FM P@10", "FM[:3000] P@1",
                 "FM[:3000] P@10", "Saleor type P@1", "Saleor self@1"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
