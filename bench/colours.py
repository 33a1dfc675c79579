"""Colour accuracy: do the dominant colours computed from a photo (search/colours.py) name the colour that the
product's title names?

The labelled set is built from the demo catalog (docs/demo-data.md): every product whose title names one colour
family ("Black Hoodie", "Yellow Plimsolls", "Space Dust Navy Paint"), each of its photos, as stored (plain studio
background) and as shopper-style snapshots with backgrounds (bench/shopper.py ``snapshot``). Drinks are left out:
"Red Wine" and "Green Juice" name what is in the bottle, not what the photo shows.

    .venv/bin/python -m bench.colours [--cache-dir .state/cache/demo] [--snapshots 3] [--seed 7]

Prints one line per photo and a Markdown table: top-1 (the first colour is the title's) and any (the title's
colour is among the photo's colours).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SYNONYMS = {"navy": "blue", "gray": "grey", "cream": "beige", "tan": "beige", "mustard": "yellow"}
SKIPPED_PATHS = re.compile(r"juice|wine|beer|drink|grocer", re.I)


def title_colour(title: str, families: tuple[str, ...]) -> str | None:
    """The one colour family a title names, or None (none, or several)."""
    named = set()
    for word in re.findall(r"[a-z]+", title.lower()):
        word = SYNONYMS.get(word, word)
        if word in families:
            named.add(word)
    return named.pop() if len(named) == 1 else None


def labelled_photos(cache_dir: Path):
    """(sku, title, colour, photo path) for each photo of each demo product whose title names one colour."""
    from catalog.demo import demo_products_collect
    from search.colours import FAMILIES

    for product in demo_products_collect(cache_dir=cache_dir, fetch=False):
        colour = title_colour(product.title, FAMILIES)
        if colour is None or SKIPPED_PATHS.search(product.category_path):
            continue
        for path in product.images:
            yield product.sku, product.title, colour, path


def main(argv=None) -> int:
    import django

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--snapshots", type=int, default=3, help="shopper snapshots per photo")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    django.setup()
    from bench.shopper import snapshot
    from catalog.demo import DEFAULT_CACHE_DIR
    from search.colours import dominant_colours
    from search.preprocessing import load_rgb

    rng = np.random.default_rng(args.seed)
    tallies = {"catalog photo": [0, 0, 0], "shopper snapshot": [0, 0, 0]}  # photos, top-1 right, any right
    misses = []
    for sku, title, colour, path in labelled_photos(args.cache_dir or DEFAULT_CACHE_DIR):
        with Image.open(path) as original:
            original.load()
            cases = [("catalog photo", load_rgb(path, draft_size=256))]
            for _ in range(args.snapshots):
                cases.append(("shopper snapshot", load_rgb(io.BytesIO(snapshot(original, rng)), draft_size=256)))
        for kind, image in cases:
            found = dominant_colours(image)
            tally = tallies[kind]
            tally[0] += 1
            tally[1] += found[0] == colour
            tally[2] += colour in found
            print(f"{kind:16} {sku:8} {title[:28]:28} {colour:6} -> {', '.join(found)}")
            if found[0] != colour:
                misses.append((kind, title, colour, found))
    print()
    print("| photos | labelled | top-1 right | title's colour among the photo's |")
    print("|---|---:|---:|---:|")
    for kind, (count, top1, anywhere) in tallies.items():
        if count:
            print(f"| {kind} | {count} | {top1 / count:.0%} ({top1}) | {anywhere / count:.0%} ({anywhere}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
