"""Fit the PCA-whitening reduction, compare choices, and (with --save) write the shipped file.

    .venv/bin/python -m bench.fit_reduction --model efficientnet-lite0            # grid, prints tables
    .venv/bin/python -m bench.fit_reduction --model efficientnet-lite0 --save 384 # + writes search/spaces/

Fitting data never includes the evaluation data:
- fit (groups of images that should be near each other, see search/reduction.py): Fashion-MNIST
  TRAIN images (--train of the 60,000) grouped by class, plus generic photos (the 54 Vendure demo
  photos, each with --views - 1 random shopper-style views) grouped by photo, given --photo-weight.
- evaluate: Fashion-MNIST TEST images (P@1, P@10 of same-class neighbours), and, out of domain, the
  Saleor demo renders: P@1 by product type, and "self@1": a random shopper view (crop, mirror,
  JPEG re-encode) of each render finds its own render first among all renders.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import cached_raw_features, embedder, machine, precision_at, table, unit
from bench.datasets import augment, fashion_mnist, fashion_mnist_pil, saleor_renders, vendure_photos
from search.reduction import FitSource, Reduction, reduction_path


def load_sets(model, *, test: int, train: int, views: int) -> dict:
    test_images, test_labels = fashion_mnist("test", limit=test)
    train_images, train_labels = fashion_mnist("train", limit=train)
    rng = np.random.default_rng(7)
    photos = [model.load_image(path) for path in vendure_photos()]
    renders = saleor_renders()
    render_images = [model.load_image(path) for path, _ in renders]
    return {
        "test": cached_raw_features(model, f"fm-test-{test}", lambda: fashion_mnist_pil(test_images)),
        "test_labels": test_labels,
        "train": cached_raw_features(model, f"fm-train-{train}", lambda: fashion_mnist_pil(train_images)),
        "train_labels": train_labels,
        "photo_groups": np.repeat(np.arange(len(photos)), views),
        "photos": cached_raw_features(
            model, f"vendure-views-{views}", lambda: [p if v == 0 else augment(p, rng) for p in photos for v in range(views)]
        ),
        "renders": cached_raw_features(model, "saleor", lambda: render_images),
        "render_labels": np.array([label for _, label in renders]),
        "render_views": cached_raw_features(
            model, "saleor-views", lambda: [augment(image, np.random.default_rng(i)) for i, image in enumerate(render_images)]
        ),
    }


def evaluate(sets: dict, project) -> tuple:
    fm = precision_at(project(sets["test"]), sets["test_labels"])
    renders = project(sets["renders"])
    by_type = precision_at(renders, sets["render_labels"], ks=(1,))[1]
    views = unit(project(sets["render_views"]))
    self_at_1 = float((np.argmax(views @ unit(renders).T, axis=1) == np.arange(len(renders))).mean())
    return fm[1], fm[10], by_type, self_at_1


def fit(sets: dict, *, dimensions: int, shrinkage: float, photo_weight: float, method: str, args) -> Reduction:
    sources = [FitSource(raw=sets["train"], groups=sets["train_labels"], weight=1 - photo_weight)]
    if photo_weight:
        sources.append(FitSource(raw=sets["photos"], groups=sets["photo_groups"], weight=photo_weight))
    provenance = {
        "version": 1,
        "model": args.model,
        "fitted_on": (
            f"groups = Fashion-MNIST classes of train[:{len(sets['train'])}] (dark-on-white), weight {1 - photo_weight}; "
            f"groups = the {len(sets['photos']) // args.views} @vendure/create 3.7.3 photos, each with "
            f"{args.views - 1} random shopper-style views, weight {photo_weight}"
        ),
        "normalisation": "signed sqrt, L2, centre, learned whitening with shrinkage, L2",
        "command": f"python -m bench.fit_reduction --model {args.model} --train {args.train} --views {args.views} "
        f"--photo-weight {photo_weight} --shrinkage {shrinkage} --save {dimensions}",
    }
    return Reduction.fit(sources, dimensions=dimensions, shrinkage=shrinkage, method=method, provenance=provenance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--views", type=int, default=6, help="views per Vendure photo in the fitting data")
    parser.add_argument("--photo-weight", type=float, default=0.3)
    parser.add_argument("--shrinkage", type=float, default=0.1)
    parser.add_argument("--save", type=int, metavar="DIMS", help="write the reduction with DIMS dimensions")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sets, one configuration")
    args = parser.parse_args()
    if args.quick:
        args.test, args.train, args.views = 300, 600, 2
    model = embedder(args.model)
    started = time.perf_counter()
    sets = load_sets(model, test=args.test, train=args.train, views=args.views)
    print(f"features ready in {time.perf_counter() - started:.0f} s ({machine()})\n")

    headers = ["vectors", "dims", "bytes (halfvec)", "FM P@1", "FM P@10", "Saleor type P@1", "Saleor self@1"]
    rows = [["raw features", 1280, 2 * 1280, *evaluate(sets, lambda raw: raw)]]
    if args.quick:
        grid = [("lw", 64, args.shrinkage, args.photo_weight)]
    else:
        grid = [("pca", d, args.shrinkage, args.photo_weight) for d in (256, 384)]
        grid += [("lw", d, args.shrinkage, args.photo_weight) for d in (128, 256, 384, 512)]
        grid += [("lw", 384, s, args.photo_weight) for s in (0.03, 0.3)]
        grid += [("lw", 384, args.shrinkage, w) for w in (0.0, 0.1, 0.5)]
    names = {"pca": "PCA-whitening", "lw": "learned whitening"}
    for method, dimensions, shrinkage, photo_weight in grid:
        reduction = fit(
            sets, dimensions=dimensions, shrinkage=shrinkage, photo_weight=photo_weight, method=method, args=args
        )
        label = f"{names[method]}, shrinkage {shrinkage}, photo weight {photo_weight}"
        # Round through float16 as the halfvec column does, so the table shows what is stored.
        stored = lambda raw: reduction.project(raw).astype(np.float16).astype(np.float32)  # noqa: E731
        rows.append([label, dimensions, 2 * dimensions, *evaluate(sets, stored)])
    print(f"Reduction choices for {args.model} (fit: FM train[:{args.train}] + Vendure views; eval: FM test[:{args.test}], Saleor)\n")
    print(table(headers, rows))

    if args.save:
        reduction = fit(
            sets, dimensions=args.save, shrinkage=args.shrinkage, photo_weight=args.photo_weight, method="lw", args=args
        )
        path = reduction_path(model_name=args.model, dimensions=args.save)
        reduction.save(path)
        print(f"\nwrote {path} ({path.stat().st_size / 1e6:.1f} MB), id {reduction.id}")


if __name__ == "__main__":
    main()
